#!/usr/bin/env bash
# unit-egress.sh start|stop UNIT - the egress bandwidth limit of one deltaslice
# systemd unit, run as root by the unit itself ('+' prefix):
#   ExecStartPre=+/usr/lib/deltaslice/unit-egress.sh start %n
#   ExecStopPost=+/usr/lib/deltaslice/unit-egress.sh stop %n
#
# start: when DS_EGRESS_RATE is set (in a drop-in, see the units), caps the
#   egress of the unit's cgroup on DS_EGRESS_IFACE with limit-bandwidth.sh
#   (cgroup v2: nftables marks the packets of the unit's sockets, tc htb
#   shapes the mark).  The cgroup is the one this script runs in: systemd
#   starts ExecStartPre in the unit's cgroup, before the role's own process,
#   so every socket of the role is shaped from its first packet.
#   DS_EGRESS_CLASSID picks the htb class (default per unit: master 10:1,
#   trainer 10:2, worker@N 10:<16+N in hex>, so roles on one host and one
#   interface get classes of their own).  Unset DS_EGRESS_RATE: no limit.
# stop: deletes the unit's nftables rule.  nftables resolves a cgroup when a
#   rule is added, and the unit's next start gets a new cgroup; the tc class
#   stays (idle without marked packets; the next start sets its rate again).
#
# DS_EGRESS_DRY_RUN=1 prints the commands instead (with DS_EGRESS_CGROUP set
# to the unit's cgroup path, it runs outside systemd: for tests).
set -euo pipefail
lib=$(dirname "$0")
prog=$(basename "$0")
die() { echo "$prog: $*" >&2; exit 1; }

[ $# = 2 ] && [[ $1 =~ ^(start|stop)$ ]] || { echo "usage: $prog start|stop UNIT" >&2; exit 2; }
action=$1 unit=$2
[[ $unit =~ ^deltaslice-(master|trainer|worker@([0-9]+))\.service$ ]] ||
  die "unit '$unit' is not deltaslice-master, -trainer or -worker@N.service"
role=${BASH_REMATCH[1]} worker=${BASH_REMATCH[2]}
dry=${DS_EGRESS_DRY_RUN:-0}

# The unit's cgroup, relative to the cgroup2 root (the '0::' line).
group=${DS_EGRESS_CGROUP:-}
if [ -z "$group" ]; then
  group=$(sed -n 's|^0::/||p' /proc/self/cgroup)
  [ -n "$group" ] || die "no cgroup v2 hierarchy (the units' egress limits need cgroup v2)"
fi
[ "${group##*/}" = "$unit" ] ||
  die "running in cgroup '$group', not in $unit's: run by the unit (ExecStartPre/ExecStopPost)"

if [ "$action" = stop ]; then
  [ "$dry" = 1 ] || command -v nft >/dev/null || exit 0
  if [ "$dry" = 1 ]; then echo "nft delete rule inet deltaslice output handle <the rule of \"$group\">"; exit 0; fi
  rules=$(nft -a list chain inet deltaslice output 2>/dev/null) || exit 0
  # Rules print the group as "PATH" (hybrid systems: "unified/PATH").
  # No rule of this unit (no limit was set): nothing to do, not a failure.
  handles=$(grep -F "$group\"" <<<"$rules" | sed -n 's/.*# handle \([0-9][0-9]*\)$/\1/p' || true)
  for handle in $handles; do
    echo "+ nft delete rule inet deltaslice output handle $handle" >&2
    nft delete rule inet deltaslice output handle "$handle" || echo "$prog: could not delete rule $handle" >&2
  done
  exit 0
fi

rate=${DS_EGRESS_RATE:-}
[ -n "$rate" ] || exit 0
iface=${DS_EGRESS_IFACE:-}
[ -n "$iface" ] || die "DS_EGRESS_RATE=$rate needs DS_EGRESS_IFACE (the interface to shape, e.g. eth0)"
case $role in
  master) classid=10:1 ;;
  trainer) classid=10:2 ;;
  *)
    [ "$worker" -le 255 ] || die "worker id $worker: at most 255"
    classid=10:$(printf '%x' $((16 + 10#$worker))) ;;
esac
classid=${DS_EGRESS_CLASSID:-$classid}
args=(--cgroup v2 --group "$group" --classid "$classid")
[ "$dry" = 1 ] && args+=(--dry-run)
exec "$lib/limit-bandwidth.sh" "${args[@]}" "$iface" "$rate"
