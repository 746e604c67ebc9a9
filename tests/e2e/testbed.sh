#!/usr/bin/env bash
# The namespace testbed end to end with small frames: rate-limited links,
# a CPU-capped worker 0 that profiles for its quota, traces written,
# everything torn down afterwards. Skipped (status 77) where
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
"$src/scripts/testbed.sh" --dry-run --unconfigured --bin "$bin" >"$tmp/dry_unconf" || fail "dry run --unconfigured failed"
grep -q "tc qdisc add dev .* root tbf rate 1000kbps" "$tmp/dry_unconf" || fail "--unconfigured: links not shaped"
grep -q "^# master: {ifr_num: 50, pd_num: 2, scheduler: lbc}$" "$tmp/dry_unconf" ||
  fail "--unconfigured: the config should claim no bandwidth"
"$src/scripts/testbed.sh" --dry-run --cpu w0=25% --bin "$bin" >"$tmp/dry_cpu" || fail "dry run with --cpu failed"
grep -qE "^echo (2500 > .*/ds[0-9]+-w0/cpu\.cfs_quota_us|'2500 10000' > .*/ds[0-9]+-w0/cpu\.max)$" "$tmp/dry_cpu" ||
  fail "dry run: no 25% quota (2.5 ms per 10 ms) for w0"
grep -qE "^nsenter --net=/run/netns/ds[0-9]+-w0 -- .*/ds-limited\.sh --group ds[0-9]+-w0 -- .* worker -i 0 " "$tmp/dry_cpu" ||
  fail "dry run: w0 not started in its cgroup"
grep -qE "^nsenter --net=/run/netns/ds[0-9]+-w1 -- [^ ]*deltaslice worker -i 1 " "$tmp/dry_cpu" ||
  fail "dry run: w1 should run without a limit"
for bad in w2=25% w0=fast x=1; do
  "$src/scripts/testbed.sh" --dry-run --cpu "$bad" >/dev/null 2>"$tmp/bad"
  [ $? = 2 ] && grep -q "^testbed: --cpu: " "$tmp/bad" || fail "bad --cpu '$bad' accepted"
done

before=$(ip netns list | wc -l)
if ! "$src/scripts/testbed.sh" --bin "$bin" --size 72x96 --frames 12 --bandwidth 2,0.5 --check \
     --cpu w0=50% --trace "$tmp/trace" --cache "$tmp/cache" >"$tmp/out" 2>"$tmp/err"; then
  fail "testbed run failed"; cat "$tmp/out" "$tmp/err"
fi
grep -q "^frames: 12 finished, 0 failed, 0 not sent (of 12), 0 re-sent$" "$tmp/out" || fail "not every frame finished"
grep -qE "^check: 12 frames, max abs error 0," "$tmp/out" || fail "check did not pass"
for f in master worker0 worker1; do [ -s "$tmp/trace/$f.tc" ] || fail "no trace from $f"; done
[ "$(ip netns list | wc -l)" = "$before" ] || fail "namespaces left behind"
# Worker 0 saw its quota and profiled for it; worker 1 saw none.
ls "$tmp/cache" | grep -qE "^costs-.*-cpu[0-9_-]+-quota5000per10000-[0-9a-f]+\.txt$" ||
  { fail "no profile keyed by w0's quota"; ls "$tmp/cache"; }
ls "$tmp/cache" | grep -qE "^costs-.*-cpu[0-9_-]+-noquota-[0-9a-f]+\.txt$" || fail "no profile for the unlimited w1"
group=$(sed -nE 's/^testbed: w0 limited to 50% CPUs \(cgroup (ds[0-9]+-w0)\): throttled in [0-9]+ of [0-9]+ periods.*/\1/p' "$tmp/err")
[ -n "$group" ] || fail "no throttling report for w0"
[ -n "$group" ] && ls -d /sys/fs/cgroup/cpu/"$group" /sys/fs/cgroup/"$group" /sys/fs/cgroup/unified/"$group" 2>/dev/null |
  grep -q . && fail "cgroup $group left behind"
"$src/scripts/testbed.sh" --bandwidth x >/dev/null 2>"$tmp/bad"
[ $? = 2 ] && grep -q "not a rate" "$tmp/bad" || fail "bad --bandwidth accepted"

[ $fails -eq 0 ] && echo "testbed: all checks passed"
exit $((fails > 0))
