#!/usr/bin/env bash
# Installs what the client examples need, at pinned versions, inside the repository
# (both places are git-ignored): Python's `websockets` into .examples-venv/ (a venv of
# this machine's python3) and Node's `ws` into examples/js/node_modules/. Does nothing
# when both are already there. Fails if either cannot be installed.
#
# Usage: scripts/install-example-deps.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib/usage.sh" "$@"
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

# The pins live in examples/python/requirements.txt and examples/js/package.json.
websockets_version="$(sed -n 's/^websockets==//p' examples/python/requirements.txt)"
ws_version="$(sed -n 's/.*"ws": *"\([^"]*\)".*/\1/p' examples/js/package.json)"
venv=.examples-venv

if ! "$venv/bin/python" -c "import sys, websockets; sys.exit(websockets.__version__ != '$websockets_version')" 2>/dev/null; then
    echo "installing Python websockets $websockets_version into $venv/" >&2
    python3 -m venv "$venv"
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check \
        -r examples/python/requirements.txt >&2
fi

if [ "$(node -p "require('./examples/js/node_modules/ws/package.json').version" 2>/dev/null)" != "$ws_version" ]; then
    echo "installing Node ws $ws_version into examples/js/node_modules/" >&2
    npm ci --prefix examples/js --no-audit --no-fund --loglevel=error >&2
fi

cat >&2 <<EOF
example dependencies are installed. With a server running (scripts/demo.sh, or claude-ws):
  $venv/bin/python examples/python/client.py "hello"
  node examples/js/client.mjs "hello"
  $venv/bin/python examples/python/permissions.py "bash touch made-by-claude"
  $venv/bin/python examples/python/custom_tool.py 'tool mcp__ws__CustomFormatter {"text":"hi","style":"bold"}'
(the last two prompts are for the scripted model of scripts/demo.sh; a real Claude takes plain requests)
EOF
