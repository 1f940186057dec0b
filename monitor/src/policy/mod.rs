//! Policies: which processes are which app, which destinations belong to whom, and what a
//! contact means. Loaded in two stages: [`file::parse`] (pure, per file, positions in every
//! error), then [`Policy::resolve`] (merging by id, reading imported lists from disk).
//!
//! [`block`] turns the rules that block into what the kernel denies.
//!
//! Order, later overriding earlier entries with the same id: built-in (`policies/`, compiled
//! in), `/etc/brokerwatch/policies.d/*.toml` (sorted), `--policy PATH`, `--import`.

pub mod apps;
pub mod block;
pub mod category;
pub mod file;
pub mod import;
pub mod last_good;
pub mod matcher;
mod merge;
pub mod show;
mod sources;

use std::{
    net::IpAddr,
    path::{Path, PathBuf},
};

pub use apps::{AppBy, AppDef, AppSet, PolicyError, Seen};
pub use block::BlockPlan;
pub use category::Category;
pub use file::{Action, Diagnostic, ImportFormat, PolicyFile, Severity};
pub use matcher::Hit;
use matcher::Matcher;
use serde::Serialize;
pub use sources::{ImportSpec, PolicySources};

/// Built-in policy files: (name, text).
pub const BUILTIN: &[(&str, &str)] = &[
    (
        "builtin:apps.toml",
        include_str!("../../../policies/apps.toml"),
    ),
    (
        "builtin:data-brokers.toml",
        include_str!("../../../policies/data-brokers.toml"),
    ),
    (
        "builtin:social-sdk.toml",
        include_str!("../../../policies/social-sdk.toml"),
    ),
    (
        "builtin:ads.toml",
        include_str!("../../../policies/ads.toml"),
    ),
    (
        "builtin:analytics.toml",
        include_str!("../../../policies/analytics.toml"),
    ),
    (
        "builtin:session-replay.toml",
        include_str!("../../../policies/session-replay.toml"),
    ),
    (
        "builtin:crash-reporting.toml",
        include_str!("../../../policies/crash-reporting.toml"),
    ),
    (
        "builtin:rules.toml",
        include_str!("../../../policies/rules.toml"),
    ),
];

pub const SYSTEM_DIR: &str = crate::defaults::POLICY_DIR;

#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("{}", .0.iter().map(|d| d.to_string()).collect::<Vec<_>>().join("\n"))]
    Invalid(Vec<Diagnostic>),
    #[error("cannot read policy {path}: {source}")]
    Read {
        path: PathBuf,
        source: crate::host::files::FileError,
    },
    #[error("import {id} ({path}): {message}")]
    Import {
        id: String,
        path: String,
        message: String,
    },
    #[error("--import {0:?}: expected FORMAT:PATH[:CATEGORY], FORMAT one of {1}")]
    ImportSpec(String, String),
}

/// A destination entry after merging.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DestEntry {
    pub id: String,
    pub company: String,
    pub category: String,
    pub source: String,
    /// The file or import it came from.
    pub origin: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Rule {
    pub id: String,
    pub apps: String,
    pub category: String,
    /// Only this company's destinations.
    pub company: Option<String>,
    /// Only this destination.
    pub destination: Option<String>,
    pub severity: Severity,
    pub action: Action,
    pub origin: String,
}

impl Rule {
    /// Whether the rule covers `entry`, and how specifically: (destination 2, company 1 or
    /// neither 0; a named category 1 or `*` 0). A rule for a company or a destination is
    /// more specific than any category rule.
    pub fn covers(&self, entry: &DestEntry) -> Option<(u8, u8)> {
        let c = if self.category == "*" {
            0
        } else if self.category == entry.category {
            1
        } else {
            return None;
        };
        let d = match (&self.destination, &self.company) {
            (Some(d), _) if *d != entry.id => return None,
            (Some(_), _) => 2,
            (None, Some(co)) if !co.eq_ignore_ascii_case(&entry.company) => return None,
            (None, Some(_)) => 1,
            (None, None) => 0,
        };
        Some((d, c))
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Allow {
    pub id: String,
    pub app: String,
    pub company: String,
    pub origin: String,
}

/// One loaded source and what it contributed.
#[derive(Debug, Clone, Default, Serialize)]
pub struct SourceInfo {
    pub name: String,
    pub apps: usize,
    pub destinations: usize,
    pub domains: usize,
    pub cidrs: usize,
    pub patterns: usize,
    pub rules: usize,
    pub allows: usize,
    pub skipped: usize,
}

/// The decision about one contact.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Verdict {
    pub entry: DestEntry,
    /// The name or range that matched (`graph.facebook.com`, `192.0.2.0/24`, a pattern).
    pub matched: String,
    /// The name of the connection that matched (one of a CNAME chain), if by name.
    pub name: Option<String>,
    pub severity: Severity,
    pub action: Action,
    pub rule: Option<String>,
    pub allowed_by: Option<String>,
}

impl Verdict {
    /// Whether this contact is what brokerwatch exists to report.
    pub fn flagged(&self) -> bool {
        matches!(self.action, Action::Alert | Action::Block)
    }
}

/// An import to read in stage two: id, path, format, category, company, origin.
type PendingImport = (
    String,
    PathBuf,
    ImportFormat,
    Option<String>,
    Option<String>,
    String,
);

/// The resolved policy.
#[derive(Debug, Default)]
pub struct Policy {
    pub apps: AppSet,
    entries: Vec<DestEntry>,
    matcher: Matcher,
    rules: Vec<Rule>,
    allows: Vec<Allow>,
    pub sources: Vec<SourceInfo>,
    /// `[settings] allow_user_blocks`: users may block contacts for themselves.
    pub allow_user_blocks: bool,
    /// `[settings] inspect_plaintext`: read what watched apps send (opt-in, issue 25).
    pub inspect_plaintext: bool,
}

/// A block a user asked for: their own processes of `app` may not reach `company`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct UserBlock {
    pub uid: u32,
    /// App id.
    pub app: String,
    pub company: String,
}

