//! App definitions: `[[app]]` tables matching processes by executable, process name,
//! Flatpak id or Snap name.

use std::path::Path;

use serde::Deserialize;

use crate::host::appid::AppIdentity;

/// The built-in app definitions.
pub const BUILTIN_APPS: &str = include_str!("../../../policies/apps.toml");

#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    #[error("{file}: {message}")]
    Parse { file: String, message: String },
    #[error("{file}: app {id:?}: {message}")]
    Invalid {
        file: String,
        id: String,
        message: String,
    },
    #[error("unknown app or group {0:?}; known: {1}")]
    UnknownApp(String, String),
}

#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct AppDef {
    pub id: String,
    pub name: String,
    #[serde(default)]
    pub groups: Vec<String>,
    /// Executable paths (absolute) or basenames.
    #[serde(default)]
    pub exe: Vec<String>,
    /// Process names (as in /proc/PID/comm).
    #[serde(default)]
    pub comm: Vec<String>,
    #[serde(default)]
    pub flatpak: Vec<String>,
    #[serde(default)]
    pub snap: Vec<String>,
    /// Desktop file ids (systemd app scopes: `app-gnome-<id>-<n>.scope`).
    #[serde(default)]
    pub desktop: Vec<String>,
    /// First-party domains of the app.
    #[serde(default)]
    pub first_party: Vec<String>,
    /// The real paths behind absolute `exe` entries that are symlinks (filled when the
    /// policy is resolved).
    #[serde(skip)]
    pub exe_real: Vec<String>,
}

/// What app matching looks at in a process.
#[derive(Debug, Clone, Copy, Default)]
pub struct Seen<'a> {
    /// Process name (as in /proc/PID/comm).
    pub comm: &'a str,
    /// The executable itself, symlinks resolved.
    pub exe: Option<&'a str>,
    /// The path it was started through (a symlink, `/proc/self/exe`).
    pub exec_path: Option<&'a str>,
    /// Flatpak, Snap or desktop-scope identity.
    pub identity: Option<&'a AppIdentity>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct AppFile {
    #[serde(default)]
    app: Vec<AppDef>,
}

fn basename(s: &str) -> &str {
    Path::new(s)
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or(s)
}

impl AppDef {
    /// Process names the kernel can match at exec (basenames of `exe` and of the real
    /// files behind them, and `comm`).
    pub fn kernel_names(&self) -> Vec<String> {
        let mut names: Vec<String> = self
            .exe
            .iter()
            .chain(&self.exe_real)
            .map(|e| basename(e).to_owned())
            .chain(self.comm.iter().cloned())
            .collect();
        names.sort();
        names.dedup();
        names
    }

    /// Resolves absolute `exe` entries that are symlinks to the files behind them.
    pub fn resolve_paths(&mut self) {
        self.exe_real = self
            .exe
            .iter()
            .filter(|e| e.starts_with('/'))
            .filter_map(|e| {
                let real = std::fs::canonicalize(e).ok()?;
                let real = real.to_str()?.to_owned();
                (real != *e).then_some(real)
            })
            .collect();
    }

    /// Whether a process seen this way is this app: by name, by executable (the real file
    /// or the path it was started through, symlinks on either side resolved), or by its
    /// Flatpak, Snap or desktop identity.
    pub fn matches(&self, p: &Seen<'_>) -> bool {
        self.matched_by(p).is_some()
    }

