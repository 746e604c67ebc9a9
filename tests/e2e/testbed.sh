#!/usr/bin/env bash
# The namespace testbed end to end with small frames: rate-limited links,
# traces written, everything torn down afterwards. Skipped (status 77) where
# the machine does not allow network namespaces.
set -u
bin=${DS_BIN:?DS_BIN not set}
src=${DS_SOURCE_DIR:?DS_SOURCE_DIR not set}
if [ "$(id -u)" -ne 0 ] || ! command -v tc >/dev/null || ! ip netns add ds-probe-$$ 2>/dev/null; then
  echo "SKIP: network namespaces need root and iproute2 here"
  exit 77
fi
ip netns del ds-probe-$$
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
fails=0
fail() { echo "FAIL: $*"; fails=$((fails+1)); }

# Dry run: the commands and the config, nothing created.
"$src/scripts/testbed.sh" --dry-run --bandwidth 4,1 --bin "$bin" >"$tmp/dry" || fail "dry run failed"
grep -q "tc qdisc add dev .* root tbf rate 4000kbps" "$tmp/dry" || fail "dry run: no 4 MB/s limit on m->w0"
grep -q "tc qdisc add dev .* root tbf rate 1000kbps" "$tmp/dry" || fail "dry run: no 1 MB/s limit on w0->w1"
grep -q "m->w0: '10.77.0.2:" "$tmp/dry" || fail "dry run: no m->w0 route in the config"
[ "$(ip netns list | grep -c "^ds")" = 0 ] || fail "dry run created namespaces"

before=$(ip netns list | wc -l)
if ! "$src/scripts/testbed.sh" --bin "$bin" --size 72x96 --frames 12 --bandwidth 2,0.5 --check \
     --trace "$tmp/trace" --cache "$tmp/cache" >"$tmp/out" 2>"$tmp/err"; then
  fail "testbed run failed"; cat "$tmp/out" "$tmp/err"
fi
grep -q "^frames: 12 finished, 0 failed, 0 lost (of 12)$" "$tmp/out" || fail "not every frame finished"
grep -qE "^check: 12 frames, max abs error 0," "$tmp/out" || fail "check did not pass"
for f in master worker0 worker1; do [ -s "$tmp/trace/$f.tc" ] || fail "no trace from $f"; done
[ "$(ip netns list | wc -l)" = "$before" ] || fail "namespaces left behind"
"$src/scripts/testbed.sh" --bandwidth x >/dev/null 2>"$tmp/bad"
[ $? = 2 ] && grep -q "not a rate" "$tmp/bad" || fail "bad --bandwidth accepted"

[ $fails -eq 0 ] && echo "testbed: all checks passed"
exit $((fails > 0))
