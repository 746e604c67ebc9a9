# shellcheck shell=bash
# limits-common.sh - helpers shared by limit-bandwidth.sh, limit-cpu.sh and
# ds-limited.sh (sourced, not run).  Every change to the system goes through
# run/write, so that --dry-run prints exactly the commands a real run would
# execute, one per line, ready to paste into a root shell.

PROG=$(basename "$0")
DRY_RUN=0

die() { echo "$PROG: $*" >&2; exit 1; }
usage_error() { echo "$PROG: $*" >&2; echo "(see '$PROG --help')" >&2; exit 2; }

# Shell-quotes one word only when it needs it.
quote() {
  if [[ $1 =~ ^[A-Za-z0-9_./:=@%+,-]+$ ]]; then printf '%s' "$1"
  else printf "'%s'" "${1//\'/\'\\\'\'}"; fi
}
show() {
  local sep=""
  for a in "$@"; do printf '%s' "$sep"; quote "$a"; sep=" "; done
  printf '\n'
}
# run CMD...: print it (dry run) or log it to stderr and execute it.
run() {
  if [ "$DRY_RUN" = 1 ]; then show "$@"; return 0; fi
  printf '+ %s' "$(show "$@")" >&2; echo >&2
  "$@" || die "failed: $(show "$@")"
}
# write VALUE FILE: echo VALUE > FILE.
write() {
  if [ "$DRY_RUN" = 1 ]; then echo "echo $(quote "$1") > $(quote "$2")"; return 0; fi
  echo "+ echo $1 > $2" >&2
  # A subshell, so that a failed redirection is an error we can word.
  (printf '%s\n' "$1" >"$2") 2>/dev/null || die "cannot write '$1' to $2"
}

need_root() {
  [ "$DRY_RUN" = 1 ] || [ "$(id -u)" = 0 ] ||
    die "must run as root (it writes cgroup files and changes tc/nftables settings): use sudo, or --dry-run to print the commands"
}
need_tool() { # need_tool COMMAND PACKAGE
  [ "$DRY_RUN" = 1 ] || command -v "$1" >/dev/null ||
    die "'$1' not found: install the $2 package (apt-get install $2)"
}

# kernel_config CONFIG_X -> y, m, n, or nothing when no config is readable.
kernel_config() {
  local f line
  for f in /proc/config.gz "/boot/config-$(uname -r)"; do
    [ -r "$f" ] || continue
    case $f in
      *.gz) line=$(zcat "$f" 2>/dev/null | grep -E "^(# )?$1[= ]" | head -1 || true) ;;
      *) line=$(grep -E "^(# )?$1[= ]" "$f" | head -1 || true) ;;
    esac
    case $line in
      "$1=y") echo y ;;
      "$1=m") echo m ;;
      *) echo n ;;
    esac
    return 0
  done
}
# need_kernel MODULE CONFIG_X WHAT: the feature is built in, loaded or loadable.
need_kernel() {
  [ "$DRY_RUN" = 1 ] && return 0
  [ -d "/sys/module/$1" ] && return 0
  local cfg
  cfg=$(kernel_config "$2")
  case $cfg in
    y) return 0 ;;
    n) die "this kernel lacks $3 ($2 is not set in its configuration)" ;;
  esac
  if command -v modprobe >/dev/null && modprobe "$1" 2>/dev/null; then return 0; fi
  [ -z "$cfg" ] || die "cannot load the kernel module $1 ($3)"
  echo "$PROG: warning: cannot tell whether this kernel has $3 ($2); trying anyway" >&2
}

# The cgroup2 mount point (/sys/fs/cgroup on current distributions,
# /sys/fs/cgroup/unified on hybrid systems); /sys/fs/cgroup when none.
v2_root() {
  local m
  m=$(awk '$3 == "cgroup2" { print $2; exit }' /proc/mounts 2>/dev/null || true)
  echo "${m:-/sys/fs/cgroup}"
}
# v1_mount CONTROLLER: where a cgroup v1 hierarchy with it is mounted, if any.
v1_mount() {
  awk -v c="$1" '$3 == "cgroup" { n = split($4, o, ","); for (i = 1; i <= n; i++) if (o[i] == c) { print $2; exit } }' \
    /proc/mounts 2>/dev/null || true
}
# v1_in_kernel CONTROLLER: the kernel has it (it may not be mounted yet).
v1_in_kernel() {
  awk -v c="$1" '$1 == c && $4 == 1 { f = 1 } END { exit !f }' /proc/cgroups 2>/dev/null
}
is_v2_unified() { [ "$(stat -fc %T /sys/fs/cgroup 2>/dev/null)" = cgroup2fs ]; }

check_group() { # check_group NAME: a relative cgroup path without surprises
  if ! [[ $1 =~ ^[A-Za-z0-9_.@-]+(/[A-Za-z0-9_.@-]+)*$ ]] || [[ $1 =~ (^|/)\.\.?(/|$) ]]; then
    usage_error "bad group name '$1' (letters, digits, _ . @ - and / between parts)"
  fi
}
check_cgroup_mode() { # check_cgroup_mode VALUE
  case $1 in v1 | v2 | auto) ;; *) usage_error "--cgroup is v1, v2 or auto, not '$1'" ;; esac
}
