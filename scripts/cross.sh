#!/usr/bin/env bash
# Cross-builds deltaslice for a Raspberry Pi-class target and runs its tests
# under qemu-user:
#
#   scripts/cross.sh arm64|armhf [--quick]
#
# arm64 = 64-bit Raspberry Pi OS (Debian arm64), armhf = ARMv7 hard-float.
# 1. A sysroot of Debian bookworm's own target-arch packages (the libraries of
#    scripts/setup.sh, plus ffmpeg as test_video's reference) is extracted with
#    mmdebstrap into .cross/<arch>/sysroot, and kept until the package list
#    changes.  (A multiarch install on the host is no option: libxnnpack-dev
#    and libpthreadpool-dev are not Multi-Arch: same.)
# 2. cmake/toolchain-cross.cmake cross-compiles into build-<arch>; any
#    compiler warning fails the run.
# 3. ctest runs the unit tests and the e2e scripts through qemu-user
#    (CMAKE_CROSSCOMPILING_EMULATOR; DS_EMULATED=1 makes slow tests smaller).
#    --quick builds and runs a bounded subset (see QUICK below; under 10
#    minutes with the sysroot and the build on a 2-core machine), for CI.
set -euo pipefail
cd "$(dirname "$0")/.."

usage() { echo "usage: scripts/cross.sh arm64|armhf [--quick]" >&2; exit 2; }
[ $# -ge 1 ] || usage
arch=$1; shift
quick=0
for a in "$@"; do
  case $a in
    --quick) quick=1 ;;
    *) usage ;;
  esac
done
case $arch in
  arm64) triple=aarch64-linux-gnu; qemu=qemu-aarch64 ;;
  armhf) triple=arm-linux-gnueabihf; qemu=qemu-arm ;;
  *) usage ;;
esac

# The quick subset: what the Pi fixes touch (infer against the executor, the
# file GCC 12.2 crashed on; video against the target's ffmpeg; RPC limits and security;
# inputs over 2 GiB; `deltaslice run` through DS_EMULATOR), the command line,
# a worker service, live sources (libavdevice loaded at run time from the
# target's libraries), the .npy layout and the cheap unit tests.  The slow
# ones (zoo models, partitions, the trainer) are left to the full run.
QUICK='^(test_codec|test_config|test_rpc|test_rpc_msg|test_rpc_security|test_rpc_accept|test_sched|test_engine_infer|test_video|test_capture|test_output|test_stats|test_worker_service|e2e_cli|e2e_system)$'

suite=bookworm
mirror=${DS_CROSS_MIRROR:-http://deb.debian.org/debian}
root=.cross/$arch
sysroot=$root/sysroot
build=build-$arch
start=$(date +%s)
secs() { echo $(( $(date +%s) - $1 )); }

# ---- host tools --------------------------------------------------------------
host_packages=(mmdebstrap qemu-user "gcc-$triple" protobuf-c-compiler cmake make pkg-config python3)
scripts/setup.sh "${host_packages[@]}"

# ---- sysroot -----------------------------------------------------------------
# The target-arch versions of scripts/setup.sh's libraries (host-only tools
# such as protoc-c, clang and the sanitizer runtime stay on the host).
target_packages=(
  libc6-dev
  libxnnpack-dev libpthreadpool-dev
  libgrpc-dev libprotobuf-c-dev
  libavformat-dev libavcodec-dev libswscale-dev libavutil-dev libavdevice-dev ffmpeg
  libyaml-dev liblz4-dev libzstd-dev liblbfgs-dev
  libcmocka-dev
)
# A library added to setup.sh must be added here too.
for p in $(sed -n '/^packages=(/,/^)/p' scripts/setup.sh | sed 's/#.*//' | grep -oE '\blib[a-z0-9.+-]+-dev\b'); do
  case $p in libclang-rt-*) continue ;; esac
  case " ${target_packages[*]} " in
    *" $p "*) ;;
    *) echo "cross: scripts/setup.sh installs $p, add it to target_packages in $0" >&2; exit 1 ;;
  esac
done

stamp="$suite $mirror ${target_packages[*]}"
t=$(date +%s)
if [ -d "$sysroot" ] && [ "$(cat "$root/packages" 2>/dev/null)" = "$stamp" ]; then
  echo "== sysroot $sysroot (cached)"
