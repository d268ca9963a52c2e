#!/usr/bin/env bash
# Sessions and queries per second through nginx (deploy/nginx.conf) to one claude-ws
# instance vs two, with the stand-in CLI (so it measures the relay, nginx and the
# server, not a model). Installs nginx when missing (scripts/install-nginx.sh).
#
# Usage: scripts/bench-nginx.sh [SESSIONS] [QUERIES_PER_SESSION]   (defaults 50 20)
. "$(dirname "${BASH_SOURCE[0]}")/lib/usage.sh" "$@"
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
export BENCH_SESSIONS="${1:-50}" BENCH_QUERIES="${2:-20}"
# The stand-in CLI is an example: `cargo test --test` alone does not build it.
cargo build --release --quiet --example fake-claude
cargo test --release --test scale_out -- --ignored --nocapture \
    bench_sessions_and_queries_through_nginx 2>&1 | grep '^BENCH'
