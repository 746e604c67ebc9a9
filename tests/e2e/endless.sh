#!/usr/bin/env bash
# Runs without end at constant memory (issue 14).
#  1. The same 2-worker dif run (nsc: the trainer is used) for 1,000 and for
#     10,000 small frames: every role's peak memory after 10,000 frames is
#     within 1 MB of its peak after 1,000 (frame records in a fixed window,
#     latency statistics in fixed histograms).  Release builds only: a
#     sanitizer's quarantine keeps freed memory on purpose.
#  2. An endless run (ifr_num 0 on a looping clip) with status lines every
#     second, stopped by SIGINT: it finishes the frames in flight and exits
#     0, its summary counts every frame read, and it printed status lines.
set -u
bin=${DS_BIN:?DS_BIN not set}
src=${DS_SOURCE_DIR:?DS_SOURCE_DIR not set}
tmp=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null; done; wait 2>/dev/null; rm -rf "$tmp"; }
trap cleanup EXIT
fails=0
fail() { echo "FAIL: $*"; fails=$((fails+1)); }
base=$((39000 + ($$ % 400) * 5))
sanitized=0
grep -qa __asan_init "$bin" 2>/dev/null && sanitized=1
short=1000 long=10000
[ "${DS_EMULATED:-0}" != 0 ] && short=100 long=1000

write_config() { # write_config FILE FRAMES [STATUS INTERVAL]
  cat >"$1" <<YML
port: {master: $base, trainer: $((base+3)), worker: [$((base+1)), $((base+2))]}
net: {m->t: 'localhost:$((base+3))', m->w0: 'localhost:$((base+1))', m->w1: 'localhost:$((base+2))', w0->w1: 'localhost:$((base+2))'}
dnn: zoo:alexnet
video_path: $src/data/sample.mp4
frame_size: [64, 64]
mode: dif
master: {ifr_num: $2, pd_num: 2, scheduler: nsc}
worker: {prof_niter: 1}
trainer: {frame_num: 10, threads: 1}
status_interval: ${3:-0}
cache_dir: $tmp/cache
trace_dir: ''
YML
}

# "peak memory 67.5 MB" of each role in a run's log, as "role kB" lines.
peaks() {
  sed -nE 's/^[0-9-]+ [0-9:.]+ (master|worker[0-9]+|trainer) +INFO +peak memory ([0-9.]+) MB$/\1 \2/p' "$1" |
    awk '{printf "%s %d\n", $1, $2 * 1024}' | sort
}

if [ $sanitized = 0 ]; then
  # A first short run profiles the workers and trains the predictors, so
  # the two measured runs both start from the caches.
  write_config "$tmp/warm.yml" 20
  timeout 600 "$bin" run -c "$tmp/warm.yml" >"$tmp/warm.out" 2>"$tmp/warm.err" ||
    fail "warm-up run exited non-zero: $(tail -5 "$tmp/warm.err")"
  for n in $short $long; do
    write_config "$tmp/m$n.yml" $n
    t0=$(date +%s)
    if ! timeout 600 "$bin" run -c "$tmp/m$n.yml" >"$tmp/m$n.out" 2>"$tmp/m$n.err"; then
      fail "$n frames: run exited non-zero"; tail -20 "$tmp/m$n.out" "$tmp/m$n.err"; continue
    fi
    echo "$n frames in $(( $(date +%s) - t0 )) s: $(grep '^throughput' "$tmp/m$n.out")"
    grep -q "^frames: $n finished, 0 failed, 0 not sent (of $n), 0 re-sent$" "$tmp/m$n.out" ||
      fail "$n frames: not every frame finished: $(grep '^frames' "$tmp/m$n.out")"
    peaks "$tmp/m$n.err" >"$tmp/peaks$n"
  done
  roles=$(wc -l <"$tmp/peaks$short")
  [ "$roles" = 4 ] || fail "expected the peak memory of 4 roles, got: $(cat "$tmp/peaks$short")"
  join "$tmp/peaks$short" "$tmp/peaks$long" >"$tmp/peaks" || true
  while read -r role a b; do
    echo "peak memory of $role: $short frames $((a / 1024)).$(( (a % 1024) * 10 / 1024 )) MB, $long frames $((b / 1024)).$(( (b % 1024) * 10 / 1024 )) MB"
    d=$((b - a)); d=${d#-}
    [ $d -le 1024 ] || fail "$role: peak memory differs by $((d / 1024)).$(( (d % 1024) * 10 / 1024 )) MB between $short and $long frames"
  done <"$tmp/peaks"
else
  echo "sanitizer build: peak memory is not compared (the quarantine keeps freed memory)"
fi

# 2. Endless, stopped by a signal.
write_config "$tmp/e.yml" 0 1
"$bin" run -c "$tmp/e.yml" >"$tmp/e.out" 2>"$tmp/e.err" & pid=$!; pids+=($pid)
for _ in $(seq 1 600); do
  grep -q "status: " "$tmp/e.err" && grep -q "status: [1-9]" "$tmp/e.err" && break
  kill -0 $pid 2>/dev/null || break
  sleep 0.5
done
sleep 2
kill -INT $pid
t0=$(date +%s)
rc=0; wait $pid || rc=$?
took=$(( $(date +%s) - t0 ))
[ $took -le 30 ] || fail "endless run: took $took s to stop after SIGINT (it should only finish the frames in flight)"
[ $rc = 0 ] || { fail "endless run: exit $rc after SIGINT"; tail -20 "$tmp/e.err"; }
read_n=$(sed -nE 's/^frames: ([0-9]+) finished, 0 failed, 0 not sent \(of ([0-9]+) read\), [0-9]+ re-sent$/\1 \2/p' "$tmp/e.out")
set -- $read_n
{ [ -n "${1:-}" ] && [ "$1" = "${2:-}" ] && [ "$1" -gt 0 ]; } ||
  fail "endless run: not every frame read finished: $(grep '^frames' "$tmp/e.out")"
grep -qE "master +INFO +status: [0-9]+ finished, 0 skipped, 0 failed; last [0-9]+ s: [0-9.]+ frames/s, latency p50 [0-9.]+ s, p95 [0-9.]+ s, m->w0 [0-9.]+ MB/s" "$tmp/e.err" ||
  fail "endless run: no status line: $(grep status "$tmp/e.err" | head -3)"
grep -q "stopping: finishing the frames in flight" "$tmp/e.err" || fail "endless run: the signal did not drain"
echo "endless run: ${1:-?} frames, $(grep -c 'status: ' "$tmp/e.err") status lines"

[ $fails = 0 ] && echo "endless: all passed"
exit $((fails > 0))
