#!/usr/bin/env bash
# make_sample.sh - regenerate data/sample.mp4, the project's sample clip.
#
# Source: vtest.avi from OpenCV's sample data (768x576, 10 fps, ~795 frames,
# a fixed camera on pedestrians), installed by Debian's opencv-doc package:
#     sudo apt-get install opencv-doc ffmpeg
# Output: the first 360 frames (36 s), full resolution, H.264 (libx264, CRF 28,
# preset slow, yuv420p, keyframe every 10 s, no B-frames), no audio, MP4
# with the index at the front.  Why these choices:
#   - full 768x576: callers resize to their frame_size (e.g. 480x720);
#   - CRF 28 + slow: 1.5 MB for 360 frames, PSNR 40 dB: faithful for a static scene;
#   - no B-frames: decode order = display order, which keeps truncated-file and
#     frame-count behaviour simple and matches what a camera encoder emits;
#   - -bitexact / -map_metadata -1: byte-identical output across runs of the
#     same ffmpeg/x264 build (x264 single-threaded for determinism).
#
# Usage: scripts/make_sample.sh [SRC [OUT]]
set -euo pipefail

src=${1:-/usr/share/doc/opencv-doc/examples/data/vtest.avi}
here=$(cd "$(dirname "$0")/.." && pwd)
out=${2:-$here/data/sample.mp4}
frames=360

if [[ ! -r $src ]]; then
    echo "make_sample.sh: $src not found; install it with: apt-get install opencv-doc" >&2
    exit 1
fi
if ! command -v ffmpeg >/dev/null; then
    echo "make_sample.sh: ffmpeg not found; install it with: apt-get install ffmpeg" >&2
    exit 1
fi

ffmpeg -hide_banner -loglevel error -y -i "$src" -an -frames:v "$frames" \
    -c:v libx264 -preset slow -crf 28 -pix_fmt yuv420p -bf 0 -g 100 \
    -threads 1 -x264-params threads=1 \
    -map_metadata -1 -fflags +bitexact -flags:v +bitexact \
    -movflags +faststart "$out"

size=$(stat -c %s "$out")
echo "wrote $out: $frames frames, $size bytes"
if (( size >= 3 * 1024 * 1024 )); then
    echo "make_sample.sh: $out is $size bytes, over the 3 MB limit" >&2
    exit 1
fi
