//! `brokerwatch install` / `uninstall`: the binary, the hardened system unit, the user unit
//! and XDG autostart entry of the desktop agent, the `brokerwatch` user and groups.

use std::{
    io,
    path::{Path, PathBuf},
    process::Command,
};

use crate::defaults;

pub const SYSTEM_UNIT: &str = include_str!("../../dist/systemd/brokerwatch.service");
pub const USER_UNIT: &str = include_str!("../../dist/systemd/brokerwatch-notify.service");
pub const AUTOSTART: &str = include_str!("../../dist/autostart/brokerwatch-notify.desktop");

#[derive(Debug, thiserror::Error)]
pub enum InstallError {
    #[error("installing needs root: run `sudo brokerwatch install`")]
    NotRoot,
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error("{cmd} failed: {detail}")]
    Command { cmd: String, detail: String },
}

/// Where files go (a staging root for packaging and tests, `/` normally).
#[derive(Debug, Clone)]
pub struct Layout {
    pub root: PathBuf,
}

impl Layout {
    fn at(&self, p: &str) -> PathBuf {
        self.root.join(p.trim_start_matches('/'))
    }
    pub fn binary(&self) -> PathBuf {
        self.at("/usr/local/bin/brokerwatch")
    }
    pub fn system_unit(&self) -> PathBuf {
        self.at("/etc/systemd/system/brokerwatch.service")
    }
    pub fn user_unit(&self) -> PathBuf {
        self.at("/etc/systemd/user/brokerwatch-notify.service")
    }
    pub fn autostart(&self) -> PathBuf {
        self.at("/etc/xdg/autostart/brokerwatch-notify.desktop")
    }
    pub fn policy_dir(&self) -> PathBuf {
        self.at("/etc/brokerwatch/policies.d")
    }
    fn live(&self) -> bool {
        self.root == Path::new("/")
    }
}

fn write(path: &Path, text: &str, mode: u32) -> Result<(), InstallError> {
    let io = |source| InstallError::Io {
        path: path.to_owned(),
        source,
    };
    if let Some(d) = path.parent() {
        std::fs::create_dir_all(d).map_err(io)?;
    }
    std::fs::write(path, text).map_err(io)?;
    std::fs::set_permissions(path, std::os::unix::fs::PermissionsExt::from_mode(mode)).map_err(io)
}

fn run(cmd: &mut Command) -> Result<(), InstallError> {
    let out = cmd.output().map_err(|e| InstallError::Command {
        cmd: format!("{cmd:?}"),
        detail: e.to_string(),
    })?;
    if out.status.success() {
        Ok(())
    } else {
        Err(InstallError::Command {
            cmd: format!("{cmd:?}"),
            detail: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
        })
    }
}

fn exists(kind: &str, name: &str) -> bool {
    Command::new("getent")
        .args([kind, name])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false)
}

fn systemd_running() -> bool {
    Path::new("/run/systemd/system").is_dir()
}

/// Copies the binary `from` to `to`, mode 0755 whatever the source's mode (a 0777 build must
/// not stay writable by anyone). Copy then rename: a running daemon keeps its old binary.
fn install_binary(from: &Path, to: &Path) -> Result<(), InstallError> {
    if from == to {
        return Ok(());
    }
    let io = |source| InstallError::Io {
        path: to.to_owned(),
        source,
    };
    if let Some(d) = to.parent() {
        std::fs::create_dir_all(d).map_err(io)?;
    }
    let tmp = to.with_extension("new");
    let _ = std::fs::remove_file(&tmp);
    std::fs::copy(from, &tmp).map_err(io)?;
    std::fs::set_permissions(&tmp, std::os::unix::fs::PermissionsExt::from_mode(0o755))
        .map_err(io)?;
    std::fs::rename(&tmp, to).map_err(io)
}

