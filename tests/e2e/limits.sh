#!/usr/bin/env bash
# The limit scripts (scripts/limit-bandwidth.sh, limit-cpu.sh, ds-limited.sh):
# their --dry-run output holds the original recipe's commands (net_cls
# classid, tc htb root qdisc, cgroup filter, class with the rate; cpu.max or
# cfs quota) and the cgroup v2 equivalents; argument errors exit 2; without
# root and without --dry-run they refuse with a clear message.  Nothing here
# changes the system.
set -u
src=${DS_SOURCE_DIR:?DS_SOURCE_DIR not set}
bw=$src/scripts/limit-bandwidth.sh
cpu=$src/scripts/limit-cpu.sh
wrap=$src/scripts/ds-limited.sh
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
fails=0
fail() { echo "FAIL: $*"; fails=$((fails+1)); }
run() { # run DESCRIPTION EXPECTED_STATUS CMD...
  local what=$1 want=$2; shift 2
  "$@" >"$tmp/out" 2>"$tmp/err"; local got=$?
  [ "$got" = "$want" ] || { fail "$what: exit $got, expected $want"; cat "$tmp/out" "$tmp/err"; }
  # Dry runs print shell commands: they must parse.
  if [ "$want" = 0 ] && [[ " $* " == *" --dry-run "* ]] && ! bash -n "$tmp/out" 2>"$tmp/syntax"; then
    fail "$what: output is not valid shell: $(cat "$tmp/syntax")"
  fi
}
has() { # has DESCRIPTION EXTENDED_REGEX: a line of the last output matches
  grep -qE -- "$2" "$tmp/out" || { fail "$1: no line matching '$2' in:"; sed 's/^/  | /' "$tmp/out"; }
}
hasnt() { ! grep -qE -- "$2" "$tmp/out" || fail "$1: unexpected line matching '$2'"; }
err_has() { grep -qE -- "$2" "$tmp/err" || { fail "$1: stderr lacks '$2':"; cat "$tmp/err"; }; }

# Bandwidth, cgroup v1: exactly the original recipe.
run "bw v1" 0 "$bw" --dry-run --cgroup v1 eth0 4mbps
has "bw v1" '^echo 0x100001 > /sys/fs/cgroup/net_cls(.*)/deltaslice/net_cls\.classid$'
has "bw v1" '^tc qdisc add dev eth0 root handle 10: htb$'
has "bw v1" '^tc filter add dev eth0 parent 10: protocol ip prio 10 handle 1: cgroup$'
has "bw v1" '^tc class add dev eth0 parent 10: classid 10:1 htb rate 4mbps$'
[ "$(grep -n 'net_cls.classid' "$tmp/out" | cut -d: -f1)" -lt "$(grep -n 'tc class' "$tmp/out" | cut -d: -f1)" ] ||
  fail "bw v1: classid written after the class"
run "bw v1 second class" 0 "$bw" --dry-run --cgroup v1 --group w1 --classid 10:2 wlan0 1mbps
has "bw v1 second class" '^echo 0x100002 > .*/w1/net_cls\.classid$'
has "bw v1 second class" '^tc class add dev wlan0 parent 10: classid 10:2 htb rate 1mbps$'
run "bw v1 clear" 0 "$bw" --dry-run --cgroup v1 --clear eth0
has "bw v1 clear" '^tc qdisc del dev eth0 root$'
hasnt "bw v1 clear" 'add'

# Bandwidth, cgroup v2: nftables marks the group's packets, tc fw classifies.
run "bw v2" 0 "$bw" --dry-run --cgroup v2 --group ds/w0 eth0 32mbit
has "bw v2" "^mkdir -p /sys/fs/cgroup(/unified)?/ds/w0$"
has "bw v2" "^nft add table inet deltaslice$"
has "bw v2" "^nft add chain inet deltaslice output '\{ type filter hook output priority 0 ; policy accept ; \}'$"
has "bw v2" "^nft add rule inet deltaslice output socket cgroupv2 level 2 '\"(unified/)?ds/w0\"' meta mark set 0x100001$"
has "bw v2" '^tc qdisc add dev eth0 root handle 10: htb$'
has "bw v2" '^tc filter add dev eth0 parent 10: protocol all prio 10 handle 0x100001 fw classid 10:1$'
has "bw v2" '^tc class add dev eth0 parent 10: classid 10:1 htb rate 32mbit$'
run "bw v2 clear" 0 "$bw" --dry-run --cgroup v2 --clear eth0
has "bw v2 clear" '^tc qdisc del dev eth0 root$'
has "bw v2 clear" '^nft delete table inet deltaslice$'

