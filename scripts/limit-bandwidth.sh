#!/usr/bin/env bash
# limit-bandwidth.sh - caps the egress bandwidth of the processes in one
# cgroup on one interface, with tc htb.  See docs/experiments.md.
#
#   cgroup v1 (the original system's recipe): the net_cls controller tags the
#   group's sockets with a class id; tc's cgroup classifier sends their packets
#   to the htb class with the rate.
#   cgroup v2 (net_cls is gone): nftables marks packets whose socket belongs
#   to the group ('socket cgroupv2'); tc's fw classifier sends marked packets
#   to the htb class.
set -euo pipefail
# shellcheck source=scripts/limits-common.sh
. "$(dirname "$0")/limits-common.sh"

usage() {
  cat <<EOF
usage: $PROG [options] IFACE RATE
       $PROG [options] --clear IFACE

Limits the egress rate of the processes in cgroup GROUP on IFACE (tc htb).
Start processes in the group with ds-limited.sh.

  IFACE  network interface (eth0, wlan0, ...; 'lo' for traffic to this host)
  RATE   tc rate with its unit: 4mbps = 4 MB/s (bytes), 32mbit = 4 MB/s (bits),
         also kbps, kbit, gbit, bps, bit

options:
  --group NAME     cgroup to limit (default deltaslice), relative to the
                   hierarchy root; several processes may share it
  --classid MAJ:MIN  htb class, hex as tc writes it (default 10:1); give each
                   group on the same IFACE its own MIN (10:1, 10:2, ...)
  --cgroup MODE    v1 (net_cls + tc cgroup filter), v2 (nftables mark + tc fw
                   filter) or auto (default: v1 where net_cls is mounted or no
                   unified hierarchy exists, else v2)
  --clear          remove every deltaslice limit from IFACE (the root qdisc,
                   and with v2 the nftables table 'inet deltaslice')
  --dry-run        print the commands instead of running them
  -h, --help       this help
EOF
}

group=deltaslice classid=10:1 mode=auto clear=0
args=()
while [ $# -gt 0 ]; do
  case $1 in
    --group) [ $# -ge 2 ] || usage_error "--group needs a value"; group=$2; shift 2 ;;
    --classid) [ $# -ge 2 ] || usage_error "--classid needs a value"; classid=$2; shift 2 ;;
    --cgroup) [ $# -ge 2 ] || usage_error "--cgroup needs a value"; mode=$2; shift 2 ;;
    --clear) clear=1; shift ;;
    --dry-run) DRY_RUN=1; shift ;;
    -h | --help) usage; exit 0 ;;
    --) shift; args+=("$@"); break ;;
    -*) usage_error "unknown option '$1'" ;;
    *) args+=("$1"); shift ;;
  esac
