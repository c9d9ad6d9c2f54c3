//! Network namespaces as the loader needs them: entering one on the current thread (to attach
//! inside it, `shaper run --netns`), and an interface's index there.
use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;

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

/// The index of `iface` (inside namespace `netns` if given); 0 when the kernel says there is
/// no such interface. Any other failure (a full fd table: the lookup opens a socket) is an
/// error, never mistaken for a missing interface.
pub fn ifindex(iface: &str, netns: Option<&str>) -> io::Result<u32> {
    let _ns = netns.map(NetNsEnter::enter).transpose()?;
    let name = std::ffi::CString::new(iface).map_err(io::Error::other)?;
    // SAFETY: a valid NUL-terminated name.
    let index = unsafe { libc::if_nametoindex(name.as_ptr()) };
    if index != 0 {
        return Ok(index);
    }
    let err = io::Error::last_os_error();
    match err.raw_os_error() {
        Some(libc::ENODEV | libc::ENXIO) => Ok(0),
        _ => Err(err),
    }
}

/// The identity of network namespace `netns` (or this process's): the inode of its nsfs
/// file, the same whatever name or path reaches it.
pub fn netns_inode(netns: Option<&str>) -> io::Result<u64> {
    use std::os::unix::fs::MetadataExt as _;
    let path = match netns {
        Some(name) => format!("/run/netns/{name}"),
        None => "/proc/self/ns/net".to_string(),
    };
    std::fs::metadata(path).map(|m| m.ino())
}

/// The MTU of `iface` (inside namespace `netns` if given): the largest IP packet it carries,
/// so the smallest bucket a full-size packet can pass. `None` when there is no such interface.
pub fn mtu(iface: &str, netns: Option<&str>) -> io::Result<Option<u32>> {
    let _ns = netns.map(NetNsEnter::enter).transpose()?;
    // SAFETY: plain socket(2); the fd is owned right away.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a fresh fd we own.
    let sock = unsafe { <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) };
    // SAFETY: ifreq is plain data; all zeroes is valid.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (d, s) in req
        .ifr_name
        .iter_mut()
        .zip(iface.bytes().take(libc::IFNAMSIZ - 1))
    {
        *d = s as libc::c_char;
    }
    // SAFETY: SIOCGIFMTU reads the name and writes ifru_mtu of the ifreq it is given.
    if unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCGIFMTU, &mut req) } != 0 {
        let err = io::Error::last_os_error();
        return match err.raw_os_error() {
            Some(libc::ENODEV | libc::ENXIO) => Ok(None),
            _ => Err(err),
        };
    }
    // SAFETY: the union member SIOCGIFMTU writes.
    Ok(Some(unsafe { req.ifr_ifru.ifru_mtu } as u32))
}

/// `name` if it can be a Linux interface name: 1 to 15 bytes (`IFNAMSIZ` less the NUL), no
/// `/`, whitespace or NUL, not `.` or `..`. Checked before the name reaches a path (the pins,
/// the state directory).
pub fn interface_name(name: &str) -> Result<String, String> {
    let bad = name.is_empty()
        || name.len() > 15
        || name == "."
        || name == ".."
        || name.contains(['/', '\0'])
        || name.chars().any(char::is_whitespace);
    if bad {
        return Err(format!(
            "'{name}' is not an interface name (1-15 bytes, no '/' or spaces, not '.' or '..'): check it with `ip -br link`"
        ));
    }
    Ok(name.to_string())
}

#[cfg(test)]
mod tests {
    use super::interface_name;

    #[test]
    fn only_what_can_be_an_interface_name_reaches_a_path() {
        for ok in ["eth0", "veth-a.1", "enp0s31f6", "a23456789012345"] {
            assert_eq!(interface_name(ok).as_deref(), Ok(ok));
        }
        for bad in [
            "",
            ".",
            "..",
            "a/b",
            "../x",
            "eth 0",
            "a234567890123456",
            "a\0b",
        ] {
            assert!(interface_name(bad).is_err(), "{bad:?}");
        }
    }
}
