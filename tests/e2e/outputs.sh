#!/usr/bin/env bash
# Results reach the user (issue 14): a run's output sinks against
# `deltaslice infer --video` on the same frames.
#  1. zoo:alexnet (a feature map: "summary"), 2 workers, itg then dif, drop
#     none, 12 frames of 64x96 (6 under emulation): every .npy the run writes
#     equals infer's byte for byte (cmp), no other file is left in the folder,
#     and the JSON lines hold frames 0..N-1 once each, source_frame = frame,
#     a capture time and a latency, and "outputs" equal to infer's.
#  2. A small classifier made with python3-onnx (Conv .. GlobalAveragePool,
#     Flatten, Gemm, Softmax: a [1,10] output), labels and top_k 3: the same
#     comparisons, and every line lists 3 labelled classes, highest first.
#     Skipped (said so) without python3-onnx.
# Exit 77 (skipped) without /usr/bin/python3.
set -u
bin=${DS_BIN:?DS_BIN not set}
src=${DS_SOURCE_DIR:?DS_SOURCE_DIR not set}
PY=/usr/bin/python3
"$PY" -c 'import json' 2>/dev/null || { echo "SKIP: $PY is needed to compare the JSON lines"; exit 77; }
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
fails=0
fail() { echo "FAIL: $*"; fails=$((fails+1)); }
base=$((34000 + ($$ % 500) * 4)) # below system.sh's 36000..38000
n=12 limit=300
[ "${DS_EMULATED:-0}" != 0 ] && n=6 limit=900

write_config() { # write_config FILE MODE MODEL OUT_DIR [MORE OUTPUT KEYS]
  cat >"$1" <<YML
port: {master: $base, worker: [$((base+1)), $((base+2))]}
net: {m->w0: 'localhost:$((base+1))', m->w1: 'localhost:$((base+2))', w0->w1: 'localhost:$((base+2))'}
dnn: $3
video_path: $src/data/sample.mp4
frame_size: [64, 96]
mode: $2
master: {ifr_num: $n, pd_num: 2, drop: none}
worker: {prof_niter: 1}
output: {jsonl: $4/out.jsonl, tensors: $4/npy${5:+, $5}}
status_interval: 0
cache_dir: $tmp/cache
trace_dir: ''
YML
}

# compare_jsonl RUN.jsonl REF.jsonl FRAMES [TOP_K]: frames 0..FRAMES-1 once
# each, timed, outputs equal to the reference's; with TOP_K, every 1-D output
# lists TOP_K classes labelled "class<index>", highest score first.
compare_jsonl() {
  "$PY" - "$@" <<'PY'
import json, sys
run, ref, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
top_k = int(sys.argv[4]) if len(sys.argv) > 4 else None
lines = [json.loads(l) for l in open(run, encoding="utf-8")]
want = {l["frame"]: l for l in (json.loads(l) for l in open(ref, encoding="utf-8"))}
frames = sorted(l["frame"] for l in lines)
assert frames == list(range(n)), f"frames {frames}, expected 0..{n - 1} once each"
for l in lines:
    f = l["frame"]
    assert l["source_frame"] == f, f"frame {f}: source_frame {l['source_frame']}"
    assert l["capture_us"] > 0 and l["latency_s"] > 0, f"frame {f}: no capture time or latency"
    assert l["outputs"] == want[f]["outputs"], f"frame {f}: outputs differ:\n{l['outputs']}\n{want[f]['outputs']}"
    for o in l["outputs"]:
        if top_k is None:
            assert "summary" in o, f"frame {f}: no summary in {o}"
            continue
        top = o["top"]
        assert len(top) == top_k, f"frame {f}: {len(top)} classes, expected {top_k}"
        assert all(c["label"] == f"class{c['index']}" for c in top), f"frame {f}: labels {top}"
        assert all(a["score"] >= b["score"] for a, b in zip(top, top[1:])), f"frame {f}: order {top}"
PY
}

# compare_npy RUN_DIR REF_DIR LABEL OUTPUTS: the same file names, N x OUTPUTS
# of them, each equal byte for byte.
compare_npy() {
  local names
  names=$(cd "$1" && ls -A)
  [ "$names" = "$(cd "$2" && ls -A)" ] || { fail "$3: the run wrote other files than infer: $(echo $names | head -c 300)"; return; }
  [ "$(echo "$names" | wc -l)" = $((n * $4)) ] || fail "$3: $(echo "$names" | wc -l) .npy files, expected $((n * $4))"
  local diff=0 f
  for f in $names; do cmp -s "$1/$f" "$2/$f" || diff=$((diff + 1)); done
  [ $diff = 0 ] || fail "$3: $diff of the run's .npy files differ from infer's"
}

