#!/usr/bin/env bash
# How the relay's throughput grows with the gateway's cores (issue 17, BENCHMARKS.md): the
# gateway pinned (taskset) to 1, 2, 4, ... cores, up to half the machine; the load generator,
# its watchers and the floor on the other half. At each width: one 200k-chunk flood
# (`--tasks 1`) and eight independent 25k-chunk floods over eight node connections
# (`--tasks 8 --nodes 8`), each run RUNS times. Prints a markdown table.
#
#   cargo build --release --bins --example relay_bench
#   scripts/bench-cores.sh [RUNS]          # RUNS: 2 by default
#
# On a 2-core machine this measures one width (the gateway on one core, the rest on the
# other); the point is a machine with 16 or more.
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${1:-2}
viber=$PWD/target/release/viber
bench=$PWD/target/release/examples/relay_bench
for f in "$viber" "$bench"; do
    [ -x "$f" ] || { echo "missing $f: cargo build --release --bins --example relay_bench" >&2; exit 1; }
done
command -v taskset >/dev/null || { echo "missing taskset (util-linux)" >&2; exit 1; }
cores=$(nproc)
[ "$cores" -ge 2 ] || { echo "needs at least 2 cores" >&2; exit 1; }
half=$((cores / 2))
rest="$half-$((cores - 1))"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

# `relay_bench --viber` starts this wrapper, which becomes the pinned gateway (exec keeps
# the pid the benchmark reads /proc of).
pinned() {
    local n=$1 wrapper="$tmp/viber-$1"
    printf '#!/bin/sh\nexec taskset -c 0-%d %s "$@"\n' "$((n - 1))" "$viber" > "$wrapper"
    chmod +x "$wrapper"
    echo "$wrapper"
}

# Delivered chunks/s and gateway CPU (% of one core) of one run, tab-separated.
run() {
    local out
    out=$(taskset -c "$rest" "$bench" --viber "$1" "${@:2}" 2>&1) || { echo "$out" >&2; exit 1; }
    local rate cpu
    rate=$(sed -n 's/^relay throughput: \([0-9]*\) chunks\/s delivered.*/\1/p' <<< "$out")
    cpu=$(sed -n 's/^gateway CPU: .* = \([0-9]*\)% of one core.*/\1/p' <<< "$out")
    printf '%s\t%s\n' "$rate" "$cpu"
}

echo "$(date -u +%FT%TZ), $cores cores, load $(cut -d' ' -f1-3 /proc/loadavg); gateway on cores 0..n-1, the rest on $rest"
echo
echo "| gateway cores | flood, 1 task (chunks/s; gateway CPU) | 8 tasks over 8 nodes (chunks/s; gateway CPU) |"
echo "|---|---|---|"
widths=()
for ((n = 1; n < half; n *= 2)); do widths+=("$n"); done
widths+=("$half")
for n in "${widths[@]}"; do
    wrapper=$(pinned "$n")
    one=() eight=()
    for _ in $(seq "$runs"); do
        # Through a variable, so that a failed run stops the script (set -e).
        res=$(run "$wrapper" --tasks 1 --chunks 200000)
        IFS=$'\t' read -r r c <<< "$res"
        one+=("${r}; ${c}%")
        res=$(run "$wrapper" --tasks 8 --nodes 8 --chunks 25000)
        IFS=$'\t' read -r r c <<< "$res"
        eight+=("${r}; ${c}%")
    done
    (IFS=,; echo "| $n | ${one[*]} | ${eight[*]} |" | sed 's/,/, /g')
done
