#!/usr/bin/env bash
# make-certs.sh - a certificate authority and one certificate per role for
# deltaslice's mutual TLS (README.md, "Security").
#
# Reads the roles and the hosts their clients dial from
# `deltaslice config --hosts`, then writes with openssl (EC P-256):
#   DIR/ca.pem, DIR/ca.key       the CA (kept when present, unless --force)
#   DIR/ROLE.pem, DIR/ROLE.key   master, w0, w1, ..., trainer: CN=ROLE,
#                                subjectAltName = every host of the role,
#                                extendedKeyUsage serverAuth, clientAuth
# Keys are mode 600.  The binary: $DS_BIN, else build/deltaslice of this
# repository, else deltaslice in PATH.
set -euo pipefail
PROG=$(basename "$0")

usage() {
  cat <<EOF
usage: $PROG [-c config.yml] [-o DIR] [--days N] [--force]

Makes a CA and a certificate + key per role of the configuration (master,
w0, w1, ..., trainer), each naming the hosts the role's clients dial, and
prints the tls line to add to the configuration and which files go to
which device.

options:
  -c, --config FILE  configuration (default: what deltaslice reads, config.yml)
  -o, --out DIR      where to write (default: certs/ next to the configuration)
  --days N           validity of the role certificates (default 825; the CA
                     gets 3650 days or N, whichever is longer)
  --force            make a new CA even if DIR has one (every role then needs
                     its new files)
  -h, --help         this help
EOF
}
die() { echo "$PROG: $*" >&2; exit "${status:-1}"; }
usage_error() { echo "$PROG: $*" >&2; echo "(see '$PROG --help')" >&2; exit 2; }

config="" dir="" days=825 force=0
while [ $# -gt 0 ]; do
  case $1 in
    -c | --config) [ $# -ge 2 ] || usage_error "$1 needs a value"; config=$2; shift 2 ;;
    -o | --out) [ $# -ge 2 ] || usage_error "$1 needs a value"; dir=$2; shift 2 ;;
    --days) [ $# -ge 2 ] || usage_error "$1 needs a value"; days=$2; shift 2 ;;
    --force) force=1; shift ;;
    -h | --help) usage; exit 0 ;;
    *) usage_error "unknown argument '$1'" ;;
  esac
done
if ! [[ $days =~ ^[0-9]{1,5}$ ]] || [ "$days" -lt 1 ]; then
  usage_error "--days wants a number of days, not '$days'"
fi
command -v openssl >/dev/null || die "openssl not found (apt-get install openssl)"

here=$(cd "$(dirname "$0")" && pwd)
if [ -n "${DS_BIN:-}" ]; then
  bin=$DS_BIN
elif [ -x "$here/../build/deltaslice" ]; then
  bin=$here/../build/deltaslice
elif command -v deltaslice >/dev/null; then
  bin=deltaslice
else
  die "no deltaslice binary: set DS_BIN, build the repository (build/deltaslice) or install the package"
fi

# The configuration's folder: its relative paths, and the default DIR.
if [ -n "$config" ]; then
  cfgdir=$(dirname "$config")
else
  cfgdir=.
fi
if [ -z "$dir" ]; then
  if [ "$cfgdir" = . ]; then dir=certs; else dir=$cfgdir/certs; fi
fi

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

