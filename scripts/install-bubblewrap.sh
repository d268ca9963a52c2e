#!/usr/bin/env bash
# Installs Debian's bubblewrap when `bwrap` is missing (the sandbox each claude child runs
# in with --sandbox, and tests/sandbox.rs), then prints the binary's path.
#
# Usage: scripts/install-bubblewrap.sh   (as root, or with sudo available)
. "$(dirname "${BASH_SOURCE[0]}")/lib/usage.sh" "$@"
set -euo pipefail

BWRAP="${CLAUDE_WS_BWRAP:-/usr/bin/bwrap}"
if [ ! -x "$BWRAP" ]; then
    sudo=""
    if [ "$(id -u)" -ne 0 ]; then
        if ! command -v sudo >/dev/null; then
            echo "bwrap is missing and this is not root: install it (apt-get install bubblewrap)" >&2
            exit 1
        fi
        sudo="sudo"
    fi
    export DEBIAN_FRONTEND=noninteractive
    $sudo apt-get install -y --no-install-recommends bubblewrap >&2 \
        || { $sudo apt-get update >&2 && $sudo apt-get install -y --no-install-recommends bubblewrap >&2; }
fi
"$BWRAP" --version >&2
echo "$BWRAP"
