//! One agent per interface: an exclusive `flock` on `/run/shaper/IF/agent.lock`, held for the
//! agent's life and released by the kernel however the process ends (even SIGKILL), so a
//! killed agent never blocks the next one, and two live agents never share one datapath.
use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, Write};
use std::os::fd::AsRawFd;
use std::path::Path;

/// Why the lock could not be taken.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error("permission denied on {}: run as root (sudo)", path.display())]
    NoPermission { path: std::path::PathBuf },
    #[error("cannot use the agent state at {}: {source}", path.display())]
    State {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("another shaper agent runs on '{iface}'{pid}: stop it first (SIGTERM detaches it)")]
    AnotherAgent { iface: String, pid: String },
}

/// Held for the agent's life.
pub struct AgentLock {
    _file: File,
}

impl AgentLock {
    pub fn acquire(state_dir: &Path, iface: &str) -> Result<AgentLock, LockError> {
        let io = |e: std::io::Error| match e.kind() {
            std::io::ErrorKind::PermissionDenied => LockError::NoPermission {
                path: state_dir.to_path_buf(),
            },
            _ => LockError::State {
                path: state_dir.join("agent.lock"),
                source: e,
            },
        };
        std::fs::create_dir_all(state_dir).map_err(io)?;
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(state_dir.join("agent.lock"))
            .map_err(io)?;
        // SAFETY: flock on an fd we own.
        if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
            let mut pid = String::new();
            let _ = file.read_to_string(&mut pid);
            let pid = pid.trim();
            let pid = if pid.is_empty() {
                String::new()
            } else {
                format!(" (pid {pid})")
            };
            return Err(LockError::AnotherAgent {
                iface: iface.to_string(),
                pid,
            });
        }
        file.set_len(0).map_err(io)?;
        file.rewind().map_err(io)?;
        write!(file, "{}", std::process::id()).map_err(io)?;
        Ok(AgentLock { _file: file })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_agent_on_the_same_interface_is_refused_until_the_first_is_gone() {
        let dir = std::env::temp_dir().join(crate::lab::unique_name("shaper-lock-"));
        let first = AgentLock::acquire(&dir, "eth9").expect("first");
        let err = AgentLock::acquire(&dir, "eth9")
            .err()
            .expect("second must fail");
        assert!(
            err.to_string()
                .contains(&format!("pid {}", std::process::id())),
            "{err}"
        );
        drop(first);
        AgentLock::acquire(&dir, "eth9").expect("free again");
        std::fs::remove_dir_all(&dir).expect("cleanup");
    }
}
