//! `shaper detach --iface IF`: remove a shaper left attached (fail-static after its agent was
//! killed): the pinned link, the pinned maps and the agent's state.
use anyhow::{Result, bail};

use shaper::agent::{AgentLock, state_dir};
use shaper::datapath::{self, DatapathError};

pub fn execute(iface: &str) -> Result<()> {
    let dir = datapath::pin_dir(iface);
    if !dir.exists() {
        bail!(DatapathError::NotPinned(dir));
    }
    let state = state_dir(iface);
    // Refused while an agent runs: it owns the datapath and detaches it itself on SIGTERM.
    let lock = AgentLock::acquire(&state, iface)?;
    // No process holds the link: removing its pin detaches the program.
    datapath::remove_pins(&dir);
    drop(lock);
    let _ = std::fs::remove_dir_all(&state);
    println!("detached the shaper from {iface} and removed its pins");
    Ok(())
}