/// Installs everything; returns what the user should do next.
pub fn install(layout: &Layout) -> Result<Vec<String>, InstallError> {
    // SAFETY: no arguments.
    if layout.live() && unsafe { libc::geteuid() } != 0 {
        return Err(InstallError::NotRoot);
    }
    let mut next = Vec::new();
    let me = std::env::current_exe().map_err(|source| InstallError::Io {
        path: PathBuf::from("/proc/self/exe"),
        source,
    })?;
    install_binary(&me, &layout.binary())?;
    write(&layout.system_unit(), SYSTEM_UNIT, 0o644)?;
    write(&layout.user_unit(), USER_UNIT, 0o644)?;
    write(&layout.autostart(), AUTOSTART, 0o644)?;
    std::fs::create_dir_all(layout.policy_dir()).map_err(|source| InstallError::Io {
        path: layout.policy_dir(),
        source,
    })?;
    if !layout.live() {
        next.push(format!("staged under {}", layout.root.display()));
        return Ok(next);
    }
    for group in [
        defaults::SERVICE_GROUP,
        defaults::SOCKET_GROUP,
        defaults::ADMIN_GROUP,
    ] {
        if !exists("group", group) {
            run(Command::new("groupadd").args(["--system", group]))?;
        }
    }
    if !exists("passwd", "brokerwatch") {
        run(Command::new("useradd").args([
            "--system",
            "--gid",
            "brokerwatch",
            "--home-dir",
            "/nonexistent",
            "--no-create-home",
            "--shell",
            "/usr/sbin/nologin",
            "brokerwatch",
        ]))?;
    }
    if systemd_running() {
        run(Command::new("systemctl").arg("daemon-reload"))?;
        run(Command::new("systemctl").args(["enable", "--now", "brokerwatch.service"]))?;
        run(Command::new("systemctl").args(["--global", "enable", "brokerwatch-notify.service"]))?;
        next.push("the service runs; desktop notifications start at your next login".into());
    } else {
        next.push(
            "systemd is not running here: start `brokerwatch daemon` as root yourself".into(),
        );
    }
    next.push(format!(
        "let a user receive alerts: sudo usermod -aG {} USER (then log in again)",
        defaults::SOCKET_GROUP
    ));
    next.push(
        "let an administrator see every user's alerts: sudo usermod -aG brokerwatch-admin USER"
            .into(),
    );
    Ok(next)
}

/// Removes what `install` put in place; the alert history stays unless `purge`.
pub fn uninstall(layout: &Layout, purge: bool) -> Result<Vec<String>, InstallError> {
    // SAFETY: no arguments.
    if layout.live() && unsafe { libc::geteuid() } != 0 {
        return Err(InstallError::NotRoot);
    }
    if layout.live() && systemd_running() {
        let _ = run(Command::new("systemctl").args(["disable", "--now", "brokerwatch.service"]));
        let _ = run(Command::new("systemctl").args([
            "--global",
            "disable",
            "brokerwatch-notify.service",
        ]));
    }
    for p in [
        layout.system_unit(),
        layout.user_unit(),
        layout.autostart(),
        layout.binary(),
    ] {
        match std::fs::remove_file(&p) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(source) => return Err(InstallError::Io { path: p, source }),
        }
    }
    let mut notes = vec!["removed the units, the autostart entry and the binary".to_owned()];
    if purge {
        let state = layout.root.join("var/lib/brokerwatch");
        let _ = std::fs::remove_dir_all(&state);
        notes.push(format!("removed the alert history ({})", state.display()));
    } else {
        notes.push("kept the alert history in /var/lib/brokerwatch (--purge removes it)".into());
    }
    if layout.live() && systemd_running() {
        let _ = run(Command::new("systemctl").arg("daemon-reload"));
    }
    Ok(notes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_system_unit_keeps_the_promised_hardening() {
        for line in [
            "NoNewPrivileges=yes",
            "ProtectSystem=strict",
            "ProtectHome=read-only",
            "PrivateTmp=yes",
            "RuntimeDirectory=brokerwatch",
            "StateDirectory=brokerwatch",
            "Restart=on-failure",
            "Type=notify",
        ] {
            assert!(SYSTEM_UNIT.lines().any(|l| l == line), "{line} missing");
        }
        let caps = SYSTEM_UNIT
            .lines()
            .find_map(|l| l.strip_prefix("CapabilityBoundingSet="))
            .unwrap();
        for cap in caps.split_whitespace() {
            // Every capability beyond the four in the issue has its reason beside it.
            assert!(
                SYSTEM_UNIT.contains(&format!("#   {cap}")),
                "{cap} without a reason"
            );
        }
    }

    #[test]
    fn install_and_uninstall_into_a_staging_root() {
        // Issue 16, item 13: the installed binary kept the source's mode (0777 stayed 0777).
        use std::os::unix::fs::PermissionsExt as _;
        let root = std::env::temp_dir().join(format!("bw-install-{}", std::process::id()));
        let layout = Layout { root: root.clone() };
        install(&layout).unwrap();
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o7777;
        assert_eq!(mode(&layout.binary()), 0o755);
        let loose = root.join("loose-build");
        std::fs::write(&loose, "#!/bin/sh\n").unwrap();
        std::fs::set_permissions(&loose, std::fs::Permissions::from_mode(0o777)).unwrap();
        install_binary(&loose, &layout.binary()).unwrap();
        assert_eq!(mode(&layout.binary()), 0o755);
        assert_eq!(mode(&layout.system_unit()), 0o644);
        for p in [
            layout.binary(),
            layout.system_unit(),
            layout.user_unit(),
            layout.autostart(),
        ] {
            assert!(p.exists(), "{}", p.display());
        }
        assert!(layout.policy_dir().is_dir());
        uninstall(&layout, true).unwrap();
        assert!(!layout.system_unit().exists() && !layout.binary().exists());
        std::fs::remove_dir_all(&root).ok();
    }
}
