#!/usr/bin/env bash
# Runs without end at constant memory (issue 14).
#  1. A 2-worker dif run (nsc: the trainer is used) of 10,000 small frames:
#     every role's peak memory (VmHWM) near the end is within 1 MB of its
#     peak once 1,000 frames finished (frame records in a fixed window,
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

# The peak resident memory (VmHWM, kB) of every role of run $1 as
# "role kB" lines: the run's children, named by their command line.
peaks_now() {
  for p in $(pgrep -P "$1"); do
    role=$(tr '\0' ' ' <"/proc/$p/cmdline" 2>/dev/null | sed -nE 's/.* (master|trainer|worker)( -i ([0-9]+))?( .*|$)/\1\3/p')
    kb=$(sed -nE 's/^VmHWM:[[:space:]]+([0-9]+) kB/\1/p' "/proc/$p/status" 2>/dev/null)
    [ -n "$role" ] && [ -n "$kb" ] && echo "$role $kb"
  done | sort
}
# The last status line's finished count of log $1 (0 before the first).
finished() {
  grep -oE "status: [0-9]+ finished" "$1" | tail -1 | grep -oE "[0-9]+" || echo 0
}

if [ $sanitized = 0 ]; then
  # One run of $long frames: every role's peak memory once $short frames
  # finished (start-up, profiling and training are behind it by then) and
  # at the end of the run.
  write_config "$tmp/m.yml" $long 1
  t0=$(date +%s)
  "$bin" run -c "$tmp/m.yml" >"$tmp/m.out" 2>"$tmp/m.err" & run_pid=$!; pids+=($run_pid)
  while kill -0 $run_pid 2>/dev/null && [ "$(finished "$tmp/m.err")" -lt $short ]; do sleep 0.2; done
  peaks_now $run_pid >"$tmp/peaks_short"
  at=$(finished "$tmp/m.err")
  last=""
  while kill -0 $run_pid 2>/dev/null; do # the latest reading before the roles exit
    now=$(peaks_now $run_pid)
    [ "$(wc -l <<<"$now")" = 4 ] && last=$now
    sleep 0.5
  done
  rc=0; wait $run_pid || rc=$?
  echo "$long frames in $(( $(date +%s) - t0 )) s: $(grep '^throughput' "$tmp/m.out")"
  [ $rc = 0 ] || { fail "$long frames: run exited $rc"; tail -20 "$tmp/m.out" "$tmp/m.err"; }
  grep -q "^frames: $long finished, 0 failed, 0 not sent (of $long), 0 re-sent$" "$tmp/m.out" ||
    fail "$long frames: not every frame finished: $(grep '^frames' "$tmp/m.out")"
  echo "$last" >"$tmp/peaks_long"
  [ "$(wc -l <"$tmp/peaks_short")" = 4 ] ||
    fail "expected the peak memory of 4 roles after $short frames, got: $(cat "$tmp/peaks_short")"
  [ "$(wc -l <"$tmp/peaks_long")" = 4 ] ||
    fail "expected the peak memory of 4 roles near the end, got: $(cat "$tmp/peaks_long")"
  last_done=$(finished "$tmp/m.err")
  join "$tmp/peaks_short" "$tmp/peaks_long" >"$tmp/peaks" || true
  while read -r role a b; do
    echo "peak memory of $role: after $at frames $((a / 1024)).$(( (a % 1024) * 10 / 1024 )) MB, after $last_done frames $((b / 1024)).$(( (b % 1024) * 10 / 1024 )) MB"
    [ $((b - a)) -le 1024 ] || fail "$role grew by $(( (b - a) / 1024 )).$(( ((b - a) % 1024) * 10 / 1024 )) MB from $at to $last_done frames"
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
