#!/usr/bin/env bash
# Live sources end to end (issue 14): `deltaslice run`, 2 workers, on
#  1. a virtual camera (lavfi:testsrc2 at 30 fps) with master.ifr_num set:
#     every frame finishes, the check passes, the summary names the source;
#  2. an HTTP stream (MPEG-TS) served on loopback by the ffmpeg CLI in real
#     time (-re) from data/sample.mp4, with ifr_num 0 (the live default): the
#     run goes until the stream ends, then exits 0 with every frame read
#     finished;
#  3. the drop policy: a 200 fps virtual camera at 240x320, faster than the
#     chain: under drop latest frames are skipped (counted in the summary,
#     the JSON lines' source_frame grows with gaps), under drop none none are
#     (source_frame 0, 1, 2, ...);
#  4. a missing camera and a stream nobody serves: the run fails at once
#     naming the source (an IP camera's password masked) and what to check.
# A real camera is tests/e2e/camera.sh (skipped where there is none).
set -u
bin=${DS_BIN:?DS_BIN not set}
src=${DS_SOURCE_DIR:?DS_SOURCE_DIR not set}
tmp=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null; done; wait 2>/dev/null; rm -rf "$tmp"; }
trap cleanup EXIT
fails=0
fail() { echo "FAIL: $*"; fails=$((fails+1)); }
base=$((42000 + ($$ % 400) * 8))
http=$((base+3))
n_frames=20 n_drop=40 limit=120
[ "${DS_EMULATED:-0}" != 0 ] && n_frames=8 n_drop=16 limit=900
command -v ffmpeg >/dev/null || { echo "FAIL: the ffmpeg CLI is missing (scripts/setup.sh installs it)"; exit 1; }

write_config() { # write_config FILE VIDEO_PATH FRAME_SIZE MASTER_KEYS [EXTRA YAML]
  cat >"$1" <<YML
port: {master: $base, worker: [$((base+1)), $((base+2))]}
net: {m->w0: 'localhost:$((base+1))', m->w1: 'localhost:$((base+2))', w0->w1: 'localhost:$((base+2))'}
dnn: zoo:alexnet
video_path: '$2'
frame_size: $3
mode: dif
master: {pd_num: 2$4}
worker: {prof_niter: 1, threads: 1}
cache_dir: $tmp/cache
trace_dir: ''
${5:-}
YML
}

run() { # run NAME: runs $tmp/NAME.yml; 0 when it exited 0
  if ! timeout $limit "$bin" run -c "$tmp/$1.yml" >"$tmp/$1.out" 2>"$tmp/$1.err"; then
    fail "$1: run exited non-zero"; tail -5 "$tmp/$1.out"; grep -v DEBUG "$tmp/$1.err" | tail -15
    return 1
  fi
}

# 1. A virtual camera, a fixed number of frames.
lavfi='lavfi:testsrc2=size=160x120:rate=30'
write_config "$tmp/virtual.yml" "$lavfi" '[72, 96]' ", ifr_num: $n_frames" 'check: true'
if run virtual; then
  grep -q "^source: $lavfi (virtual device), $n_frames frames read, [0-9]* skipped (drop latest)$" "$tmp/virtual.out" ||
    fail "virtual: no source line: $(grep '^source' "$tmp/virtual.out")"
  grep -q "^frames: $n_frames finished, 0 failed, 0 not sent (of $n_frames), 0 re-sent$" "$tmp/virtual.out" ||
    fail "virtual: not every frame finished: $(grep '^frames' "$tmp/virtual.out")"
  grep -qE "^check: $n_frames frames, max abs error 0, max relative error 0 " "$tmp/virtual.out" ||
    fail "virtual: results differ from full inference: $(grep '^check' "$tmp/virtual.out")"
  echo "virtual camera: $(grep '^throughput' "$tmp/virtual.out")"
fi

# 2. An HTTP stream until its end.  ffmpeg serves one client (-listen 1) and
# starts sending when it connects; the run must not connect before it listens.
ffmpeg -hide_banner -nostdin -loglevel error -re -i "$src/data/sample.mp4" -t 4 -c copy \
  -f mpegts -listen 1 "http://127.0.0.1:$http/live.ts" 2>"$tmp/ffmpeg.err" &
server=$!; pids+=($server)
for _ in $(seq 1 100); do
  ss -ltn 2>/dev/null | grep -q "127.0.0.1:$http " && break
  sleep 0.1