# run_and_compare MODEL LABEL OUTPUTS [TOP_K LABELS]
run_and_compare() {
  local model=$1 label=$2 outs=$3 ref=$tmp/ref-$2 more=""
  local iargs=(--video "$src/data/sample.mp4" --frame-size 64x96 --frames $n --tensors "$ref/npy" --jsonl "$ref/out.jsonl")
  if [ $# -gt 3 ]; then
    more="labels: $5, top_k: $4"
    iargs+=(--labels "$5" --top-k "$4")
  fi
  if ! "$bin" infer "$model" "${iargs[@]}" 2>"$tmp/infer-$label.err"; then
    fail "$label: infer --video failed: $(cat "$tmp/infer-$label.err")"; return
  fi
  for mode in itg dif; do
    local out=$tmp/run-$label-$mode
    mkdir -p "$out"
    write_config "$tmp/$label-$mode.yml" $mode "$model" "$out" "$more"
    local before=$fails
    if ! timeout $limit "$bin" run -c "$tmp/$label-$mode.yml" >"$out.out" 2>"$out.err"; then
      fail "$label $mode: run exited non-zero"; tail -20 "$out.out" "$out.err"; continue
    fi
    grep -q "^frames: $n finished, 0 failed, 0 not sent (of $n), 0 re-sent$" "$out.out" ||
      fail "$label $mode: not every frame finished: $(grep '^frames' "$out.out")"
    compare_npy "$out/npy" "$ref/npy" "$label $mode" "$outs"
    compare_jsonl "$out/out.jsonl" "$ref/out.jsonl" $n ${4:-} || fail "$label $mode: JSON lines differ from infer's"
    [ $fails = $before ] &&
      echo "$label $mode ($(sed -nE 's/^model: .*(plan .*)$/\1/p' "$out.out")): $n frames, $(ls "$out/npy" | wc -l) .npy files and $(wc -l <"$out/out.jsonl") JSON lines equal to infer's"
  done
}

# 1. A feature map.
run_and_compare zoo:alexnet alexnet 1

# 2. A classifier's 1-D output.
if "$PY" -c 'import onnx, numpy' 2>/dev/null; then
  "$PY" - "$tmp/tiny.onnx" <<'PY'
import sys, numpy as np, onnx
from onnx import helper, TensorProto, numpy_helper
rng = np.random.default_rng(14)
def w(name, *shape, scale=0.3):
    return numpy_helper.from_array((rng.standard_normal(shape) * scale).astype(np.float32), name)
inits = [w("c1w", 8, 3, 3, 3), w("c1b", 8, scale=0.05), w("c2w", 16, 8, 3, 3, scale=0.2),
         w("c2b", 16, scale=0.05), w("fcw", 10, 16), w("fcb", 10, scale=0.1)]
nodes = [
    helper.make_node("Conv", ["input", "c1w", "c1b"], ["c1"], name="conv1", kernel_shape=[3, 3],
                     strides=[2, 2], pads=[1, 1, 1, 1]),
    helper.make_node("Relu", ["c1"], ["r1"], name="relu1"),
    helper.make_node("MaxPool", ["r1"], ["p1"], name="pool1", kernel_shape=[2, 2], strides=[2, 2]),
    helper.make_node("Conv", ["p1", "c2w", "c2b"], ["c2"], name="conv2", kernel_shape=[3, 3],
                     pads=[1, 1, 1, 1]),
    helper.make_node("Relu", ["c2"], ["r2"], name="relu2"),
    helper.make_node("GlobalAveragePool", ["r2"], ["g"], name="gap"),
    helper.make_node("Flatten", ["g"], ["f"], name="flatten", axis=1),
    helper.make_node("Gemm", ["f", "fcw", "fcb"], ["logits"], name="fc", transB=1),
    helper.make_node("Softmax", ["logits"], ["prob"], name="softmax", axis=-1),
]
graph = helper.make_graph(nodes, "tiny_classifier",
                          [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 3, "H", "W"])],
                          [helper.make_tensor_value_info("prob", TensorProto.FLOAT, [1, 10])], inits)
model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
model.ir_version = 7
onnx.checker.check_model(model)
onnx.save(model, sys.argv[1])
PY
  for i in $(seq 0 9); do echo "class$i"; done >"$tmp/labels.txt"
  run_and_compare "$tmp/tiny.onnx" classifier 1 3 "$tmp/labels.txt"
else
  echo "SKIP part 2: $PY cannot import onnx and numpy (apt-get install python3-onnx)"
fi

[ $fails = 0 ] && echo "outputs: all passed"
exit $((fails > 0))
