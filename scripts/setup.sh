#!/usr/bin/env bash
# Installs the Debian packages deltaslice needs to build, test and run, or
# with arguments, the packages named (scripts/cross.sh's host tools).
# Idempotent: when everything is present it only checks (a second or so).
set -euo pipefail

packages=(
  build-essential cmake pkg-config git
  libxnnpack-dev libpthreadpool-dev          # conv/pool/gemm kernels
  libgrpc-dev protobuf-c-compiler libprotobuf-c-dev   # RPC, messages, ONNX
  libavformat-dev libavcodec-dev libswscale-dev libavutil-dev libavdevice-dev ffmpeg  # video, cameras
  libyaml-dev liblz4-dev libzstd-dev liblbfgs-dev
  libcmocka-dev clang libclang-rt-14-dev     # tests, sanitizers, libFuzzer
  openssl                                    # TLS certificates: tests/unit/certs.h, scripts/make-certs.sh
  python3-onnx libonnx-testdata              # ONNX checker and node test cases
  python3-grpcio python3-grpc-tools python3-numpy  # examples/subscribe.py (tests/e2e/subscribe.sh)
  iproute2                                   # the namespace testbed (ip, tc)
  graphviz                                   # deltaslice dag -o X.svg
  help2man systemd                           # the .deb: man pages from --help, systemd-analyze
)
[ $# -gt 0 ] && packages=("$@")

missing=()
for p in "${packages[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done
[ ${#missing[@]} -eq 0 ] && exit 0

sudo=""
if [ "$(id -u)" -ne 0 ]; then
  command -v sudo >/dev/null || { echo "setup: need root or sudo to install: ${missing[*]}" >&2; exit 1; }
  sudo="sudo"
fi
echo "setup: installing ${missing[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -qq
$sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