done
url="http://127.0.0.1:$http/live.ts"
write_config "$tmp/stream.yml" "$url" '[72, 96]' "" 'check: true'
if run stream; then
  read_n=$(sed -nE 's/^frames: ([0-9]+) finished, 0 failed, 0 not sent \(of ([0-9]+) read\), 0 re-sent$/\1 \2/p' "$tmp/stream.out")
  set -- $read_n
  { [ -n "${1:-}" ] && [ "$1" = "${2:-}" ] && [ "$1" -gt 0 ]; } ||
    fail "stream: not every frame read finished: $(grep '^frames' "$tmp/stream.out")"
  grep -q "^source: $url (stream), ${1:-?} frames read, [0-9]* skipped (drop latest)$" "$tmp/stream.out" ||
    fail "stream: no source line: $(grep '^source' "$tmp/stream.out")"
  grep -q "master .*$url: the source ended" "$tmp/stream.err" || fail "stream: the end was not logged"
  grep -qE "^check: ${1:-?} frames, max abs error 0, max relative error 0 " "$tmp/stream.out" ||
    fail "stream: results differ from full inference: $(grep '^check' "$tmp/stream.out")"
  echo "stream: $(grep '^source' "$tmp/stream.out"); $(grep '^throughput' "$tmp/stream.out")"
fi
wait $server 2>/dev/null || fail "stream: the ffmpeg server failed: $(cat "$tmp/ffmpeg.err")"

# 3. A source faster than the chain, under each drop policy.
fast='lavfi:testsrc2=size=320x240:rate=200'
for drop in latest none; do
  write_config "$tmp/drop-$drop.yml" "$fast" '[240, 320]' ", ifr_num: $n_drop, drop: $drop" \
    "output: {jsonl: $tmp/drop-$drop.jsonl}"
  run drop-$drop || continue
  skipped=$(sed -nE "s/^source: .*, $n_drop frames read, ([0-9]+) skipped \(drop $drop\)$/\1/p" "$tmp/drop-$drop.out")
  [ -n "$skipped" ] || { fail "drop $drop: no source line: $(grep '^source' "$tmp/drop-$drop.out")"; continue; }
  grep -q "^frames: $n_drop finished, 0 failed" "$tmp/drop-$drop.out" ||
    fail "drop $drop: not every frame finished: $(grep '^frames' "$tmp/drop-$drop.out")"
  # The source frame behind each finished frame, in frame order.
  frames=$(sed -nE 's/.*"frame":([0-9]+),"source_frame":([0-9]+).*/\1 \2/p' "$tmp/drop-$drop.jsonl" |
    sort -n | awk '{printf "%s ", $2}')
  [ "$(wc -w <<<"$frames")" = $n_drop ] || fail "drop $drop: $(wc -w <<<"$frames") JSON lines, expected $n_drop"
  if [ $drop = latest ]; then
    [ "$skipped" -gt 0 ] || fail "drop latest: a 200 fps source and nothing skipped"
    awk -v s="$skipped" '{ gaps = 0; for (i = 2; i <= NF; i++) { if ($i <= $(i-1)) exit 1; gaps += $i - $(i-1) - 1 }
                           if (gaps == 0 || gaps > s) exit 1 }' <<<"$frames" ||
      fail "drop latest: source frames must grow with gaps (at most the $skipped skipped): $frames"
  else
    [ "$skipped" = 0 ] || fail "drop none: $skipped frames skipped"
    [ "$frames" = "$(seq -s ' ' 0 $((n_drop - 1))) " ] || fail "drop none: source frames not 0..$((n_drop - 1)): $frames"
  fi
  echo "drop $drop: $skipped skipped; $(grep '^throughput' "$tmp/drop-$drop.out")"
done

# 4. Sources that cannot be opened fail the run at once, with the source
# and what to check: a camera that is not there, a stream nobody serves.
missing=/dev/video63
while [ -e $missing ]; do missing=$missing-absent; done
closed=$((base+4)) # nothing listens there
for bad in "$missing|$missing: cannot open the camera: No such file or directory (is the camera connected?" \
           "rtsp://admin:s3cret@127.0.0.1:$closed/stream1|rtsp://admin:***@127.0.0.1:$closed/stream1: cannot open the stream: Connection refused (is the server up"; do
  path=${bad%%|*} want=${bad#*|}
  write_config "$tmp/bad.yml" "$path" '[72, 96]' ""
  if timeout $limit "$bin" run -c "$tmp/bad.yml" >"$tmp/bad.out" 2>"$tmp/bad.err"; then
    fail "$path: the run succeeded"
  elif ! grep -qF "master ERROR $want" "$tmp/bad.err"; then
    fail "$path: expected \"$want\" in: $(grep ERROR "$tmp/bad.err" | head -3)"
  elif grep -q s3cret "$tmp/bad.err" "$tmp/bad.out"; then
    fail "$path: the password is in the log"
  fi
done

[ $fails = 0 ] && echo "live: all passed"
exit $((fails > 0))
