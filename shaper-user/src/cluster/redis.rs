//! The cluster's store on Redis: one hash (`NAME:reports`), a field per host holding its last
//! report. Publishing is one pipeline: HSET this host's report, PEXPIRE the hash (a cluster
//! whose hosts all stop leaves nothing behind), HDEL hosts silent past the lease. Reading is
//! HVALS.
use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;

use redis::IntoConnectionInfo as _;

use super::{ClusterStore, StoreError};
use crate::config::Cluster;

pub struct RedisStore {
    client: redis::Client,
    conn: Option<redis::aio::MultiplexedConnection>,
    key: String,
    host: String,
    /// The hashes' time to live, ms: the lease and two epochs.
    ttl_ms: i64,
    /// The store's address as configured, for error messages.
    store: String,
}

impl RedisStore {
    /// Parses the address and reads the credentials; connects on the first exchange.
    pub fn new(c: &Cluster) -> Result<RedisStore, StoreError> {
        let unreachable = |message: String| StoreError::Unreachable {
            store: c.store.clone(),
            message,
        };
        let info = c
            .store
            .as_str()
            .into_connection_info()
            .map_err(|e| unreachable(format!("not a Redis address: {e}")))?;
        let info = match &c.auth_file {
            Some(path) => {
                let (user, password) = read_auth(path)?;
                let mut settings = info.redis_settings().clone().set_password(password);
                if let Some(user) = user {
                    settings = settings.set_username(user);
                }
                info.set_redis_settings(settings)
            }
            None => info,
        };
        let client = redis::Client::open(info).map_err(|e| unreachable(e.to_string()))?;
        Ok(RedisStore {
            client,
            conn: None,
            key: format!("{}:reports", c.name),
            host: c.host_id.clone(),
            ttl_ms: (c.lease_s * 1000.0) as i64 + 2 * c.interval_ms as i64,
            store: c.store.clone(),
        })
    }

    fn error(&self, e: impl std::fmt::Display) -> StoreError {
        StoreError::Unreachable {
            store: self.store.clone(),
            message: e.to_string(),
        }
    }

    /// Connects (and authenticates) if not connected.
    pub async fn connect(&mut self) -> Result<&mut redis::aio::MultiplexedConnection, StoreError> {
        if self.conn.is_none() {
            let conn = self
                .client
                .get_multiplexed_async_connection()
                .await
                .map_err(|e| self.error(e))?;
            self.conn = Some(conn);
        }
        self.conn.as_mut().ok_or_else(|| StoreError::Unreachable {
            store: String::new(),
            message: "not connected".into(),
        })
    }
}

impl RedisStore {
    /// Runs `pipe` and reconnects on the next call if the connection failed (the store
    /// restarted, the socket broke).
    async fn query<T: redis::FromRedisValue>(
        &mut self,
        pipe: redis::Pipeline,
    ) -> Result<T, StoreError> {
        let conn = self.connect().await?;
        match pipe.query_async(conn).await {
            Ok(v) => Ok(v),
            Err(e) => {
                self.conn = None;
                Err(self.error(e))
            }
        }
    }
}

impl ClusterStore for RedisStore {
    async fn publish(&mut self, blob: Vec<u8>, forget: &[String]) -> Result<(), StoreError> {
        let mut pipe = redis::pipe();
        pipe.hset(&self.key, &self.host, blob)
            .ignore()
            .pexpire(&self.key, self.ttl_ms)
            .ignore();
        if !forget.is_empty() {
            pipe.hdel(&self.key, forget).ignore();
        }
        self.query::<()>(pipe).await
    }

    async fn collect(&mut self) -> Result<Vec<Vec<u8>>, StoreError> {
        let mut pipe = redis::pipe();
        pipe.hvals(&self.key);
        let (blobs,): (Vec<Vec<u8>>,) = self.query(pipe).await?;
        Ok(blobs)
    }
}

/// The credentials file: the password alone (Redis's default user), or `USER PASSWORD` (an
/// ACL user). Refused unless only its owner can read it.
fn read_auth(path: &Path) -> Result<(Option<String>, String), StoreError> {
    let fail = |message: String| StoreError::Auth {
        path: path.display().to_string(),
        message,
    };
    let meta = std::fs::metadata(path).map_err(|e| fail(e.to_string()))?;
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(fail(format!(
            "mode {mode:o} lets others read it (chmod 600 {})",
            path.display()
        )));
    }
    let text = std::fs::read_to_string(path).map_err(|e| fail(e.to_string()))?;
    let line = text.lines().next().unwrap_or("").trim();
    if line.is_empty() {
        return Err(fail("it is empty".into()));
    }
    Ok(match line.split_once(char::is_whitespace) {
        Some((user, pass)) => (Some(user.to_string()), pass.trim().to_string()),
        None => (None, line.to_string()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_file_must_be_private() {
        let dir = std::env::temp_dir().join(format!("shaper-auth-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("test files");
        let f = dir.join("auth");
        std::fs::write(&f, "agent s3cret word\n").expect("test files");
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o644)).expect("test files");
        let e = read_auth(&f).expect_err("refused").to_string();
        assert!(e.contains("chmod 600"), "{e}");
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o600)).expect("test files");
        assert_eq!(
            read_auth(&f).expect("read"),
            (Some("agent".into()), "s3cret word".into())
        );
        std::fs::write(&f, "onlypassword\n").expect("test files");
        assert_eq!(read_auth(&f).expect("read"), (None, "onlypassword".into()));
        std::fs::remove_dir_all(&dir).expect("test files");
    }
}
