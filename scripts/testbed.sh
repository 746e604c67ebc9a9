#!/usr/bin/env bash
# testbed.sh - the whole system on one machine, one network namespace per
# role, joined by veth pairs with a tc rate limit per chain link.
#
#   master --(m->w0, limited)--> w0 --(w0->w1, limited)--> w1 ...
#   master --(unlimited)--> w1, w2, ...   (the result streams the master opens)
#   master --(unlimited)--> trainer       (when the scheduler needs it)
#
# It writes the matching config, runs trainer, workers and master in their
# namespaces, prints the master's summary and tears everything down, also on
# Ctrl-C or failure. Only the namespaces' own addresses (10.77.x.y) are used.
#
# --cpu caps roles' CPU time with a cgroup each (scripts/limit-cpu.sh: v2
# cpu.max, or the v1 CFS quota where the cpu controller is mounted as v1):
# "--cpu w0=25%" makes worker 0 a quarter of a core, a Pi next to an edge
# server. Roles enter their namespace with nsenter --net (not ip netns exec,
# which remounts /sys and hides /sys/fs/cgroup), so a worker sees its quota
# and profiles for it.
set -euo pipefail

usage() {
  cat <<'EOF'
usage: scripts/testbed.sh [options]

Runs master, workers (and trainer) in network namespaces with rate-limited
links and prints the master's summary.

options:
  --bandwidth LIST   MB/s of the chain links m->w0,w0->w1,... (default 4,1);
                     its length is the number of workers
  --model SPEC       zoo:NAME or an .onnx path (default zoo:alexnet)
  --size RxC         frame size (default 480x720)
  --mode itg|dif     (default dif)
  --frames N         frames to send (default 50)
  --pd-num N         frames in flight (default 2)
  --scheduler S      lbc | nsc | opt (default lbc)
  --cpu ROLE=CPUS,.. CPU limit per role: ROLE is m, t or wI; CPUS is cores
                     (0.5) or a percentage of one core (25%), e.g. w0=25%
  --cpu-period US    CFS period of those limits (default 10000: a short
                     period slows a role evenly, like a slower CPU, instead
                     of full-speed bursts and long stalls)
  --check            recompute every frame on the master and compare
  --train-frames N   frames the trainer learns from (default 400)
  --video FILE       (default data/sample.mp4)
  --trace DIR        write trace files there (default: none)
  --cache DIR        profiles and predictors (default .cache)
  --bin FILE         the deltaslice binary (default build/deltaslice)
  --config-out FILE  keep the generated config there
  --unconfigured     shape the links but leave master.bandwidth out of the
                     config: the master measures them
  --dry-run          print the commands instead of running them
  -h, --help         show this help
EOF
}

die() { echo "testbed: $*" >&2; exit 2; }

root=$(cd "$(dirname "$0")/.." && pwd)
bandwidth="4,1" model="zoo:alexnet" size="480x720" mode="dif" frames=50 pd_num=2
scheduler="lbc" check=false train_frames=400 video="$root/data/sample.mp4" trace="" cache="$root/.cache"
bin="$root/build/deltaslice" config_out="" dry=0 cpu="" cpu_period=10000 unconfigured=0
while [ $# -gt 0 ]; do
  case "$1" in
    --bandwidth) bandwidth=${2:?}; shift 2 ;;
    --model) model=${2:?}; shift 2 ;;
    --size) size=${2:?}; shift 2 ;;
    --mode) mode=${2:?}; shift 2 ;;
    --frames) frames=${2:?}; shift 2 ;;
    --pd-num) pd_num=${2:?}; shift 2 ;;
    --scheduler) scheduler=${2:?}; shift 2 ;;
    --cpu) cpu=${2:?}; shift 2 ;;
    --cpu-period) cpu_period=${2:?}; shift 2 ;;
    --check) check=true; shift ;;
    --train-frames) train_frames=${2:?}; shift 2 ;;
    --video) video=${2:?}; shift 2 ;;
    --trace) trace=${2:?}; shift 2 ;;
    --cache) cache=${2:?}; shift 2 ;;
    --bin) bin=${2:?}; shift 2 ;;
    --config-out) config_out=${2:?}; shift 2 ;;
    --unconfigured) unconfigured=1; shift ;;
    --dry-run) dry=1; shift ;;
    -h|--help) usage; exit 0 ;;
    *) usage >&2; die "unknown option '$1'" ;;
  esac
