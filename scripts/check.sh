#!/usr/bin/env bash
# Everything to run before sending a change: formatting, lints, the full test suite.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
cargo fmt --check
cargo clippy --locked --all-targets -- -D warnings
scripts/test.sh
