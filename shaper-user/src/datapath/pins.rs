//! Pinning: maps created pinned (or adopted from pins a killed agent left), the XDP link pinned
//! beside them so the program outlives its agent, and their removal.
use super::*;

impl Datapath {
    /// Loads the program with its maps pinned under `dir`: maps already pinned there (a
    /// previous agent that was killed, or that is being replaced) are adopted with their
    /// contents, bucket state and counters; missing ones are created and pinned. Attaching
    /// then pins the link too, or takes over the pinned one.
    pub fn open_pinned(
        max_tenants: u32,
        clock: Clock,
        dir: &Path,
    ) -> Result<Datapath, DatapathError> {
        ensure_bpffs()?;
        let adopted = dir.join(TENANT_STATE).exists();
        if adopted {
            check_pinned_layout(dir)?;
            let map =
                MapData::from_pin(dir.join(TENANT_STATE)).map_err(|e| DatapathError::Pin {
                    path: dir.join(TENANT_STATE),
                    reason: error_chain(&e),
                })?;
            let pinned = map.info().map(|i| i.max_entries()).unwrap_or(0);
            if pinned != max_tenants {
                return Err(DatapathError::PinnedSize {
                    dir: dir.to_path_buf(),
                    pinned,
                    asked: max_tenants,
                });
            }
        }
        std::fs::create_dir_all(dir).map_err(|e| DatapathError::Pin {
            path: dir.to_path_buf(),
            reason: e.to_string(),
        })?;
        let mut dp = Self::load_inner(max_tenants, clock, Some(dir));
        if let Ok(dp) = &mut dp {
            dp.pins = Some(dir.to_path_buf());
            dp.owns_pins = !adopted;
            dp.adopted = adopted;
            dp.populated = adopted;
        } else if !adopted {
            // Maps are pinned as they are created, before the program is verified: a program
            // the kernel refuses must not leave them for the next run to "adopt".
            remove_pins(dir);
        }
        dp
    }

    /// True when the maps were adopted from pins rather than created.
    pub fn adopted(&self) -> bool {
        self.adopted
    }

    /// With pins, pins the link beside the maps, so the program stays attached if the agent
    /// dies. A netlink attachment (kernels without XDP bpf_link) cannot be pinned: it stays
    /// managed, and the agent says so.
    pub(super) fn pin_link(&mut self) -> Result<(), DatapathError> {
        let Some(dir) = self.pins.clone() else {
            return Ok(());
        };
        let id = match self.link.take() {
            Some(Attachment::Managed(id)) => id,
            other => {
                self.link = other;
                return restrict(&dir);
            }
        };
        let prog = self.program_mut()?;
        let link = prog
            .take_link(id)
            .map_err(|e| program_error(PROGRAM, "take link", e))?;
        let fd = match FdLink::try_from(link) {
            Ok(fd) => fd,
            Err(e) => {
                tracing::warn!(cause = %e, "XDP attached through netlink: the program detaches if the agent dies");
                return restrict(&dir);
            }
        };
        let path = dir.join(LINK_PIN);
        let pinned = fd.pin(&path).map_err(|e| DatapathError::Pin {
            path,
            reason: error_chain(&e),
        })?;
        self.link = Some(Attachment::Pinned(FdLink::from(pinned)));
        restrict(&dir)
    }
}

/// Pins are the shaper's control surface (whoever writes TENANT_CONFIG sets every rate): the
/// directory is 0700 and every pin 0600, whatever the umask.
pub(super) fn restrict(dir: &Path) -> Result<(), DatapathError> {
    use std::os::unix::fs::PermissionsExt as _;
    let set = |path: &Path, mode: u32| {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).map_err(|e| {
            DatapathError::Pin {
                path: path.to_path_buf(),
                reason: e.to_string(),
            }
        })
    };
    set(dir, 0o700)?;
    for name in PINNED_MAPS.iter().chain([&LINK_PIN]) {
        let path = dir.join(name);
        if path.exists() {
            set(&path, 0o600)?;
        }
    }
    Ok(())
}

/// Removes the link and map pins of `dir` and the directory (and `/sys/fs/bpf/shaper` when it
/// was the last interface): removing the link pin detaches a program no process holds.
pub fn remove_pins(dir: &Path) {
    let _ = std::fs::remove_file(dir.join(LINK_PIN));
    for name in PINNED_MAPS {
        let _ = std::fs::remove_file(dir.join(name));
    }
    let _ = std::fs::remove_dir(dir);
    // Remove the parent /sys/fs/bpf/shaper too when this was its last interface.
    if let Some(parent) = dir.parent() {
        let _ = std::fs::remove_dir(parent);
    }
}

/// The directory the maps of `iface` are pinned in.
pub fn pin_dir(iface: &str) -> PathBuf {
    Path::new(PIN_ROOT).join(iface)
}

