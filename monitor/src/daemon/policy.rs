//! The daemon's policy: the one in force, why it is not the configured one (if so), and
//! the files it watches for changes. One reload path, whatever asked for it.

use std::{
    path::{Path, PathBuf},
    time::{Duration, SystemTime},
};

use super::journal;
use crate::{
    host::clock::now_ms,
    policy::{last_good, LoadError, Policy, PolicySources},
    protocol::{Notice, NoticeKind, PolicySource},
};

/// Why the policy is reloaded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reload {
    /// SIGHUP.
    Signal,
    /// A policy file changed on disk.
    FileChanged,
}

impl std::fmt::Display for Reload {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Signal => "SIGHUP",
            Self::FileChanged => "a policy file changed",
        })
    }
}

/// A policy file's path, size and modification time: a change means a reload.
type Fingerprint = Vec<(PathBuf, u64, Option<SystemTime>)>;

pub struct PolicyState {
    /// The policy in force.
    pub policy: Policy,
    /// Why the policy in force is not the configured one (a file does not load).
    pub error: Option<String>,
    sources: PolicySources,
    last_good_dir: PathBuf,
    fingerprint: Fingerprint,
}

impl PolicyState {
    /// The configured policy, or when it does not load the last good copy (kept in
    /// `last_good_dir`), with the reason.
    pub fn load(sources: &PolicySources, last_good_dir: &Path) -> Result<Self, LoadError> {
        let fingerprint = fingerprint(sources);
        let (policy, error) = initial(sources, last_good_dir)?;
        Ok(Self {
            policy,
            error,
            sources: sources.clone(),
            last_good_dir: last_good_dir.to_owned(),
            fingerprint,
        })
    }

    /// Where the policy comes from.
    pub fn sources(&self) -> &PolicySources {
        &self.sources
    }

    /// Whether a policy file changed since the last look (then it must be reloaded).
    pub fn files_changed(&mut self) -> bool {
        let now = fingerprint(&self.sources);
        if now == self.fingerprint {
            return false;
        }
        self.fingerprint = now;
        true
    }

    /// Replaces the policy if the files load (and saves it as the last good one); a broken
    /// file is logged with its position and the policy in force stays. Alerts in flight
    /// are unaffected. Returns the notice admins are told, if the reload failed.
    pub fn reload(&mut self, why: Reload) -> Option<Notice> {
        match Policy::load(&self.sources) {
            Ok(p) => {
                self.policy = p;
                self.error = None;
                log::info!("policies reloaded ({why})");
                save_last_good(&self.last_good_dir, &self.sources);
            }
            Err(e) => {
                let message =
                    format!("policy reload failed ({why}); the policy in force stays:\n{e}");
                log::error!(message_id = journal::POLICY_ERROR_ID; "{message}");
                self.error = Some(message);
            }
        }
        self.notice()
    }

    /// What holds now, for admins: the policy in force is not the configured one.
    pub fn notice(&self) -> Option<Notice> {
        self.error.as_ref().map(|message| Notice {
            kind: NoticeKind::PolicyError,
            message: message.clone(),
            ts_ms: now_ms(),
        })
    }

    /// The sources of the policy in force, for `status`.
    pub fn summary(&self) -> Vec<PolicySource> {
        self.policy
            .sources
            .iter()
            .map(|s| PolicySource {
                name: s.name.clone(),
                apps: s.apps,
                destinations: s.destinations,
                domains: s.domains,
                rules: s.rules,
            })
            .collect()
    }
}

fn save_last_good(dir: &Path, sources: &PolicySources) {
    if let Err(e) = last_good::save(dir, sources) {
        log::warn!("cannot keep a copy of the policy for restarts: {e}");
    }
}

/// The configured policy, or when it does not load the last good copy, with the reason.
fn initial(
    sources: &PolicySources,
    last_good_dir: &Path,
) -> Result<(Policy, Option<String>), LoadError> {
    let e = match Policy::load(sources) {
        Ok(p) => {
            save_last_good(last_good_dir, sources);
            return Ok((p, None));
        }
        Err(e) => e,
    };
    match last_good::load(last_good_dir) {
        Ok(lg) => {
            let saved = humantime::format_rfc3339_seconds(
                std::time::UNIX_EPOCH + Duration::from_millis(lg.saved_ms),
            );
            let message = format!(
                "the policy does not load, so the daemon runs on the last good policy (saved {saved}); fix the files and reload:\n{e}"
            );
            log::error!(message_id = journal::POLICY_ERROR_ID; "{message}");
            Ok((lg.policy, Some(message)))
        }
        Err(last_good::LastGoodError::Missing(_)) => Err(e),
        Err(lg) => {
            log::error!("the last good policy cannot be used either: {lg}");
            Err(e)
        }
    }
}

/// What the policy files look like on disk.
fn fingerprint(sources: &PolicySources) -> Fingerprint {
    let mut paths: Vec<PathBuf> = sources.files.clone();
    if let Some(dir) = &sources.system_dir {
        if let Ok(rd) = std::fs::read_dir(dir) {
            paths.extend(rd.flatten().map(|e| e.path()));
        }
    }
    paths.extend(sources.imports.iter().map(|i| i.path.clone()));
    paths.sort();
    paths
        .into_iter()
        .map(|p| {
            let m = std::fs::metadata(&p).ok();
            let len = m.as_ref().map(|m| m.len()).unwrap_or(0);
            let mtime = m.and_then(|m| m.modified().ok());
            (p, len, mtime)
        })
        .collect()
}
