#!/usr/bin/env bash
# deltaslice dag: zoo:alexnet and zoo:googlenet as Graphviz source and SVG.
# Expected counts follow torchvision's structure (BN folded into convs):
#   alexnet.features: input + 13 layers, a chain: 14 nodes, 13 edges, every
#     layer an articulation point.
#   googlenet: input, conv1+relu, maxpool1, conv2+relu, conv3+relu, maxpool2
#     (9), 9 inception blocks of 14 layers (branch1 conv+relu, branches 2 and
#     3 conv+relu+conv+relu, branch4 pool+conv+relu, concat), maxpool3 and
#     maxpool4: 137 nodes; edges 8 (stem) + 9 x 17 (4 fan-out, 1+3+3+2
#     inside, 4 into the concat) + 2 (into the two pools) = 163; articulation
#     layers: the 9 of the stem, the 9 concats and the 2 pools = 20.
set -u
bin=${DS_BIN:?DS_BIN not set}
py=/usr/bin/python3
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
fails=0
fail() { echo "FAIL: $*"; fails=$((fails+1)); }
run() { # run DESCRIPTION EXPECTED_STATUS CMD...
  local what=$1 want=$2; shift 2
  "$@" >"$tmp/out" 2>"$tmp/err"; local got=$?
  [ "$got" = "$want" ] || { fail "$what: exit $got, expected $want"; cat "$tmp/out" "$tmp/err"; }
}

check_dot() { # check_dot FILE NODES EDGES ARTICULATIONS
  local nodes edges arts
  nodes=$(grep -cE '^  L[0-9]+ \[label=' "$1")
  edges=$(grep -cE '^  L[0-9]+ -> L[0-9]+;$' "$1")
  arts=$(grep -c 'peripheries=2' "$1")
  [ "$nodes $edges $arts" = "$2 $3 $4" ] ||
    fail "$1: $nodes nodes, $edges edges, $arts articulation marks; expected $2 $3 $4"
}

check_svg() { # check_svg FILE NODES EDGES ARTICULATIONS [PROFILED]
  "$py" - "$@" <<'PY' || fails=$((fails+1))
import sys, xml.etree.ElementTree as ET
path, nodes, edges, arts = sys.argv[1], *map(int, sys.argv[2:5])
profiled = len(sys.argv) > 5
ns = "{http://www.w3.org/2000/svg}"
root = ET.parse(path).getroot()
groups = [g.get("class", "") for g in root.iter(ns + "g")]
got = (sum(c.startswith("node") for c in groups), groups.count("edge"),
       sum("articulation" in c.split() for c in groups))
ok = got == (nodes, edges, arts)
if not ok:
    print("FAIL: %s: %d nodes, %d edges, %d articulation marks; expected %d %d %d" % (path, *got, nodes, edges, arts))
text = " ".join(t.text or "" for t in root.iter(ns + "text"))
for want in ["Conv", "FLOP"] + (["ms ("] if profiled else []):
    if want not in text:
        print("FAIL: %s: no %r in the node labels" % (path, want)); ok = False
sys.exit(0 if ok else 1)
PY
}

run "alexnet dot" 0 "$bin" dag zoo:alexnet -o "$tmp/alexnet.dot" --runs 0
check_dot "$tmp/alexnet.dot" 14 13 14
grep -q '1x256x14x21' "$tmp/alexnet.dot" || fail "alexnet: last output shape at 480x720 missing"
run "googlenet dot" 0 "$bin" dag zoo:googlenet -o "$tmp/googlenet.dot" --runs 0 --size 224x224
check_dot "$tmp/googlenet.dot" 137 163 20
grep -q 'inception5b.concat.*1x1024x7x7' "$tmp/googlenet.dot" || fail "googlenet: 5b concat shape at 224x224"
if command -v dot >/dev/null; then
  run "alexnet svg" 0 "$bin" dag zoo:alexnet -o "$tmp/alexnet.svg" --runs 1 --size 96x128
  check_svg "$tmp/alexnet.svg" 14 13 14 profiled
  run "googlenet svg" 0 "$bin" dag zoo:googlenet -o "$tmp/googlenet.svg" --runs 1 --size 64x96
  check_svg "$tmp/googlenet.svg" 137 163 20 profiled
  grep -q "timed with" "$tmp/googlenet.svg" || fail "googlenet: fused relus not marked"
else
  echo "dag: 'dot' (graphviz) not installed: SVG checks skipped"
fi

# Errors.
PATH=/nonexistent run "svg without dot" 1 "$bin" dag zoo:alexnet -o "$tmp/x.svg" --runs 0
grep -q "install the graphviz package" "$tmp/err" || fail "missing dot message: $(cat "$tmp/err")"
run "unknown model" 1 "$bin" dag zoo:nonet -o "$tmp/x.dot" --runs 0
[ -s "$tmp/err" ] || fail "unknown model: no message"
run "missing file" 1 "$bin" dag "$tmp/none.onnx" -o "$tmp/x.dot" --runs 0
run "too small" 1 "$bin" dag zoo:alexnet -o "$tmp/x.dot" --runs 0 --size 8x8
grep -q "at 8x8" "$tmp/err" || fail "small size message: $(cat "$tmp/err")"
[ ! -e "$tmp/x.dot" ] || fail "failed runs left an output file"
run "bad size" 2 "$bin" dag zoo:alexnet -o "$tmp/x.dot" --size 480
run "huge size" 2 "$bin" dag zoo:alexnet -o "$tmp/x.dot" --size 99999x2
run "bad runs" 2 "$bin" dag zoo:alexnet -o "$tmp/x.dot" --runs -1
run "bad format" 2 "$bin" dag zoo:alexnet -o "$tmp/x.png"
run "no output" 2 "$bin" dag zoo:alexnet
run "no model" 2 "$bin" dag -o "$tmp/x.dot"
run "help" 0 "$bin" dag --help
grep -q "usage: deltaslice dag" "$tmp/out" || fail "help text"

[ $fails -eq 0 ] && echo "dag: all checks passed"
exit $((fails > 0))
