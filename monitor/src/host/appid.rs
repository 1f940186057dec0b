//! Which app a process belongs to, from the name of its cgroup (how systemd desktops,
//! Flatpak and Snap name app scopes) and Flatpak's `/.flatpak-info`.
//!
//! Conventions: systemd's `DESKTOP_ENVIRONMENTS.md` (`app-<launcher>-<id>-<random>.scope`,
//! `app-<launcher>-<id>@<random>.service`, `app-<id>-<random>.scope`), Flatpak
//! (`app-flatpak-<id>-<pid>.scope`), Snap (`snap.<snap>.<app>-<uuid>.scope`). Unit names
//! escape bytes other than alphanumerics, `:`, `_` and `.` as `\xNN` (so `-` in an id is
//! `\x2d`).

use serde::Serialize;

/// How a process's app was identified.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum AppIdentity {
    Flatpak {
        id: String,
    },
    Snap {
        name: String,
        app: String,
    },
    /// A desktop launcher's scope or service (`launcher` may be empty).
    Desktop {
        launcher: String,
        id: String,
    },
}

impl AppIdentity {
    /// The short name shown to users.
    pub fn display_id(&self) -> String {
        match self {
            AppIdentity::Flatpak { id } => id.clone(),
            AppIdentity::Snap { name, app } if name == app => name.clone(),
            AppIdentity::Snap { name, app } => format!("{name}.{app}"),
            AppIdentity::Desktop { id, .. } => id.clone(),
        }
    }
}

