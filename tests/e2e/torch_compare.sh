#!/usr/bin/env bash
# `deltaslice infer` on PyTorch-exported ONNX files gives PyTorch's answer.
# Skipped (77) where Debian's python3-torch is not installed.
set -u
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
/usr/bin/python3 "${DS_SOURCE_DIR:?}/tests/torch/compare.py" "${DS_BIN:?}" "$tmp"
