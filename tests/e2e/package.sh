#!/usr/bin/env bash
# The Debian package: cpack builds it from the build folder, dpkg installs it
# into a scratch root (no container: dpkg --root with the maintainer scripts
# run chrootless against DPKG_ROOT), then the files are checked (binary,
# man pages, conffile, user, limit scripts, units), the units pass
# `systemd-analyze verify` inside that root, and a purge leaves nothing
# behind.  The host system is not changed.  In a cross-build (the binary runs
# under DS_EMULATOR) the target's package is installed the same way, with
# its architecture and dependencies forced.
set -u
bin=${DS_BIN:?DS_BIN not set}
emu=${DS_EMULATOR:-}   # runs a target binary in a cross-build
for tool in cpack dpkg dpkg-deb systemd-analyze readelf; do
  command -v $tool >/dev/null || { echo "SKIP: $tool not found (apt-get install cmake dpkg systemd binutils)"; exit 77; }
done
# The build folder: DS_BIN's, or its parent's when DS_BIN is an emulator wrapper.
build=$(cd "$(dirname "$bin")" && pwd)
[ -f "$build/CPackConfig.cmake" ] || build=$(dirname "$build")
[ -f "$build/CPackConfig.cmake" ] || { echo "SKIP: no CPackConfig.cmake next to $bin"; exit 77; }
if grep -q '^HELP2MAN:FILEPATH=.*NOTFOUND' "$build/CMakeCache.txt"; then
  echo "SKIP: help2man was not found when $build was configured (apt-get install help2man)"; exit 77
fi
host_user=$(getent passwd deltaslice)   # the install must not touch the host's users
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
fails=0
fail() { echo "FAIL: $*"; fails=$((fails+1)); }

# --- build the package ------------------------------------------------------
start=$(date +%s)
if ! cpack --config "$build/CPackConfig.cmake" -B "$tmp/deb" >"$tmp/cpack.log" 2>&1; then
  cat "$tmp/cpack.log"; echo "FAIL: cpack"; exit 1
fi
deb=$(ls "$tmp"/deb/deltaslice_*.deb 2>/dev/null)
[ -f "$deb" ] || { cat "$tmp/cpack.log"; echo "FAIL: cpack wrote no deltaslice_*.deb"; exit 1; }
arch=$(dpkg-deb -f "$deb" Architecture)
echo "package: $(basename "$deb"), $(stat -c %s "$deb") bytes, built in $(($(date +%s) - start)) s"
[ "$(basename "$deb")" = "deltaslice_$(dpkg-deb -f "$deb" Version)_$arch.deb" ] || fail "file name $(basename "$deb")"
version=$($emu "$build/deltaslice" --version 2>/dev/null | awk '{print $2}')
[ -n "$version" ] || { echo "FAIL: cannot run $build/deltaslice --version (a cross-build needs DS_EMULATOR)"; exit 1; }
[ "$(dpkg-deb -f "$deb" Version)" = "$version" ] || fail "Version $(dpkg-deb -f "$deb" Version), binary says $version"

# Architecture: the packaged binary's, read from its ELF header.
dpkg-deb --fsys-tarfile "$deb" | tar -xO ./usr/bin/deltaslice >"$tmp/elf" 2>/dev/null
elf=$(readelf -h "$tmp/elf" 2>/dev/null)
case "$(sed -n 's/^ *Machine: *//p' <<<"$elf")" in
  *X86-64*) want=amd64 ;;
  AArch64) want=arm64 ;;
  ARM) if grep -q 'hard-float' <<<"$elf"; then want=armhf; else want=armel; fi ;;
  *80386*) want=i386 ;;
  *) want="?" ;;
esac
[ "$arch" = "$want" ] || fail "Architecture $arch, but the packaged binary is $want"
native=0
[ "$arch" = "$(dpkg --print-architecture)" ] && native=1

