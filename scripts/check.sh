#!/usr/bin/env bash
# Everything to run before sending a change: formatting, lints, the full test suite
# (scripts/test.sh, which installs the pinned Claude Code CLI when it is missing).
#
# Usage: scripts/check.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib/usage.sh" "$@"
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
cargo fmt --check
cargo clippy --locked --all-targets -- -D warnings
scripts/test.sh
