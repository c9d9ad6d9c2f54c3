#!/usr/bin/env bash
# The project's test command: formatting, lints, then every test. As root, the in-kernel
# (BPF_PROG_TEST_RUN) and end-to-end (netns + XDP + real traffic) tests run; without root they
# print why they skip.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"
# Test configs are written by the tests, and the shaper refuses world-writable configs.
umask 022
cargo fmt --all -- --check
cargo clippy --release --all-targets -- -D warnings
cargo test --release --workspace
