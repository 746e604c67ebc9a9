#!/usr/bin/env bash
# The distributed system on loopback: real master and worker processes.
#  1. `run`, 2 workers, 20 small frames (10 under emulation, DS_EMULATED=1),
#     itg then dif, check on: every frame
#     finishes exactly once, the check passes, bytes add up, dif sends less.
#  2. a master started before its workers waits for them and succeeds.
#  3. `run` restarts a worker killed (-9) mid-run; the master takes it back
#     and every frame finishes once, with zero error.
set -u
bin=${DS_BIN:?DS_BIN not set}
src=${DS_SOURCE_DIR:?DS_SOURCE_DIR not set}
tmp=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null; done; wait 2>/dev/null; rm -rf "$tmp"; }
trap cleanup EXIT
fails=0
fail() { echo "FAIL: $*"; fails=$((fails+1)); }
base=$((36000 + ($$ % 500) * 4))
n_frames=20 limit=120
[ "${DS_EMULATED:-0}" != 0 ] && n_frames=10 limit=900

write_config() { # write_config FILE MODE [FRAMES [SECONDS BETWEEN SENDS]]
  cat >"$1" <<YML
port: {master: $base, worker: [$((base+1)), $((base+2))]}
net: {m->w0: 'localhost:$((base+1))', m->w1: 'localhost:$((base+2))', w0->w1: 'localhost:$((base+2))'}
dnn: zoo:alexnet
video_path: $src/data/sample.mp4
frame_size: [72, 96]
mode: $2
check: true
master: {ifr_num: ${3:-$n_frames}, pd_num: 2, itv_time: ${4:-0}}
worker: {prof_niter: 1}
cache_dir: $tmp/cache
trace_dir: $tmp/trace-$2
YML
}

field() { # field FILE REGEX -> first capture group
  sed -nE "s|$2|\1|p" "$1" | head -1
}

for mode in itg dif; do
  write_config "$tmp/$mode.yml" $mode
  if ! timeout $limit "$bin" run -c "$tmp/$mode.yml" >"$tmp/$mode.out" 2>"$tmp/$mode.err"; then
    fail "$mode: run exited non-zero"; cat "$tmp/$mode.out" "$tmp/$mode.err"; continue
  fi
  grep -q "^frames: $n_frames finished, 0 failed, 0 not sent (of $n_frames), 0 re-sent$" "$tmp/$mode.out" || fail "$mode: not every frame finished"
  grep -qE "^check: $n_frames frames, max abs error 0, max relative error 0 " "$tmp/$mode.out" ||
    fail "$mode: results differ from full inference"
  # Every frame executed exactly once on each worker with work, and finished once.
  for w in worker0 worker1; do
    n=$(grep -c " execute finish$" "$tmp/trace-$mode/$w.tc")
    [ "$n" = $n_frames ] || fail "$mode: $w executed $n frames, expected $n_frames"
    dup=$(awk '$3=="execute" && $4=="finish" {print $2}' "$tmp/trace-$mode/$w.tc" | sort | uniq -d | wc -l)
    [ "$dup" = 0 ] || fail "$mode: $w executed a frame twice"
  done
  n=$(grep -c " finish finish$" "$tmp/trace-$mode/master.tc")
  [ "$n" = $n_frames ] || fail "$mode: master saw $n finished frames, expected $n_frames"
  # Bytes add up: per frame x frames = total, for every link.
  while read -r link per total; do
    awk -v p="$per" -v t="$total" -v n=$n_frames 'BEGIN { d = p * n / 1000 - t; exit !(d < 0.01 && d > -0.01) }' ||
      fail "$mode: bytes on $link: $per KB/frame x $n_frames != $total MB"
  done < <(sed -nE 's/^bytes ([^:]+): ([0-9.]+) KB\/frame, ([0-9.]+) MB total$/\1 \2 \3/p' "$tmp/$mode.out")
  for link in "m->w0" "w0->w1" "w1->m"; do
    grep -q "^bytes $link: " "$tmp/$mode.out" || fail "$mode: no byte count for $link"
  done
