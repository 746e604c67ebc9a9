#!/usr/bin/env bash
# limit-cpu.sh - caps the CPU time of the processes in one cgroup with the
# cgroup cpu controller's bandwidth limit (CFS quota).  See docs/experiments.md.
#
#   cgroup v2: cpu.max = "QUOTA PERIOD"
#   cgroup v1: cpu.cfs_period_us = PERIOD, cpu.cfs_quota_us = QUOTA
# QUOTA = CPUS x PERIOD: the group gets at most CPUS cores' worth of time
# (0.5 = half of one core, 2 = two full cores), whatever its thread count.
set -euo pipefail
# shellcheck source=scripts/limits-common.sh
. "$(dirname "$0")/limits-common.sh"

usage() {
  cat <<EOF
usage: $PROG [options] CPUS
       $PROG [options] --clear

Limits the processes in cgroup GROUP to CPUS cores' worth of CPU time
(e.g. 0.5, 1, 1.5, or 25%, a share of one core).  Start processes in the
group with ds-limited.sh.

options:
  --group NAME    cgroup to limit (default deltaslice), relative to the root
  --period US     enforcement period in microseconds (default 100000,
                  1000..1000000); the quota is granted anew every period
  --cgroup MODE   v1, v2 or auto (default: v1 where the cpu controller is
                  mounted as v1, else v2)
  --clear         remove the limit (quota back to unlimited)
  --dry-run       print the commands instead of running them
  -h, --help      this help
EOF
}

group=deltaslice period=100000 mode=auto clear=0
args=()
while [ $# -gt 0 ]; do
  case $1 in
    --group) [ $# -ge 2 ] || usage_error "--group needs a value"; group=$2; shift 2 ;;
    --period) [ $# -ge 2 ] || usage_error "--period needs a value"; period=$2; shift 2 ;;
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
if ! [[ $period =~ ^[0-9]{4,7}$ ]] || [ "$period" -lt 1000 ] || [ "$period" -gt 1000000 ]; then
  usage_error "--period wants 1000..1000000 microseconds, not '$period'"
fi
if [ $clear = 1 ]; then
  [ ${#args[@]} = 0 ] || usage_error "--clear takes no CPUS argument"
else
  [ ${#args[@]} = 1 ] || usage_error "expected one argument: CPUS (e.g. 0.5)"
  cpus=${args[0]}
  if [[ $cpus =~ ^([0-9]{1,3})%$ ]]; then
    quota=$((10#${BASH_REMATCH[1]} * period / 100))
  elif [[ $cpus =~ ^([0-9]{1,4})(\.([0-9]{1,6}))?$ ]]; then
    int=${BASH_REMATCH[1]} frac=${BASH_REMATCH[3]:-0}
    frac=$(printf '%-6s' "$frac" | tr ' ' 0)   # 6 decimals, exact integer arithmetic
    quota=$(((10#$int * 1000000 + 10#$frac) * period / 1000000))
  else
    usage_error "bad CPUS '$cpus': cores, e.g. 0.5 or 2, or a percentage of one core, e.g. 50%"
  fi
  # The kernel refuses quotas under 1 ms.
  [ "$quota" -ge 1000 ] || usage_error "CPUS '$cpus' gives a quota of $quota us per $period us period; the minimum is 1000 us"
fi

if [ "$mode" = auto ]; then
  if [ -n "$(v1_mount cpu)" ]; then mode=v1; else mode=v2; fi
fi
need_root

if [ "$mode" = v1 ]; then
  [ "$DRY_RUN" = 1 ] || v1_in_kernel cpu || die "this kernel lacks the cpu cgroup controller"
  base=$(v1_mount cpu)
  if [ -z "$base" ]; then
    base=/sys/fs/cgroup/cpu
    [ "$DRY_RUN" = 1 ] || ! is_v2_unified ||
      die "the cpu controller is not mounted as cgroup v1 here (this system uses cgroup v2): use --cgroup v2"
    run mkdir -p "$base"
    run mount -t cgroup -o cpu cpu "$base"
  fi
  dir=$base/$group
  [ "$DRY_RUN" = 1 ] || [ $clear = 0 ] || [ -d "$dir" ] || die "no cgroup $dir: nothing to clear"
  [ $clear = 1 ] || run mkdir -p "$dir"
  [ "$DRY_RUN" = 1 ] || [ -e "$dir/cpu.cfs_quota_us" ] ||
    die "this kernel lacks CPU bandwidth control (CONFIG_CFS_BANDWIDTH): $dir/cpu.cfs_quota_us is missing"
  if [ $clear = 1 ]; then
    write -1 "$dir/cpu.cfs_quota_us"
  else
    # Lower the quota first: a period under the current quota would be refused.
    write -1 "$dir/cpu.cfs_quota_us"
    write "$period" "$dir/cpu.cfs_period_us"
    write "$quota" "$dir/cpu.cfs_quota_us"
  fi
else
  root=$(v2_root)
  dir=$root/$group
  if [ "$DRY_RUN" = 0 ]; then
    grep -qw cpu "$root/cgroup.controllers" 2>/dev/null ||
      die "the cpu controller is not available in the cgroup v2 hierarchy at $root (it is missing from cgroup.controllers; on a hybrid system it may be bound to v1: try --cgroup v1)"
    [ $clear = 0 ] || [ -d "$dir" ] || die "no cgroup $dir: nothing to clear"
  fi
  if [ $clear = 1 ]; then
    write "max $period" "$dir/cpu.max"
  else
    run mkdir -p "$dir"
    # Every ancestor must hand the cpu controller down to its children.
    parent=$root
    IFS=/ read -ra parts <<<"$group"
    for part in "${parts[@]}"; do
      if [ "$DRY_RUN" = 1 ] || ! grep -qw cpu "$parent/cgroup.subtree_control"; then
        write +cpu "$parent/cgroup.subtree_control"
      fi
      parent=$parent/$part
    done
    write "$quota $period" "$dir/cpu.max"
  fi
fi
if [ "$DRY_RUN" = 0 ]; then
  if [ $clear = 1 ]; then echo "$PROG: cgroup $group: no CPU limit ($mode)" >&2
  else echo "$PROG: cgroup $group: at most $quota us of CPU time every $period us ($mode)" >&2; fi
fi
