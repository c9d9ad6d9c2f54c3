//! Network namespaces: entering one for the current thread (to attach inside it), and RAII
//! guards for the namespaces and veth pairs that the demo and the tests build. Everything a
//! guard created is removed in `Drop`, so a failing test leaves nothing behind.
use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};

/// While alive, the current thread is in another network namespace; `Drop` returns it.
pub struct NetNsEnter {
    original: File,
}

impl NetNsEnter {
    pub fn enter(name: &str) -> io::Result<NetNsEnter> {
        let original = File::open("/proc/thread-self/ns/net")?;
        let target = File::open(format!("/run/netns/{name}"))?;
        setns(&target)?;
        Ok(NetNsEnter { original })
    }
}

impl Drop for NetNsEnter {
    fn drop(&mut self) {
        if let Err(e) = setns(&self.original) {
            tracing::error!(cause = %e, "cannot return to the original network namespace");
        }
    }
}

fn setns(f: &File) -> io::Result<()> {
    // SAFETY: plain syscall on a valid fd; affects only the calling thread.
    if unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

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

/// The index of `iface` (inside namespace `netns` if given); 0 when there is no such interface.
pub fn ifindex(iface: &str, netns: Option<&str>) -> io::Result<u32> {
    let _ns = netns.map(NetNsEnter::enter).transpose()?;
    let name = std::ffi::CString::new(iface).map_err(io::Error::other)?;
    // SAFETY: a valid NUL-terminated name.
    Ok(unsafe { libc::if_nametoindex(name.as_ptr()) })
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
