#!/usr/bin/env bash
# Installs the pinned Claude Code CLI that the tests drive, into <repo>/.claude-cli/
# (git-ignored). Does nothing if that version is already there. Prints the binary's path.
#
# Usage: scripts/install-claude.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib/usage.sh" "$@"
set -euo pipefail

VERSION="2.1.197"
PACKAGE="@anthropic-ai/claude-code@${VERSION}"

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PREFIX="$REPO/.claude-cli"
CLAUDE="$PREFIX/node_modules/.bin/claude"

installed_version() {
    # `claude --version` prints e.g. "2.1.197 (Claude Code)".
    "$CLAUDE" --version 2>/dev/null | awk '{print $1; exit}' || true
}

if [ -x "$CLAUDE" ] && [ "$(installed_version)" = "$VERSION" ]; then
    echo "claude $VERSION already installed" >&2
else
    if ! command -v npm >/dev/null 2>&1; then
        echo "error: npm not found on PATH; install Node.js (which ships npm) and rerun $0" >&2
        exit 1
    fi
    echo "installing $PACKAGE into $PREFIX ..." >&2
    mkdir -p "$PREFIX"
    npm install --no-audit --no-fund --prefix "$PREFIX" "$PACKAGE" >&2
    got="$(installed_version)"
    if [ "$got" != "$VERSION" ]; then
        echo "error: installed $CLAUDE reports version '${got:-none}', expected $VERSION" >&2
        exit 1
    fi
fi

echo "$CLAUDE"