else
  echo "== sysroot $sysroot: extracting Debian $suite $arch packages"
  rm -rf "$sysroot" "$sysroot.new" "$root/packages"
  mkdir -p "$root"
  include=$(IFS=,; echo "${target_packages[*]}")
  mmdebstrap --quiet --variant=extract --architectures="$arch" --include="$include" \
    "$suite" "$sysroot.new" "$mirror"
  # Nothing was configured (extract), so absolute symlinks (libm.so ->
  # /lib/...) would point into the host: make them relative to the sysroot.
  abs=$(realpath "$sysroot.new")
  while IFS= read -r -d '' link; do
    target=$(readlink "$link")
    ln -sfn "$(realpath -m --relative-to="$(dirname "$link")" "$abs$target")" "$link"
  done < <(find "$sysroot.new" -type l -lname '/*' -print0)
  # No update-alternatives either: expose the BLAS/LAPACK libraries that some
  # of ffmpeg's dependencies need where the loader looks.
  for d in "$sysroot.new/usr/lib/$triple"/{blas,lapack}; do
    [ -d "$d" ] || continue
    for f in "$d"/lib*.so.*; do
      [ -e "$sysroot.new/usr/lib/$triple/$(basename "$f")" ] ||
        ln -s "$(basename "$d")/$(basename "$f")" "$sysroot.new/usr/lib/$triple/"
    done
  done
  mv "$sysroot.new" "$sysroot"
  echo "$stamp" >"$root/packages"
fi
sysroot_s=$(secs "$t")

# ---- build -------------------------------------------------------------------
echo "== cross build $build"
t=$(date +%s)
cmake --no-warn-unused-cli -S . -B "$build" -DCMAKE_BUILD_TYPE=Release -DCMAKE_TOOLCHAIN_FILE=cmake/toolchain-cross.cmake \
  -DDS_CROSS_ARCH="$arch" -DDS_SYSROOT="$PWD/$sysroot" >/dev/null
log=$root/build.log
targets=()
if [ $quick -eq 1 ]; then # only what the subset runs: the binary and its unit tests
  targets=(--target deltaslice $(echo "$QUICK" | grep -oE 'test_[a-z_]+'))
fi
if ! cmake --build "$build" -j"$(nproc)" "${targets[@]}" >"$log" 2>&1; then
  grep -E -A3 'error:|Error' "$log" | head -40 >&2
  echo "cross: $arch build failed (log: $log)" >&2
  exit 1
fi
if grep -q 'warning:' "$log"; then
  grep -A3 'warning:' "$log" | head -40 >&2
  echo "cross: the $arch build has compiler warnings (log: $log)" >&2
  exit 1
fi
build_s=$(secs "$t")

# ---- tests under qemu-user ---------------------------------------------------
filter=()
[ $quick -eq 1 ] && filter=(-R "$QUICK")
echo "== tests under $qemu${filter:+ (quick subset)}"
t=$(date +%s)
rc=0
ctest --test-dir "$build" --output-on-failure --timeout 1500 "${filter[@]}" 2>&1 | tee "$root/ctest.log" || rc=1
tests_s=$(secs "$t")

total=$(grep -oE 'tests failed out of [0-9]+' "$root/ctest.log" | grep -oE '[0-9]+$' || echo 0)
failed=$(grep -oE '[0-9]+ tests failed out of' "$root/ctest.log" | grep -oE '^[0-9]+' || echo "$total")
skipped=$(grep -cE '\(Skipped\)$' "$root/ctest.log" || true)
passed=$((total - failed - skipped))
# Why each skipped test skipped (the tests print a SKIP line; ctest hides it).
for t in $(sed -nE 's/^[[:space:]]*[0-9]+ - ([A-Za-z0-9_]+) \(Skipped\)$/\1/p' "$root/ctest.log"); do
  why=$(awk -v t="$t" '$0 ~ ("Test: " t "$") {f = 1; next} f && /SKIP|[Ss]kipped/ {print; exit}' \
    "$build/Testing/Temporary/LastTest.log" 2>/dev/null)
  echo "skipped $t: ${why:-no reason printed}"
done
echo "cross $arch$([ $quick -eq 1 ] && echo ' --quick'): $total tests run, $passed passed," \
  "$skipped skipped, $failed failed; sysroot ${sysroot_s} s, build ${build_s} s," \
  "tests ${tests_s} s, wall $(secs "$start") s"
exit $rc
