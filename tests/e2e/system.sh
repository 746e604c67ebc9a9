#!/usr/bin/env bash
# The distributed system on loopback: real master and worker processes.
#  1. `run`, 2 workers, 20 small frames (10 under emulation, DS_EMULATED=1),
#     itg then dif, check on: every frame
#     finishes exactly once, the check passes, bytes add up, dif sends less.
#  2. a master started before its workers waits for them and succeeds.
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

write_config() { # write_config FILE MODE
  cat >"$1" <<YML
port: {master: $base, worker: [$((base+1)), $((base+2))]}
net: {m->w0: 'localhost:$((base+1))', m->w1: 'localhost:$((base+2))', w0->w1: 'localhost:$((base+2))'}
dnn: zoo:alexnet
video_path: $src/data/sample.mp4
frame_size: [72, 96]
mode: $2
check: true
master: {ifr_num: $n_frames, pd_num: 2}
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

[ $fails -eq 0 ] && echo "system: all checks passed"
exit $((fails > 0))
