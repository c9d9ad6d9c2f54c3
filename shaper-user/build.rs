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
    // `shaper --version` names the commit it was built from.
    let hash = std::process::Command::new("git")
        .args(["rev-parse", "--short=12", "HEAD"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_else(|| "unknown".into());
    println!("cargo:rustc-env=SHAPER_GIT_HASH={hash}");
    println!("cargo:rerun-if-changed=../.git/HEAD");
    println!("cargo:rerun-if-changed=../.git/refs/heads");
    // aya-build passes every line the eBPF build's cargo prints on stderr ("Compiling ...")
    // to cargo as a warning: a clean build printed ~60. Quiet, that cargo prints only real
    // diagnostics, which still come through as warnings.
    // SAFETY: a build script is single-threaded until build_ebpf starts its reader thread.
    unsafe { std::env::set_var("CARGO_TERM_QUIET", "true") };
    aya_build::build_ebpf(
        [Package {
            name: "shaper-ebpf",
            root_dir: root,
            ..Default::default()
        }],
        Toolchain::Nightly,
    )
}
