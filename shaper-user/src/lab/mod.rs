//! The lab the demo, the tests and the benchmarks build: network namespaces joined by veth
//! pairs, a delay line, and the traffic sent through them ([`traffic`]). Every guard removes
//! what it created in `Drop`, so a failing test leaves nothing behind. Not part of the
//! shaper's datapath or agent.
use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Mutex, MutexGuard};

pub use crate::datapath::{NetNsEnter, ifindex};

pub mod cluster;
pub mod frame;
pub mod redis;
pub mod traffic;

/// True when running as root (needed for BPF, XDP and network namespaces).
pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// True (after printing why) when a test cannot run here because it needs root.
pub fn skip_unless_root(test: &str) -> bool {
    if is_root() {
        return false;
    }
    eprintln!(
        "SKIP {test}: needs root (BPF_PROG_TEST_RUN, XDP, network namespaces); run the README's test command as root"
    );
    true
}

/// The start of every test that needs root: `None` (after printing why it skips) when not
/// root; otherwise a guard that runs such tests of one binary one at a time, since loading
/// programs, building labs and sending traffic take the CPUs that the others' rate
/// measurements depend on (these machines have two). A test that panicked does not poison it.
pub fn root_test(test: &str) -> Option<MutexGuard<'static, ()>> {
    static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());
    if skip_unless_root(test) {
        return None;
    }
    Some(ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner()))
}

