#!/usr/bin/env bash
# Issue 13's attacks against secured runs: hostile clients change nothing.
# A hostile client (tests/tools/ds_attack, $DS_ATTACK) attacks a running
# chain on loopback (`deltaslice run`: master, trainer, 2 workers, dif, check
# on, AlexNet at 72x96, scheduler nsc so the trainer serves) and each attack
# must get the expected gRPC status; the run must then finish every frame
# with a zero check error and no worker loss, as if nobody had attacked.
# Certificates come from scripts/make-certs.sh: ours, and another CA's.
#  1. mutual TLS (the run's processes have `ulimit -n 128`):
#     - no credentials, a certificate of another CA (named "master"), no
#       certificate: refused at the handshake (UNAVAILABLE);
#     - a valid certificate of another role (w1's: a compromised peer):
#       Results -> ALREADY_EXISTS, also with takeover; Submit of frame 2^40
#       -> FAILED_PRECONDITION; Costs for another size -> FAILED_PRECONDITION,
#       for the run's size -> answered; 7 Predictors for other sizes -> the
#       first trains, the others RESOURCE_EXHAUSTED at once, the run's size
#       still answered; 256 connections to w0 from 10 source addresses (past
#       its fd limit), closed: w0 answers a fresh call afterwards.
#  2. token over TLS (servers with certificates, master with only the CA,
#     DELTASLICE_TOKEN): no token and a wrong token -> UNAUTHENTICATED, the
#     right one -> answered; plaintext -> UNAVAILABLE.
# The runs' lengths follow from how long one attack takes here (a sanitizer
# or an emulator makes it seconds).  Prints every attack's outcome;
# DS_SECURITY_KEEP=1 keeps the logs (the folder is printed).  Exit 77 without openssl.  Under emulation
# (DS_EMULATED=1) frames are further apart.
set -u
bin=${DS_BIN:?DS_BIN not set}
src=${DS_SOURCE_DIR:?DS_SOURCE_DIR not set}
attack=${DS_ATTACK:?DS_ATTACK not set}
command -v openssl >/dev/null || { echo "SKIP: openssl not found (apt-get install openssl)"; exit 77; }
tmp=$(mktemp -d)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null; done
  wait 2>/dev/null
  if [ "${DS_SECURITY_KEEP:-0}" != 0 ]; then echo "logs kept in $tmp"; else rm -rf "$tmp"; fi
}
trap cleanup EXIT
fails=0
fail() { echo "FAIL: $*"; fails=$((fails+1)); }
limit=120
[ "${DS_EMULATED:-0}" != 0 ] && limit=900
base=$((14000 + ($$ % 500) * 10)) # below the ephemeral range (32768..) and faults.sh's ports
size=72x96

# The runs must outlast the attacks: one takes ~0.3 s here (a process, a
# TLS handshake), a few seconds under a sanitizer (its start-up and exit
# scan) or an emulator.  Time one (refused, no handshake) and space each
# run's frames so that it lasts 1.5 times as long as its attacks should.
now_ms() { echo $(( $(date +%s%N) / 1000000 )); }
t0=$(now_ms)
"$attack" ping --target localhost:$((base+9)) >/dev/null 2>&1
attack_ms=$(( $(now_ms) - t0 ))
itv_for() { # itv_for FRAMES ATTACKS EXTRA_MS: master.itv_time, at least 0.04 s
  awk -v f="$1" -v n="$2" -v a=$attack_ms -v x="$3" \
    'BEGIN { a = a > 300 ? a : 300; t = 1.5 * (n * a + x) / 1000 / f; printf "%.3f", (t > 0.04 ? t : 0.04) }'
}
frames=400 token_frames=120
[ "${DS_EMULATED:-0}" != 0 ] && frames=150 token_frames=50
itv=$(itv_for $frames 24 4000)            # 24 attacks, a training's start, the flood
token_itv=$(itv_for $token_frames 4 500)
echo "one attack takes $attack_ms ms here: $frames frames $itv s apart, then $token_frames frames $token_itv s apart"

