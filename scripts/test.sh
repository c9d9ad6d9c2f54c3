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
# The whole workspace but the eBPF crate (built for its own target by shaper-user's build.rs),
# so the root-only `tests` crate, outside the default members, is linted and run too.
cargo clippy --release --workspace --exclude shaper-ebpf --all-targets -- -D warnings
cargo test --release --workspace --exclude shaper-ebpf