/// Runs a command, failing with its stderr when it exits non-zero.
pub fn run(program: &str, args: &[&str]) -> io::Result<Output> {
    let out = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| {
            io::Error::new(
                e.kind(),
                format!("cannot run {program}: {e} (is it installed? see scripts/setup.sh)"),
            )
        })?;
    if !out.status.success() {
        return Err(io::Error::other(format!(
            "`{program} {}` failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(out)
}

/// True if `iface` in namespace `ns` has an XDP program attached.
pub fn xdp_attached(ns: &str, iface: &str) -> bool {
    ip(&["-n", ns, "-d", "link", "show", "dev", iface])
        .map(|o| String::from_utf8_lossy(&o.stdout).contains("prog/xdp"))
        .unwrap_or(false)
}

/// `ip` with arguments.
pub fn ip(args: &[&str]) -> io::Result<Output> {
    run("ip", args)
}

/// A command to run inside namespace `ns` (through `ip netns exec`).
pub fn in_ns(ns: &str, program: &str) -> Command {
    let mut c = Command::new("ip");
    c.args(["netns", "exec", ns, program]);
    c
}

/// A network namespace that is deleted (with every interface in it) on drop.
pub struct NetNs {
    pub name: String,
}

impl NetNs {
    pub fn new(name: &str) -> io::Result<NetNs> {
        ip(&["netns", "add", name])?;
        let ns = NetNs {
            name: name.to_string(),
        };
        ip(&["-n", name, "link", "set", "lo", "up"])?;
        Ok(ns)
    }
}

impl Drop for NetNs {
    fn drop(&mut self) {
        if let Err(e) = ip(&["netns", "del", &self.name]) {
            eprintln!("cleanup: {e}");
        }
    }
}

/// Writes `text` to a file only its owner can read or write, whatever the umask: configs
/// (`shaper run` refuses world-writable ones) and credentials (`cluster.auth_file`).
pub fn write_private(path: &std::path::Path, text: &str) -> io::Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?;
    f.write_all(text.as_bytes())
}

/// A short name unique to this process and call, usable as a netns or interface prefix
/// (interface names are limited to 15 bytes).
pub fn unique_name(prefix: &str) -> String {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    format!("{prefix}{:x}{n}", std::process::id() & 0xffff)
}

/// Two namespaces joined by a veth pair: `src` sends, `dut` receives (the shaper attaches to
/// `dut_if`). Each tenant network gets `.1` on the dut side and `.2` on the src side.
pub struct Lab {
    pub src: NetNs,
    pub dut: NetNs,
    pub src_if: String,
    pub dut_if: String,
}

impl Lab {
    /// `v4_nets` are /24 networks like "10.10.1"; `v6_nets` are /64 prefixes like "2001:db8:1:".
    pub fn new(v4_nets: &[&str], v6_nets: &[&str]) -> io::Result<Lab> {
        let base = unique_name("shp");
        let src = NetNs::new(&format!("{base}-src"))?;
        let dut = NetNs::new(&format!("{base}-dut"))?;
        let (src_if, dut_if) = (format!("{base}s"), format!("{base}d"));
        ip(&[
            "-n", &src.name, "link", "add", &src_if, "type", "veth", "peer", "name", &dut_if,
            "netns", &dut.name,
        ])?;
        for (ns, ifname, host) in [(&src.name, &src_if, "2"), (&dut.name, &dut_if, "1")] {
            for net in v4_nets {
                ip(&[
                    "-n",
                    ns,
                    "addr",
                    "add",
                    &format!("{net}.{host}/24"),
                    "dev",
                    ifname,
                ])?;
            }
            for net in v6_nets {
                ip(&[
                    "-n",
                    ns,
                    "addr",
                    "add",
                    &format!("{net}:{host}/64"),
                    "dev",
                    ifname,
                    "nodad",
                ])?;
            }
            ip(&["-n", ns, "link", "set", ifname, "up"])?;
        }
        Ok(Lab {
            src,
            dut,
            src_if,
            dut_if,
        })
    }
}

/// Delays every IP packet the `dut` side of a lab sends to `to` by `delay`, as netem would
/// (these kernels have none): a TUN device takes the route to `to`, and a thread holds each
/// packet for `delay`, then sends it out of the dut's veth through an AF_PACKET socket. On the
/// return path (TCP's ACKs) this gives a flow a WAN-like round trip. Stops on drop.
pub struct DelayLine {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<io::Result<u64>>>,
}

impl DelayLine {
    pub fn start(
        lab: &Lab,
        to: std::net::Ipv4Addr,
        delay: std::time::Duration,
    ) -> io::Result<DelayLine> {
        let peer_mac = mac_of(&lab.src.name, &lab.src_if)?;
        let out_index = ifindex(&lab.dut_if, Some(&lab.dut.name))?;
        let tun_name = unique_name("dly");
        let (tun, sock) = {
            let _ns = NetNsEnter::enter(&lab.dut.name)?;
            (open_tun(&tun_name)?, packet_socket()?)
        };
        ip(&["-n", &lab.dut.name, "link", "set", &tun_name, "up"])?;
        ip(&[
            "-n",
            &lab.dut.name,
            "route",
            "replace",
            &format!("{to}/32"),
            "dev",
            &tun_name,
        ])?;
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = stop.clone();
        let thread =
            std::thread::spawn(move || relay(&tun, &sock, out_index, peer_mac, delay, &flag));
        Ok(DelayLine {
            stop,
            thread: Some(thread),
        })
    }

    /// Stops the relay; returns how many packets it delayed.
    pub fn stop(mut self) -> io::Result<u64> {
        self.finish()
    }

    fn finish(&mut self) -> io::Result<u64> {
        self.stop.store(true, Ordering::Relaxed);
        match self.thread.take() {
            Some(t) => t
                .join()
                .map_err(|_| io::Error::other("delay line thread panicked"))?,
            None => Ok(0),
        }
    }
}

impl Drop for DelayLine {
    fn drop(&mut self) {
        let _ = self.finish();
    }
}

/// The MAC address of `iface` in network namespace `ns`.
pub fn mac_of(ns: &str, iface: &str) -> io::Result<[u8; 6]> {
    let out = ip(&["-n", ns, "-o", "link", "show", iface])?;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let mac = text
        .split_whitespace()
        .skip_while(|w| *w != "link/ether")
        .nth(1)
        .ok_or_else(|| io::Error::other(format!("no MAC in: {text}")))?;
    let mut b = [0u8; 6];
    for (dst, part) in b.iter_mut().zip(mac.split(':')) {
        *dst = u8::from_str_radix(part, 16).map_err(io::Error::other)?;
    }
    Ok(b)
}

/// A TUN device (IP packets, no packet-info header) named `name`, in the current namespace.
fn open_tun(name: &str) -> io::Result<File> {
    const TUNSETIFF: libc::c_ulong = 0x4004_54ca;
    #[repr(C)]
    struct IfReq {
        name: [u8; 16],
        flags: libc::c_short,
        _pad: [u8; 22],
    }
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/net/tun")?;
    let mut req = IfReq {
        name: [0; 16],
        flags: (libc::IFF_TUN | libc::IFF_NO_PI) as libc::c_short,
        _pad: [0; 22],
    };
    req.name[..name.len().min(15)].copy_from_slice(&name.as_bytes()[..name.len().min(15)]);
    // SAFETY: TUNSETIFF reads an ifreq, which `req` is laid out as.
    if unsafe { libc::ioctl(f.as_raw_fd(), TUNSETIFF, &mut req) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(f)
}

/// An AF_PACKET datagram socket for IPv4: the kernel adds the Ethernet header.
fn packet_socket() -> io::Result<std::os::fd::OwnedFd> {
    // SAFETY: plain socket(2).
    let fd = unsafe {
        libc::socket(
            libc::AF_PACKET,
            libc::SOCK_DGRAM,
            i32::from((libc::ETH_P_IP as u16).to_be()),
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a descriptor socket(2) just returned, owned by nobody else.
    Ok(unsafe { <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) })
}

fn relay(
    tun: &File,
    sock: &std::os::fd::OwnedFd,
    out_index: u32,
    peer_mac: [u8; 6],
    delay: std::time::Duration,
    stop: &std::sync::atomic::AtomicBool,
) -> io::Result<u64> {
    use std::io::Read;
    use std::time::Instant;
    // SAFETY: an all-zero sockaddr_ll is valid; the fields that matter are set below.
    let mut to: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
    to.sll_family = libc::AF_PACKET as u16;
    to.sll_protocol = (libc::ETH_P_IP as u16).to_be();
    to.sll_ifindex = out_index as i32;
    to.sll_halen = 6;
    to.sll_addr[..6].copy_from_slice(&peer_mac);
    let mut queue: std::collections::VecDeque<(Instant, Vec<u8>)> = Default::default();
    let mut buf = vec![0u8; 65_536];
    let mut sent = 0u64;
    let mut tun = tun;
    while !stop.load(Ordering::Relaxed) {
        let now = Instant::now();
        while queue.front().is_some_and(|(due, _)| *due <= now) {
            if let Some((_, p)) = queue.pop_front() {
                // SAFETY: sendto with a valid buffer and a sockaddr_ll of the right length.
                unsafe {
                    libc::sendto(
                        sock.as_raw_fd(),
                        p.as_ptr().cast(),
                        p.len(),
                        0,
                        (&to as *const libc::sockaddr_ll).cast(),
                        size_of::<libc::sockaddr_ll>() as libc::socklen_t,
                    )
                };
                sent += 1;
            }
        }
        let wait = queue
            .front()
            .map_or(std::time::Duration::from_millis(5), |(due, _)| {
                due.saturating_duration_since(now)
            });
        let mut pfd = libc::pollfd {
            fd: tun.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // Sub-millisecond waits round up to 1 ms in poll(2): spin-sleep them instead.
        let ms = wait.as_millis().min(5) as i32;
        // SAFETY: poll on one valid pollfd.
        let ready = unsafe { libc::poll(&mut pfd, 1, ms) };
        if ready > 0 && pfd.revents & libc::POLLIN != 0 {
            let n = tun.read(&mut buf)?;
            queue.push_back((Instant::now() + delay, buf[..n].to_vec()));
        } else if ms == 0 {
            std::thread::sleep(std::time::Duration::from_micros(50));
        }
    }
    Ok(sent)
}

/// A `shaper run` child process on interface `iface`, stopped on drop (test passed or
/// failed, benchmark done or interrupted): SIGTERM and a grace period, SIGKILL if it is still
/// there, then the pins and state it may have left (a killed agent leaves them on purpose),
/// so nothing stays behind in bpffs or /run.
pub struct AgentProcess {
    pub child: std::process::Child,
    pub iface: String,
}

impl AgentProcess {
    pub fn new(child: std::process::Child, iface: &str) -> AgentProcess {
        AgentProcess {
            child,
            iface: iface.to_string(),
        }
    }

    /// Starts `shaper run` (the binary at `exe`) on `lab`'s interface with `config` and the
    /// `extra` arguments, its log (stderr) into `log`; it does not wait for it to attach.
    pub fn spawn(
        exe: &std::path::Path,
        lab: &Lab,
        config: &std::path::Path,
        log: &std::path::Path,
        extra: &[&str],
    ) -> io::Result<AgentProcess> {
        let child = Command::new(exe)
            .args(["run", "--iface", &lab.dut_if, "--netns", &lab.dut.name])
            .args(extra)
            .arg("--config")
            .arg(config)
            .stdout(Stdio::null())
            .stderr(File::create(log)?)
            .spawn()?;
        Ok(AgentProcess::new(child, &lab.dut_if))
    }

    /// Waits up to `t` for the process to exit.
    pub fn wait_timeout(&mut self, t: std::time::Duration) -> Option<std::process::ExitStatus> {
        let start = std::time::Instant::now();
        while start.elapsed() < t {
            if let Ok(Some(s)) = self.child.try_wait() {
                return Some(s);
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        None
    }
}

impl Drop for AgentProcess {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            // SAFETY: kill with the pid of our own child.
            unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
            if self
                .wait_timeout(std::time::Duration::from_secs(10))
                .is_none()
            {
                let _ = self.child.kill();
                let _ = self.child.wait();
            }
        }
        crate::datapath::remove_pins(&crate::datapath::pin_dir(&self.iface));
        let _ = std::fs::remove_dir_all(crate::agent::state_dir(&self.iface));
    }
}

/// Why an [`AgentThread`] ended badly.
#[derive(Debug, thiserror::Error)]
pub enum AgentFailed {
    #[error("the agent's runtime: {0}")]
    Runtime(#[source] io::Error),
    #[error(transparent)]
    Agent(#[from] crate::agent::AgentError),
    #[error("the agent thread panicked or ended before attaching")]
    Panicked,
}

/// A `shaper run` agent on a thread of its own (with its own runtime), attached to a lab
/// interface. Stopping it (or dropping it) detaches and unpins, as SIGTERM does.
pub struct AgentThread {
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<Result<(), AgentFailed>>>,
}

impl AgentThread {
    pub fn start(
        cfg: &crate::config::Config,
        iface: &str,
        netns: &str,
    ) -> Result<AgentThread, AgentFailed> {
        Self::start_with(cfg, iface, netns, None)
    }

    /// [`AgentThread::start`] with a fault injected into every cycle.
    pub fn start_with(
        cfg: &crate::config::Config,
        iface: &str,
        netns: &str,
        fault: Option<crate::agent::Fault>,
    ) -> Result<AgentThread, AgentFailed> {
        Self::spawn(cfg, "(test)".into(), iface, netns, fault)
    }

    /// [`AgentThread::start`] with the config of the file at `path`, which a reload (SIGHUP or
    /// `POST /v1/reload`) reads again, as `shaper run --config` does.
    pub fn start_file(
        path: &std::path::Path,
        iface: &str,
        netns: &str,
    ) -> Result<AgentThread, AgentFailed> {
        let cfg = crate::config::Config::load(path).map_err(crate::agent::AgentError::from)?;
        Self::spawn(&cfg, path.to_path_buf(), iface, netns, None)
    }

    fn spawn(
        cfg: &crate::config::Config,
        config: std::path::PathBuf,
        iface: &str,
        netns: &str,
        fault: Option<crate::agent::Fault>,
    ) -> Result<AgentThread, AgentFailed> {
        let options = crate::agent::Options {
            iface: iface.to_string(),
            config,
            xdp_mode: crate::datapath::AttachMode::Native,
            max_tenants: shaper_common::DEFAULT_MAX_TENANTS,
            netns: Some(netns.to_string()),
            clock: crate::datapath::Clock::Precise,
            fault,
        };
        let cfg = cfg.clone();
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let (ready_tx, ready_rx) = std::sync::mpsc::channel::<()>();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(AgentFailed::Runtime)?;
            rt.block_on(crate::agent::run(
                &options,
                &cfg,
                move || {
                    let _ = ready_tx.send(());
                },
                async {
                    let _ = stop_rx.await;
                },
            ))
            .map_err(AgentFailed::Agent)
        });
        let mut agent = AgentThread {
            stop: Some(stop_tx),
            thread: Some(thread),
        };
        if ready_rx.recv().is_err() {
            // The agent ended before attaching: return its error.
            return Err(agent.join().err().unwrap_or(AgentFailed::Panicked));
        }
        Ok(agent)
    }

    fn join(&mut self) -> Result<(), AgentFailed> {
        match self.thread.take() {
            Some(t) => t.join().map_err(|_| AgentFailed::Panicked)?,
            None => Ok(()),
        }
    }

    pub fn stop(mut self) -> Result<(), AgentFailed> {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        self.join()
    }
}

impl Drop for AgentThread {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Err(e) = self.join() {
            eprintln!("agent: {e}");
        }
    }
}