done
# The config lives in a scratch folder and its relative paths resolve there:
# make the ones given on the command line absolute.
abs() { case "$1" in /* | "" | zoo:*) printf '%s' "$1" ;; *) printf '%s/%s' "$PWD" "$1" ;; esac; }
cache=$(abs "$cache") video=$(abs "$video") trace=$(abs "$trace") model=$(abs "$model")
IFS=, read -r -a bw <<<"$bandwidth"
n=${#bw[@]}
[ "$n" -ge 1 ] && [ "$n" -le 16 ] || die "--bandwidth: expected 1..16 comma-separated rates"
for r in "${bw[@]}"; do [[ "$r" =~ ^[0-9]+(\.[0-9]+)?$ ]] || die "--bandwidth: '$r' is not a rate in MB/s"; done
[[ "$size" =~ ^([0-9]+)x([0-9]+)$ ]] || die "--size: expected ROWSxCOLS, got '$size'"
rows=${BASH_REMATCH[1]} cols=${BASH_REMATCH[2]}
[[ "$frames" =~ ^[0-9]+$ && "$pd_num" =~ ^[0-9]+$ && "$train_frames" =~ ^[0-9]+$ ]] ||
  die "--frames, --pd-num and --train-frames take whole numbers"
case "$mode" in itg|dif) ;; *) die "--mode: expected itg or dif" ;; esac
case "$scheduler" in lbc|nsc|opt) ;; *) die "--scheduler: expected lbc, nsc or opt" ;; esac
[[ "$cpu_period" =~ ^[0-9]+$ ]] && [ "$cpu_period" -ge 1000 ] && [ "$cpu_period" -le 1000000 ] ||
  die "--cpu-period: expected 1000..1000000 microseconds"
declare -A cpu_of=()
if [ -n "$cpu" ]; then
  IFS=, read -r -a cpu_items <<<"$cpu"
  for item in "${cpu_items[@]}"; do
    [[ "$item" =~ ^(m|t|w([0-9]+))=([0-9]+(\.[0-9]+)?%?)$ ]] ||
      die "--cpu: expected ROLE=CPUS (ROLE m, t or wI; CPUS e.g. 0.5 or 25%), got '$item'"
    [ -z "${BASH_REMATCH[2]}" ] || [ "${BASH_REMATCH[2]}" -lt "$n" ] ||
      die "--cpu: there is no worker ${BASH_REMATCH[2]} (--bandwidth gives $n workers)"
    cpu_of[${BASH_REMATCH[1]}]=${BASH_REMATCH[3]}
  done
fi
if [ $dry -eq 0 ]; then
  [ "$(id -u)" -eq 0 ] || die "needs root for network namespaces and tc (try sudo, or --dry-run)"
  [ -x "$bin" ] || die "$bin is not built (cmake --build build)"
  command -v tc >/dev/null && command -v ip >/dev/null || die "needs iproute2 (ip, tc)"
  command -v nsenter >/dev/null || die "needs nsenter (util-linux)"
fi

tag=$(( $$ % 10000 ))
ns_m="ds${tag}-m" ns_t="ds${tag}-t"
ns_w() { echo "ds${tag}-w$1"; }
port=40000
tmp=$(mktemp -d)
config=${config_out:-$tmp/testbed.yml}
namespaces=() pids=() groups=()

run() { # prints in dry-run mode, runs otherwise
  if [ $dry -eq 1 ]; then echo "$*"; else "$@"; fi
}

# The directory of a cgroup made by limit-cpu.sh (v1 cpu hierarchy or v2).
cgroup_dir() {
  local v1
  v1=$(awk '$3 == "cgroup" && $4 ~ /(^|,)cpu(,|$)/ { print $2; exit }' /proc/mounts)
  if [ -n "$v1" ]; then echo "$v1/$1"
  else echo "$(awk '$3 == "cgroup2" { print $2; exit }' /proc/mounts)/$1"; fi
}

teardown() {
  for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
  for ns in "${namespaces[@]}"; do ip netns del "$ns" 2>/dev/null || true; done
  for g in "${groups[@]}"; do rmdir "$(cgroup_dir "$g")" 2>/dev/null || true; done
  rm -rf "$tmp"
}
if [ $dry -eq 0 ]; then trap teardown EXIT; trap 'exit 130' INT TERM; fi

add_ns() {
  run ip netns add "$1"
  run ip netns exec "$1" ip link set lo up
  namespaces+=("$1")
}

# link NS_A NS_B SUBNET RATE_MB: veth pair A<->B with 10.77.SUBNET.1 on A and
# .2 on B; RATE_MB (MB/s, empty = unlimited) shapes A's egress towards B.
link() {
  local a=$1 b=$2 net=$3 rate=$4 va="d${tag}a$3" vb="d${tag}b$3"
  run ip link add "$va" netns "$a" type veth peer name "$vb" netns "$b"
  run ip -n "$a" addr add "10.77.$net.1/30" dev "$va"
  run ip -n "$b" addr add "10.77.$net.2/30" dev "$vb"
  run ip -n "$a" link set "$va" up
  run ip -n "$b" link set "$vb" up
  if [ -n "$rate" ]; then
    # tc's "mbps" is megabytes per second; a generous queue avoids drops.
    local kbps
    kbps=$(awk -v r="$rate" 'BEGIN { printf "%d", r * 1000 }')
    run ip netns exec "$a" tc qdisc add dev "$va" root tbf rate "${kbps}kbps" burst 64kb latency 2s
  fi
}

add_ns "$ns_m"
for ((i = 0; i < n; i++)); do add_ns "$(ns_w $i)"; done
link "$ns_m" "$(ns_w 0)" 0 "${bw[0]}"
for ((i = 1; i < n; i++)); do
  link "$(ns_w $((i-1)))" "$(ns_w $i)" "$i" "${bw[$i]}"
  link "$ns_m" "$(ns_w $i)" "$((100 + i))" ""
done
need_trainer=0
[ "$scheduler" != lbc ] && need_trainer=1
if [ $need_trainer -eq 1 ]; then add_ns "$ns_t"; link "$ns_m" "$ns_t" 200 ""; fi

{
  echo "# written by scripts/testbed.sh"
  printf 'port: {master: %d, trainer: %d, worker: [' $port $((port + 1))
  for ((i = 0; i < n; i++)); do printf '%s%d' "$([ $i -gt 0 ] && echo ', ')" $((port + 2 + i)); done
  echo ']}'
  printf "net: {"
  [ $need_trainer -eq 1 ] && printf "m->t: '10.77.200.2:%d', " $((port + 1))
  printf "m->w0: '10.77.0.2:%d'" $((port + 2))
  for ((i = 1; i < n; i++)); do
    printf ", m->w%d: '10.77.%d.2:%d', w%d->w%d: '10.77.%d.2:%d'" $i $((100 + i)) $((port + 2 + i)) \
      $((i - 1)) $i $i $((port + 2 + i))
  done
  echo "}"
  echo "insecure: true  # plaintext inside the testbed's private namespaces"
  echo "dnn: $model"
  echo "video_path: $video"
  echo "frame_size: [$rows, $cols]"
  echo "mode: $mode"
  echo "check: $check"
  if [ $unconfigured -eq 1 ]; then
    echo "master: {ifr_num: $frames, pd_num: $pd_num, scheduler: $scheduler}"
  else
    echo "master: {ifr_num: $frames, pd_num: $pd_num, scheduler: $scheduler, bandwidth: [$bandwidth]}"
  fi
  echo "trainer: {frame_num: $train_frames}"
  echo "trace_dir: '$trace'"
  echo "cache_dir: $cache"
} >"$config"
[ $dry -eq 1 ] && { echo "# config:"; sed 's/^/# /' "$config"; }

# CPU limits: one cgroup per limited role, made before any role starts.
for role in "${!cpu_of[@]}"; do
  group="ds${tag}-$role"
  groups+=("$group") # removed at teardown, also after a half-made limit
  dry_flag=()
  [ $dry -eq 1 ] && dry_flag=(--dry-run)
  "$root/scripts/limit-cpu.sh" "${dry_flag[@]}" --group "$group" --period "$cpu_period" "${cpu_of[$role]}" \
    2>>"$tmp/limits.log" || { cat "$tmp/limits.log" >&2; die "cannot limit $role to ${cpu_of[$role]} CPUs"; }
done

# role_cmd ROLE NS ARGS...: sets cmd to a role's command line, inside its
# network namespace and, when limited, its cgroup (joined before exec). Every
# step execs the next, so the pid of the started command is the role's.
role_cmd() {
  local role=$1 ns=$2; shift 2
  cmd=(nsenter "--net=/run/netns/$ns" --)
  [ -n "${cpu_of[$role]:-}" ] && cmd+=("$root/scripts/ds-limited.sh" --group "ds${tag}-$role" --)
  cmd+=("$bin" "$@")
}
start() { # start ROLE NS ARGS...: a role in the background
  role_cmd "$@"
  if [ $dry -eq 1 ]; then echo "${cmd[*]} &"; return; fi
  "${cmd[@]}" 2>>"$tmp/roles.log" &
  pids+=($!)
}
[ $need_trainer -eq 1 ] && start t "$ns_t" trainer -c "$config"
for ((i = 0; i < n; i++)); do start "w$i" "$(ns_w $i)" worker -i $i -c "$config"; done
role_cmd m "$ns_m" master -c "$config"
if [ $dry -eq 1 ]; then
  echo "${cmd[*]}"
  rm -rf "$tmp"
  exit 0
fi
status=0
"${cmd[@]}" || status=$?
if [ $status -ne 0 ]; then
  echo "testbed: the master failed (status $status); role logs:" >&2
  tail -n 30 "$tmp/roles.log" >&2
fi
# Evidence that the limits bit: how often each group was throttled.
for role in "${!cpu_of[@]}"; do
  stat_file="$(cgroup_dir "ds${tag}-$role")/cpu.stat"
  [ -r "$stat_file" ] || continue
  awk -v r="$role" -v c="${cpu_of[$role]}" -v g="ds${tag}-$role" '$1 == "nr_periods" { p = $2 }
    $1 == "nr_throttled" { t = $2 } $1 == "throttled_time" { s = $2 / 1e9 } $1 == "throttled_usec" { s = $2 / 1e6 }
    END { printf "testbed: %s limited to %s CPUs (cgroup %s): throttled in %d of %d periods (%.1f s)\n", r, c, g, t, p, s }' \
    "$stat_file" >&2
done
exit $status
