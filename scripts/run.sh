#!/usr/bin/env bash
# The main job on a fresh machine: installs what is needed, builds, and runs
# master + workers + trainer on this machine ('deltaslice run') with the
# repository's config.yml (the bundled clip and zoo:alexnet). Extra
# arguments go to 'deltaslice run', e.g. -c my.yml.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
cmake -S . -B build -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build build -j"$(nproc)" --target deltaslice >/dev/null
exec build/deltaslice run "$@"