write_config() { # write_config NAME FRAMES ITV SCHEDULER TLS-LINES
  cat >"$tmp/$1.yml" <<YML
port: {master: $base, trainer: $((base+3)), worker: [$((base+1)), $((base+2))]}
net: {m->t: 'localhost:$((base+3))', m->w0: 'localhost:$((base+1))', m->w1: 'localhost:$((base+2))',
      w0->w1: 'localhost:$((base+2))'}
dnn: zoo:alexnet
video_path: $src/data/sample.mp4
frame_size: [${size%x*}, ${size#*x}]
mode: dif
check: true
master: {ifr_num: $2, pd_num: 2, itv_time: $3, scheduler: $4}
worker: {prof_niter: 1}
trainer: {frame_num: 100, threads: 1}
cache_dir: $tmp/cache
trace_dir: $tmp/trace-$1
$5
YML
}
tls_line="tls: {ca: pki/ca.pem, cert: 'pki/{role}.pem', key: 'pki/{role}.key'}"

wait_log() { # wait_log FILE REGEX SECONDS PID: until FILE matches, while PID lives
  local end=$((SECONDS + $3))
  until grep -qE "$2" "$1"; do
    kill -0 "$4" 2>/dev/null && [ $SECONDS -lt $end ] || return 1
    sleep 0.05
  done
}

# outcome WHAT LINE: prints an attack's outcome: its status and what the
# server said (for a failed connection, gRPC's last reason).
outcome() {
  local status=${2#* } why
  status=${status%%:*}
  why=${2#*"$status: "}
  why=${why#*"$status: "}
  [ "$status" = UNAVAILABLE ] && why=${2##*: }
  printf '  %-54s %s (%.120s)\n' "$1" "$status" "$why"
}
# expect WHAT STATUS-REGEX ATTACK-ARGS...: one attack; its line must carry
# a status matching STATUS-REGEX.  The line is in $line.
expect() {
  local what=$1 want=$2 status; shift 2
  line=$("$attack" "$@" 2>"$tmp/attack.err"); local rc=$?
  status=$(sed -nE 's/^[a-z]+ ([A-Z_]+): .*/\1/p' <<<"$line")
  if [ $rc = 0 ] && [[ $status =~ ^($want)$ ]]; then
    outcome "$what" "$line"
  else
    fail "$what: expected $want, got (exit $rc): $line $(cat "$tmp/attack.err")"
    return 1
  fi
}

# the run's summary: every frame finished, zero error, no worker lost
expect_clean_run() { # expect_clean_run NAME FRAMES
  local out=$tmp/$1.out
  grep -qE "^frames: $2 finished, 0 failed, 0 not sent \(of $2\), [0-9]+ re-sent$" "$out" ||
    fail "$1: not every frame finished: $(grep '^frames:' "$out")"
  grep -qE "^check: $2 frames, max abs error 0, max relative error 0 " "$out" ||
    fail "$1: results differ from full inference: $(grep '^check:' "$out")"
  grep -qE "^faults: 0 worker losses, " "$out" || fail "$1: $(grep '^faults:' "$out")"
  grep -E '^(frames|check|faults):' "$out" | sed "s/^/  $1: /"
}

# ---- 1. mutual TLS ---------------------------------------------------------
write_config mtls "$frames" "$itv" nsc "$tls_line"
# Our certificates, and another CA's for the same roles (its "master" too).
for dir in pki evil; do
  "$src/scripts/make-certs.sh" -c "$tmp/mtls.yml" -o "$tmp/$dir" --days 2 >"$tmp/certs-$dir.log" 2>&1 ||
    { cat "$tmp/certs-$dir.log"; fail "make-certs.sh -o $dir failed"; exit 1; }
done
# `run`'s children (the workers) inherit the low descriptor limit.
(ulimit -n 128 && exec "$bin" run -c "$tmp/mtls.yml") >"$tmp/mtls.out" 2>"$tmp/mtls.err" & run=$!
pids+=("$run")
w0=localhost:$((base+1)) trainer=localhost:$((base+3))
ca=(--ca "$tmp/pki/ca.pem")
w1=("${ca[@]}" --cert "$tmp/pki/w1.pem" --key "$tmp/pki/w1.key")         # a compromised peer
evil=("${ca[@]}" --cert "$tmp/evil/master.pem" --key "$tmp/evil/master.key") # "master", other CA
if wait_log "$tmp/mtls.err" "master INFO .*epoch 1: plan" $limit $run; then
  echo "mutual TLS: attacks while the run sends its frames:"
  expect "no credentials: Results" UNAVAILABLE results --target $w0
  expect "no credentials: Submit" UNAVAILABLE submit --frame 5 --target $w0
  expect "no credentials: Costs" UNAVAILABLE costs --hash 0 --size $size --target $w0
  expect "no credentials: Predictors" UNAVAILABLE predictors --hash 0 --size $size --target $trainer
  expect "other CA's certificate (CN=master): Results, takeover" UNAVAILABLE results --takeover --target $w0 "${evil[@]}"
  expect "other CA's certificate (CN=master): Predictors" UNAVAILABLE predictors --hash 0 --size $size --target $trainer "${evil[@]}"
  expect "CA only, no certificate: Results" UNAVAILABLE results --target $w0 "${ca[@]}"
  expect "w1's certificate: Results" ALREADY_EXISTS results --target $w0 "${w1[@]}"
  expect "w1's certificate: Results, takeover" ALREADY_EXISTS results --takeover --target $w0 "${w1[@]}"
  expect "w1's certificate: Submit frame 2^40, empty jobs" FAILED_PRECONDITION submit --frame $((1 << 40)) --target $w0 "${w1[@]}"
  # The model hash, from an error message (what the attacker did).
  expect "w1's certificate: Costs with a wrong hash" FAILED_PRECONDITION costs --hash 0 --size $size --target $w0 "${w1[@]}"
  hash=$(sed -nE 's/.*\(hash ([0-9a-f]+)\).*/\1/p' <<<"$line")
  [ -n "$hash" ] || { fail "no model hash in: $line"; hash=0; }
  expect "w1's certificate: Costs for 144x192" FAILED_PRECONDITION costs --hash "$hash" --size 144x192 --target $w0 "${w1[@]}"
  expect "w1's certificate: Costs for the run's $size" OK costs --hash "$hash" --size $size --target $w0 "${w1[@]}"
  # Predictors: the first size trains (100 frames at 288x384 take seconds)
  # and its caller waits; the others come while it trains.
  "$attack" predictors --hash "$hash" --size 288x384 --deadline 2 --target $trainer "${w1[@]}" >"$tmp/first.out" 2>"$tmp/first.err" &
  first=$!
  if wait_log "$tmp/mtls.err" "trainer INFO +request for 288x384( from [^ ]+)?: training" $limit $run; then
    for s in 96x128 120x160 144x192 168x224 192x256 216x288; do
      expect "w1's certificate: Predictors for $s" RESOURCE_EXHAUSTED predictors --hash "$hash" --size $s --deadline 5 --target $trainer "${w1[@]}"
    done
  else
    fail "the trainer did not start training for 288x384"
  fi
  wait $first
  line=$(cat "$tmp/first.out")
  [[ $line =~ ^predictors\ (OK|DEADLINE_EXCEEDED): ]] || fail "first Predictors request: $line $(cat "$tmp/first.err")"
  outcome "w1's certificate: Predictors for 288x384 (first)" "$line"
  expect "w1's certificate: Predictors for the run's $size" OK predictors --hash "$hash" --size $size --target $trainer "${w1[@]}"
  # Flood w0 past its descriptor limit.
  w0pid=$(ps -o pid=,args= --ppid $run | awk '/ worker -i 0( |$)/ {print $1; exit}')
  fd_limit=$(awk '/^Max open files/ {print $4}' "/proc/$w0pid/limits" 2>/dev/null)
  [ "${fd_limit:-}" = 128 ] || fail "w0's descriptor limit is ${fd_limit:-unknown}, not 128"
  expect "256 connections to w0 (fd limit ${fd_limit:-?}) from 10 addresses" OK flood --count 256 --sources 10 --target $w0
  # (At its IPv4 address: "localhost" may reach w0's IPv6 listener instead.)
  expect "then w1's certificate: Clock (w0 still accepts)" OK ping --target 127.0.0.1:$((base+1)) "${w1[@]}" ||
    { ss -ltnp | grep -E ":$((base+1)) "; grep -E " (worker0|run) " "$tmp/mtls.err" | tail -8; }
  kill -0 $run 2>/dev/null || fail "the run ended before the attacks were over: make it longer"
else
  fail "mutual TLS: the master did not start sending"; tail -20 "$tmp/mtls.err"
fi
wait $run || fail "mutual TLS: run exited $?"
pids=()
expect_clean_run mtls $frames
for role in "worker0 INFO +serving on localhost:$((base+1)) \(mutual TLS\)" \
            "trainer INFO +serving on localhost:$((base+3)) \(mutual TLS\)" \
            "master INFO +connecting with mutual TLS"; do
  grep -qE "$role" "$tmp/mtls.err" || fail "mutual TLS: no log line like '$role'"
done
# The refusals were logged, and the flood did reach w0's descriptor limit.
for role in "worker0 WARN +refused a TLS handshake: " "trainer WARN +refused a TLS handshake: " \
            "worker0 WARN +refused a result stream from .*opened by \"cn=master\"" \
            "worker0 WARN +out of file descriptors"; do
  grep -qE "$role" "$tmp/mtls.err" || fail "mutual TLS: no log line like '$role'"
done
grep -qE "taken over|replaced by" "$tmp/mtls.err" && fail "mutual TLS: a result stream was replaced"

# ---- 2. token over TLS -----------------------------------------------------
token=$(head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n')
write_config token "$token_frames" "$token_itv" lbc "$tls_line"
sed -i "s|^master: {\(.*\)}$|master: {\1, tls: {ca: pki/ca.pem}}|" "$tmp/token.yml"
DELTASLICE_TOKEN=$token "$bin" run -c "$tmp/token.yml" >"$tmp/token.out" 2>"$tmp/token.err" & run=$!
pids+=("$run")
if wait_log "$tmp/token.err" "master INFO .*epoch 1: plan" $limit $run; then
  echo "token over TLS: attacks while the run sends its frames:"
  expect "CA, no token: Results" UNAUTHENTICATED results --target $w0 "${ca[@]}"
  expect "CA, wrong token: Submit" UNAUTHENTICATED submit --frame 5 --target $w0 "${ca[@]}" --token "x$token"
  expect "right token, no TLS: Clock" UNAVAILABLE ping --target $w0 --token "$token"
  expect "CA and the right token: Clock" OK ping --target $w0 "${ca[@]}" --token "$token"
  kill -0 $run 2>/dev/null || fail "token: the run ended before the attacks were over: make it longer"
else
  fail "token: the master did not start sending"; tail -20 "$tmp/token.err"
fi
wait $run || fail "token: run exited $?"
pids=()
expect_clean_run token $token_frames
grep -qE "worker0 INFO +serving on localhost:$((base+1)) \(TLS \+ token\)" "$tmp/token.err" ||
  fail "token: w0 does not say it serves with TLS + token"
grep -qE "master INFO +connecting with TLS \+ token" "$tmp/token.err" || fail "token: master not on TLS + token"
grep -qE "worker0 WARN +refused a call from .*: (no|wrong) auth token" "$tmp/token.err" ||
  fail "token: w0 did not log a refused call"
grep -qF "$token" "$tmp/token.err" "$tmp/token.out" && fail "token: the token appears in a log"

for f in $(grep -lE "ERROR: (Address|Leak|Thread)Sanitizer|runtime error:" "$tmp"/*.err 2>/dev/null); do
  fail "sanitizer report in $(basename "$f"):"; grep -m3 -E "Sanitizer|runtime error" "$f"
done
[ $fails -eq 0 ] && echo "security: all checks passed"
exit $((fails > 0))
