#!/usr/bin/env bash
# Installs what the browser test (tests/browser.rs) drives: Debian's `chromium` (with
# apt-get, when /usr/bin/chromium is missing) and the pinned `playwright-core` from npm
# into <repo>/.browser-test/ (git-ignored). playwright-core only drives a browser; it
# downloads none (Playwright's own browser builds cannot be fetched here).
# Does nothing that is already done.
#
# Usage: scripts/install-browser.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib/usage.sh" "$@"
set -euo pipefail

PLAYWRIGHT_VERSION="1.65.1"

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PREFIX="$REPO/.browser-test"
CHROMIUM=/usr/bin/chromium

if [ ! -x "$CHROMIUM" ]; then
    if ! command -v apt-get >/dev/null 2>&1; then
        echo "error: $CHROMIUM is missing and there is no apt-get to install it" >&2
        exit 1
    fi
    echo "installing Debian's chromium ..." >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >&2
    apt-get install -y -qq --no-install-recommends chromium fonts-dejavu-core >&2
fi

installed_version() {
    node -e 'console.log(require(process.argv[1]).version)' \
        "$PREFIX/node_modules/playwright-core/package.json" 2>/dev/null || true
}

if [ "$(installed_version)" != "$PLAYWRIGHT_VERSION" ]; then
    if ! command -v npm >/dev/null 2>&1; then
        echo "error: npm not found on PATH; install Node.js (which ships npm) and rerun $0" >&2
        exit 1
    fi
    echo "installing playwright-core@$PLAYWRIGHT_VERSION into $PREFIX ..." >&2
    mkdir -p "$PREFIX"
    # No browser download: playwright-core has none, and this says so twice.
    PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npm install --no-audit --no-fund --no-save \
        --prefix "$PREFIX" "playwright-core@$PLAYWRIGHT_VERSION" >&2
    got="$(installed_version)"
    if [ "$got" != "$PLAYWRIGHT_VERSION" ]; then
        echo "error: installed playwright-core reports version '${got:-none}', expected $PLAYWRIGHT_VERSION" >&2
        exit 1
    fi
fi

"$CHROMIUM" --version >&2
echo "$PREFIX/node_modules"
