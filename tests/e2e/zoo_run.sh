#!/usr/bin/env bash
# Every zoo model of issue 15 runs end to end: `deltaslice run` with two
# workers, dif, check on, 8 frames of 64x96 (4 under emulation). Every frame
# finishes, the results equal full inference exactly, and the plan puts
# layers on both workers (a cut inside the model, not only at its ends).
# A name `deltaslice zoo --list` does not know is reported and skipped.
set -u
bin=${DS_BIN:?DS_BIN not set}
src=${DS_SOURCE_DIR:?DS_SOURCE_DIR not set}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
fails=0 ran=0
fail() { echo "FAIL: $*"; fails=$((fails+1)); }
base=$((33000 + ($$ % 500) * 2)) # below outputs.sh's 34000..36000
n=8 limit=300
[ "${DS_EMULATED:-0}" != 0 ] && n=4 limit=1200
known=" $("$bin" zoo --list | tr '\n' ' ') "

for model in mobilenet_v2 mobilenet_v3_small shufflenet_v2 efficientnet_b0 squeezenet1_1 resnet18 yolo_n; do
  case "$known" in *" $model "*) ;; *) echo "skip: zoo:$model is not in this build's zoo"; continue;; esac
  cat >"$tmp/$model.yml" <<YML
port: {master: $base, worker: [$((base+1)), $((base+2))]}
net: {m->w0: 'localhost:$((base+1))', m->w1: 'localhost:$((base+2))', w0->w1: 'localhost:$((base+2))'}
dnn: zoo:$model
video_path: $src/data/sample.mp4
frame_size: [64, 96]
mode: dif
check: true
master: {ifr_num: $n, pd_num: 2, drop: none}
worker: {prof_niter: 1}
status_interval: 0
cache_dir: $tmp/cache
trace_dir: $tmp/trace-$model
YML
  ran=$((ran+1))
  if ! timeout $limit "$bin" run -c "$tmp/$model.yml" >"$tmp/$model.out" 2>"$tmp/$model.err"; then
    fail "$model: run exited non-zero"; tail -n 5 "$tmp/$model.out" "$tmp/$model.err"; continue
  fi
  grep -q "^frames: $n finished, 0 failed, 0 not sent (of $n), 0 re-sent$" "$tmp/$model.out" ||
    fail "$model: not every frame finished: $(grep '^frames:' "$tmp/$model.out")"
  grep -qE "^check: $n frames, max abs error 0, max relative error 0 " "$tmp/$model.out" ||
    fail "$model: results differ from full inference: $(grep '^check:' "$tmp/$model.out")"
  for w in worker0 worker1; do
    e=$(grep -c " execute finish$" "$tmp/trace-$model/$w.tc" 2>/dev/null)
    [ "${e:-0}" -gt 0 ] || fail "$model: $w executed nothing (plan: $(grep -m1 '^plan' "$tmp/$model.out"))"
  done
  echo "$model: $(grep '^check:' "$tmp/$model.out")"
done
[ $ran -gt 0 ] || { echo "SKIP: none of the issue-15 models is in this build's zoo"; exit 77; }
[ $fails -eq 0 ] && echo "zoo_run: $ran models ran end to end, exact"
[ $fails -eq 0 ]
