//! Identifiers nobody has to give: the machine's own (`/etc/machine-id`, the host name, the
//! interfaces' MAC addresses), the login name of a process's user, and e-mail address
//! shapes (other people's addresses are counted, never kept).

use super::identity::{IdKind, Identifier};

/// Host names too common to say anything about this machine.
const COMMON_HOSTS: &[&str] = &[
    "localhost",
    "debian",
    "ubuntu",
    "fedora",
    "archlinux",
    "linux",
];
/// Login names that are words of their own (a path or a header would match them).
const COMMON_LOGINS: &[&str] = &["root", "user", "admin", "guest", "test", "nobody", "daemon"];

/// The machine's identifiers, read now (what cannot be read is left out).
pub fn machine_identifiers() -> Vec<Identifier> {
    let mut out = Vec::new();
    if let Ok(id) = std::fs::read_to_string("/etc/machine-id") {
        let id = id.trim().to_ascii_lowercase();
        if id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit()) {
            out.push(Identifier {
                kind: IdKind::MachineId,
                value: id,
            });
        }
    }
    if let Ok(h) = std::fs::read_to_string("/proc/sys/kernel/hostname") {
        let h = h.trim().to_ascii_lowercase();
        if h.len() >= 6 && !COMMON_HOSTS.contains(&h.as_str()) {
            out.push(Identifier {
                kind: IdKind::HostName,
                value: h,
            });
        }
    }
    if let Ok(dir) = std::fs::read_dir("/sys/class/net") {
        for e in dir.flatten() {
            let Ok(mac) = std::fs::read_to_string(e.path().join("address")) else {
                continue;
            };
            let mac = mac.trim().to_ascii_lowercase();
            let real = mac.len() == 17 && mac != "00:00:00:00:00:00" && mac != "ff:ff:ff:ff:ff:ff";
            if real && !out.iter().any(|i: &Identifier| i.value == mac) {
                out.push(Identifier {
                    kind: IdKind::Mac,
                    value: mac,
                });
            }
        }
    }
    out
}

/// The login name of `uid`, when it is distinctive enough to search for.
pub fn login_identifier(uid: u32) -> Option<Identifier> {
    let name = crate::host::users::passwd(uid)?.name;
    (name.len() >= 4 && !COMMON_LOGINS.contains(&name.as_str())).then_some(Identifier {
        kind: IdKind::LoginName,
        value: name,
    })
}

/// Undoes the escapes addresses travel in: `%40` and other percent escapes, JSON's
/// `\u0040`.
fn unescape(bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        let hex = |s: &[u8]| {
            std::str::from_utf8(s)
                .ok()
                .and_then(|s| u8::from_str_radix(s, 16).ok())
        };
        if b == b'%' {
            if let Some(v) = bytes.get(i + 1..i + 3).and_then(hex) {
                out.push(v);
                i += 3;
                continue;
            }
        }
        if b == b'\\' && bytes.get(i + 1) == Some(&b'u') {
            if let Some(v) = bytes.get(i + 2..i + 6).and_then(|s| {
                let s = std::str::from_utf8(s).ok()?;
                u32::from_str_radix(s, 16)
                    .ok()
                    .and_then(|c| u8::try_from(c).ok())
            }) {
                out.push(v);
                i += 6;
                continue;
            }
        }
        out.push(b);
        i += 1;
    }
    out
}

fn local_char(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'%' | b'+' | b'-')
}

fn domain_char(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-')
}

/// The e-mail addresses in `bytes` (escaped forms undone), lowercased, each once.
pub fn email_addresses(bytes: &[u8]) -> Vec<String> {
    let text = unescape(bytes);
    let mut out: Vec<String> = Vec::new();
    for (at, _) in text.iter().enumerate().filter(|(_, b)| **b == b'@') {
        let start = text[..at]
            .iter()
            .rposition(|b| !local_char(*b))
            .map_or(0, |p| p + 1);
        let end = text[at + 1..]
            .iter()
            .position(|b| !domain_char(*b))
            .map_or(text.len(), |p| at + 1 + p);
        let local = &text[start..at];
        let domain = text[at + 1..end]
            .strip_suffix(b".")
            .unwrap_or(&text[at + 1..end]);
        let tld_ok = domain
            .rsplit(|b| *b == b'.')
            .next()
            .is_some_and(|t| t.len() >= 2 && t.iter().all(u8::is_ascii_alphabetic));
        if local.is_empty() || local.len() > 64 || !domain.contains(&b'.') || !tld_ok {
            continue;
        }
        let addr = format!(
            "{}@{}",
            String::from_utf8_lossy(local),
            String::from_utf8_lossy(domain)
        )
        .to_ascii_lowercase();
        if !out.contains(&addr) {
            out.push(addr);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn machine_addresses_are_found_in_plain_url_and_json_forms() {
        let body = br#"{"to":["bob@example.test","carol%40example.test","dan\u0040example.test"],"x":"a@b"}"#;
        assert_eq!(
            email_addresses(body),
            ["bob@example.test", "carol@example.test", "dan@example.test"]
        );
        assert!(email_addresses(b"user@localhost and @handle and 1@2.3").is_empty());
        assert_eq!(
            email_addresses(b"Mail ERIN@Example.Test."),
            ["erin@example.test"]
        );
    }

    #[test]
    fn machine_identifiers_skip_common_names_and_empty_macs() {
        for id in machine_identifiers() {
            assert!(!COMMON_HOSTS.contains(&id.value.as_str()));
            assert_ne!(id.value, "00:00:00:00:00:00");
        }
        assert!(
            login_identifier(0).is_none(),
            "root is a word, not an identifier"
        );
    }
}
