#!/usr/bin/env bash
# The relay benchmark: claude-ws against websocketd and the raw pipe, on this
# machine, printed as one table and written to target/bench/report.md.
#
# Usage: scripts/bench.sh [--warm] [bench arguments...]
#
#   scripts/bench.sh                 # full run, a few minutes
#   BENCH_QUICK=1 scripts/bench.sh   # about a minute (fewer events, one run each)
#   scripts/bench.sh --only relay    # extra arguments go to the bench binary; its own
#                                    # options: cargo bench --bench relay -- --help
#   scripts/bench.sh --warm          # the warm-children benchmark instead, the real CLI
#                                    # (target/bench/warm.md; BENCH_QUICK=1 works too)
#
# It installs what it compares against: Debian's websocketd (apt-get, only if missing)
# and the native client, our own bench binary (scripts/bench/relay.rs, built here).
# Every process it starts is ended before it exits.
. "$(dirname "${BASH_SOURCE[0]}")/lib/usage.sh" "$@"
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "${1:-}" = --warm ]; then
    shift
    scripts/install-claude.sh >/dev/null
    echo "== building (release): the server, the scripted API, the bench client"
    cargo build --release --quiet --bins --examples
    echo "== running (load average now: $(cut -d' ' -f1-3 /proc/loadavg); other work on the machine skews the numbers)"
    exec cargo bench --quiet --bench warm -- "$@"
fi

if ! command -v websocketd >/dev/null 2>&1; then
    echo "== installing websocketd (Debian package)"
    sudo=""
    if [ "$(id -u)" != 0 ]; then sudo="sudo"; fi
    if command -v apt-get >/dev/null 2>&1 &&
        $sudo apt-get update -qq &&
        DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq websocketd >/dev/null; then
        echo "   $(command -v websocketd)"
    else
        echo "   could not install websocketd: its rows will be missing" >&2
    fi
fi

echo "== building (release): the server, the stand-in CLI, the bench client"
cargo build --release --quiet --bins --examples
cargo bench --quiet --bench relay --no-run 2>/dev/null

args=()
if [ -n "${BENCH_QUICK:-}" ] && [ "${BENCH_QUICK}" != 0 ]; then args+=(--quick); fi
echo "== running (load average now: $(cut -d' ' -f1-3 /proc/loadavg); other work on the machine skews the numbers)"
cargo bench --quiet --bench relay -- "${args[@]}" "$@"