    /// How a process seen this way is this app, the surest way first: its executable's
    /// path, its Flatpak, Snap or desktop scope, its executable's file name, its name.
    pub fn matched_by(&self, p: &Seen<'_>) -> Option<AppBy> {
        let comm_match = |name: &str| {
            // The kernel keeps 15 bytes of a name.
            let n = name.len().min(15);
            p.comm == name || (p.comm.len() == 15 && name.len() > 15 && p.comm == &name[..n])
        };
        let paths: Vec<&str> = p
            .exe
            .into_iter()
            .chain(p.exec_path.filter(|x| !crate::engine::indirect_exec(x)))
            .collect();
        let exes = || self.exe.iter().chain(&self.exe_real);
        if exes().any(|e| e.starts_with('/') && paths.contains(&e.as_str())) {
            return Some(AppBy::Executable);
        }
        let scope = match p.identity {
            Some(AppIdentity::Flatpak { id }) => self
                .flatpak
                .iter()
                .any(|f| f == id)
                .then_some(AppBy::Flatpak),
            Some(AppIdentity::Snap { name, .. }) => {
                self.snap.iter().any(|s| s == name).then_some(AppBy::Snap)
            }
            Some(AppIdentity::Desktop { id, .. }) => self
                .desktop
                .iter()
                .chain(&self.flatpak)
                .any(|d| d.eq_ignore_ascii_case(id))
                .then_some(AppBy::DesktopScope),
            None => None,
        };
        if scope.is_some() {
            return scope;
        }
        if exes().any(|e| !e.starts_with('/') && paths.iter().any(|x| basename(x) == e)) {
            return Some(AppBy::ExecutableName);
        }
        // Without an executable, an executable's file name can only be compared with the
        // process's name: a name match.
        let by_name = self.comm.iter().any(|c| comm_match(c))
            || (paths.is_empty() && exes().any(|e| comm_match(basename(e))));
        by_name.then_some(AppBy::ProcessName)
    }
}

/// How a process was decided to be an app (`Finding::app_by`): a report can tell a sure
/// attribution from a name match.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum AppBy {
    /// The executable's path is one the app definition names.
    Executable,
    /// The process runs in the app's Flatpak sandbox.
    Flatpak,
    /// The process runs in the app's Snap.
    Snap,
    /// The process runs in the app's desktop scope (its systemd unit names the app).
    DesktopScope,
    /// The executable's file name is one the app definition names (any directory).
    ExecutableName,
    /// Only the process's name matched (the weakest: any program can take any name).
    ProcessName,
    /// Inherited from a parent process of the app (a helper it started).
    Parent,
}

impl AppBy {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Executable => "executable",
            Self::Flatpak => "flatpak",
            Self::Snap => "snap",
            Self::DesktopScope => "desktop-scope",
            Self::ExecutableName => "executable-name",
            Self::ProcessName => "process-name",
            Self::Parent => "parent",
        }
    }
}

/// Checks one app definition (stage one).
pub fn validate_app(app: &AppDef) -> Result<(), String> {
    if app.id.is_empty()
        || !app
            .id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        return Err("id must be non-empty ASCII letters, digits, '-' or '_'".into());
    }
    if app.exe.is_empty()
        && app.comm.is_empty()
        && app.flatpak.is_empty()
        && app.snap.is_empty()
        && app.desktop.is_empty()
    {
        return Err(
            "matches nothing: give at least one of exe, comm, flatpak, snap, desktop".into(),
        );
    }
    Ok(())
}

/// A validated set of app definitions.
#[derive(Debug, Clone, Default)]
pub struct AppSet {
    pub apps: Vec<AppDef>,
}

impl AppSet {
    pub fn builtin() -> Self {
        Self::parse("policies/apps.toml", BUILTIN_APPS).expect("built-in apps are valid (tested)")
    }

    /// Pure parse and validation of one file's text.
    pub fn parse(file: &str, text: &str) -> Result<Self, PolicyError> {
        let parsed: AppFile = toml::from_str(text).map_err(|e| PolicyError::Parse {
            file: file.to_owned(),
            message: e.to_string(),
        })?;
        for app in &parsed.app {
            validate_app(app).map_err(|message| PolicyError::Invalid {
                file: file.to_owned(),
                id: app.id.clone(),
                message,
            })?;
        }
        Ok(Self { apps: parsed.app })
    }

