#!/usr/bin/env bash
# The full test suite. Installs what the tests need when it is missing:
#   - the `ai` npm package (pinned in tests/js/package-lock.json) for the SSE conformance test.
# Extra arguments go to `cargo test` (e.g. a test name filter).
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v npm >/dev/null 2>&1; then
    echo "scripts/test.sh: npm is required (the conformance tests run the real \`ai\` package)" >&2
    exit 1
fi
if [ ! -f tests/js/node_modules/ai/package.json ] || [ tests/js/package-lock.json -nt tests/js/node_modules/.package-lock.json ]; then
    echo "installing test JS dependencies (tests/js)" >&2
    npm ci --prefix tests/js --no-audit --no-fund --loglevel=error
fi

cargo test --all-targets "$@"
