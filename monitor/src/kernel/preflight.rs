//! Checks that run before loading anything, so that a missing privilege or kernel feature is
//! reported as what to do rather than as a failed system call.

/// Capability numbers (linux/capability.h).
const CAP_NET_ADMIN: u32 = 12;
const CAP_SYS_ADMIN: u32 = 21;
const CAP_PERFMON: u32 = 38;
const CAP_BPF: u32 = 39;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PrivilegeError {
    #[error("brokerwatch needs to load eBPF programs, and this process lacks {missing}; run it as root (`sudo brokerwatch ...`) or grant CAP_BPF, CAP_PERFMON and CAP_NET_ADMIN (e.g. `sudo setcap cap_bpf,cap_perfmon,cap_net_admin+ep $(command -v brokerwatch)`)")]
    Missing { missing: String },
    #[error("cannot read this process's capabilities from /proc/self/status: {0}")]
    Unreadable(String),
}

/// The effective capability set from the text of `/proc/self/status`.
pub fn parse_cap_eff(status: &str) -> Option<u64> {
    status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
}

/// Which of the needed capabilities `cap_eff` lacks (CAP_SYS_ADMIN stands in for CAP_BPF
/// and CAP_PERFMON, as on kernels before 5.8).
pub fn missing_capabilities(cap_eff: u64) -> Vec<&'static str> {
    let has = |c: u32| cap_eff & (1u64 << c) != 0;
    let mut missing = Vec::new();
    if !has(CAP_BPF) && !has(CAP_SYS_ADMIN) {
        missing.push("CAP_BPF");
    }
    if !has(CAP_PERFMON) && !has(CAP_SYS_ADMIN) {
        missing.push("CAP_PERFMON");
    }
    if !has(CAP_NET_ADMIN) {
        missing.push("CAP_NET_ADMIN");
    }
    missing
}

pub fn check_privileges() -> Result<(), PrivilegeError> {
    let status = std::fs::read_to_string("/proc/self/status")
        .map_err(|e| PrivilegeError::Unreadable(e.to_string()))?;
    let cap_eff = parse_cap_eff(&status)
        .ok_or_else(|| PrivilegeError::Unreadable("no CapEff line".into()))?;
    let missing = missing_capabilities(cap_eff);
    if missing.is_empty() {
        Ok(())
    } else {
        Err(PrivilegeError::Missing {
            missing: missing.join(", "),
        })
    }
}

/// The oldest kernel brokerwatch can run on: BPF ring buffers arrived in 5.8.
pub const MIN_KERNEL: (u32, u32) = (5, 8);
/// The oldest kernel the kernel matrix (`cargo xtask vm-test`) tests: Debian 11's.
pub const OLDEST_TESTED: (u32, u32) = (5, 10);

/// The running kernel, as far as brokerwatch cares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KernelInfo {
    /// `uname -r`.
    pub release: String,
    pub version: (u32, u32, u32),
    /// The lockdown mode in force (`none`, `integrity`, `confidentiality`), if readable.
    pub lockdown: Option<String>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum KernelError {
    #[error("Linux {release} is too old: brokerwatch needs {}.{} or newer (BPF ring buffers); it is tested on 6.1 (Debian 12), 6.12 (Debian 13) and newer", MIN_KERNEL.0, MIN_KERNEL.1)]
    TooOld { release: String },
    #[error("cannot tell the kernel's version from {release:?}")]
    UnknownVersion { release: String },
    #[error("kernel lockdown is in confidentiality mode, which forbids eBPF programs from reading kernel memory: brokerwatch could not tell processes apart. Boot with `lockdown=integrity` (Secure Boot keeps working) or without lockdown")]
    Confidentiality,
}

/// `major.minor.patch` at the start of a kernel release string (`6.1.0-56-cloud-amd64`).
pub fn parse_release(release: &str) -> Option<(u32, u32, u32)> {
    let mut nums = release
        .split(|c: char| !c.is_ascii_digit())
        .take(3)
        .map(|p| p.parse::<u32>().ok());
    let major = nums.next()??;
    let minor = nums.next()??;
    let patch = nums.next().flatten().unwrap_or(0);
    Some((major, minor, patch))
}

