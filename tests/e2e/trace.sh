#!/usr/bin/env bash
# deltaslice trace: merges the fixture traces (3 frames over master, worker0,
# worker1) into Chrome trace-event JSON and SVG; the set with skewed clocks
# (worker1 2.5 s ahead with '# clock master' lines in its file, worker0
# 1.2 ms behind with a '# clock worker0' line in the master's file) must give
# exactly the same timeline as the set on one clock.
set -u
bin=${DS_BIN:?DS_BIN not set}
src=${DS_SOURCE_DIR:?DS_SOURCE_DIR not set}
py=/usr/bin/python3
data=$src/tests/data/traces
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
fails=0
fail() { echo "FAIL: $*"; fails=$((fails+1)); }
run() { # run DESCRIPTION EXPECTED_STATUS CMD...
  local what=$1 want=$2; shift 2
  "$@" >"$tmp/out" 2>"$tmp/err"; local got=$?
  [ "$got" = "$want" ] || { fail "$what: exit $got, expected $want"; cat "$tmp/out" "$tmp/err"; }
}

for set in aligned skewed; do
  run "$set json" 0 "$bin" trace "$data/$set"/*.tc -o "$tmp/$set.json"
  run "$set svg" 0 "$bin" trace "$data/$set"/*.tc -o "$tmp/$set.svg"
done
grep -q "worker1: -2.500000 s" "$tmp/out" || fail "skewed: shift of worker1 not reported"
grep -q "worker0: +0.001200 s" "$tmp/out" || fail "skewed: shift of worker0 not reported"

# The JSON: tracks in chain order, 15 slices per frame, times aligned.
"$py" - "$tmp/aligned.json" "$tmp/skewed.json" <<'PY' || fails=$((fails+1))
import json, sys
docs = [json.load(open(p)) for p in sys.argv[1:]]
def slices(doc):
    names = {e["tid"]: e["args"]["name"] for e in doc["traceEvents"]
             if e["ph"] == "M" and e["name"] == "thread_name"}
    out = []
    for e in doc["traceEvents"]:
        if e["ph"] == "X":
            assert isinstance(e["ts"], int) and isinstance(e["dur"], int) and e["dur"] >= 0, e
            track = names[e["tid"]].split(" #")[0]  # lanes of one track: "latency #2"
            out.append((track, e["args"]["frame"], e["cat"], e["ts"], e["dur"]))
    return names, sorted(out)
ok = True
names, a = slices(docs[0])
# Frames in flight overlap on the latency track: three lanes.
want = ["m", "m→w0", "w0:receive", "w0", "w0→w1", "w1:receive", "w1", "w1→m", "latency",
        "latency #2", "latency #3"]
if [names[t] for t in sorted(names)] != want:
    print("FAIL: tracks", [names[t] for t in sorted(names)], "expected", want); ok = False
if len(a) != 45:
    print("FAIL: %d slices, expected 45 (15 per frame)" % len(a)); ok = False
for track, n in {"m": 9, "m→w0": 3, "w0:receive": 3, "w0": 9, "w0→w1": 3, "w1": 9, "w1→m": 3,
                 "latency": 3}.items():
    got = sum(1 for s in a if s[0] == track)
    if got != n:
        print("FAIL: track %s has %d slices, expected %d" % (track, got, n)); ok = False
# Links run from the send start to the receiver's arrival: m→w0 of frame 0
# is 15 ms .. 40 ms, w0→w1 100 .. 150 ms, w1→m 205 .. 215 ms (the end of
# the master's finish stage, which spans 9 .. 215 ms).
for track, ts, dur in (("m→w0", 15000, 25000), ("w0→w1", 100000, 50000), ("w1→m", 205000, 10000),
                       ("latency", 9000, 206000)):
    s = [x for x in a if x[0] == track and x[1] == 0]
    if not s or s[0][3:] != (ts, dur):
        print("FAIL: frame 0 on %s: %s, expected ts %d dur %d" % (track, s, ts, dur)); ok = False
_, b = slices(docs[1])
if a != b:
    print("FAIL: skewed set differs after alignment:")
    for x, y in zip(a, b):
        if x != y: print("  aligned", x, "skewed", y)
    ok = False
# On the master's clock every frame moves down the chain in order.
for f in range(3):
    order = ["m→w0", "w0", "w0→w1", "w1", "w1→m"]
    starts = [min(s[3] for s in b if s[0] == t and s[1] == f) for t in order]
    if starts != sorted(starts):
        print("FAIL: frame %d out of order along the chain: %s" % (f, starts)); ok = False
    w1 = [s for s in b if s[0] == "w1" and s[1] == f]
    back = [s for s in b if s[0] == "w1→m" and s[1] == f][0]
    if max(s[3] + s[4] for s in w1) > back[3] + back[4]:
        print("FAIL: frame %d: worker1 ends after the result arrived" % f); ok = False
sys.exit(0 if ok else 1)
PY

# The SVG: well-formed XML, one rect per slice, a label per track.
"$py" - "$tmp/skewed.svg" <<'PY' || fails=$((fails+1))
import sys, xml.etree.ElementTree as ET
root = ET.parse(sys.argv[1]).getroot()
ns = "{http://www.w3.org/2000/svg}"
rects = [r for r in root.iter(ns + "rect") if r.get("class") == "s"]
texts = [t.text for t in root.iter(ns + "text")]
ok = True
if len(rects) != 45:
    print("FAIL: %d slice rects, expected 45" % len(rects)); ok = False
for t in ["m", "m→w0", "w0:receive", "w0", "w0→w1", "w1", "w1→m", "latency", "time (s)"]:
    if t not in texts:
        print("FAIL: no label %r" % t); ok = False
colours = {r.get("fill") for r in rects}
if len(colours) != 3:
    print("FAIL: %d slice colours, expected one per frame (3)" % len(colours)); ok = False
sys.exit(0 if ok else 1)
PY

# Without alignment worker1's slices sit 2.5 s later.
run "no-align" 0 "$bin" trace --no-align "$data/skewed"/*.tc -o "$tmp/raw.json"
"$py" -c '
import json, sys
d = json.load(open(sys.argv[1]))
end = max(e["ts"] + e["dur"] for e in d["traceEvents"] if e["ph"] == "X")
sys.exit(0 if end > 2500000 else 1)' "$tmp/raw.json" || fail "--no-align: worker1 not left on its own clock"

# Errors: file:line, exit 1; usage errors exit 2.
run "bad phase" 1 "$bin" trace "$data/bad/worker0.tc" -o "$tmp/x.json"
grep -q "bad/worker0.tc:4: bad phase 'begin'" "$tmp/err" || { fail "bad phase message"; cat "$tmp/err"; }
[ ! -e "$tmp/x.json" ] || fail "bad input left an output file"
printf '# deltaslice trace v1 service=worker0\n1 0 decode start\n%05000d 0 decode finish\n' 7 >"$tmp/long.tc"
run "long line" 1 "$bin" trace "$tmp/long.tc" -o "$tmp/x.json"
grep -q "long.tc:3: line longer than" "$tmp/err" || { fail "long line message"; cat "$tmp/err"; }
printf '# deltaslice trace v1 service=worker0\n99999999999999999999999 0 decode start\n' >"$tmp/huge.tc"
run "huge number" 1 "$bin" trace "$tmp/huge.tc" -o "$tmp/x.json"
grep -q "huge.tc:2: bad time" "$tmp/err" || { fail "huge number message"; cat "$tmp/err"; }
run "duplicate service" 1 "$bin" trace "$data/aligned/master.tc" "$data/skewed/master.tc" -o "$tmp/x.json"
grep -q "service master already read from" "$tmp/err" || { fail "duplicate service message"; cat "$tmp/err"; }
run "missing file" 1 "$bin" trace "$tmp/nope.tc" -o "$tmp/x.json"
grep -q "nope.tc: cannot open" "$tmp/err" || { fail "missing file message"; cat "$tmp/err"; }
run "no output" 2 "$bin" trace "$data/aligned/master.tc"
run "no input" 2 "$bin" trace -o "$tmp/x.json"
run "unknown format" 2 "$bin" trace "$data/aligned/master.tc" -o "$tmp/x.png"
run "bad option" 2 "$bin" trace --bogus
run "help" 0 "$bin" trace --help
grep -q "usage: deltaslice trace" "$tmp/out" || fail "help text"

[ $fails -eq 0 ] && echo "trace: all checks passed"
exit $((fails > 0))
