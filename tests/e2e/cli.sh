#!/usr/bin/env bash
# The command line: help texts, versions, usage errors and configuration
# errors (one line naming file:line:column, exit status 2, never a crash).
set -u
bin=${DS_BIN:?DS_BIN not set}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
fails=0
check() { # check DESCRIPTION EXPECTED_STATUS CMD...
  local what=$1 want=$2; shift 2
  "$@" >"$tmp/out" 2>"$tmp/err"; local got=$?
  if [ "$got" != "$want" ]; then
    echo "FAIL: $what: exit $got, expected $want"; cat "$tmp/out" "$tmp/err"; fails=$((fails+1))
  fi
}
expect_err() { # expect_err DESCRIPTION PATTERN
  if ! grep -qE "$2" "$tmp/err"; then
    echo "FAIL: $1: stderr does not match '$2':"; cat "$tmp/err"; fails=$((fails+1))
  fi
  if [ "$(wc -l <"$tmp/err")" -ne 1 ]; then
    echo "FAIL: $1: expected one line on stderr:"; cat "$tmp/err"; fails=$((fails+1))
  fi
}

check "--help" 0 "$bin" --help
grep -q "usage: deltaslice COMMAND" "$tmp/out" || { echo "FAIL: --help text"; fails=$((fails+1)); }
check "--version" 0 "$bin" --version
grep -qE "^deltaslice [0-9]+\.[0-9]+\.[0-9]+$" "$tmp/out" || { echo "FAIL: --version text"; fails=$((fails+1)); }
check "no command" 2 "$bin"
check "unknown command" 2 "$bin" frobnicate

for cmd in master worker trainer run config; do
  check "$cmd --help" 0 "$bin" $cmd --help
  grep -q "usage: deltaslice $cmd" "$tmp/out" || { echo "FAIL: $cmd --help text"; fails=$((fails+1)); }
  grep -q -- "--config" "$tmp/out" || { echo "FAIL: $cmd --help lacks --config"; fails=$((fails+1)); }
  check "$cmd --version" 0 "$bin" $cmd --version
  check "$cmd bad option" 2 "$bin" $cmd --bogus
done
check "worker without id" 2 "$bin" worker
check "worker bad id" 2 "$bin" worker -i x

cat >"$tmp/bad.yml" <<'YML'
port: {master: 11110, worker: [33330, 33331]}
net: {m->w0: 'localhost:33330', m->w1: 'localhost:33331', w0->w1: 'localhost:33331'}
video_path: data/sample.mp4
master: {ifr_num: 50, pd_num: two}
YML
check "bad config" 2 "$bin" master -c "$tmp/bad.yml"
expect_err "bad config" "bad.yml:4:31: master.pd_num: expected an integer >= 0, got \"two\"$"
check "missing config" 2 "$bin" worker -i 0 -c "$tmp/nope.yml"
expect_err "missing config" "nope.yml: cannot open: No such file or directory"
check "worker id beyond config" 2 "$bin" worker -i 5 -c "$DS_SOURCE_DIR/config.yml"
expect_err "worker id beyond config" "worker id 5 is not configured"
printf 'port: [\n' >"$tmp/syntax.yml"
check "YAML syntax" 2 "$bin" trainer -c "$tmp/syntax.yml"
expect_err "YAML syntax" "syntax.yml:2:1: YAML syntax error"

# An input over 2 GiB (sparse) is sized right: 64-bit off_t on 32-bit targets too.
truncate -s 3G "$tmp/big.f32"
check "infer input over 2 GiB" 1 "$bin" infer zoo:alexnet -i "$tmp/big.f32" -s 1x3x64x96 -o "$tmp/o.f32"
expect_err "infer input over 2 GiB" "big.f32: 3221225472 bytes, larger than 73728 bytes$"

[ $fails -eq 0 ] && echo "cli: all checks passed"
exit $((fails > 0))
