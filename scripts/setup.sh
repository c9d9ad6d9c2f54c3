#!/usr/bin/env bash
# Installs everything shaper needs to build and test on a fresh Debian 12 machine.
# Idempotent: every step checks first and does nothing when already done.
set -euo pipefail

log() { printf 'setup: %s\n' "$*"; }

SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi

# Debian packages: LLVM 22 for bpf-linker, a C compiler (the bundled SQLite of the history
# store), the tools the tests and demo drive, a font for the benchmark charts' text, and a
# headless browser for the dashboard test, and Redis for cluster mode's tests and lab (the tests
# start their own server on a Unix socket; the packaged service is not needed).
APT_PKGS=(
  llvm-22-dev libpolly-22-dev libzstd-dev zlib1g-dev gcc libc6-dev
  iproute2 iperf3 netsniff-ng ethtool bpftool procps tmux util-linux fonts-dejavu-core
  chromium-headless-shell redis-server
)
missing=()
for p in "${APT_PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
  log "installing Debian packages: ${missing[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
else
  log "Debian packages present"
fi

# The eBPF crate builds with nightly's -Z build-std=core, which needs rust-src.
if ! rustup toolchain list | grep -q '^nightly'; then
  log "error: no nightly toolchain; install one with: rustup toolchain install nightly" >&2
  exit 1
fi
if ! rustup component list --toolchain nightly --installed | grep -q '^rust-src'; then
  log "adding rust-src to nightly"
  rustup component add rust-src --toolchain nightly
else
  log "rust-src present"
fi

# bpf-linker 0.13 built against Debian's LLVM 22 (rustc nightly is on LLVM 22).
export PATH="$HOME/.cargo/bin:$PATH"
if ! bpf-linker --version 2>/dev/null | grep -q '0\.13'; then
  log "building bpf-linker 0.13 against LLVM 22 (takes a few minutes)"
  LLVM_SYS_221_PREFIX=/usr/lib/llvm-22 LLVM_PREFIX=/usr/lib/llvm-22 cargo install --locked bpf-linker --version '~0.13' \
    --no-default-features --features llvm-22
else
  log "bpf-linker present: $(bpf-linker --version)"
fi

# Pinning needs bpffs; a fresh machine does not mount it.
if [ "$(id -u)" -eq 0 ] && ! mount | grep -q ' /sys/fs/bpf type bpf'; then
  log "mounting bpffs on /sys/fs/bpf"
  mount -t bpf bpf /sys/fs/bpf || log "warning: could not mount bpffs; shaper run will say what to do"
fi
log "done"