done
itg=$(field "$tmp/itg.out" '^bytes m->w0: ([0-9.]+) KB/frame.*')
dif=$(field "$tmp/dif.out" '^bytes m->w0: ([0-9.]+) KB/frame.*')
awk -v a="$dif" -v b="$itg" 'BEGIN { exit !(a < b) }' || fail "dif sends $dif KB/frame to w0, itg $itg"

# 2. Master first: it waits for the workers, saying so once.
write_config "$tmp/late.yml" dif
"$bin" master -c "$tmp/late.yml" >"$tmp/late.out" 2>"$tmp/late.err" &
master=$!
pids+=($master)
sleep 1.5
for i in 0 1; do "$bin" worker -i $i -c "$tmp/late.yml" 2>"$tmp/late-w$i.err" & pids+=($!); done
if ! wait $master; then fail "late workers: master failed"; cat "$tmp/late.out" "$tmp/late.err"; fi
n=$(grep -c "waiting for w0" "$tmp/late.err")
[ "$n" = 1 ] || fail "late workers: 'waiting for w0' logged $n times"
grep -q "^frames: $n_frames finished" "$tmp/late.out" || fail "late workers: frames did not finish"
# Workers stop cleanly on SIGTERM.
for p in "${pids[@]:1}"; do kill -TERM "$p"; done
for p in "${pids[@]:1}"; do wait "$p" || fail "a worker did not exit 0 on SIGTERM"; done
pids=()

# 3. `run` restarts a worker killed mid-run (200 frames, 0.02 s apart: long
#    enough for the restart and the master taking the worker back).
wait_log() { # wait_log FILE REGEX SECONDS PID: until FILE matches, while PID lives
  local end=$((SECONDS + $3))
  until grep -qE "$2" "$1"; do
    kill -0 "$4" 2>/dev/null && [ $SECONDS -lt $end ] || return 1
    sleep 0.1
  done
}
write_config "$tmp/restart.yml" dif 200 0.02
"$bin" run -c "$tmp/restart.yml" >"$tmp/restart.out" 2>"$tmp/restart.err" & run=$!
pids+=($run)
if wait_log "$tmp/restart.err" "master INFO .*epoch 1: plan" $limit $run; then
  sleep 1 # mid-run: past the first frames, which pay the workers' warm-up
  w1=$(ps -o pid=,args= --ppid $run | awk '/ worker -i 1( |$)/ {print $1; exit}')
  [ -n "$w1" ] && kill -KILL "$w1" || fail "restart: no worker1 child of run"
  wait_log "$tmp/restart.err" "master INFO +w1 is back" $limit $run ||
    fail "restart: the run ended before w1 was back: make it longer"
else
  fail "restart: the master did not start sending"
fi
wait $run || fail "restart: run exited non-zero"
pids=()
grep -q "run WARN  worker1 was killed by signal 9 (Killed); restarting it in 1.0 s$" "$tmp/restart.err" ||
  fail "restart: run did not log worker1's restart"
grep -q "run INFO  restarted worker1 " "$tmp/restart.err" || fail "restart: worker1 not restarted"
grep -qE "^frames: 200 finished, 0 failed, 0 not sent \(of 200\), [0-9]+ re-sent$" "$tmp/restart.out" ||
  fail "restart: not every frame finished"
grep -qE "^faults: 1 worker losses, 1 taken back, " "$tmp/restart.out" || fail "restart: w1 not lost and taken back once"
grep -qE "^check: 200 frames, max abs error 0, max relative error 0 " "$tmp/restart.out" ||
  fail "restart: results differ from full inference"
n=$(grep -c " finish finish$" "$tmp/trace-dif/master.tc")
m=$(awk '$3=="finish" && $4=="finish" {print $2}' "$tmp/trace-dif/master.tc" | sort -u | wc -l)
[ "$n" = 200 ] && [ "$m" = 200 ] || fail "restart: master finished $n frames ($m distinct), expected 200 once each"
[ $fails -ne 0 ] && { cat "$tmp/restart.out"; grep -E "run |master (WARN|ERROR)" "$tmp/restart.err"; }

[ $fails -eq 0 ] && echo "system: all checks passed"
exit $((fails > 0))
