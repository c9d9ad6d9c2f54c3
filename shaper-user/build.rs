//! Builds the XDP program (shaper-ebpf) for bpfel-unknown-none with the nightly toolchain, so
//! `cargo build` of the agent always embeds a matching datapath.
use anyhow::{Context as _, anyhow};
use aya_build::{Package, Toolchain};

fn main() -> anyhow::Result<()> {
    let manifest_dir = std::env::var("CARGO_MANIFEST_DIR").context("CARGO_MANIFEST_DIR")?;
    let root = std::path::Path::new(&manifest_dir)
        .parent()
        .ok_or_else(|| anyhow!("shaper-user has no parent directory"))?
        .join("shaper-ebpf");
    let root = root
        .to_str()
        .ok_or_else(|| anyhow!("non-UTF-8 path {}", root.display()))?;
    println!("cargo:rerun-if-changed=../shaper-common/src");
    aya_build::build_ebpf(
        [Package {
            name: "shaper-ebpf",
            root_dir: root,
            ..Default::default()
        }],
        Toolchain::Nightly,
    )
}
