#!/usr/bin/env bash
# The full test suite. Installs what the tests need when it is missing:
#   - npm packages pinned in tests/js/package-lock.json: `ai` (SSE conformance),
#     playwright-core (drives the browser in the board test) and Claude Code's CLI (the
#     claude-code executor's tests);
#   - Debian's chromium (apt-get; as root or through sudo) for the board's end-to-end test;
#   - Debian's bubblewrap, the sandbox task processes run in, and podman, runc and
#     busybox-static for the container test;
#   - Debian's tmux, where persistent terminals live;
#   - git (threads' worktrees, and tests/worktrees.rs's repositories) and openssl (its https
#     git server's certificate);
#   - Debian's systemd, whose `systemd-analyze verify` checks the units `install` writes;
#   - schemathesis 4 (PyPI, in a venv at target/py-venv; SCHEMATHESIS points at its `st`), which
#     tests/api_contract.rs runs against a live gateway and its /api/openapi.json;
#   - prometheus_client (PyPI, same venv; PROMETHEUS_PYTHON points at its python), whose
#     parser reads /metrics in tests/metrics.rs.
# The board itself (assets/) is built by build.rs during `cargo test` (npm ci + vite).
# Extra arguments go to `cargo test` (e.g. a test name filter).
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v npm >/dev/null 2>&1; then
    echo "scripts/test.sh: npm is required (the board is built with npm; the tests run the real \`ai\` package)" >&2
    exit 1
fi
if [ ! -f tests/js/node_modules/ai/package.json ] \
    || [ ! -f tests/js/node_modules/playwright-core/package.json ] \
    || [ ! -x tests/js/node_modules/.bin/claude ] \
    || [ ! -x tests/js/node_modules/.bin/codex ] \
    || [ ! -x tests/js/node_modules/.bin/opencode ] \
    || [ tests/js/package-lock.json -nt tests/js/node_modules/.package-lock.json ]; then
    echo "installing test JS dependencies (tests/js)" >&2
    # `npm install` from the lock file, not `npm ci`: npm 11 writes a lock without the other
    # platforms' optional packages of opencode-ai, and `npm ci` then refuses it as out of
    # sync. --no-save leaves the lock file as it is.
    npm install --prefix tests/js --no-save --no-audit --no-fund --loglevel=error
fi

. scripts/lib.sh

# A clean build of the suite takes a few GiB; on a shared disk that runs low, say so up front
# rather than leave it to be guessed from the first failure.
free_mb=$(df -Pm . | awk 'NR == 2 { print $4 }')
echo "scripts/test.sh: ${free_mb} MiB free on $(df -P . | awk 'NR == 2 { print $6 }')" >&2
if [ "${free_mb:-0}" -lt 6144 ]; then
    echo "scripts/test.sh: warning: under 6 GiB free; the build and the tests may run out of disk" >&2
fi

CHROMIUM="${CHROMIUM:-/usr/bin/chromium}"
if [ ! -x "$CHROMIUM" ]; then
    apt_install chromium
fi
# The sandbox every task process runs in (tests/sandbox.rs and every task test).
ensure_bubblewrap
# Containers (tests/sandbox.rs): podman with runc, and busybox for the test's image.
if ! command -v podman >/dev/null 2>&1 || ! command -v runc >/dev/null 2>&1 \
    || [ ! -x /usr/bin/busybox ]; then
    apt_install podman runc busybox-static
fi
# Terminals live in tmux (tests/terminals.rs drives `viber shell` through tmux too).
if ! command -v tmux >/dev/null 2>&1; then
    apt_install tmux
fi
# Worktrees, diffs and pushes run git; the https push test makes a certificate.
if ! command -v git >/dev/null 2>&1 || ! command -v openssl >/dev/null 2>&1; then
    apt_install git openssl
fi
# The service units of `viber gateway|node|all-in-one install` (tests/foundation.rs).
if ! command -v systemd-analyze >/dev/null 2>&1; then
    apt_install systemd
fi
export CHROMIUM

VENV=target/py-venv
if [ -z "${SCHEMATHESIS:-}" ]; then
    if [ ! -x "$VENV/bin/st" ]; then
        echo "installing schemathesis into $VENV for the API contract test" >&2
        if ! command -v python3 >/dev/null 2>&1 || ! python3 -m venv --help >/dev/null 2>&1 \
            || ! python3 -c 'import ensurepip' >/dev/null 2>&1; then
            apt_install python3 python3-venv
        fi
        rm -rf "$VENV"
        python3 -m venv "$VENV"
        "$VENV/bin/pip" install --quiet --disable-pip-version-check 'schemathesis>=4,<5'
    fi
    SCHEMATHESIS="$(pwd)/$VENV/bin/st"
fi
export SCHEMATHESIS
# Prometheus' own text parser (PyPI prometheus_client) reads /metrics in tests/metrics.rs.
if [ -z "${PROMETHEUS_PYTHON:-}" ]; then
    if ! "$VENV/bin/python" -c 'import prometheus_client' >/dev/null 2>&1; then
        echo "installing prometheus_client into $VENV for the metrics test" >&2
        [ -x "$VENV/bin/pip" ] || python3 -m venv "$VENV"
        "$VENV/bin/pip" install --quiet --disable-pip-version-check 'prometheus_client>=0.20,<1'
    fi
    PROMETHEUS_PYTHON="$(pwd)/$VENV/bin/python"
fi
export PROMETHEUS_PYTHON

cargo test --all-targets "$@"
