#!/usr/bin/env bash
# `deltaslice config` and scripts/make-certs.sh:
#  1. the summary of the repository's config.yml, and of a multi-host file
#     with TLS blocks and a token (never printed); --hosts exactly;
#     a file the roles refuse is refused the same way (exit 2).
#  2. make-certs.sh: a CA and a certificate per role that verify against it,
#     with every host of the role in subjectAltName, keys mode 600; the CA
#     is kept on a second run and replaced with --force; a config without
#     TLS and remote routes gets the tls line to add.
#  3. a short `deltaslice run` over mutual TLS with the generated files:
#     every frame checked with zero error, every role saying mutual TLS.
set -u
bin=${DS_BIN:?DS_BIN not set}
src=${DS_SOURCE_DIR:?DS_SOURCE_DIR not set}
command -v openssl >/dev/null || { echo "SKIP: openssl not found (apt-get install openssl)"; exit 77; }
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
fails=0
fail() { echo "FAIL: $*"; fails=$((fails+1)); }
base=$((38000 + ($$ % 500) * 4))
n_frames=10 limit=120
[ "${DS_EMULATED:-0}" != 0 ] && n_frames=4 limit=900
unset DELTASLICE_TOKEN

same() { # same WHAT FILE EXPECTED-TEXT
  if [ "$(cat "$2")" != "$3" ]; then
    fail "$1:"; diff <(echo "$3") "$2" | sed 's/^/  /'
  fi
}

# --- 1. deltaslice config ------------------------------------------------------
c=$src/config.yml
"$bin" config -c "$c" >"$tmp/out" 2>"$tmp/err" || fail "config on config.yml: exit $?: $(cat "$tmp/err")"
same "config on config.yml" "$tmp/out" "\
master: listens on nothing; plaintext (loopback only); dials w0 at localhost:33330, w1 at localhost:33331, trainer at localhost:22220
w0: listens on localhost:33330; plaintext (loopback only); reached by m->w0 at localhost:33330; dials w1 at localhost:33331
w1: listens on localhost:33331; plaintext (loopback only); reached by m->w1 at localhost:33331, w0->w1 at localhost:33331
trainer: listens on localhost:22220; plaintext (loopback only); reached by m->t at localhost:22220; unused by scheduler lbc (nsc and opt use it)
$c: ok"
"$bin" config -c "$c" --hosts >"$tmp/out" 2>&1 || fail "config --hosts on config.yml: exit $?"
same "config --hosts on config.yml" "$tmp/out" "$(printf 'master\nw0 localhost\nw1 localhost\ntrainer localhost')"

# Three devices and an edge server: names and addresses, an extra route past
# w1, listen addresses of every kind, a block of the workers' own.
mkdir -p "$tmp/multi"
cat >"$tmp/multi/deploy.yml" <<'YML'
port: {master: 5000, trainer: 5009, worker: [5001, 5002, 5003]}
net:
  m->t: 'edge.lan:5009'
  m->w0: 'pi0.local:5001'
  m->w1: '10.0.0.3:5002'
  m->w2: 'Edge.lan:5003'
  w0->w1: 'pi1.local:5002'
  w1->w2: '[fd00::9]:5003'
  w0->w2: 'edge.lan:5003'
video_path: clip.mp4
master: {scheduler: nsc}
worker: {listen: ['0.0.0.0', '10.0.0.3', 'fd00::9'], tls: {ca: pki/ca.pem, cert: 'pki/{role}.pem', key: 'pki/{role}.key'}}
trainer: {listen: edge.lan}
tls: {ca: certs/ca.pem, cert: 'certs/{role}.pem', key: 'certs/{role}.key'}
YML
m=$tmp/multi/deploy.yml d=$tmp/multi
"$bin" config -c "$m" --hosts >"$tmp/out" 2>"$tmp/err" || fail "config --hosts on deploy.yml: exit $?: $(cat "$tmp/err")"
same "config --hosts on deploy.yml" "$tmp/out" "\
master
w0 pi0.local
w1 10.0.0.3 pi1.local
w2 Edge.lan fd00::9
trainer edge.lan"
DELTASLICE_TOKEN=s3cret-t0ken "$bin" config -c "$m" >"$tmp/out" 2>"$tmp/err" || fail "config on deploy.yml: exit $?: $(cat "$tmp/err")"
same "config on deploy.yml" "$tmp/out" "\
master: listens on nothing; TLS + token (tls at $m:14:6: ca $d/certs/ca.pem, cert $d/certs/master.pem, key $d/certs/master.key; not readable here: ca, cert, key; token from DELTASLICE_TOKEN); dials w0 at pi0.local:5001, w1 at 10.0.0.3:5002, w2 at Edge.lan:5003, trainer at edge.lan:5009
w0: listens on 0.0.0.0:5001; TLS + token (worker.tls at $m:12:59: ca $d/pki/ca.pem, cert $d/pki/w0.pem, key $d/pki/w0.key; not readable here: ca, cert, key; token from DELTASLICE_TOKEN); reached by m->w0 at pi0.local:5001; dials w1 at pi1.local:5002, w2 at edge.lan:5003
w1: listens on 10.0.0.3:5002; TLS + token (worker.tls at $m:12:59: ca $d/pki/ca.pem, cert $d/pki/w1.pem, key $d/pki/w1.key; not readable here: ca, cert, key; token from DELTASLICE_TOKEN); reached by m->w1 at 10.0.0.3:5002, w0->w1 at pi1.local:5002; dials w2 at [fd00::9]:5003
w2: listens on [fd00::9]:5003; TLS + token (worker.tls at $m:12:59: ca $d/pki/ca.pem, cert $d/pki/w2.pem, key $d/pki/w2.key; not readable here: ca, cert, key; token from DELTASLICE_TOKEN); reached by m->w2 at Edge.lan:5003, w0->w2 at edge.lan:5003, w1->w2 at [fd00::9]:5003
trainer: listens on edge.lan:5009; TLS + token (tls at $m:14:6: ca $d/certs/ca.pem, cert $d/certs/trainer.pem, key $d/certs/trainer.key; not readable here: ca, cert, key; token from DELTASLICE_TOKEN); reached by m->t at edge.lan:5009
$m: ok"
grep -q s3cret "$tmp/out" && fail "config printed the token"

