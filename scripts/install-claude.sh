#!/usr/bin/env bash
# Installs a Claude Code CLI that the tests drive. With no argument: the pinned (newest
# supported) version, into <repo>/.claude-cli/. With VERSION: that version beside it, into
# <repo>/.claude-cli/VERSION/ (e.g. the oldest supported, 2.1.197, for CI's second pass).
# Both are git-ignored. Does nothing if that version is already there. Prints the
# binary's path (and nothing else on stdout).
#
# Usage: scripts/install-claude.sh [VERSION]
. "$(dirname "${BASH_SOURCE[0]}")/lib/usage.sh" "$@"
set -euo pipefail

PINNED="2.1.332"
# The oldest version the protocol tests still run against (docs/cli-versions.md).
OLDEST="2.1.197"

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VERSION="${1:-$PINNED}"
case "$VERSION" in
    oldest) VERSION="$OLDEST" ;;
    [0-9]*.[0-9]*.[0-9]*) ;;
    *)
        echo "error: '$VERSION' is not a version (like $PINNED) or 'oldest'" >&2
        exit 2
        ;;
esac
PACKAGE="@anthropic-ai/claude-code@${VERSION}"
if [ "$VERSION" = "$PINNED" ]; then
    PREFIX="$REPO/.claude-cli"
else
    PREFIX="$REPO/.claude-cli/$VERSION"
fi
CLAUDE="$PREFIX/node_modules/.bin/claude"

installed_version() {
    # `claude --version` prints e.g. "2.1.332 (Claude Code)".
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
