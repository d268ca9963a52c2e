#!/usr/bin/env bash
# Installs Debian's nginx when it is missing (tests/scale_out.rs and scripts/bench-nginx.sh
# run it in front of two claude-ws instances), then prints the binary's path. Only the
# package is installed: no site is enabled or started (the tests run nginx themselves,
# as the current user, from a generated configuration in a temporary directory).
#
# Usage: scripts/install-nginx.sh   (as root, or with sudo available)
. "$(dirname "${BASH_SOURCE[0]}")/lib/usage.sh" "$@"
set -euo pipefail

NGINX="${NGINX:-/usr/sbin/nginx}"
if [ ! -x "$NGINX" ]; then
    sudo=""
    if [ "$(id -u)" -ne 0 ]; then
        if ! command -v sudo >/dev/null; then
            echo "nginx is missing and this is not root: install it (apt-get install nginx)" >&2
            exit 1
        fi
        sudo="sudo"
    fi
    # Keep the package from starting the distribution's own nginx on port 80.
    export DEBIAN_FRONTEND=noninteractive RUNLEVEL=1
    $sudo apt-get install -y --no-install-recommends nginx >&2 \
        || { $sudo apt-get update >&2 && $sudo apt-get install -y --no-install-recommends nginx >&2; }
fi
"$NGINX" -v >&2
echo "$NGINX"