# CPU quota.
run "cpu v2" 0 "$cpu" --dry-run --cgroup v2 0.5
has "cpu v2" "^echo \+cpu > /sys/fs/cgroup(/unified)?/cgroup\.subtree_control$"
has "cpu v2" "^echo '50000 100000' > /sys/fs/cgroup(/unified)?/deltaslice/cpu\.max$"
run "cpu v2 nested, percent" 0 "$cpu" --dry-run --cgroup v2 --group ds/w1 25%
has "cpu v2 nested" "^echo \+cpu > .*/ds/cgroup\.subtree_control$"
has "cpu v2 nested" "^echo '25000 100000' > .*/ds/w1/cpu\.max$"
run "cpu v1" 0 "$cpu" --dry-run --cgroup v1 1.5 --period 20000
has "cpu v1" '^echo 20000 > /sys/fs/cgroup/cpu(.*)/deltaslice/cpu\.cfs_period_us$'
has "cpu v1" '^echo 30000 > /sys/fs/cgroup/cpu(.*)/deltaslice/cpu\.cfs_quota_us$'
run "cpu v1 clear" 0 "$cpu" --dry-run --cgroup v1 --clear
has "cpu v1 clear" '^echo -1 > .*/deltaslice/cpu\.cfs_quota_us$'
run "cpu v2 clear" 0 "$cpu" --dry-run --cgroup v2 --clear
has "cpu v2 clear" "^echo 'max 100000' > .*/deltaslice/cpu\.max$"

# The wrapper joins the group, then execs the command (arguments kept).
run "wrap v2" 0 "$wrap" --dry-run --cgroup v2 --group w0 -- /opt/ds/deltaslice worker -i 0 -c 'my config.yml'
has "wrap v2" '^echo \$\$ > /sys/fs/cgroup(/unified)?/w0/cgroup\.procs$'
has "wrap v2" "^exec /opt/ds/deltaslice worker -i 0 -c 'my config.yml'$"
run "wrap v1" 0 "$wrap" --dry-run --cgroup v1 --user nobody deltaslice master
has "wrap v1 net_cls" '^echo \$\$ > /sys/fs/cgroup/net_cls(.*)/deltaslice/cgroup\.procs$'
has "wrap v1 cpu" '^echo \$\$ > /sys/fs/cgroup/cpu(.*)/deltaslice/cgroup\.procs$'
has "wrap v1" '^exec setpriv --reuid=nobody --regid=[a-z0-9]+ --init-groups -- deltaslice master$'

# Argument errors: exit 2 with a message.
for args in "" "eth0" "eth0 4" "eth0 4 MB/s" "eth0 fast" "bad/if 4mbps" "--classid 10:0 eth0 4mbps" \
            "--classid 10 eth0 4mbps" "--cgroup v3 eth0 4mbps" "--group ../x eth0 4mbps" \
            "--clear" "--bogus eth0 4mbps" "--group"; do
  # shellcheck disable=SC2086 # word splitting wanted
  run "bw args '$args'" 2 "$bw" --dry-run $args
  err_has "bw args '$args'" '^limit-bandwidth\.sh: .+'
done
for args in "" "abc" "0.001" "-1" "1e3" "1 2" "--period 10 1" "--period 2000000 1" "--clear 1"; do
  # shellcheck disable=SC2086
  run "cpu args '$args'" 2 "$cpu" --dry-run $args
  err_has "cpu args '$args'" '^limit-cpu\.sh: .+'
done
run "wrap no command" 2 "$wrap" --dry-run
run "wrap bad user" 2 "$wrap" --dry-run --user 'x;y' true
run "help" 0 "$bw" --help
has "help" '^usage: limit-bandwidth\.sh'

# Not root, no --dry-run: a clear refusal, nothing changed.
as_nobody=()
if [ "$(id -u)" != 0 ]; then
  as_nobody=(env)
elif command -v setpriv >/dev/null; then
  as_nobody=(setpriv --reuid=65534 --regid=65534 --clear-groups)
fi
if [ ${#as_nobody[@]} -gt 0 ]; then
  cp -r "$src/scripts" "$tmp/scripts" && chmod -R a+rX "$tmp"
  run "bw non-root" 1 "${as_nobody[@]}" bash "$tmp/scripts/limit-bandwidth.sh" eth0 4mbps
  err_has "bw non-root" 'must run as root'
  run "cpu non-root" 1 "${as_nobody[@]}" bash "$tmp/scripts/limit-cpu.sh" 0.5
  err_has "cpu non-root" 'must run as root'
  run "bw clear non-root" 1 "${as_nobody[@]}" bash "$tmp/scripts/limit-bandwidth.sh" --clear eth0
  err_has "bw clear non-root" 'must run as root'
else
  echo "limits: running as root without setpriv: non-root checks skipped"
fi

[ $fails -eq 0 ] && echo "limits: all checks passed"
exit $((fails > 0))