# Depends: on a native build, dpkg-shlibdeps' library packages must be exactly
# the explicit list a cross-build uses (packaging/package.cmake).  A sanitizer
# build links more (ASan's runtime; grpc's own dependencies, without
# --as-needed): not a package anyone ships, so no comparison there.
depends=$(dpkg-deb -f "$deb" Depends)
names() { tr ',|' '\n\n' | sed 's/(.*//; s/ //g' | grep -E '^lib' | sort -u; }
echo "Depends: $depends"
# Libraries loaded at run time are listed by hand in both cases.
shlib=$(names <<<"$depends" | grep -vxF -f <(names <"$build/packaging/dlopen-depends.txt"))
grep -q "$(names <"$build/packaging/dlopen-depends.txt")" <<<"$(names <<<"$depends")" ||
  fail "Depends lacks the libraries loaded at run time: $(cat "$build/packaging/dlopen-depends.txt")"
explicit=$(names <"$build/packaging/lib-depends.txt")
if grep -q '^libasan' <<<"$shlib"; then
  echo "sanitizer build: Depends not compared with the explicit list"
elif [ -z "$shlib" ] || [ "$shlib" != "$explicit" ]; then
  fail "library Depends differ from DS_DEB_LIB_DEPENDS: $(diff <(echo "$explicit") <(echo "$shlib") | grep '^[<>]' | tr '\n' ' ')"
fi

# --- install into a scratch root ----------------------------------------------
# The root's dpkg database holds the host's status of the dependencies, so
# dpkg checks Depends for real without their files being there.
root=$tmp/root
mkdir -p "$root/var/lib/dpkg/info" "$root/var/lib/dpkg/updates" "$root/etc"
touch "$root/var/lib/dpkg/available"
deps=$(tr ',|' '\n\n' <<<"$depends" | sed 's/(.*//; s/ //g' | grep . | sort -u)
dpkg-query -s $deps 2>/dev/null >"$root/var/lib/dpkg/status" || true
for p in $(dpkg-query -W -f '${db:Status-Abbrev}${binary:Package}\n' $deps 2>/dev/null | sed -n 's/^ii //p'); do
  touch "$root/var/lib/dpkg/info/$p.list"
done
dpkg_opts=(--root="$root" --force-script-chrootless --log=/dev/null)
# Not root: the scratch root is ours, files simply stay owned by us.
[ "$(id -u)" = 0 ] || dpkg_opts+=(--force-not-root)
# A foreign package: the host's dpkg database has no arm64/armhf libraries.
[ $native = 1 ] || dpkg_opts+=(--force-architecture --force-depends)
dpkgr() { dpkg "${dpkg_opts[@]}" "$@"; }
if ! dpkgr -i "$deb" >"$tmp/install.log" 2>&1; then
  cat "$tmp/install.log"; echo "FAIL: dpkg --root -i"; exit 1
fi
grep -qi warning "$tmp/install.log" && { echo "dpkg warnings:"; grep -i warning "$tmp/install.log"; }

# The binary and its man pages (one per command of `deltaslice --help`).
$emu "$root/usr/bin/deltaslice" --version >"$tmp/v" 2>&1 && [ "$(cat "$tmp/v")" = "deltaslice $version" ] ||
  fail "installed binary --version: $(cat "$tmp/v")"
man=$root/usr/share/man/man1
[ -s "$man/deltaslice.1.gz" ] || fail "no deltaslice.1.gz"
for cmd in $($emu "$build/deltaslice" --help | awk '/^Commands:|^commands:/ { on = 1; next } on && /^  [a-z]/ { print $1 } on && /^$/ { exit }'); do
  page=$man/deltaslice-$cmd.1.gz
  if [ ! -s "$page" ]; then fail "no man page for '$cmd'"; continue; fi
  zcat "$page" | grep -q "^\.SH SYNOPSIS" || fail "deltaslice-$cmd.1 has no SYNOPSIS"
  zcat "$page" | grep -A1 '^\.B deltaslice$' | grep -q "$cmd" || fail "deltaslice-$cmd.1: synopsis lacks 'deltaslice $cmd'"
done
if command -v man >/dev/null; then
  MANWIDTH=80 man -l "$man/deltaslice.1.gz" 2>&1 | grep -q "deltaslice-worker@N.service" ||
    fail "deltaslice(1) does not render or lacks the units"
fi

