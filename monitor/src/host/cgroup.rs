//! cgroup v2: finding the mount, naming cgroups by id, and giving an audited command a
//! cgroup of its own.

use std::{
    fs,
    io::Write as _,
    os::unix::fs::MetadataExt as _,
    path::{Path, PathBuf},
};

#[derive(Debug, thiserror::Error)]
pub enum CgroupError {
    #[error("no cgroup v2 filesystem is mounted (looked in /proc/self/mountinfo); mount one with `mount -t cgroup2 none /sys/fs/cgroup/unified` or boot with systemd.unified_cgroup_hierarchy=1")]
    NoCgroup2,
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot create cgroup {path}: {source}")]
    Create {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot move process {pid} into cgroup {path}: {source}")]
    Move {
        pid: u32,
        path: PathBuf,
        source: std::io::Error,
    },
}

/// Mount point of the cgroup v2 hierarchy, from the text of `/proc/self/mountinfo`.
///
/// Field 5 is the mount point (octal escapes like `\040` undone); after the ` - ` separator
/// comes the filesystem type.
pub fn parse_cgroup2_mount(mountinfo: &str) -> Option<PathBuf> {
    mountinfo.lines().find_map(|line| {
        let (left, right) = line.split_once(" - ")?;
        let fstype = right.split_whitespace().next()?;
        if fstype != "cgroup2" {
            return None;
        }
        let mount_point = left.split_whitespace().nth(4)?;
        Some(PathBuf::from(unescape_octal(mount_point)))
    })
}

fn unescape_octal(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\' && i + 3 < bytes.len() {
            let oct = &bytes[i + 1..i + 4];
            if oct.iter().all(|b| (b'0'..=b'7').contains(b)) {
                let v = oct
                    .iter()
                    .fold(0u32, |acc, b| acc * 8 + u32::from(b - b'0'));
                if let Ok(v) = u8::try_from(v) {
                    out.push(v);
                    i += 4;
                    continue;
                }
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The cgroup v2 mount of this system.
pub fn cgroup2_mount() -> Result<PathBuf, CgroupError> {
    let path = PathBuf::from("/proc/self/mountinfo");
    let text = fs::read_to_string(&path).map_err(|source| CgroupError::Read { path, source })?;
    parse_cgroup2_mount(&text).ok_or(CgroupError::NoCgroup2)
}

/// cgroup id of a cgroup directory (what `bpf_get_current_cgroup_id()` returns).
pub fn cgroup_id(dir: &Path) -> Result<u64, CgroupError> {
    fs::metadata(dir)
        .map(|m| m.ino())
        .map_err(|source| CgroupError::Read {
            path: dir.to_owned(),
            source,
        })
}

/// Processes in the cgroup directory `dir` (empty when unreadable).
pub fn pids_in(dir: &Path) -> Vec<u32> {
    fs::read_to_string(dir.join("cgroup.procs"))
        .map(|t| t.lines().filter_map(|l| l.trim().parse().ok()).collect())
        .unwrap_or_default()
}

/// The name of the cgroup an audit run by this process uses: its pid and start time, so
/// that a later audit can tell whether its owner still runs, even after pid reuse.
pub fn audit_cgroup_name() -> String {
    let pid = std::process::id();
    format!(
        "audit-{pid}-{}",
        super::procinfo::start_time(pid).unwrap_or(0)
    )
}

/// Whether the audit that named a cgroup `name` has ended (names that are not audit
/// cgroups are never "gone").
fn audit_owner_gone(name: &str) -> bool {
    let Some(rest) = name.strip_prefix("audit-") else {
        return false;
    };
    let mut parts = rest.splitn(2, '-');
    let Some(Ok(pid)) = parts.next().map(str::parse::<u32>) else {
        return false;
    };
    match (
        super::procinfo::start_time(pid),
        parts.next().map(str::parse::<u64>),
    ) {
        (None, _) => true,
        (Some(now), Some(Ok(then))) => now != then,
        // An older name without a start time: gone only once its pid is.
        (Some(_), _) => false,
    }
}

/// A cgroup created for one audited command, removed again when dropped (if empty).
#[derive(Debug)]
pub struct OwnedCgroup {
    pub path: PathBuf,
    pub id: u64,
}

impl OwnedCgroup {
    /// Creates `<mount>/brokerwatch/<name>`.
    pub fn create(mount: &Path, name: &str) -> Result<Self, CgroupError> {
        let parent = mount.join(crate::defaults::AUDIT_CGROUP_PARENT);
        // Earlier audits whose commands outlived them left their cgroups behind. Only those
        // whose audit process has provably ended go (rmdir also refuses a cgroup that still
        // has processes); a concurrent audit's fresh, still empty cgroup stays.
        if let Ok(entries) = fs::read_dir(&parent) {
            for e in entries.flatten() {
                if audit_owner_gone(&e.file_name().to_string_lossy()) {
                    let _ = fs::remove_dir(e.path());
                }
            }
        }
        let path = parent.join(name);
        fs::create_dir_all(&path).map_err(|source| CgroupError::Create {
            path: path.clone(),
            source,
        })?;
        let id = cgroup_id(&path)?;
        Ok(Self { path, id })
    }

    pub fn add_pid(&self, pid: u32) -> Result<(), CgroupError> {
        let procs = self.path.join("cgroup.procs");
        fs::OpenOptions::new()
            .write(true)
            .open(&procs)
            .and_then(|mut f| f.write_all(pid.to_string().as_bytes()))
            .map_err(|source| CgroupError::Move {
                pid,
                path: self.path.clone(),
                source,
            })
    }

    /// Processes still in the cgroup.
    pub fn pids(&self) -> Vec<u32> {
        pids_in(&self.path)
    }
}

impl Drop for OwnedCgroup {
    fn drop(&mut self) {
        // Fails (and leaves the directory) while a descendant still runs; the next audit
        // or a reboot cleans it.
        let _ = fs::remove_dir(&self.path);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HYBRID: &str = "\
24 30 0:22 / /sys rw,nosuid,nodev,noexec,relatime shared:7 - sysfs sysfs rw
25 24 0:23 / /sys/fs/cgroup ro,nosuid,nodev,noexec shared:8 - tmpfs tmpfs ro,mode=755
26 25 0:24 / /sys/fs/cgroup/unified rw,nosuid,nodev,noexec,relatime shared:9 - cgroup2 cgroup2 rw,nsdelegate
27 25 0:25 / /sys/fs/cgroup/systemd rw,nosuid,nodev,noexec,relatime shared:10 - cgroup cgroup rw,xattr,name=systemd
";

    #[test]
    fn finds_cgroup2_in_a_hybrid_layout() {
        assert_eq!(
            parse_cgroup2_mount(HYBRID),
            Some(PathBuf::from("/sys/fs/cgroup/unified"))
        );
    }

    #[test]
    fn finds_escaped_mount_points_and_reports_absence() {
        let line = "26 25 0:24 / /mnt/my\\040cgroups rw - cgroup2 cgroup2 rw\n";
        assert_eq!(
            parse_cgroup2_mount(line),
            Some(PathBuf::from("/mnt/my cgroups"))
        );
        assert_eq!(
            parse_cgroup2_mount("1 2 0:1 / / rw - ext4 /dev/vda rw\n"),
            None
        );
        assert_eq!(parse_cgroup2_mount(""), None);
    }
}
