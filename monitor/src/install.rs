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
/// Where the package puts the binary (and the unit files say).
const PACKAGED_BINARY: &str = "/usr/bin/brokerwatch";
/// Where `install` puts it.
const LOCAL_BINARY: &str = "/usr/local/bin/brokerwatch";

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
        self.at(LOCAL_BINARY)
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
    /// The users and groups `install` created (and only those): `uninstall --purge` removes
    /// what is listed here, never an account that was there before.
    pub fn manifest(&self) -> PathBuf {
        self.at("/etc/brokerwatch/installed-accounts")
    }
    pub fn state_dir(&self) -> PathBuf {
        self.at(defaults::STATE_DIR)
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
    if layout.live() && crate::host::users::euid() != 0 {
        return Err(InstallError::NotRoot);
    }
    let mut next = Vec::new();
    let me = std::env::current_exe().map_err(|source| InstallError::Io {
        path: PathBuf::from("/proc/self/exe"),
        source,
    })?;
    install_binary(&me, &layout.binary())?;
    // The unit files are the package's (binary in /usr/bin); here it is in /usr/local/bin.
    let local = |text: &str| text.replace(PACKAGED_BINARY, LOCAL_BINARY);
    write(&layout.system_unit(), &local(SYSTEM_UNIT), 0o644)?;
    write(&layout.user_unit(), &local(USER_UNIT), 0o644)?;
    write(&layout.autostart(), &local(AUTOSTART), 0o644)?;
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
            remember(layout, "group", group)?;
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
        remember(layout, "user", "brokerwatch")?;
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
    if layout.live() && crate::host::users::euid() != 0 {
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
        notes.extend(purge_state(&layout.state_dir()));
        notes.extend(remove_accounts(layout)?);
    } else {
        notes.push(format!(
            "kept the store in {} and the brokerwatch user and groups (--purge removes them)",
            defaults::STATE_DIR
        ));
    }
    if layout.live() && systemd_running() {
        let _ = run(Command::new("systemctl").arg("daemon-reload"));
    }
    Ok(notes)
}

/// Records an account `install` created.
fn remember(layout: &Layout, kind: &str, name: &str) -> Result<(), InstallError> {
    use std::io::Write as _;
    let path = layout.manifest();
    let io = |source| InstallError::Io {
        path: path.clone(),
        source,
    };
    if let Some(d) = path.parent() {
        std::fs::create_dir_all(d).map_err(io)?;
    }
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .map_err(io)?;
    writeln!(f, "{kind} {name}").map_err(io)
}

/// The accounts in the manifest, users first (a group cannot go while it is a user's
/// primary group). Lines that are not `user NAME` or `group NAME` are ignored.
pub fn accounts_to_remove(manifest: &str) -> Vec<(&str, &str)> {
    let mut out: Vec<(&str, &str)> = manifest
        .lines()
        .filter_map(|l| l.split_once(' '))
        .filter(|(k, n)| matches!(*k, "user" | "group") && !n.is_empty() && !n.contains(' '))
        .collect();
    out.sort_by_key(|(k, _)| *k != "user");
    out.dedup();
    out
}

fn remove_accounts(layout: &Layout) -> Result<Vec<String>, InstallError> {
    let path = layout.manifest();
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Ok(vec![
                "no record of accounts brokerwatch created: users and groups left as they are"
                    .into(),
            ])
        }
        Err(source) => return Err(InstallError::Io { path, source }),
    };
    let mut notes = Vec::new();
    for (kind, name) in accounts_to_remove(&text) {
        if !layout.live() {
            notes.push(format!("would remove {kind} {name} (staged install)"));
            continue;
        }
        let cmd = if kind == "user" {
            "userdel"
        } else {
            "groupdel"
        };
        match run(Command::new(cmd).arg(name)) {
            Ok(()) => notes.push(format!("removed {kind} {name}")),
            Err(e) => notes.push(format!("could not remove {kind} {name}: {e}")),
        }
    }
    let _ = std::fs::remove_file(&path);
    Ok(notes)
}