# The configuration: a conffile, valid (`deltaslice config`), its paths
# inside the package or the units' folders.
conf=$root/etc/deltaslice/config.yml
[ -f "$conf" ] || fail "no /etc/deltaslice/config.yml"
dpkgr -s deltaslice | grep -q "^ /etc/deltaslice/config.yml [0-9a-f]\{32\}$" || fail "config.yml is not a conffile"
$emu "$root/usr/bin/deltaslice" config -c "$conf" >"$tmp/out" 2>"$tmp/err" &&
  [ "$(tail -1 "$tmp/out")" = "$conf: ok" ] || fail "the packaged config does not parse: $(cat "$tmp/err")"
grep -q '^cache_dir: /var/cache/deltaslice ' "$conf" || fail "cache_dir is not /var/cache/deltaslice"
video=$(sed -n 's/^video_path: *\([^ ]*\).*/\1/p' "$conf")
[ -f "$root$video" ] || fail "video_path $video is not in the package"

# The units' user (systemd-sysusers into the root, not the host).
grep -q '^deltaslice:x:[0-9]*:[0-9]*:.*:/var/lib/deltaslice:' "$root/etc/passwd" ||
  fail "no user deltaslice in the root's /etc/passwd"

# Limit scripts: runnable from their installed folder; the units' egress
# helper hands this unit's cgroup and class to limit-bandwidth.sh.
lib=$root/usr/lib/deltaslice
for s in limit-bandwidth.sh limit-cpu.sh ds-limited.sh unit-egress.sh make-certs.sh; do
  [ -x "$lib/$s" ] || fail "$s not installed executable"
done
# make-certs.sh finds the binary (DS_BIN here: the root's) and reads the packaged config.
if [ -z "$emu" ] && command -v openssl >/dev/null; then
  DS_BIN=$root/usr/bin/deltaslice "$lib/make-certs.sh" -c "$conf" -o "$tmp/certs" >"$tmp/out" 2>&1 &&
    openssl verify -CAfile "$tmp/certs/ca.pem" "$tmp/certs/w1.pem" >/dev/null 2>&1 ||
    fail "installed make-certs.sh: $(cat "$tmp/out")"
fi
"$lib/limit-cpu.sh" --dry-run --cgroup v2 --group w0 25% >"$tmp/out" 2>&1 &&
  grep -q "^echo '25000 100000' > .*/w0/cpu.max$" "$tmp/out" || fail "installed limit-cpu.sh: $(cat "$tmp/out")"
egress() { # egress UNIT [VAR=VALUE...]
  local unit=$1; shift
  env DS_EGRESS_DRY_RUN=1 DS_EGRESS_CGROUP="deltaslice.slice/$unit" "$@" "$lib/unit-egress.sh" start "$unit" >"$tmp/out" 2>&1
}
egress deltaslice-worker@3.service DS_EGRESS_IFACE=eth0 DS_EGRESS_RATE=1mbps || fail "unit-egress.sh worker@3: $(cat "$tmp/out")"
# (hybrid cgroup systems: the path starts with unified/)
grep -qE "^nft add rule inet deltaslice output socket cgroupv2 level 2 '\"(unified/)?deltaslice\.slice/deltaslice-worker@3\.service\"' meta mark set 0x100013$" "$tmp/out" &&
  grep -qF "tc class add dev eth0 parent 10: classid 10:13 htb rate 1mbps" "$tmp/out" ||
  fail "unit-egress.sh worker@3 commands:$(sed 's/^/ | /' "$tmp/out")"
egress deltaslice-master.service DS_EGRESS_IFACE=wlan0 DS_EGRESS_RATE=4mbps &&
  grep -qF "tc class add dev wlan0 parent 10: classid 10:1 htb rate 4mbps" "$tmp/out" || fail "unit-egress.sh master: $(cat "$tmp/out")"
egress deltaslice-trainer.service && [ ! -s "$tmp/out" ] || fail "unit-egress.sh without DS_EGRESS_RATE is not a no-op: $(cat "$tmp/out")"
env DS_EGRESS_DRY_RUN=1 DS_EGRESS_CGROUP=deltaslice.slice/deltaslice-worker@3.service "$lib/unit-egress.sh" stop deltaslice-worker@3.service >"$tmp/out" 2>&1 &&
  grep -qF 'nft delete rule inet deltaslice output handle <the rule of "deltaslice.slice/deltaslice-worker@3.service">' "$tmp/out" ||
  fail "unit-egress.sh stop: $(cat "$tmp/out")"