# Refused exactly as a role refuses it: remote routes, no TLS, not insecure.
grep -v tls "$m" >"$d/plain.yml"
"$bin" config -c "$d/plain.yml" >"$tmp/out" 2>"$tmp/err"
[ $? = 2 ] || fail "config on a file without TLS: exit status not 2"
"$bin" worker -i 0 -c "$d/plain.yml" >/dev/null 2>"$tmp/role.err"
[ -s "$tmp/err" ] && [ -s "$tmp/role.err" ] && diff -q "$tmp/err" "$tmp/role.err" >/dev/null ||
  fail "config and worker report the file differently: $(cat "$tmp/err" "$tmp/role.err")"
grep -q "^$d/plain.yml:3:9: net.m->t: 'edge.lan:5009' is not a loopback address and master has no TLS: " "$tmp/err" ||
  fail "config on a file without TLS: $(cat "$tmp/err")"
[ -s "$tmp/out" ] && fail "config printed a summary of a refused file"

# --- 2. make-certs.sh ------------------------------------------------------------
mc=$src/scripts/make-certs.sh
if ! DS_BIN=$bin "$mc" -c "$m" -o "$d/certs" >"$tmp/mc.out" 2>&1; then
  fail "make-certs.sh on deploy.yml: exit status not 0"; cat "$tmp/mc.out"
fi
for role in master w0 w1 w2 trainer; do
  openssl verify -CAfile "$d/certs/ca.pem" "$d/certs/$role.pem" >/dev/null 2>&1 ||
    fail "$role.pem does not verify against ca.pem"
  [ "$(stat -c %a "$d/certs/$role.key")" = 600 ] || fail "$role.key is not mode 600"
  subject=$(openssl x509 -noout -subject -nameopt RFC2253 -in "$d/certs/$role.pem" 2>&1)
  [ "$subject" = "subject=CN=$role" ] || fail "$role.pem: $subject"
  openssl x509 -noout -ext extendedKeyUsage -in "$d/certs/$role.pem" 2>/dev/null |
    grep -q "TLS Web Server Authentication, TLS Web Client Authentication" || fail "$role.pem: extendedKeyUsage"
done
[ "$(stat -c %a "$d/certs/ca.key")" = 600 ] || fail "ca.key is not mode 600"
san() { openssl x509 -noout -ext subjectAltName -in "$d/certs/$1.pem" 2>/dev/null | sed -n 's/^ *//; 2p'; }
[ "$(san w0)" = "DNS:pi0.local" ] || fail "w0.pem SAN: $(san w0)"
[ "$(san w1)" = "IP Address:10.0.0.3, DNS:pi1.local" ] || fail "w1.pem SAN: $(san w1)"
[ "$(san w2)" = "DNS:Edge.lan, IP Address:FD00:0:0:0:0:0:0:9" ] || fail "w2.pem SAN: $(san w2)"
[ "$(san trainer)" = "DNS:edge.lan" ] || fail "trainer.pem SAN: $(san trainer)"
[ -z "$(san master)" ] || fail "master.pem has a SAN: $(san master)"
grep -qxF "  tls: {ca: certs/ca.pem, cert: 'certs/{role}.pem', key: 'certs/{role}.key'}" "$tmp/mc.out" ||
  fail "make-certs.sh: no tls line as deploy.yml sees the files: $(cat "$tmp/mc.out")"
