#!/usr/bin/env bash
# zoo_onnx_check.sh - every zoo model written by 'deltaslice zoo' passes the
# official ONNX checker (python3-onnx) and ONNX shape inference gives
# torchvision's trunk output shape at 64x96.  Exit 77 = skipped (no python3-onnx).
set -euo pipefail
: "${DS_BIN:?DS_BIN must point to the deltaslice binary}"
PY=/usr/bin/python3
if ! "$PY" -c 'import onnx' 2>/dev/null; then
    echo "SKIP: $PY cannot import onnx (apt-get install python3-onnx)"
    exit 77
fi
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

# name expected-output-shape-at-64x96 (torchvision trunks, worked out by hand)
while read -r name shape; do
    out=$("$DS_BIN" zoo "$name" -o "$tmp/$name.onnx")
    echo "$out"
    case "$out" in *"$name.onnx"*layers*parameters*bytes*) ;; *) echo "FAIL: unexpected summary: $out"; exit 1;; esac
    "$PY" - "$tmp/$name.onnx" "$shape" <<'PYEOF'
import sys, onnx
from onnx import shape_inference
path, want = sys.argv[1], sys.argv[2]
m = onnx.load(path)
onnx.checker.check_model(m)
assert m.opset_import[0].version == 13, m.opset_import
assert [d.dim_param or d.dim_value for d in m.graph.input[0].type.tensor_type.shape.dim] == [1, 3, "H", "W"]
d = m.graph.input[0].type.tensor_type.shape.dim
d[2].dim_value = 64
d[3].dim_value = 96
inf = shape_inference.infer_shapes(m, strict_mode=True)
got = "x".join(str(x.dim_value) for x in inf.graph.output[0].type.tensor_type.shape.dim)
if got != want:
    print("FAIL: %s: output %s at 64x96, expected %s" % (path, got, want))
    sys.exit(1)
print("ok: %s checked, output %s at 64x96" % (path, got))
PYEOF
done <<'LIST'
alexnet 1x256x1x2
vgg16 1x512x2x3
vgg19 1x512x2x3
googlenet 1x1024x2x3
resnet50 1x2048x2x3
LIST

# Usage errors exit 2; the same seed gives the same bytes.
if "$DS_BIN" zoo lenet -o "$tmp/x.onnx" 2>/dev/null; then echo "FAIL: unknown model accepted"; exit 1; fi
set +e
"$DS_BIN" zoo alexnet >/dev/null 2>&1; rc=$?
set -e
[ "$rc" -eq 2 ] || { echo "FAIL: missing -o gave exit $rc, expected 2"; exit 1; }
"$DS_BIN" zoo alexnet --seed 5 -o "$tmp/a.onnx" >/dev/null
"$DS_BIN" zoo zoo:alexnet --seed 5 -o "$tmp/b.onnx" >/dev/null
cmp "$tmp/a.onnx" "$tmp/b.onnx"
"$DS_BIN" zoo --list | grep -qx resnet50
echo "PASS"