egress deltaslice-trainer.service DS_EGRESS_RATE=4mbps && fail "unit-egress.sh accepts a rate without an interface"
env DS_EGRESS_DRY_RUN=1 DS_EGRESS_CGROUP=user.slice/x.service DS_EGRESS_IFACE=eth0 DS_EGRESS_RATE=1mbps \
  "$lib/unit-egress.sh" start deltaslice-master.service >/dev/null 2>&1 && fail "unit-egress.sh runs outside its unit's cgroup"

# --- the units -----------------------------------------------------------------
units=$root/usr/lib/systemd/system
for u in deltaslice-master.service deltaslice-trainer.service deltaslice-worker@.service deltaslice.slice; do
  [ -f "$units/$u" ] || fail "unit $u not installed"
done
grep -q '^ExecStart=/usr/bin/deltaslice worker -i %i -c ${DS_CONFIG}$' "$units/deltaslice-worker@.service" ||
  fail "worker unit ExecStart"
grep -q '^Environment=DS_CONFIG=/etc/deltaslice/config.yml$' "$units/deltaslice-worker@.service" || fail "worker unit config"
for u in deltaslice-master.service deltaslice-trainer.service deltaslice-worker@.service; do
  for line in User=deltaslice Restart=on-failure CacheDirectory=deltaslice Slice=deltaslice.slice; do
    grep -qx "$line" "$units/$u" || fail "$u lacks $line"
  done
done
# verify resolves dependencies (sysinit.target, ...) and executables inside the
# root: give it the host's targets and slices.  Any message is a failure
# (bad settings are only warnings).
mkdir -p "$root/lib/systemd/system"
cp /lib/systemd/system/*.target /lib/systemd/system/*.slice "$root/lib/systemd/system/" 2>/dev/null
(cd "$units" && MANPATH=$root/usr/share/man SYSTEMD_LOG_COLOR=0 systemd-analyze verify --root="$root" \
  deltaslice-master.service deltaslice-trainer.service deltaslice-worker@.service \
  deltaslice-worker@0.service deltaslice-worker@1.service deltaslice.slice) >"$tmp/verify" 2>&1
rc=$?
if [ $rc != 0 ] || [ -s "$tmp/verify" ]; then
  fail "systemd-analyze verify (exit $rc):"; sed 's/^/  | /' "$tmp/verify"
else
  echo "systemd-analyze verify: 6 units, no findings"
fi
# The sandbox's exposure score (0 = locked down .. 10 = none).
for u in deltaslice-worker@0.service deltaslice-trainer.service deltaslice-master.service; do
  score=$(cd "$units" && systemd-analyze security --offline=yes --root="$root" "$u" 2>/dev/null |
    sed -n 's/.*Overall exposure level for .*: \([0-9.]*\) .*/\1/p')
  echo "systemd-analyze security $u: exposure ${score:-?}"
  awk -v s="${score:-99}" 'BEGIN { exit !(s <= 2.5) }' || fail "$u: exposure ${score:-unknown} > 2.5"
done

# --- purge: files, conffile, caches and enable links go; the host is untouched
mkdir -p "$root/var/cache/deltaslice" "$root/etc/systemd/system/multi-user.target.wants"
touch "$root/var/cache/deltaslice/costs.txt"
ln -s /usr/lib/systemd/system/deltaslice-worker@.service "$root/etc/systemd/system/multi-user.target.wants/deltaslice-worker@0.service"
if ! dpkgr -P deltaslice >"$tmp/purge.log" 2>&1; then cat "$tmp/purge.log"; fail "dpkg --root -P"; fi
left=$(cd "$root" && find etc/deltaslice usr/bin/deltaslice usr/lib/deltaslice usr/lib/systemd/system/deltaslice.slice \
  usr/share/man/man1/deltaslice.1.gz var/cache/deltaslice etc/systemd/system/multi-user.target.wants/deltaslice-worker@0.service 2>/dev/null)
[ -z "$left" ] || fail "left after purge: $left"
[ "$(getent passwd deltaslice)" = "$host_user" ] || fail "the host's user deltaslice changed"

[ $fails = 0 ] && echo "package: all checks passed ($(($(date +%s) - start)) s)"
[ $fails = 0 ]
