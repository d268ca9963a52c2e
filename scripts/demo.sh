#!/usr/bin/env bash
# Watch a full tool-using Claude Code session with no API key: the real CLI runs
# against the scripted Messages API from the tests, and claude-ws serves it.
#
# Usage: scripts/demo.sh            then, in another terminal:
#   npx wscat -c ws://127.0.0.1:8000/ws
#   > {"type":"query","prompt":"write demo.txt hello from claude","options":{"allowed_tools":["Write"],"permission_mode":"acceptEdits"}}
#   > {"type":"query","prompt":"recall"}
#   > {"type":"query","prompt":"slow 100"}      (then: {"type":"interrupt"})
# Scripted prompts: "write PATH TEXT", "bash COMMAND", "slow N [MS]", "big BYTES",
# "recall" (lists what you said so far); anything else is echoed.
# Ctrl-C stops everything.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
PORT="${WEBSOCKET_PORT:-8000}"
HTTP="${HTTP_PORT:-8001}"

claude="$(scripts/install-claude.sh)"
cargo build --release --quiet --bin claude-ws --example mock-api

demo_home="$(mktemp -d "${TMPDIR:-/tmp}/claude-ws-demo.XXXXXX")"
mkdir -p "$demo_home/work"
api_pid=""
cleanup() {
    [ -n "$api_pid" ] && kill "$api_pid" 2>/dev/null || true
    rm -rf "$demo_home"
}
trap cleanup EXIT

# The mock API serves until its stdin closes; keep a pipe open to it.
coproc API { exec target/release/examples/mock-api; }
api_pid=$API_PID
read -r line <&"${API[0]}"
api_url="${line#mock-api url=}"
echo "scripted Messages API at $api_url; workspace $demo_home/work" >&2
echo "connect with: npx wscat -c ws://127.0.0.1:$PORT/ws   (health: curl http://127.0.0.1:$HTTP/health)" >&2

cd "$demo_home/work"
env -i PATH="$PATH" HOME="$demo_home" \
    ANTHROPIC_BASE_URL="$api_url" ANTHROPIC_API_KEY=demo-key \
    DISABLE_TELEMETRY=1 DISABLE_AUTOUPDATER=1 CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC=1 \
    RUST_LOG="${RUST_LOG:-info}" \
    "$OLDPWD/target/release/claude-ws" --port "$PORT" --http-port "$HTTP" --claude-bin "$claude"
