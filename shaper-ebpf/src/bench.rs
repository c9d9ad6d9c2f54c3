//! Benchmark programs, in an object of their own so the production program carries none of
//! them: the XDP_PASS and XDP_DROP floors the shaper is measured against in the same run, and
//! a live-frames traffic generator.
#![no_std]
#![no_main]

mod runtime;

use aya_ebpf::{
    bindings::xdp_action,
    macros::{map, xdp},
    maps::Array,
    programs::XdpContext,
};

/// Does nothing but pass: the baseline that `cargo xtask bench datapath` measures the shaper
/// against, in the same run.
#[xdp]
pub fn xdp_pass(_ctx: XdpContext) -> u32 {
    xdp_action::XDP_PASS
}

/// Drops everything: the floor `cargo xtask bench compare` measures a policing drop against
/// (what receiving and dropping an XDP frame costs with no work at all).
#[xdp]
pub fn xdp_drop(_ctx: XdpContext) -> u32 {
    xdp_action::XDP_DROP
}

/// The ifindex `xdp_tx_gen` sends out of (benchmarks only).
#[map]
static TX_IFINDEX: Array<u32> = Array::with_max_entries(1, 0);

/// A traffic generator for `cargo xtask bench compare`: run through `BPF_PROG_TEST_RUN` with
/// live frames, it sends every frame out of the device in `TX_IFINDEX`, so a veth's peer
/// receives XDP frames (as from a NIC) rather than socket buffers.
#[xdp]
pub fn xdp_tx_gen(_ctx: XdpContext) -> u32 {
    match TX_IFINDEX.get(0) {
        // SAFETY: a helper call with plain integer arguments.
        Some(i) => unsafe { aya_ebpf::helpers::bpf_redirect(*i, 0) as u32 },
        None => xdp_action::XDP_ABORTED,
    }
}