fn app_selected(sel: &str, app: Option<&AppDef>) -> Option<u8> {
    if sel == "*" {
        return Some(0);
    }
    let app = app?;
    if app.id.eq_ignore_ascii_case(sel) {
        Some(2)
    } else if app.groups.iter().any(|g| g.eq_ignore_ascii_case(sel)) {
        Some(1)
    } else {
        None
    }
}

impl Policy {
    /// The built-in policy alone.
    pub fn builtin() -> Self {
        let files: Vec<PolicyFile> = BUILTIN
            .iter()
            .map(|(n, t)| file::parse(n, t).expect("built-in policies are valid (tested)"))
            .collect();
        Self::resolve(files, &[]).expect("built-in policies resolve (tested)")
    }

    /// Stage one for every configured file: built-in, system directory, extra files.
    pub fn parse_all(sources: &PolicySources) -> Result<Vec<PolicyFile>, LoadError> {
        Self::parse_texts(&Self::source_texts(sources)?)
    }

    /// The texts of every configured file, named by path, built-in ones first.
    pub fn source_texts(sources: &PolicySources) -> Result<Vec<(String, String)>, LoadError> {
        let mut texts: Vec<(String, String)> = BUILTIN
            .iter()
            .map(|(n, t)| (n.to_string(), t.to_string()))
            .collect();
        if let Some(dir) = &sources.system_dir {
            match std::fs::read_dir(dir) {
                Ok(rd) => {
                    let mut paths: Vec<PathBuf> = rd
                        .flatten()
                        .map(|e| e.path())
                        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
                        .collect();
                    paths.sort();
                    for p in paths {
                        texts.push((p.display().to_string(), read(&p)?));
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(source) => {
                    return Err(LoadError::Read {
                        path: dir.clone(),
                        source: source.into(),
                    })
                }
            }
        }
        for p in &sources.files {
            texts.push((p.display().to_string(), read(p)?));
        }
        Ok(texts)
    }

    /// Stage one for named texts: every error of every file, or the parsed files.
    pub fn parse_texts(texts: &[(String, String)]) -> Result<Vec<PolicyFile>, LoadError> {
        let mut files = Vec::new();
        let mut diags = Vec::new();
        for (name, text) in texts {
            match file::parse(name, text) {
                Ok(f) => files.push(f),
                Err(d) => diags.extend(d),
            }
        }
        if diags.is_empty() {
            Ok(files)
        } else {
            Err(LoadError::Invalid(diags))
        }
    }

    /// Both stages.
    pub fn load(sources: &PolicySources) -> Result<Self, LoadError> {
        let files = Self::parse_all(sources)?;
        Self::resolve(files, &sources.imports)
    }

    /// Stage two: merge by id (later wins), read imported lists, build the matcher.
    pub fn resolve(files: Vec<PolicyFile>, cli_imports: &[ImportSpec]) -> Result<Self, LoadError> {
        let mut merged = merge::Merged::default();
        for f in files {
            merged.add_file(f);
        }
        for (n, spec) in cli_imports.iter().enumerate() {
            merged.imports.push((
                format!("cli-import-{}", n + 1),
                spec.path.clone(),
                spec.format,
                spec.category.clone(),
                None,
                "--import".to_owned(),
            ));
        }
        merged.into_policy()
    }

    pub fn rules(&self) -> &[Rule] {
        &self.rules
    }

    pub fn allows(&self) -> &[Allow] {
        &self.allows
    }

    pub fn entries(&self) -> &[DestEntry] {
        &self.entries
    }

    pub fn matcher_counts(&self) -> (usize, usize, usize) {
        (
            self.matcher.domain_count(),
            self.matcher.cidr_count(),
            self.matcher.pattern_count(),
        )
    }

    /// The app definition a process belongs to, if any: by its own name, executable and
    /// Flatpak/Snap/desktop identity first; otherwise `inherited`, the app whose watch it
    /// inherited. Every helper of an app (zygote, renderer, network service) is that app,
    /// whatever it executes, until it executes a program defined as another app.
    pub fn app_of(&self, inherited: Option<&str>, seen: &Seen<'_>) -> Option<&AppDef> {
        self.app_decided(inherited, seen).map(|(a, _)| a)
    }

    /// The app of a process and how it was decided: its own executable, scope or name
    /// (the first app that matches), else the app it inherited from its parent.
    pub fn app_decided(
        &self,
        inherited: Option<&str>,
        seen: &Seen<'_>,
    ) -> Option<(&AppDef, AppBy)> {
        let own = self
            .apps
            .apps
            .iter()
            .find_map(|a| a.matched_by(seen).map(|by| (a, by)));
        if own.is_some() {
            return own;
        }
        let id = inherited?;
        self.apps
            .apps
            .iter()
            .find(|a| a.id == id)
            .map(|a| (a, AppBy::Parent))
    }

    /// Looks up one name or address, without rules.
    pub fn lookup(&self, name: Option<&str>, ip: Option<IpAddr>) -> Option<(&DestEntry, Hit)> {
        name.and_then(|n| self.matcher.lookup_name(n))
            .or_else(|| ip.and_then(|ip| self.matcher.lookup_ip(ip)))
            .map(|(i, hit)| (&self.entries[i as usize], hit))
    }

    /// Whether `name` is one of `app`'s own (first-party) domains.
    pub fn is_first_party(&self, app: Option<&AppDef>, name: &str) -> bool {
        Self::first_party(app, name)
    }

    fn first_party(app: Option<&AppDef>, name: &str) -> bool {
        let Some(app) = app else { return false };
        let name = name.trim_end_matches('.').to_ascii_lowercase();
        app.first_party.iter().any(|fp| {
            let fp = fp.to_ascii_lowercase();
            name == fp || name.ends_with(&format!(".{fp}"))
        })
    }

    /// The verdict for a contact of `app` with `ip`, known by `names` (the name the app
    /// asked for and its CNAME chain, SNI, Host). Every name is checked; the most severe
    /// verdict is returned. First-party names of the app are not flagged.
    pub fn classify(
        &self,
        app: Option<&AppDef>,
        names: &[&str],
        ip: Option<IpAddr>,
    ) -> Option<Verdict> {
        let mut best: Option<Verdict> = None;
        let mut first_party_seen = false;
        for name in names {
            if Self::first_party(app, name) {
                first_party_seen = true;
                continue;
            }
            if let Some((idx, hit)) = self.matcher.lookup_name(name) {
                let v = self.decide(app, idx, hit, Some(name.to_string()));
                if best.as_ref().is_none_or(|b| rank(&v) > rank(b)) {
                    best = Some(v);
                }
            }
        }
        if best.is_none() && !first_party_seen {
            if let Some((idx, hit)) = ip.and_then(|ip| self.matcher.lookup_ip(ip)) {
                best = Some(self.decide(app, idx, hit, None));
            }
        }
        best
    }

    fn decide(&self, app: Option<&AppDef>, idx: u32, hit: Hit, name: Option<String>) -> Verdict {
        let entry = self.entries[idx as usize].clone();
        let matched = match &hit {
            Hit::Domain { suffix, .. } => suffix.clone(),
            Hit::Cidr(net) => net.to_string(),
            Hit::Pattern(p) => p.clone(),
        };
        let rule = self
            .rules
            .iter()
            .enumerate()
            .filter_map(|(i, r)| {
                let a = app_selected(&r.apps, app)?;
                let (d, c) = r.covers(&entry)?;
                Some(((a, d, c, i), r))
            })
            .max_by_key(|(k, _)| *k)
            .map(|(_, r)| r);
        let allowed = self.allows.iter().rev().find(|a| {
            app_selected(&a.app, app).is_some_and(|s| s > 0 || a.app == "*")
                && a.company.eq_ignore_ascii_case(&entry.company)
        });
        let (severity, action) = rule
            .map(|r| (r.severity, r.action))
            .unwrap_or((Severity::Low, Action::Log));
        Verdict {
            entry,
            matched,
            name,
            severity,
            action: if allowed.is_some() {
                Action::Ignore
            } else {
                action
            },
            rule: rule.map(|r| r.id.clone()),
            allowed_by: allowed.map(|a| a.id.clone()),
        }
    }
}

fn rank(v: &Verdict) -> (u8, Severity) {
    let a = match v.action {
        Action::Block => 3,
        Action::Alert => 2,
        Action::Log => 1,
        Action::Ignore => 0,
    };
    (a, v.severity)
}

fn read(p: &Path) -> Result<String, LoadError> {
    crate::host::files::read_text(p, crate::host::files::MAX_POLICY_BYTES).map_err(|source| {
        LoadError::Read {
            path: p.to_owned(),
            source,
        }
    })
}

#[cfg(test)]
mod tests;
