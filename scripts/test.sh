#!/usr/bin/env bash
# The test command: installs the pinned Claude Code CLI when it is missing (tests drive
# the real CLI offline against a scripted model), then runs every test. CLAUDE_WS_TEST_CLAUDE
# picks another CLI (CI sets it for its pass on the oldest supported version).
#
# Usage: scripts/test.sh [cargo test args...]
. "$(dirname "${BASH_SOURCE[0]}")/lib/usage.sh" "$@"
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

claude="$(scripts/install-claude.sh)"
export CLAUDE_WS_TEST_CLAUDE="${CLAUDE_WS_TEST_CLAUDE:-$claude}"
# Each test binary runs at most two tests at once: a test may hold a server and a
# real `claude` child (~300 MB, ~0.7 s to start) on a 2-core machine.
export RUST_TEST_THREADS="${RUST_TEST_THREADS:-2}"
cargo test --locked "$@"