# A path as the configuration sees it: relative to its folder when inside
# it, else absolute; quoted for YAML when it needs it.
config_path() {
  local rel
  rel=$(realpath -m --relative-to="$cfgdir" "$1")
  case $rel in ../* | ..) realpath -m "$1" ;; *) printf '%s\n' "$rel" ;; esac
}
yaml_quote() {
  if [[ $1 =~ ^[A-Za-z0-9_./-]+$ ]]; then printf '%s' "$1"; else printf "'%s'" "${1//\'/\'\'}"; fi
}
tls_line() {
  local base
  base=$(config_path "$dir")
  echo "tls: {ca: $(yaml_quote "$base/ca.pem"), cert: $(yaml_quote "$base/{role}.pem"), key: $(yaml_quote "$base/{role}.key")}"
}

# The configuration's roles and hosts; a file the roles would refuse stops
# here.  Without TLS, non-loopback routes are refused: the tls line comes
# first (its files need not exist yet).
if ! hosts=$("$bin" config ${config:+-c "$config"} --hosts 2>"$tmp/err"); then
  cat "$tmp/err" >&2
  status=2
  grep -q "has no TLS" "$tmp/err" && die "add this line to ${config:-config.yml} first, then run $PROG again:
  $(tls_line)"
  die "'$bin config --hosts' refused ${config:-config.yml}"
fi

mkdir -p "$dir" || die "cannot create $dir"
ca_days=$((days > 3650 ? days : 3650))
# openssl's own configuration file is not needed (nor always installed).
cat >"$tmp/req.cnf" <<'EOF'
[req]
distinguished_name = dn
[dn]
[ca]
basicConstraints = critical, CA:TRUE
keyUsage = critical, keyCertSign, cRLSign
subjectKeyIdentifier = hash
EOF
ossl() { # ossl WHAT ARGS...: openssl, its output shown only on failure
  local what=$1; shift
  openssl "$@" >"$tmp/log" 2>&1 || { cat "$tmp/log" >&2; die "openssl failed: $what"; }
}
# A key (mode 600 from the start) and a request or, with -x509, a
# self-signed certificate: new_req KEY OUT REQ-ARGS...
new_req() {
  local key=$1 out=$2; shift 2
  (umask 077 && openssl req -config "$tmp/req.cnf" -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 \
    -nodes -keyout "$key" -out "$out" "$@" >"$tmp/log" 2>&1) || { cat "$tmp/log" >&2; die "openssl failed: $out"; }
}

# --- the CA --------------------------------------------------------------------
if [ $force = 0 ] && [ -e "$dir/ca.pem" ] && [ -e "$dir/ca.key" ]; then
  # the pair must belong together, or every certificate signed now is useless
  a=$(openssl x509 -noout -pubkey -in "$dir/ca.pem" 2>/dev/null) || die "$dir/ca.pem is not a certificate (--force makes a new CA)"
  b=$(openssl pkey -pubout -in "$dir/ca.key" 2>/dev/null) || die "$dir/ca.key is not a private key (--force makes a new CA)"
  [ "$a" = "$b" ] || die "$dir/ca.key is not the key of $dir/ca.pem (--force makes a new CA)"
  echo "reusing the CA $dir/ca.pem (--force makes a new one)"
elif [ $force = 0 ] && { [ -e "$dir/ca.pem" ] || [ -e "$dir/ca.key" ]; }; then
  die "$dir has only one of ca.pem and ca.key (--force makes a new CA)"
else
  new_req "$tmp/ca.key" "$tmp/ca.pem" -x509 -days "$ca_days" -subj "/CN=deltaslice CA" -extensions ca -sha256
  mv -f "$tmp/ca.key" "$dir/ca.key"
  mv -f "$tmp/ca.pem" "$dir/ca.pem"
  chmod 644 "$dir/ca.pem"
  echo "wrote the CA $dir/ca.pem, $dir/ca.key ($ca_days days)"
fi

# --- one certificate per role -----------------------------------------------------
san_of() { # san_of HOST...: "DNS:a,IP:1.2.3.4,..." without repeats
  local out=() e h
  for h in "$@"; do
    local add=()
    if [ "$h" = localhost ]; then
      add=(DNS:localhost IP:127.0.0.1 IP:::1)
    elif [[ $h =~ ^[0-9]+\.[0-9]+\.[0-9]+\.[0-9]+$ || $h == *:* ]]; then
      add=("IP:$h")
    else
      add=("DNS:$h")
    fi
    for e in "${add[@]}"; do
      [[ " ${out[*]} " == *" $e "* ]] || out+=("$e")
    done
  done
  local IFS=,
  printf '%s' "${out[*]}"
}
roles=()
while read -r role rest; do
  [ -n "$role" ] || continue
  # shellcheck disable=SC2086 # host names hold no spaces
  san=$(san_of $rest)
  {
    echo "basicConstraints = critical, CA:FALSE"
    echo "keyUsage = critical, digitalSignature"
    echo "extendedKeyUsage = serverAuth, clientAuth"
    echo "subjectKeyIdentifier = hash"
    echo "authorityKeyIdentifier = keyid"
    [ -z "$san" ] || echo "subjectAltName = $san"
  } >"$tmp/$role.ext"
  new_req "$tmp/$role.key" "$tmp/$role.csr" -subj "/CN=$role"
  serial=$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')
  ossl "$role's certificate" x509 -req -in "$tmp/$role.csr" -CA "$dir/ca.pem" -CAkey "$dir/ca.key" \
    -set_serial "0x$serial" -days "$days" -sha256 -extfile "$tmp/$role.ext" -out "$tmp/$role.pem"
  mv -f "$tmp/$role.key" "$dir/$role.key"
  mv -f "$tmp/$role.pem" "$dir/$role.pem"
  chmod 644 "$dir/$role.pem"
  echo "wrote $dir/$role.pem, $dir/$role.key: CN=$role${san:+, $san}"
  roles+=("$role ${rest:-}")
done <<<"$hosts"

# --- what to do with them --------------------------------------------------------
echo
echo "The tls line of ${config:-config.yml} (the same on every device):"
echo "  $(tls_line)"
echo "Copy to each device, where the tls line names them:"
for r in "${roles[@]}"; do
  read -r role first _ <<<"$r"
  printf '  %-8s %-24s %s %s %s\n' "$role" "(${first:-its device})" "$dir/ca.pem" "$dir/$role.pem" "$dir/$role.key"
done
echo "$dir/ca.key signs new certificates: keep it on this machine only."
