//! A `redis-server` of the lab's own (cluster mode's store in the tests, the demo and the
//! benchmark): on a Unix socket in a fresh directory, no TCP port, nothing saved to disk;
//! stopped and its directory removed on drop.
use std::io;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct RedisServer {
    dir: PathBuf,
    password: Option<String>,
    /// Behind a lock so a test can kill and restart it while traffic runs through the lab.
    child: std::sync::Mutex<Option<Child>>,
}

impl RedisServer {
    /// Starts one (`tag` names its directory); `ErrorKind::NotFound` if redis-server is not
    /// installed.
    pub fn start(tag: &str, password: Option<&str>) -> io::Result<RedisServer> {
        let dir = std::env::temp_dir().join(format!("shaper-redis-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir)?;
        let s = RedisServer {
            dir,
            password: password.map(str::to_string),
            child: std::sync::Mutex::new(None),
        };
        s.restart()?;
        Ok(s)
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn socket(&self) -> PathBuf {
        self.dir.join("redis.sock")
    }

    /// The address for `cluster.store`.
    pub fn url(&self) -> String {
        format!("unix://{}", self.socket().display())
    }

    /// Starts the server again after [`RedisServer::kill`] (empty: nothing was saved).
    pub fn restart(&self) -> io::Result<()> {
        self.kill();
        let mut cmd = Command::new("redis-server");
        cmd.args(["--port", "0", "--save", "", "--appendonly", "no"])
            .arg("--unixsocket")
            .arg(self.socket())
            .args(["--unixsocketperm", "700", "--dir"])
            .arg(&self.dir)
            .stdout(Stdio::null());
        if let Some(p) = &self.password {
            cmd.args(["--requirepass", p]);
        }
        *self.child.lock().unwrap_or_else(|e| e.into_inner()) = Some(cmd.spawn()?);
        let deadline = Instant::now() + Duration::from_secs(5);
        while !self.socket().exists() {
            if Instant::now() > deadline {
                self.kill();
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "redis-server did not open its socket within 5 s",
                ));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(())
    }

    /// Stops the server (SIGKILL: as a crash would).
    pub fn kill(&self) {
        let child = self.child.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(mut c) = child {
            let _ = c.kill();
            let _ = c.wait();
        }
        let _ = std::fs::remove_file(self.socket());
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