/// The bracketed mode of `/sys/kernel/security/lockdown` (`none [integrity] confidentiality`).
pub fn parse_lockdown(text: &str) -> Option<String> {
    let start = text.find('[')?;
    let end = text[start..].find(']')? + start;
    Some(text[start + 1..end].to_owned())
}

/// Checks the running kernel against the minimum and against lockdown.
pub fn check_kernel() -> Result<KernelInfo, KernelError> {
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_owned())
        .unwrap_or_default();
    let version = parse_release(&release).ok_or_else(|| KernelError::UnknownVersion {
        release: release.clone(),
    })?;
    if (version.0, version.1) < MIN_KERNEL {
        return Err(KernelError::TooOld { release });
    }
    let lockdown = std::fs::read_to_string("/sys/kernel/security/lockdown")
        .ok()
        .and_then(|t| parse_lockdown(&t));
    if lockdown.as_deref() == Some("confidentiality") {
        return Err(KernelError::Confidentiality);
    }
    if (version.0, version.1) < OLDEST_TESTED {
        log::warn!(
            "Linux {release} is older than the oldest kernel brokerwatch is tested on ({}.{})",
            OLDEST_TESTED.0,
            OLDEST_TESTED.1
        );
    }
    Ok(KernelInfo {
        release,
        version,
        lockdown,
    })
}

/// Kernels before 5.11 charge BPF maps to RLIMIT_MEMLOCK; lift it where we may.
pub fn raise_memlock_limit() {
    let unlimited = libc::rlimit {
        rlim_cur: libc::RLIM_INFINITY,
        rlim_max: libc::RLIM_INFINITY,
    };
    // SAFETY: plain syscall with a valid pointer; failure only means the old limit stays.
    let rc = unsafe { libc::setrlimit(libc::RLIMIT_MEMLOCK, &unlimited) };
    if rc != 0 {
        log::debug!("could not raise RLIMIT_MEMLOCK; fine on kernels >= 5.11");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `cargo xtask test` runs the pure tier without privileges and says so in
    /// `BW_TEST_UNPRIVILEGED`: there, the real check must refuse, naming what is missing.
    #[test]
    fn preflight_refuses_the_unprivileged_pure_tier() {
        if std::env::var_os("BW_TEST_UNPRIVILEGED").is_none() {
            return;
        }
        match check_privileges() {
            Err(PrivilegeError::Missing { missing }) => assert!(missing.contains("CAP_BPF")),
            other => panic!("the pure tier runs with BPF privileges: {other:?}"),
        }
    }

    #[test]
    fn preflight_kernel_releases_and_lockdown_modes_parse() {
        assert_eq!(parse_release("6.1.0-56-cloud-amd64"), Some((6, 1, 0)));
        assert_eq!(
            parse_release("6.12.117+deb13-cloud-amd64"),
            Some((6, 12, 117))
        );
        assert_eq!(parse_release("6.18"), Some((6, 18, 0)));
        assert_eq!(parse_release("garbage"), None);
        assert_eq!(
            parse_lockdown("none [integrity] confidentiality\n").as_deref(),
            Some("integrity")
        );
        assert_eq!(parse_lockdown("none integrity"), None);
        let running = check_kernel().expect("the test machine's kernel is supported");
        assert!(running.version >= (OLDEST_TESTED.0, OLDEST_TESTED.1, 0));
    }

    #[test]
    fn root_has_everything() {
        let status = "Name:\tbash\nCapInh:\t0000000000000000\nCapEff:\t000001ffffffffff\n";
        let caps = parse_cap_eff(status).unwrap();
        assert!(missing_capabilities(caps).is_empty());
    }

    #[test]
    fn unprivileged_user_is_told_what_is_missing() {
        assert_eq!(
            missing_capabilities(0),
            vec!["CAP_BPF", "CAP_PERFMON", "CAP_NET_ADMIN"]
        );
        let sys_admin_only = 1u64 << CAP_SYS_ADMIN;
        assert_eq!(missing_capabilities(sys_admin_only), vec!["CAP_NET_ADMIN"]);
        let modern = (1u64 << CAP_BPF) | (1u64 << CAP_PERFMON) | (1u64 << CAP_NET_ADMIN);
        assert!(missing_capabilities(modern).is_empty());
        assert_eq!(parse_cap_eff("Name: x\n"), None);
    }
}
