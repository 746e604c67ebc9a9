#!/usr/bin/env bash
# A real V4L2 camera end to end: `deltaslice run`, 2 workers, on the first
# /dev/video* the ffmpeg CLI can grab a frame from, for 10 frames with the
# check on.  Skipped (77) with the reason where there is none (containers,
# CI machines); the virtual camera and streams are tests/e2e/live.sh.
set -u
bin=${DS_BIN:?DS_BIN not set}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
base=$((45400 + ($$ % 200) * 4))
limit=120
[ "${DS_EMULATED:-0}" != 0 ] && { echo "skip: no camera under emulation"; exit 77; }
command -v ffmpeg >/dev/null || { echo "skip: no ffmpeg CLI to look for a usable camera"; exit 77; }

camera="" tried=""
for dev in /dev/video*; do
  [ -c "$dev" ] || continue
  # Metadata and codec nodes (a Pi lists several) deliver no frames.
  if timeout 10 ffmpeg -hide_banner -nostdin -loglevel error -f v4l2 -i "$dev" -frames:v 1 \
       -f null - 2>"$tmp/probe.err"; then
    camera=$dev; break
  fi
  tried="$tried $dev ($(head -1 "$tmp/probe.err"))"
done
if [ -z "$camera" ]; then
  echo "skip: no usable V4L2 camera (/dev/video*:${tried:- none})"
  exit 77
fi

cat >"$tmp/camera.yml" <<YML
port: {master: $base, worker: [$((base+1)), $((base+2))]}
net: {m->w0: 'localhost:$((base+1))', m->w1: 'localhost:$((base+2))', w0->w1: 'localhost:$((base+2))'}
dnn: zoo:alexnet
video_path: $camera
frame_size: [72, 96]
mode: dif
check: true
master: {ifr_num: 10, pd_num: 2}
worker: {prof_niter: 1}
cache_dir: $tmp/cache
trace_dir: ''
YML
if ! timeout $limit "$bin" run -c "$tmp/camera.yml" >"$tmp/out" 2>"$tmp/err"; then
  echo "FAIL: $camera: run exited non-zero"; cat "$tmp/out"; grep -v DEBUG "$tmp/err" | tail -15
  exit 1
fi
fails=0
grep -q "^source: $camera (camera), 10 frames read, " "$tmp/out" || { echo "FAIL: no source line"; fails=1; }
grep -q "^frames: 10 finished, 0 failed, 0 not sent (of 10), 0 re-sent$" "$tmp/out" || { echo "FAIL: not every frame finished"; fails=1; }
grep -qE "^check: 10 frames, max abs error 0, max relative error 0 " "$tmp/out" || { echo "FAIL: results differ"; fails=1; }
[ $fails = 0 ] && echo "camera $camera: $(grep '^throughput' "$tmp/out")"
exit $fails
