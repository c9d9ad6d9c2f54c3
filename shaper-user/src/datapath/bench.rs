//! The benchmark programs: the XDP_PASS and XDP_DROP floors the shaper is measured against in
//! the same run, and a live-frames traffic generator. They come from an object of their own
//! (`shaper-ebpf`'s `shaper-bench` binary), so the shaper's object carries none of them.
use aya::maps::{Array, MapData};
use aya::programs::Xdp;
use aya::{Ebpf, EbpfLoader};

use super::error::program_error;
use super::{DatapathError, is_permission, os_error};

/// The benchmark object, built from shaper-ebpf by build.rs.
pub static BENCH_OBJECT: &[u8] =
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/shaper-bench"));

const PASS: &str = "xdp_pass";
const DROP: &str = "xdp_drop";
const GENERATOR: &str = "xdp_tx_gen";
const GENERATOR_MAP: &str = "TX_IFINDEX";

/// The loaded benchmark object; each program is loaded into the kernel on first use and goes
/// with this value.
pub struct BenchPrograms {
    ebpf: Ebpf,
}

impl BenchPrograms {
    pub fn load() -> Result<BenchPrograms, DatapathError> {
        let ebpf = EbpfLoader::new().load(BENCH_OBJECT).map_err(|e| {
            if is_permission(os_error(&e)) {
                DatapathError::NoPermission
            } else {
                DatapathError::Ebpf(e)
            }
        })?;
        Ok(BenchPrograms { ebpf })
    }

    /// The XDP_PASS floor.
    pub fn pass_mut(&mut self) -> Result<&mut Xdp, DatapathError> {
        self.loaded_mut(PASS)
    }

    /// The XDP_DROP floor.
    pub fn drop_mut(&mut self) -> Result<&mut Xdp, DatapathError> {
        self.loaded_mut(DROP)
    }

    /// The live-frames traffic generator, sending out of `ifindex` (in the network namespace
    /// it is run from).
    pub fn generator_mut(&mut self, ifindex: u32) -> Result<&mut Xdp, DatapathError> {
        {
            let map = self
                .ebpf
                .map_mut(GENERATOR_MAP)
                .ok_or_else(|| DatapathError::Missing(format!("map {GENERATOR_MAP}")))?;
            let mut m: Array<&mut MapData, u32> =
                Array::try_from(map).map_err(|source| DatapathError::Map {
                    map: GENERATOR_MAP,
                    source,
                })?;
            m.set(0, ifindex, 0).map_err(|source| DatapathError::Map {
                map: GENERATOR_MAP,
                source,
            })?;
        }
        self.loaded_mut(GENERATOR)
    }

    /// The object's XDP program `name`, loaded into the kernel on first use.
    fn loaded_mut(&mut self, name: &str) -> Result<&mut Xdp, DatapathError> {
        let prog: &mut Xdp = self
            .ebpf
            .program_mut(name)
            .ok_or_else(|| DatapathError::Missing(format!("program {name}")))?
            .try_into()
            .map_err(|e| program_error(name, "type check", e))?;
        if prog.fd().is_err() {
            prog.load().map_err(|e| program_error(name, "load", e))?;
        }
        Ok(prog)
    }
}