    /// Apps named by id or by group.
    pub fn select(&self, names: &[String]) -> Result<Vec<&AppDef>, PolicyError> {
        let mut out: Vec<&AppDef> = Vec::new();
        for name in names {
            let hits: Vec<&AppDef> = self
                .apps
                .iter()
                .filter(|a| {
                    a.id.eq_ignore_ascii_case(name)
                        || a.groups.iter().any(|g| g.eq_ignore_ascii_case(name))
                })
                .collect();
            if hits.is_empty() {
                let mut known: Vec<&str> = self.apps.iter().map(|a| a.id.as_str()).collect();
                known.extend(
                    self.apps
                        .iter()
                        .flat_map(|a| a.groups.iter().map(String::as_str)),
                );
                known.sort();
                known.dedup();
                return Err(PolicyError::UnknownApp(name.clone(), known.join(", ")));
            }
            for h in hits {
                if !out.iter().any(|a| a.id == h.id) {
                    out.push(h);
                }
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtin_meeting_group_covers_the_listed_apps() {
        let set = AppSet::builtin();
        let meeting = set.select(&["meeting".into()]).unwrap();
        let ids: Vec<&str> = meeting.iter().map(|a| a.id.as_str()).collect();
        for want in [
            "zoom",
            "teams",
            "webex",
            "slack",
            "discord",
            "skype",
            "jitsi",
            "gotomeeting",
            "ringcentral",
            "element",
            "signal",
            "telegram",
        ] {
            assert!(ids.contains(&want), "{want} missing from {ids:?}");
        }
    }

    #[test]
    fn matching_by_exe_comm_and_identity() {
        let set = AppSet::builtin();
        let zoom = &set.select(&["zoom".into()]).unwrap()[0];
        let seen = |comm, exe, exec_path, identity| Seen {
            comm,
            exe,
            exec_path,
            identity,
        };
        assert!(zoom.matches(&seen("zoom", Some("/opt/zoom/zoom"), None, None)));
        assert!(zoom.matches(&seen("ZoomWebviewHost", None, None, None)));
        assert!(zoom.matches(&seen("whatever", Some("/usr/bin/zoom"), None, None)));
        assert!(!zoom.matches(&seen("zoomer", Some("/usr/bin/zoomer"), None, None)));
        // Issue 24, item 7: how, the surest way first.
        assert_eq!(
            zoom.matched_by(&seen("zoom", Some("/opt/zoom/zoom"), None, None)),
            Some(AppBy::Executable)
        );
        assert_eq!(
            zoom.matched_by(&seen("ZoomWebviewHost", None, None, None)),
            Some(AppBy::ProcessName)
        );
        let flatpak = AppIdentity::Flatpak {
            id: "us.zoom.Zoom".into(),
        };
        assert!(zoom.matches(&seen("bwrap", None, None, Some(&flatpak))));
        let gnome = AppIdentity::Desktop {
            launcher: "gnome".into(),
            id: "us.zoom.Zoom".into(),
        };
        assert!(zoom.matches(&seen("whatever", None, None, Some(&gnome))));
        // Started through a symlink whose name is the app's: the path it was started
        // through counts, but not an indirect one.
        assert!(zoom.matches(&seen(
            "x",
            Some("/opt/other/bin"),
            Some("/usr/bin/zoom"),
            None
        )));
        assert!(!zoom.matches(&seen(
            "exe",
            Some("/opt/other/bin"),
            Some("/proc/self/exe"),
            None
        )));
        let webex = &set.select(&["webex".into()]).unwrap()[0];
        // Kernel-truncated name of CiscoCollabHostCefWM.
        assert!(webex.matches(&seen("CiscoCollabHost", None, None, None)));
        assert!(zoom.kernel_names().contains(&"ZoomLauncher".to_owned()));
    }

    #[test]
    fn unknown_names_and_bad_files_are_errors() {
        let set = AppSet::builtin();
        assert!(matches!(
            set.select(&["nope".into()]),
            Err(PolicyError::UnknownApp(..))
        ));
        assert!(matches!(
            AppSet::parse("x.toml", "[[app]]\nid = 'a'\n"),
            Err(PolicyError::Parse { .. })
        ));
        assert!(matches!(
            AppSet::parse("x.toml", "[[app]]\nid = 'a b'\nname = 'A'\nexe = ['a']\n"),
            Err(PolicyError::Invalid { .. })
        ));
        assert!(matches!(
            AppSet::parse("x.toml", "[[app]]\nid = 'a'\nname = 'A'\n"),
            Err(PolicyError::Invalid { .. })
        ));
    }
}
