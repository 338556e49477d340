#!/usr/bin/env bash
# moat's test command (run as root): installs what the tests need, checks formatting and lints,
# then runs every test. Integration tests start real containers; they need root and clean up
# after themselves.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh --deps-only
cargo fmt --all -- --check
cargo clippy --workspace --all-targets -- -D warnings
cargo test --workspace --no-fail-fast
