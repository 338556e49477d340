#!/usr/bin/env bash
# moat's test command (run as root): installs what the tests need, checks formatting and lints,
# then runs every test. Integration tests start real containers; they need root and clean up
# after themselves.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh --deps-only
cargo fmt --all -- --check
cargo clippy --workspace --all-targets -- -D warnings
# Every binary, moat-agent included: cargo test builds a package's binaries only for its own
# integration tests, and the VM tests boot moat-agent from beside the moat they run.
cargo build --workspace --bins
cargo test --workspace --no-fail-fast --no-run
# The tests run in a network namespace of their own: the bridges, veths and nftables rules
# that containers' networks make never touch the host's interfaces (traffic: loopback only).
unshare --net -- sh -c 'ip link set lo up && exec cargo test --workspace --no-fail-fast'