done
check_group "$group"
check_cgroup_mode "$mode"
if [ $clear = 1 ]; then
  [ ${#args[@]} = 1 ] || usage_error "--clear takes one argument: IFACE"
else
  [ ${#args[@]} = 2 ] || usage_error "expected IFACE and RATE (e.g. eth0 4mbps)"
  rate=${args[1]}
  [[ $rate =~ ^[0-9]+(\.[0-9]+)?([kmgt]?(bit|bps)|[KMGT]i?(bit|bps)|[kmgt]ibit|[kmgt]ibps)$ ]] ||
    usage_error "bad RATE '$rate': a number with a tc unit, e.g. 4mbps (4 MB/s) or 32mbit"
fi
iface=${args[0]}
[[ $iface =~ ^[A-Za-z0-9_.:@-]{1,15}$ ]] || usage_error "bad interface name '$iface'"
[[ $classid =~ ^([0-9a-fA-F]{1,4}):([0-9a-fA-F]{1,4})$ ]] ||
  usage_error "bad --classid '$classid': MAJ:MIN in hex, e.g. 10:1"
major=${BASH_REMATCH[1]} minor=${BASH_REMATCH[2]}
[ $((16#$minor)) -ne 0 ] || usage_error "--classid minor must not be 0 (that is the qdisc itself)"
# net_cls.classid and the fw mark: 0xMMMMmmmm (10:1 -> 0x100001).
mark=$(printf '0x%x' $(((16#$major << 16) | 16#$minor)))

if [ "$mode" = auto ]; then
  if [ -n "$(v1_mount net_cls)" ]; then mode=v1
  elif is_v2_unified; then mode=v2
  elif v1_in_kernel net_cls; then mode=v1
  else mode=v2; fi
fi

need_root
need_tool tc iproute2
[ "$DRY_RUN" = 1 ] || [ -e "/sys/class/net/$iface" ] || die "no network interface '$iface' (see 'ip link')"

# Real runs skip what is already in place, so that a second group can be
# added to the same interface and a rate changed by running again.
has_qdisc() { [ "$DRY_RUN" = 0 ] && tc qdisc show dev "$iface" | grep -q "^qdisc htb $major: root"; }
has_filter() { [ "$DRY_RUN" = 0 ] && tc filter show dev "$iface" parent "$major:" 2>/dev/null | grep -q "$1"; }
has_class() { [ "$DRY_RUN" = 0 ] && tc class show dev "$iface" | grep -q "^class htb $major:$minor "; }

if [ $clear = 1 ]; then
  if [ "$DRY_RUN" = 1 ] || tc qdisc show dev "$iface" | grep -q "^qdisc htb $major: root"; then
    run tc qdisc del dev "$iface" root
  fi
  if [ "$mode" = v2 ]; then
    need_tool nft nftables
    if [ "$DRY_RUN" = 1 ] || nft list table inet deltaslice >/dev/null 2>&1; then
      run nft delete table inet deltaslice
    fi
  else
    dir=$(v1_mount net_cls)
    dir=${dir:-/sys/fs/cgroup/net_cls}/$group
    if [ "$DRY_RUN" = 1 ] || [ -d "$dir" ]; then
      # rmdir fails while processes are still in the group: say so, go on.
      if [ "$DRY_RUN" = 1 ]; then show rmdir "$dir"
      else echo "+ rmdir $dir" >&2; rmdir "$dir" 2>/dev/null || echo "$PROG: $dir still has processes; left in place" >&2; fi
    fi
  fi
  exit 0
fi

need_kernel sch_htb CONFIG_NET_SCH_HTB "the htb queueing discipline"
if [ "$mode" = v1 ]; then
  [ "$DRY_RUN" = 1 ] || v1_in_kernel net_cls ||
    die "this kernel lacks the net_cls cgroup controller (CONFIG_CGROUP_NET_CLASSID): use --cgroup v2"
  need_kernel cls_cgroup CONFIG_NET_CLS_CGROUP "the tc cgroup classifier (needed with net_cls)"
  base=$(v1_mount net_cls)
  if [ -z "$base" ]; then
    base=/sys/fs/cgroup/net_cls
    run mkdir -p "$base"
    run mount -t cgroup -o net_cls net_cls "$base"
  fi
  run mkdir -p "$base/$group"
  write "$mark" "$base/$group/net_cls.classid"
  has_qdisc || run tc qdisc add dev "$iface" root handle "$major:" htb
  has_filter cgroup || run tc filter add dev "$iface" parent "$major:" protocol ip prio 10 handle 1: cgroup
else
  need_tool nft nftables
  need_kernel nft_socket CONFIG_NFT_SOCKET "nftables socket matching (socket cgroupv2)"
  need_kernel cls_fw CONFIG_NET_CLS_FW "the tc fw (firewall mark) classifier"
  root=$(v2_root)
  level=$(($(tr -cd / <<<"$group" | wc -c) + 1))
  # nft looks the path up under /sys/fs/cgroup ("unified/GROUP" on hybrid
  # systems); level counts from the cgroup2 root.
  case $root in
    /sys/fs/cgroup) nftpath=$group ;;
    /sys/fs/cgroup/*) nftpath=${root#/sys/fs/cgroup/}/$group ;;
    *) die "cgroup2 is mounted at $root; nftables only finds groups under /sys/fs/cgroup" ;;
  esac
  # nftables resolves the path when the rule is added: the group must exist.
  run mkdir -p "$root/$group"
  run nft add table inet deltaslice
  run nft add chain inet deltaslice output '{ type filter hook output priority 0 ; policy accept ; }'
  if [ "$DRY_RUN" = 1 ] || ! nft list chain inet deltaslice output | grep -qF "\"$nftpath\""; then
    run nft add rule inet deltaslice output socket cgroupv2 level "$level" "\"$nftpath\"" meta mark set "$mark"
  fi
  has_qdisc || run tc qdisc add dev "$iface" root handle "$major:" htb
  # 'protocol all': gRPC may reach "localhost" over IPv6 (::1).
  has_filter "handle $mark " || run tc filter add dev "$iface" parent "$major:" protocol all prio 10 handle "$mark" fw classid "$major:$minor"
fi
if has_class; then
  run tc class change dev "$iface" parent "$major:" classid "$major:$minor" htb rate "$rate"
else
  run tc class add dev "$iface" parent "$major:" classid "$major:$minor" htb rate "$rate"
fi
[ "$DRY_RUN" = 1 ] || echo "$PROG: processes in cgroup $group now send at most $rate on $iface ($mode)" >&2