/// Undoes systemd's unit-name escaping (`\x2d` -> `-`).
pub fn unescape_unit(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        // Bytes, not string slices: the two after `\x` may start a multibyte character.
        if let [b'\\', b'x', hi, lo, ..] = bytes[i..] {
            if let (Some(hi), Some(lo)) = (hex(hi), hex(lo)) {
                out.push(hi << 4 | lo);
                i += 4;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn hex(b: u8) -> Option<u8> {
    (b as char).to_digit(16).map(|d| d as u8)
}

/// Strips a trailing `-<random>` where random is digits or hex (systemd launchers use a
/// pid, a counter or a random hex string).
fn strip_random_suffix(s: &str) -> &str {
    match s.rsplit_once('-') {
        Some((head, tail))
            if !head.is_empty()
                && !tail.is_empty()
                && tail.bytes().all(|b| b.is_ascii_hexdigit()) =>
        {
            head
        }
        _ => s,
    }
}

fn parse_unit(unit: &str) -> Option<AppIdentity> {
    if let Some(rest) = unit.strip_prefix("snap.") {
        // snap.<snap>.<app>-<uuid>.scope; the uuid itself has dashes: it is 36 chars.
        let stem = rest
            .strip_suffix(".scope")
            .or(rest.strip_suffix(".service"))?;
        let (snap, app_and_uuid) = stem.split_once('.')?;
        let app = if app_and_uuid.len() > 37
            && app_and_uuid.as_bytes()[app_and_uuid.len() - 37] == b'-'
        {
            &app_and_uuid[..app_and_uuid.len() - 37]
        } else {
            strip_random_suffix(app_and_uuid)
        };
        if snap.is_empty() || app.is_empty() {
            return None;
        }
        return Some(AppIdentity::Snap {
            name: snap.to_owned(),
            app: app.to_owned(),
        });
    }
    let rest = unit.strip_prefix("app-")?;
    let (stem, is_service) = if let Some(s) = rest.strip_suffix(".scope") {
        (s, false)
    } else if let Some(s) = rest.strip_suffix(".service") {
        (s, true)
    } else {
        return None;
    };
    // Services: app-<launcher>-<id>@<random>.service or app-<launcher>-<id>.service.
    let stem = if is_service {
        stem.split_once('@').map(|(a, _)| a).unwrap_or(stem)
    } else {
        strip_random_suffix(stem)
    };
    // Escaped dashes inside the id are `\x2d`, so the first real '-' ends the launcher.
    let (launcher, id) = match stem.split_once('-') {
        Some((launcher, id)) if !id.is_empty() => (launcher, id),
        _ => ("", stem),
    };
    let id = unescape_unit(id);
    let launcher = unescape_unit(launcher);
    if id.is_empty() {
        return None;
    }
    if launcher == "flatpak" {
        return Some(AppIdentity::Flatpak { id });
    }
    Some(AppIdentity::Desktop { launcher, id })
}

/// The app identity in a cgroup path: the innermost unit that names one.
pub fn from_cgroup_path(path: &str) -> Option<AppIdentity> {
    path.rsplit('/').find_map(parse_unit)
}

/// `name=` of the `[Application]` group of a `.flatpak-info` file.
pub fn parse_flatpak_info(text: &str) -> Option<String> {
    let mut in_app = false;
    for line in text.lines() {
        let line = line.trim();
        if line.starts_with('[') {
            in_app = line == "[Application]";
        } else if in_app {
            if let Some(v) = line.strip_prefix("name=") {
                return Some(v.trim().to_owned()).filter(|v| !v.is_empty());
            }
        }
    }
    None
}

/// Identity of a live process: Flatpak's own file first, then the cgroup name.
pub fn of_process(pid: u32, cgroup_path: Option<&str>) -> Option<AppIdentity> {
    if let Ok(text) = std::fs::read_to_string(format!("/proc/{pid}/root/.flatpak-info")) {
        if let Some(id) = parse_flatpak_info(&text) {
            return Some(AppIdentity::Flatpak { id });
        }
    }
    cgroup_path.and_then(from_cgroup_path)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(path: &str) -> Option<AppIdentity> {
        from_cgroup_path(path)
    }

    #[test]
    fn flatpak_scope() {
        assert_eq!(
            id("/user.slice/user-1000.slice/user@1000.service/app.slice/app-flatpak-us.zoom.Zoom-48213.scope"),
            Some(AppIdentity::Flatpak { id: "us.zoom.Zoom".into() })
        );
        assert_eq!(
            id("/user.slice/user-1000.slice/user@1000.service/app.slice/app-flatpak-com.github.IsmaelMartinez.teams_for_linux-2001.scope"),
            Some(AppIdentity::Flatpak { id: "com.github.IsmaelMartinez.teams_for_linux".into() })
        );
    }

    #[test]
    fn gnome_scope_with_escaped_dashes() {
        assert_eq!(
            id("/user.slice/user-1000.slice/user@1000.service/app.slice/app-gnome-teams\\x2dfor\\x2dlinux-3342.scope"),
            Some(AppIdentity::Desktop { launcher: "gnome".into(), id: "teams-for-linux".into() })
        );
        assert_eq!(
            id("/user.slice/user-1000.slice/user@1000.service/app.slice/app-gnome-org.gnome.Terminal-a1b2c3.scope"),
            Some(AppIdentity::Desktop { launcher: "gnome".into(), id: "org.gnome.Terminal".into() })
        );
    }

    #[test]
    fn kde_service_form() {
        assert_eq!(
            id("/user.slice/user-1000.slice/user@1000.service/app.slice/app-org.kde.konsole@0b5c5e8a.service"),
            Some(AppIdentity::Desktop { launcher: "".into(), id: "org.kde.konsole".into() })
        );
    }

    #[test]
    fn snap_scope_with_dashes_in_names() {
        assert_eq!(
            id("/user.slice/user-1000.slice/user@1000.service/app.slice/snap.zoom-client.zoom-client-5c1e1f46-7c3b-4b6e-9d8b-2f6e3c1a9e11.scope"),
            Some(AppIdentity::Snap { name: "zoom-client".into(), app: "zoom-client".into() })
        );
        assert_eq!(
            AppIdentity::Snap {
                name: "zoom-client".into(),
                app: "zoom-client".into()
            }
            .display_id(),
            "zoom-client"
        );
    }

    #[test]
    fn plain_paths_have_no_app() {
        assert_eq!(id("/"), None);
        assert_eq!(id("/system.slice/ssh.service"), None);
        assert_eq!(id("/user.slice/user-1000.slice/session-2.scope"), None);
        assert_eq!(id("/brokerwatch/audit-77"), None);
    }

    #[test]
    fn unescape_handles_bad_escapes() {
        assert_eq!(unescape_unit("a\\x2db"), "a-b");
        assert_eq!(unescape_unit("a\\xZZb"), "a\\xZZb");
        assert_eq!(unescape_unit("tail\\x2"), "tail\\x2");
    }

    #[test]
    fn flatpak_info() {
        let text = "[Application]\nname=us.zoom.Zoom\nruntime=runtime/org.freedesktop.Platform/x86_64/23.08\n\n[Instance]\ninstance-id=123\n";
        assert_eq!(parse_flatpak_info(text).as_deref(), Some("us.zoom.Zoom"));
        assert_eq!(parse_flatpak_info("[Instance]\nname=x\n"), None);
    }

    // Found by fuzzing: an escape followed by a multibyte character panicked.
    #[test]
    fn appid_unescape_survives_an_escape_before_a_multibyte_character() {
        assert_eq!(unescape_unit("a\\x\u{e9}b"), "a\\x\u{e9}b");
        assert_eq!(unescape_unit("a\\x2db\\x+f"), "a-b\\x+f");
        assert_eq!(unescape_unit("\\x2"), "\\x2");
    }
}
