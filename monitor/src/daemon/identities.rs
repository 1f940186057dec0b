//! Users' own identifiers (`brokerwatch identity add|remove|list`, issue 25): kept by the
//! daemon in one root-only file of its state directory (0600, written beside and renamed
//! over, never through a link), each user's matched only against that user's processes.
//! Values never leave: `list` shows each identifier's kind and a short fingerprint.

use std::{
    collections::HashMap,
    path::{Path, PathBuf},
};

use serde::{Deserialize, Serialize};
use sha2::Digest as _;

use crate::{
    inspect::{IdKind, Identifier},
    protocol::IdentityEntry,
};

/// The file, in the state directory.
pub const FILE: &str = "identities.json";
/// Identifiers a user may keep.
pub const MAX_PER_USER: usize = 32;
const MAX_FILE_BYTES: u64 = 4 << 20;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
struct Stored {
    kind: IdKind,
    value: String,
    added_ms: u64,
}

/// Every user's identifiers, and where they are kept.
#[derive(Debug, Default)]
pub struct Identities {
    path: PathBuf,
    by_uid: HashMap<u32, Vec<Stored>>,
}

/// A checked identifier of `kind`.
pub fn parse(kind: IdKind, value: &str) -> Result<Identifier, String> {
    match kind {
        IdKind::Email => Identifier::email(value),
        IdKind::Name => Identifier::name(value),
        IdKind::Phone => Identifier::phone(value),
        other => return Err(format!("{} is not one a user adds", other.label())),
    }
    .map_err(|e| e.to_string())
}

impl Identities {
    /// Reads the file in `state_dir` (none when missing; a broken one is kept aside).
    pub fn open(state_dir: &Path) -> Self {
        let path = state_dir.join(FILE);
        let by_uid = match crate::host::files::read_text(&path, MAX_FILE_BYTES) {
            Ok(text) => serde_json::from_str(&text).unwrap_or_else(|e| {
                log::error!(
                    "{}: {e}; users' identifiers are not read (the file is kept as .broken)",
                    path.display()
                );
                let _ = std::fs::rename(&path, path.with_extension("json.broken"));
                HashMap::new()
            }),
            Err(crate::host::files::FileError::Io(e))
                if e.kind() == std::io::ErrorKind::NotFound =>
            {
                HashMap::new()
            }
            Err(e) => {
                log::error!("{}: {e}; users' identifiers are not read", path.display());
                HashMap::new()
            }
        };
        Self { path, by_uid }
    }

    /// `uid`'s identifiers, for the inspector.
    pub fn of(&self, uid: u32) -> Vec<Identifier> {
        self.by_uid
            .get(&uid)
            .into_iter()
            .flatten()
            .map(|s| Identifier {
                kind: s.kind,
                value: s.value.clone(),
            })
            .collect()
    }

    /// Every user's, for the inspector at start.
    pub fn all(&self) -> HashMap<u32, Vec<Identifier>> {
        self.by_uid.keys().map(|&uid| (uid, self.of(uid))).collect()
    }

    /// Adds one of `uid`'s identifiers; what to tell the user.
    pub fn add(
        &mut self,
        uid: u32,
        kind: IdKind,
        value: &str,
        now_ms: u64,
    ) -> Result<String, String> {
        let id = parse(kind, value)?;
        let list = self.by_uid.entry(uid).or_default();
        if list
            .iter()
            .any(|s| s.kind == id.kind && s.value == id.value)
        {
            return Ok(format!("{} was kept already", kind.phrase()));
        }
        if list.len() >= MAX_PER_USER {
            return Err(format!(
                "at most {MAX_PER_USER} identifiers per user: remove one first"
            ));
        }
        list.push(Stored {
            kind: id.kind,
            value: id.value,
            added_ms: now_ms,
        });
        self.save()?;
        Ok(format!("kept {}", kind.phrase()))
    }

    /// Removes one of `uid`'s identifiers.
    pub fn remove(&mut self, uid: u32, kind: IdKind, value: &str) -> Result<String, String> {
        let id = parse(kind, value)?;
        let list = self.by_uid.entry(uid).or_default();
        let before = list.len();
        list.retain(|s| !(s.kind == id.kind && s.value == id.value));
        if list.len() == before {
            return Err(format!(
                "no such identifier among {}",
                kind.phrase().replace("your ", "your kept ")
            ));
        }
        if list.is_empty() {
            self.by_uid.remove(&uid);
        }
        self.save()?;
        Ok(format!("removed {}", kind.phrase()))
    }

    /// `uid`'s identifiers as the user may see them: kind and fingerprint, never values.
    pub fn list(&self, uid: u32) -> Vec<IdentityEntry> {
        self.by_uid
            .get(&uid)
            .into_iter()
            .flatten()
            .map(|s| IdentityEntry {
                kind: s.kind,
                fingerprint: fingerprint(uid, &s.value),
                added_ms: s.added_ms,
            })
            .collect()
    }

    /// Writes the file beside and renames it over: never half a file, never through a link
    /// someone planted, readable by root only.
    fn save(&self) -> Result<(), String> {
        let write = || -> std::io::Result<()> {
            let text = serde_json::to_string(&self.by_uid).map_err(std::io::Error::other)?;
            crate::host::files::write_private(&self.path, text.as_bytes())
        };
        write().map_err(|e| format!("cannot keep identifiers in {}: {e}", self.path.display()))
    }
}

/// Eight hex digits that tell a user's identifiers apart without showing them.
fn fingerprint(uid: u32, value: &str) -> String {
    let digest = sha2::Sha256::digest(format!("brokerwatch-identity:{uid}:{value}").as_bytes());
    digest[..4].iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt as _;

    use super::*;

    #[test]
    fn identities_are_kept_per_user_in_a_root_only_file_and_listed_without_values() {
        let dir = std::env::temp_dir().join(format!("bw-ids-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let mut ids = Identities::open(&dir);
        assert!(ids.add(1000, IdKind::Email, "A@Example.test", 1).is_ok());
        assert!(ids
            .add(1000, IdKind::Email, "a@example.test", 2)
            .unwrap()
            .contains("already"));
        assert!(ids.add(1001, IdKind::Name, "Bob Builder", 3).is_ok());
        assert!(ids.add(1000, IdKind::MachineId, "x", 4).is_err());
        assert!(ids.add(1000, IdKind::Email, "nope", 4).is_err());
        let mode = std::fs::metadata(dir.join(FILE))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        let again = Identities::open(&dir);
        assert_eq!(again.of(1000).len(), 1);
        assert_eq!(again.of(1000)[0].value, "a@example.test");
        assert!(again.of(1002).is_empty(), "another user's are never theirs");
        let listed = serde_json::to_string(&again.list(1000)).unwrap();
        assert!(!listed.contains("example"), "{listed}");
        let mut again = again;
        assert!(again.remove(1000, IdKind::Email, "a@example.test").is_ok());
        assert!(again.remove(1000, IdKind::Email, "a@example.test").is_err());
        assert!(Identities::open(&dir).of(1000).is_empty());
        std::fs::remove_dir_all(&dir).ok();
    }
}