/// Mounts bpffs on /sys/fs/bpf when it is not mounted, as bpftool does.
pub fn ensure_bpffs() -> Result<(), DatapathError> {
    let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap_or_default();
    if mounts
        .lines()
        .any(|l| l.split_whitespace().nth(1) == Some("/sys/fs/bpf") && l.contains(" bpf "))
    {
        return Ok(());
    }
    let status = std::process::Command::new("mount")
        .args(["-t", "bpf", "bpf", "/sys/fs/bpf"])
        .status()
        .map_err(DatapathError::NoBpffs)?;
    if !status.success() {
        return Err(DatapathError::NoBpffs(io::Error::other(format!(
            "mount exited with {status}"
        ))));
    }
    tracing::info!("mounted bpffs on /sys/fs/bpf");
    Ok(())
}

/// Opens a pinned map of the shaper running on `dir`.
pub fn open_pinned_map(dir: &Path, name: &str) -> Result<MapData, DatapathError> {
    let path = dir.join(name);
    if !path.exists() {
        return Err(DatapathError::NotPinned(dir.to_path_buf()));
    }
    MapData::from_pin(&path).map_err(|e| {
        if is_permission(os_error(&e)) {
            DatapathError::NoPermission
        } else {
            DatapathError::Pin {
                path,
                reason: error_chain(&e),
            }
        }
    })
}

/// Key and value sizes of every pinned map, as this build's program declares them: pins of
/// another layout (an older or newer shaper) are refused before the program reuses them.
fn expected_layout(name: &str) -> Option<(u32, u32)> {
    use shaper_common::{
        FlowKey, FlowStats, GlobalState, PacketCount, TenantCounters, TenantState,
    };
    let size = |n: usize| n as u32;
    Some(match name {
        CONFIG_SLOT | TENANT_SLOT => (4, 4),
        GLOBAL_CONFIG => (4, size(size_of::<GlobalConfig>())),
        TOKEN_RULES => (4, size(size_of::<TokenRules>())),
        TENANT_CONFIG => (4, size(size_of::<TenantConfig>())),
        TENANT_STATE => (4, size(size_of::<TenantState>())),
        TENANT_COUNTERS => (4, size(size_of::<TenantCounters>())),
        GLOBAL_COUNTERS => (4, size(size_of::<PacketCount>())),
        GLOBAL_STATE => (4, size(size_of::<GlobalState>())),
        LINK_PENDING => (4, 8),
        FLOWS => (size(size_of::<FlowKey>()), size(size_of::<FlowStats>())),
        TENANT_BY_HASH_V4 => (size(size_of::<PrefixKeyV4>()), 4),
        TENANT_BY_HASH_V6 => (size(size_of::<PrefixKeyV6>()), 4),
        TENANT_BY_PREFIX_V4 => (8, 4),
        TENANT_BY_PREFIX_V6 => (20, 4),
        _ => return None,
    })
}

/// Checks the pins at `dir` were made by this version of the shaper: every map this build
/// pins is there, with this build's key and value sizes, and the live global config carries
/// this build's magic and version.
pub fn check_pinned_layout(dir: &Path) -> Result<(), DatapathError> {
    let mismatch = || DatapathError::VersionMismatch(dir.to_path_buf());
    for name in PINNED_MAPS {
        let path = dir.join(name);
        if !path.exists() {
            return Err(mismatch());
        }
        let map = MapData::from_pin(&path).map_err(|e| DatapathError::Pin {
            path: path.clone(),
            reason: error_chain(&e),
        })?;
        let info = map.info().map_err(|e| DatapathError::Pin {
            path: path.clone(),
            reason: error_chain(&e),
        })?;
        if expected_layout(name) != Some((info.key_size(), info.value_size())) {
            return Err(mismatch());
        }
    }
    check_pinned_version(dir)
}

/// Checks the pinned global config was written by this version of the shaper.
pub fn check_pinned_version(dir: &Path) -> Result<(), DatapathError> {
    let mismatch = || DatapathError::VersionMismatch(dir.to_path_buf());
    let map = Map::Array(open_pinned_map(dir, GLOBAL_CONFIG)?);
    // No slot word: a shaper from before the global config was double-buffered.
    let slot = match open_pinned_map(dir, CONFIG_SLOT) {
        Ok(m) => Map::Array(m),
        Err(DatapathError::NotPinned(_)) => return Err(mismatch()),
        Err(e) => return Err(e),
    };
    // A value of another size is another layout: an older or newer shaper.
    let _: Array<&MapData, GlobalConfig> = Array::try_from(&map).map_err(|_| mismatch())?;
    let g = super::live_global(&map, &slot)?;
    if g.magic != CONFIG_MAGIC || g.version != CONFIG_VERSION {
        return Err(DatapathError::VersionMismatch(dir.to_path_buf()));
    }
    Ok(())
}
