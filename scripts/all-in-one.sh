#!/usr/bin/env bash
# The quick start: installs bubblewrap (the task sandbox) when missing, then builds and runs
# `viber all-in-one` (a gateway and a node on this machine). Arguments go to `all-in-one`.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
ensure_bubblewrap
exec cargo run --release -- all-in-one "$@"