/// Whether `name` is a file the daemon creates in its state directory.
fn ours(name: &str) -> bool {
    use crate::defaults::STORE_FILE as FILE_NAME;
    let db_files = [
        FILE_NAME.to_owned(),
        format!("{FILE_NAME}-wal"),
        format!("{FILE_NAME}-shm"),
    ];
    db_files.iter().any(|f| f == name)
        || name.starts_with(&format!("{FILE_NAME}.corrupt-"))
        || matches!(
            name,
            "history.jsonl" | "history.jsonl.imported" | "history.jsonl.tmp"
        )
}

/// Removes the files the daemon created in `dir`, then `dir` if nothing else is left; says
/// what stayed.
fn purge_state(dir: &Path) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return vec![format!("no store at {}", dir.display())];
    };
    let mut removed = 0;
    let mut foreign = Vec::new();
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let is_dir = e.file_type().is_ok_and(|t| t.is_dir());
        let last_good = ["", ".new", ".old"]
            .iter()
            .any(|x| name == format!("{}{x}", defaults::LAST_GOOD_POLICY));
        if ours(&name) && !is_dir {
            if std::fs::remove_file(e.path()).is_ok() {
                removed += 1;
            }
        } else if last_good && is_dir {
            if std::fs::remove_dir_all(e.path()).is_ok() {
                removed += 1;
            }
        } else {
            foreign.push(name);
        }
    }
    let mut notes = vec![format!(
        "removed the store ({removed} files in {})",
        dir.display()
    )];
    if foreign.is_empty() {
        let _ = std::fs::remove_dir(dir);
    } else {
        foreign.sort();
        notes.push(format!(
            "left {} in place: it holds files brokerwatch did not create ({})",
            dir.display(),
            foreign.join(", ")
        ));
    }
    notes
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
        let unit = std::fs::read_to_string(layout.system_unit()).unwrap();
        assert!(
            unit.contains("ExecStart=/usr/local/bin/brokerwatch daemon"),
            "{unit}"
        );
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

    // Issue 16, item 13: `uninstall --purge` deleted files in the state directory it did
    // not create, and left the users and groups it made behind.
    #[test]
    fn uninstall_purge_removes_only_what_brokerwatch_created() {
        let root = std::env::temp_dir().join(format!("bw-purge-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        let layout = Layout { root: root.clone() };
        install(&layout).unwrap();
        let state = layout.state_dir();
        std::fs::create_dir_all(&state).unwrap();
        for f in [
            "brokerwatch.db",
            "brokerwatch.db-wal",
            "brokerwatch.db.corrupt-17",
            "history.jsonl.imported",
            "notes-of-the-admin.txt",
        ] {
            std::fs::write(state.join(f), "x").unwrap();
        }
        std::fs::create_dir_all(state.join("last-good-policy")).unwrap();
        std::fs::write(state.join("last-good-policy/manifest.json"), "{}").unwrap();
        remember(&layout, "group", "brokerwatch-users").unwrap();
        remember(&layout, "user", "brokerwatch").unwrap();
        let notes = uninstall(&layout, true).unwrap().join("\n");
        let left: Vec<_> = std::fs::read_dir(&state)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert_eq!(left, ["notes-of-the-admin.txt"], "{notes}");
        assert!(notes.contains("notes-of-the-admin.txt"), "{notes}");
        assert!(notes.contains("would remove user brokerwatch"), "{notes}");
        assert!(
            notes.contains("would remove group brokerwatch-users"),
            "{notes}"
        );
        assert!(!layout.manifest().exists());
        // Without the foreign file the directory goes too.
        std::fs::remove_file(state.join("notes-of-the-admin.txt")).unwrap();
        install(&layout).unwrap();
        uninstall(&layout, true).unwrap();
        assert!(!state.exists());
        std::fs::remove_dir_all(&root).ok();
    }

    #[test]
    fn uninstall_removes_users_before_groups_and_ignores_junk_lines() {
        let got = accounts_to_remove(
            "group brokerwatch\nuser brokerwatch\nrm -rf /\ngroup \nuser a b\ngroup brokerwatch\n",
        );
        assert_eq!(got, [("user", "brokerwatch"), ("group", "brokerwatch")]);
    }
}
