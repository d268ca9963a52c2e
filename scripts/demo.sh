#!/usr/bin/env bash
# Watch a full tool-using Claude Code session with no API key: the real CLI runs
# against the scripted Messages API from the tests, and claude-ws serves it.
#
# Usage: scripts/demo.sh [claude-ws flags...]     e.g. scripts/demo.sh --port 9000 --auth-token x
# (claude-ws --help, or docs/operations.md, lists the flags.)
# Flags and the server's environment variables (WEBSOCKET_PORT, CLAUDE_BIN,
# CLAUDE_WS_AUTH_TOKEN, RUST_LOG, ...) reach claude-ws unchanged; only the CLI's
# ANTHROPIC_BASE_URL and ANTHROPIC_API_KEY are set, to the scripted API, and HOME, to a
# throw-away directory (the CLI's settings and transcripts go there, not to ~/.claude).
# The workspace (the server's directory, the default --workspace-root) is also
# throw-away. Then, in another terminal:
#   .examples-venv/bin/python examples/python/client.py hello   (scripts/install-example-deps.sh first)
#   npx wscat -c ws://127.0.0.1:8000/ws
#   > {"type":"query","prompt":"write demo.txt hello from claude","options":{"allowed_tools":["Write"],"permission_mode":"acceptEdits"}}
#   > {"type":"query","prompt":"recall"}
#   > {"type":"query","prompt":"slow 100"}      (then: {"type":"interrupt"})
# Scripted prompts: "write PATH TEXT", "bash COMMAND", "tool NAME {JSON}", "slow N [MS]",
# "big BYTES", "recall" (lists what you said so far); anything else is echoed.
# Ctrl-C stops everything.
#
# DEMO_BIN_DIR=DIR runs DIR/claude-ws and DIR/examples/mock-api as they are instead of
# building them in release mode (the tests use it: a build inside `cargo test` would
# wait for the build directory that cargo holds).
. "$(dirname "${BASH_SOURCE[0]}")/lib/usage.sh" "$@"
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
repo="$PWD"

claude="${CLAUDE_BIN:-$(scripts/install-claude.sh)}"
bin_dir="${DEMO_BIN_DIR:-}"
if [ -z "$bin_dir" ]; then
    cargo build --release --quiet --bin claude-ws --example mock-api
    bin_dir="$repo/target/release"
fi

demo_home="$(mktemp -d "${TMPDIR:-/tmp}/claude-ws-demo.XXXXXX")"
mkdir -p "$demo_home/work"
api_pid=""
cleanup() {
    [ -n "$api_pid" ] && kill "$api_pid" 2>/dev/null || true
    rm -rf "$demo_home"
}
trap cleanup EXIT

# The mock API serves until its stdin closes; keep a pipe open to it.
coproc API { exec "$bin_dir/examples/mock-api"; }
api_pid=$API_PID
read -r line <&"${API[0]}"
api_url="${line#mock-api url=}"
echo "scripted Messages API at $api_url; workspace $demo_home/work" >&2

# The server prints one line when it listens, "ready ws=URL http=URL": pass it on,
# then say how to connect.
hints() {
    local ws="${1#ready ws=}"
    ws="${ws%% *}"
    echo "connect with: npx wscat -c $ws   or   CLAUDE_WS_URL=$ws .examples-venv/bin/python examples/python/client.py hello" >&2
}

cd "$demo_home/work"
HOME="$demo_home" ANTHROPIC_BASE_URL="$api_url" ANTHROPIC_API_KEY=demo-key \
    DISABLE_TELEMETRY=1 DISABLE_AUTOUPDATER=1 CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC=1 \
    CLAUDE_BIN="$claude" RUST_LOG="${RUST_LOG:-info}" \
    "$bin_dir/claude-ws" "$@" | while IFS= read -r line; do
        printf '%s\n' "$line"
        case "$line" in "ready ws="*) hints "$line" ;; esac
    done
