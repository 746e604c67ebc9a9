#!/usr/bin/env bash
# Results by subscription (issue 14): a master with output: {subscribe:
# true, tensors: DIR}, zoo:alexnet, 2 workers, dif, drop none, 12 frames of
# 64x96 (6 under emulation).  The master starts first and serves results
# while it waits for its workers; two examples/subscribe.py attach (they
# retry until the server is up), then the workers start, so no frame
# finishes before they are in place:
#  - the first receives every frame in order (any gap counted as dropped),
#    then the stream ends cleanly (exit 0, "the master ended the stream"):
#    the master ended it OK after the last result;
#  - every .npy it saves (--npy) equals the tensors sink's byte for byte;
#  - the second (--count 2) leaves after two frames, and the run still
#    finishes every frame (exactly once: "frames: 12 finished, 0 failed").
# Exit 77 (skipped) when /usr/bin/python3 lacks grpc, grpc_tools or numpy.
set -u
bin=${DS_BIN:?DS_BIN not set}
src=${DS_SOURCE_DIR:?DS_SOURCE_DIR not set}
PY=/usr/bin/python3
"$PY" -c 'import grpc, grpc_tools, numpy' 2>/dev/null ||
  { echo "SKIP: $PY cannot import grpc, grpc_tools and numpy (apt-get install python3-grpcio python3-grpc-tools python3-numpy)"; exit 77; }
tmp=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null; done; wait 2>/dev/null; rm -rf "$tmp"; }
trap cleanup EXIT
fails=0
fail() { echo "FAIL: $*"; fails=$((fails+1)); }
base=$((42000 + ($$ % 500) * 4)) # above the other scripts' ranges (14000..41000)
n=12 limit=300
[ "${DS_EMULATED:-0}" != 0 ] && n=6 limit=900

cat >"$tmp/run.yml" <<YML
port: {master: $base, worker: [$((base+1)), $((base+2))]}
net: {m->w0: 'localhost:$((base+1))', m->w1: 'localhost:$((base+2))', w0->w1: 'localhost:$((base+2))'}
dnn: zoo:alexnet
video_path: $src/data/sample.mp4
frame_size: [64, 96]
mode: dif
master: {ifr_num: $n, pd_num: 2, drop: none}
worker: {prof_niter: 1}
output: {tensors: $tmp/npy, subscribe: true}
status_interval: 0
cache_dir: $tmp/cache
trace_dir: ''
YML

"$bin" master -c "$tmp/run.yml" >"$tmp/master.out" 2>"$tmp/master.err" &
master=$!
pids+=($master)
"$PY" "$src/examples/subscribe.py" --target "localhost:$base" --npy "$tmp/sub" --wait $limit \
  >"$tmp/sub.out" 2>"$tmp/sub.err" &
sub=$!
pids+=($sub)
"$PY" "$src/examples/subscribe.py" --target "localhost:$base" --count 2 --wait $limit \
  >"$tmp/early.out" 2>"$tmp/early.err" &
early=$!
pids+=($early)
for _ in $(seq $((limit * 10))); do
  [ "$(grep -c 'results subscriber .* connected' "$tmp/master.err")" -ge 2 ] && break
  kill -0 $master 2>/dev/null || break
  sleep 0.1
done
grep -q "serving results on localhost:$base (plaintext)" "$tmp/master.err" ||
  fail "the master did not say where it serves results: $(cat "$tmp/master.err")"
[ "$(grep -c 'results subscriber .* connected' "$tmp/master.err")" = 2 ] ||
  fail "the subscribers did not attach: $(cat "$tmp/sub.err" "$tmp/early.err")"
for i in 0 1; do "$bin" worker -i $i -c "$tmp/run.yml" 2>"$tmp/w$i.err" & pids+=($!); done

timeout $limit tail --pid=$master -f /dev/null || { fail "the master did not finish in $limit s"; kill $master; }
wait $master || { fail "master exited non-zero"; tail -20 "$tmp/master.out" "$tmp/master.err"; }
grep -q "^frames: $n finished, 0 failed, 0 not sent (of $n), 0 re-sent$" "$tmp/master.out" ||
  fail "not every frame finished: $(grep '^frames' "$tmp/master.out")"

wait $sub || fail "subscribe.py exited $?: $(cat "$tmp/sub.err")"
grep -q "the master ended the stream" "$tmp/sub.err" || fail "the stream did not end cleanly: $(cat "$tmp/sub.err")"
wait $early || fail "subscribe.py --count 2 exited $?: $(cat "$tmp/early.err")"
[ "$(wc -l <"$tmp/early.out")" = 2 ] || fail "subscribe.py --count 2 printed $(wc -l <"$tmp/early.out") lines"

# In order, and every frame either received or counted as dropped.
"$PY" - "$tmp/sub.out" "$n" <<'PY' || fail "subscriber's frames: see above"
import re, sys
lines = open(sys.argv[1]).read().splitlines()
n = int(sys.argv[2])
frames, dropped = [], 0
for l in lines:
    m = re.match(r"frame (\d+) \(source (\d+)\) latency ([0-9.]+) s: (.*?)(?: \((\d+) dropped so far\))?$", l)
    assert m, "unexpected line: " + l
    frames.append(int(m.group(1)))
    assert m.group(2) == m.group(1), "source frame differs: " + l
    assert m.group(4) != "no outputs", "no outputs: " + l
    dropped = int(m.group(5) or 0)
assert frames, "no frame received"
assert frames == sorted(set(frames)), f"frames out of order or twice: {frames}"
assert frames[-1] == n - 1, f"the last frame ({n - 1}) did not arrive: {frames}"
missed = n - len(frames)
assert missed == dropped, f"{missed} frames missing, {dropped} counted as dropped: {frames}"
print(f"subscriber: {len(frames)} frames ({frames[0]}..{frames[-1]}), {dropped} dropped")
PY

got=$(cd "$tmp/sub" 2>/dev/null && ls -A)
[ -n "$got" ] || fail "the subscriber saved no .npy file"
same=0
for f in $got; do
  if [ ! -f "$tmp/npy/$f" ]; then fail "$f: the tensors sink has no such file"
  elif cmp -s "$tmp/sub/$f" "$tmp/npy/$f"; then same=$((same+1))
  else fail "$f differs from the tensors sink's"; fi
done
echo "subscriber: $same .npy files equal to the tensors sink's (of $(ls "$tmp/npy" | wc -l))"

[ $fails = 0 ] && echo "subscribe: ok"
exit $((fails > 0))