grep -qE "^  w1 +\(10\.0\.0\.3\) +$d/certs/ca.pem $d/certs/w1.pem $d/certs/w1.key$" "$tmp/mc.out" ||
  fail "make-certs.sh: no copy line for w1: $(cat "$tmp/mc.out")"
# A second run keeps the CA (the devices' copies stay valid); --force does not.
ca=$(sha256sum <"$d/certs/ca.pem")
DS_BIN=$bin "$mc" -c "$m" -o "$d/certs" >"$tmp/mc2.out" 2>&1 || fail "make-certs.sh, second run: exit status not 0"
grep -q "^reusing the CA " "$tmp/mc2.out" && [ "$(sha256sum <"$d/certs/ca.pem")" = "$ca" ] || fail "second run replaced the CA"
openssl verify -CAfile "$d/certs/ca.pem" "$d/certs/w0.pem" >/dev/null 2>&1 || fail "second run: w0.pem does not verify"
DS_BIN=$bin "$mc" -c "$m" -o "$d/certs" --force >"$tmp/mc3.out" 2>&1 || fail "make-certs.sh --force: exit status not 0"
[ "$(sha256sum <"$d/certs/ca.pem")" != "$ca" ] || fail "--force kept the CA"
openssl verify -CAfile "$d/certs/ca.pem" "$d/certs/w0.pem" >/dev/null 2>&1 || fail "--force: w0.pem does not verify"
# Remote routes without TLS: the tls line to add first, exit status 2.
before=$(ls -l --time-style=full-iso "$d/certs")
DS_BIN=$bin "$mc" -c "$d/plain.yml" >"$tmp/mc4.out" 2>&1
[ $? = 2 ] || fail "make-certs.sh on a file without TLS: exit status not 2"
grep -qxF "  tls: {ca: certs/ca.pem, cert: 'certs/{role}.pem', key: 'certs/{role}.key'}" "$tmp/mc4.out" ||
  fail "make-certs.sh on a file without TLS: no tls line: $(cat "$tmp/mc4.out")"
[ "$(ls -l --time-style=full-iso "$d/certs")" = "$before" ] || fail "make-certs.sh wrote files for a refused config"

# --- 3. a run over mutual TLS with the generated files ---------------------------------
mkdir -p "$tmp/run"
r=$tmp/run/run.yml
cat >"$r" <<YML
port: {master: $base, worker: [$((base+1)), $((base+2))]}
net: {m->w0: 'localhost:$((base+1))', m->w1: 'localhost:$((base+2))', w0->w1: 'localhost:$((base+2))'}
dnn: zoo:alexnet
video_path: $src/data/sample.mp4
frame_size: [72, 96]
mode: dif
check: true
master: {ifr_num: $n_frames, pd_num: 2}
worker: {prof_niter: 1}
cache_dir: $tmp/cache
YML
if ! DS_BIN=$bin "$mc" -c "$r" >"$tmp/mc5.out" 2>&1; then
  fail "make-certs.sh on run.yml: exit status not 0"; cat "$tmp/mc5.out"
fi
sed -n 's/^  \(tls: .*\)/\1/p' "$tmp/mc5.out" >>"$r"
grep -qxF "tls: {ca: certs/ca.pem, cert: 'certs/{role}.pem', key: 'certs/{role}.key'}" "$r" || fail "run.yml got no tls line"
w0san=$(openssl x509 -noout -ext subjectAltName -in "$tmp/run/certs/w0.pem" 2>/dev/null | sed -n 's/^ *//; 2p')
[ "$w0san" = "DNS:localhost, IP Address:127.0.0.1, IP Address:0:0:0:0:0:0:0:1" ] || fail "localhost SAN: $w0san"
if ! timeout $limit "$bin" run -c "$r" >"$tmp/run.out" 2>"$tmp/run.err"; then
  fail "run over mutual TLS exited non-zero"; cat "$tmp/run.out" "$tmp/run.err"
fi
grep -q "^frames: $n_frames finished, 0 failed, 0 not sent (of $n_frames), 0 re-sent$" "$tmp/run.out" ||
  fail "mutual TLS: not every frame finished"
grep -qE "^check: $n_frames frames, max abs error 0, max relative error 0 " "$tmp/run.out" ||
  fail "mutual TLS: results differ from full inference"
for w in 0 1; do
  grep -qE "worker$w INFO +serving on localhost:$((base+1+w)) \(mutual TLS\)$" "$tmp/run.err" ||
    fail "worker$w does not say it serves mutual TLS"
done
grep -qE "master INFO +connecting with mutual TLS$" "$tmp/run.err" || fail "the master does not say it connects with mutual TLS"

[ $fails -eq 0 ] && echo "certs: all checks passed"
exit $((fails > 0))
