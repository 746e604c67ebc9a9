#!/usr/bin/env bash
# ds-limited.sh - runs a command (a deltaslice role, say) inside the cgroup
# that limit-bandwidth.sh and limit-cpu.sh set up: it writes its own pid to
# the group's cgroup.procs, then execs the command, so the command and all
# its threads, children and sockets belong to the group from the start.
# See docs/experiments.md.
set -euo pipefail
# shellcheck source=scripts/limits-common.sh
. "$(dirname "$0")/limits-common.sh"

usage() {
  cat <<EOF
usage: $PROG [options] [--] COMMAND [ARG...]

Runs COMMAND inside cgroup GROUP, e.g.
  $PROG --group w0 -- build/deltaslice worker -i 0 -c config.yml

options:
  --group NAME   cgroup to join (default deltaslice); with cgroup v1 the
                 command joins it in every controller where it exists
                 (net_cls for bandwidth, cpu for CPU time)
  --user USER    drop root for the command (setpriv), after joining
  --cgroup MODE  v1, v2 or auto (default: v1 when the group exists in a v1
                 hierarchy; else v2 when it exists in the v2 one or the
                 system is v2-only; else v1 when v1 hierarchies are mounted)
  --dry-run      print the commands instead of running them
  -h, --help     this help
EOF
}

group=deltaslice mode=auto user=""
while [ $# -gt 0 ]; do
  case $1 in
    --group) [ $# -ge 2 ] || usage_error "--group needs a value"; group=$2; shift 2 ;;
    --user) [ $# -ge 2 ] || usage_error "--user needs a value"; user=$2; shift 2 ;;
    --cgroup) [ $# -ge 2 ] || usage_error "--cgroup needs a value"; mode=$2; shift 2 ;;
    --dry-run) DRY_RUN=1; shift ;;
    -h | --help) usage; exit 0 ;;
    --) shift; break ;;
    -*) usage_error "unknown option '$1'" ;;
    *) break ;;
  esac
done
check_group "$group"
check_cgroup_mode "$mode"
[ $# -ge 1 ] || usage_error "no COMMAND given"
if [ -n "$user" ]; then
  [[ $user =~ ^[A-Za-z0-9_.][A-Za-z0-9_.-]*$ ]] || usage_error "bad user name '$user'"
  [ "$DRY_RUN" = 1 ] || id -u "$user" >/dev/null 2>&1 || usage_error "no such user '$user'"
fi

# The groups' cgroup.procs files: v1 = one per controller hierarchy holding
# the group, v2 = the one unified group.
v1_dirs() {
  local c m
  for c in net_cls cpu; do
    m=$(v1_mount "$c")
    if [ "$DRY_RUN" = 1 ]; then echo "${m:-/sys/fs/cgroup/$c}/$group"
    elif [ -n "$m" ] && [ -d "$m/$group" ]; then echo "$m/$group"; fi
  done
}
v1_found=$(DRY_RUN=0 v1_dirs)
if [ "$mode" = auto ]; then
  if [ -n "$v1_found" ]; then mode=v1
  elif [ -d "$(v2_root)/$group" ] || is_v2_unified; then mode=v2
  elif [ -n "$(v1_mount cpu)$(v1_mount net_cls)" ]; then mode=v1
  else mode=v2; fi
fi
if [ "$mode" = v1 ]; then
  dirs=$(v1_dirs)
else
  dirs=$(v2_root)/$group
  [ "$DRY_RUN" = 1 ] || [ -d "$dirs" ] || dirs=""
fi
[ -n "$dirs" ] ||
  die "cgroup '$group' does not exist ($mode): create it first with limit-bandwidth.sh and/or limit-cpu.sh"
if [ "$DRY_RUN" = 0 ] && ! command -v "$1" >/dev/null; then
  die "cannot run '$1': command not found"
fi

# Root, or a user the groups were delegated to (their cgroup.procs writable).
if [ "$DRY_RUN" = 0 ] && [ "$(id -u)" != 0 ]; then
  while IFS= read -r d; do
    [ -w "$d/cgroup.procs" ] || need_root
  done <<<"$dirs"
fi
while IFS= read -r d; do
  # $$ stays this process's pid across exec: the command inherits the group.
  if [ "$DRY_RUN" = 1 ]; then echo "echo \$\$ > $(quote "$d/cgroup.procs")"
  else write $$ "$d/cgroup.procs"; fi
done <<<"$dirs"
if [ -n "$user" ]; then
  need_tool setpriv util-linux
  gid=$(id -g "$user" 2>/dev/null || echo "$user")
  if [ "$DRY_RUN" = 1 ]; then show exec setpriv --reuid="$user" --regid="$gid" --init-groups -- "$@"; exit 0; fi
  exec setpriv --reuid="$user" --regid="$gid" --init-groups -- "$@"
fi
if [ "$DRY_RUN" = 1 ]; then show exec "$@"; exit 0; fi
exec "$@"
