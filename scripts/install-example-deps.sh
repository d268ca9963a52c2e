#!/usr/bin/env bash
# Installs what the client examples need, at pinned versions, inside the repository
# (both places are git-ignored): Python's `websockets` and `claude-agent-sdk` into
# .examples-venv/ (a venv of this machine's python3) and Node's `ws` and
# `@anthropic-ai/claude-agent-sdk` into examples/js/node_modules/ (without the SDK's
# optional bundled CLI binaries: through claude-ws the CLI runs on the server). Does
# nothing when all are already there. Fails if any cannot be installed.
#
# Usage: scripts/install-example-deps.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib/usage.sh" "$@"
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

# The pins live in examples/python/requirements.txt and examples/js/package.json.
websockets_version="$(sed -n 's/^websockets==//p' examples/python/requirements.txt)"
py_sdk_version="$(sed -n 's/^claude-agent-sdk==//p' examples/python/requirements.txt)"
ws_version="$(sed -n 's/.*"ws": *"\([^"]*\)".*/\1/p' examples/js/package.json)"
js_sdk_version="$(sed -n 's/.*"@anthropic-ai\/claude-agent-sdk": *"\([^"]*\)".*/\1/p' examples/js/package.json)"
venv=.examples-venv

if ! "$venv/bin/python" -c "import sys, websockets, claude_agent_sdk; sys.exit(websockets.__version__ != '$websockets_version' or claude_agent_sdk.__version__ != '$py_sdk_version')" 2>/dev/null; then
    echo "installing Python websockets $websockets_version and claude-agent-sdk $py_sdk_version into $venv/" >&2
    python3 -m venv "$venv"
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check \
        -r examples/python/requirements.txt >&2
fi

if [ "$(node -p "require('./examples/js/node_modules/ws/package.json').version" 2>/dev/null)" != "$ws_version" ] \
    || [ "$(node -p "require('./examples/js/node_modules/@anthropic-ai/claude-agent-sdk/package.json').version" 2>/dev/null)" != "$js_sdk_version" ]; then
    echo "installing Node ws $ws_version and @anthropic-ai/claude-agent-sdk $js_sdk_version into examples/js/node_modules/" >&2
    npm ci --prefix examples/js --omit=optional --no-audit --no-fund --loglevel=error >&2
fi

cat >&2 <<EOF
example dependencies are installed. With a server running (scripts/demo.sh, or claude-ws):
  $venv/bin/python examples/python/client.py "hello"
  node examples/js/client.mjs "hello"
  $venv/bin/python examples/python/permissions.py "bash touch made-by-claude"
  $venv/bin/python examples/python/custom_tool.py 'tool mcp__ws__CustomFormatter {"text":"hi","style":"bold"}'
(the last two prompts are for the scripted model of scripts/demo.sh; a real Claude takes plain requests)
EOF
