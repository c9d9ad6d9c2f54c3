//! The agent's state for one interface, beside the pins: `/run/shaper/IF/` holds the lock,
//! the tenant table (`tenants.json`, so `shaper stats` can name tenant ids) and the API's
//! address (`api.addr`, for `shaper top` and `shaper exchange`).
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use crate::datapath::TenantInfo;

use super::AgentError;

/// Where the state of `iface`'s agent lives.
pub fn state_dir(iface: &str) -> PathBuf {
    Path::new("/run/shaper").join(iface)
}

/// The state directory of one interface's agent.
#[derive(Clone, Debug)]
pub struct StateDir {
    path: PathBuf,
}

impl StateDir {
    pub fn new(iface: &str) -> StateDir {
        StateDir::at(state_dir(iface))
    }

    pub fn at(path: PathBuf) -> StateDir {
        StateDir { path }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The tenant table an agent applied.
    pub fn read_table(&self) -> std::io::Result<Vec<TenantInfo>> {
        let text = std::fs::read(self.path.join("tenants.json"))?;
        serde_json::from_slice(&text).map_err(std::io::Error::other)
    }

    /// Saves the tenant table (written aside, then renamed: readers never see half of it).
    pub fn write_table(&self, table: &[TenantInfo]) -> Result<(), AgentError> {
        let err = |source| AgentError::State {
            path: self.path.clone(),
            source,
        };
        std::fs::create_dir_all(&self.path).map_err(err)?;
        let tmp = self.path.join("tenants.json.tmp");
        // Compact: read by `shaper stats` and the next agent, not by eye; pretty printing took
        // 35 ms of a one-tenant reload at 100,000 tenants.
        let body = serde_json::to_vec(table).map_err(|e| err(std::io::Error::other(e)))?;
        std::fs::write(&tmp, body).map_err(err)?;
        std::fs::rename(tmp, self.path.join("tenants.json")).map_err(err)
    }

    /// Where the API serves TCP, for the CLI; best effort (the socket is the other way in).
    pub fn write_api_addr(&self, addr: SocketAddr) {
        let _ = std::fs::write(self.path.join("api.addr"), addr.to_string());
    }

    /// The network namespace (inode of its nsfs file) the agent attached in: a later agent
    /// for an interface of the same name in another namespace must not adopt these pins.
    pub fn write_owner(&self, netns_inode: u64) {
        let _ = std::fs::write(self.path.join("netns"), netns_inode.to_string());
    }

    /// The namespace the last agent attached in, if it said.
    pub fn read_owner(&self) -> Option<u64> {
        std::fs::read_to_string(self.path.join("netns"))
            .ok()?
            .trim()
            .parse()
            .ok()
    }

    /// Where the API's Unix socket is, for the CLI's rate changes; best effort.
    pub fn write_api_socket(&self, socket: &Path) {
        let _ = std::fs::write(
            self.path.join("api.socket"),
            socket.as_os_str().as_encoded_bytes(),
        );
    }

    /// The API's Unix socket, if an agent serves one.
    pub fn api_socket(&self) -> Option<PathBuf> {
        let p = PathBuf::from(
            std::fs::read_to_string(self.path.join("api.socket"))
                .ok()?
                .trim(),
        );
        p.exists().then_some(p)
    }

    /// The API's TCP address, if an agent serves one.
    pub fn api_addr(&self) -> Option<SocketAddr> {
        std::fs::read_to_string(self.path.join("api.addr"))
            .ok()?
            .trim()
            .parse()
            .ok()
    }

    /// A guard that removes the directory when dropped, once armed (or at once if `armed`).
    pub fn remove_on_drop(&self, armed: bool) -> RemoveOnDrop {
        RemoveOnDrop {
            path: self.path.clone(),
            armed,
        }
    }
}

/// Removes the agent's state directory on the way out, once armed.
pub struct RemoveOnDrop {
    path: PathBuf,
    armed: bool,
}

impl RemoveOnDrop {
    pub fn arm(&mut self) {
        self.armed = true;
    }
}

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        if self.armed {
            let _ = std::fs::remove_dir_all(&self.path);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    #[test]
    fn tenant_table_round_trips_through_disk() {
        let dir = std::env::temp_dir().join(crate::lab::unique_name("shaper-test-"));
        let cfg = Config::parse(crate::config::EXAMPLE).expect("valid");
        let table = crate::datapath::tenant_table(&cfg, &[]);
        assert_eq!(&*table[1].name, "globex");
        assert_eq!(table[1].rate_bits, 100_000_000);
        let state = StateDir::at(dir.clone());
        state.write_table(&table).expect("write");
        assert_eq!(state.read_table().expect("read"), table);
        std::fs::remove_dir_all(&dir).expect("cleanup");
    }
}
