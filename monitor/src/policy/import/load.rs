//! Stage two for imported lists: reading them from disk and adding their entries.

use std::{
    collections::{HashMap, HashSet},
    path::{Path, PathBuf},
};

use super::formats;
use crate::{
    host::files::{self, FileError},
    policy::{DestEntry, ImportFormat, LoadError, Policy, SourceInfo},
};

impl Policy {
    #[allow(clippy::too_many_arguments)]
    pub(in crate::policy) fn import(
        &mut self,
        id: &str,
        path: &Path,
        format: ImportFormat,
        category: Option<String>,
        company: Option<String>,
        origin: &str,
        patterns: &mut Vec<(String, u32)>,
    ) -> Result<SourceInfo, LoadError> {
        let err = |message: String| LoadError::Import {
            id: id.to_owned(),
            path: path.display().to_string(),
            message,
        };
        let mut texts = Vec::new();
        let read = |p: &Path| files::read_text(p, files::MAX_LIST_BYTES);
        match read(path) {
            // Tracker Radar ships one JSON file per domain in a directory.
            Err(FileError::Directory) if format == ImportFormat::TrackerRadar => {
                let mut found: Vec<PathBuf> = std::fs::read_dir(path)
                    .map_err(|e| err(e.to_string()))?
                    .flatten()
                    .map(|e| e.path())
                    .filter(|p| p.extension().is_some_and(|e| e == "json"))
                    .collect();
                if found.is_empty() {
                    return Err(err("a directory with no .json files in it".into()));
                }
                found.sort();
                for f in found {
                    texts.push(read(&f).map_err(|e| err(format!("{}: {e}", f.display())))?);
                }
            }
            Err(FileError::Directory) => {
                return Err(err(format!(
                    "is a directory; only tracker-radar imports read a directory (of .json files), {} imports read one file",
                    format_name(format)
                )))
            }
            Err(e) => return Err(err(e.to_string())),
            Ok(text) => texts.push(text),
        }
        let name = format!("import {id} ({}, {origin})", path.display());
        let mut info = SourceInfo {
            name: name.clone(),
            ..SourceInfo::default()
        };
        // One entry per (company, category) pair.
        let mut by_key: HashMap<(String, String), u32> = HashMap::new();
        let fallback_company = company.unwrap_or_else(|| format!("listed in {}", path.display()));
        let mut entry_for = |this: &mut Self, comp: Option<String>, cat: Option<String>| -> u32 {
            let comp = comp.unwrap_or_else(|| fallback_company.clone());
            let cat = category
                .clone()
                .or(cat)
                .unwrap_or_else(|| "tracker".to_owned());
            *by_key
                .entry((comp.clone(), cat.clone()))
                .or_insert_with(|| {
                    this.entries.push(DestEntry {
                        id: format!("{id}:{comp}"),
                        company: comp,
                        category: cat,
                        source: format!("{} list {}", format_name(format), path.display()),
                        origin: name.clone(),
                    });
                    (this.entries.len() - 1) as u32
                })
        };
        for text in texts {
            let r = formats::parse(format, &text).map_err(|e| err(e.to_string()))?;
            info.skipped += r.skipped;
            self.matcher.reserve(r.entries.len());
            // Exceptions apply to this list only: a name they cover (or a subdomain of
            // one) is left out of it, and other sources are untouched. One set look-up per
            // label, so a list with as many exceptions as rules stays linear.
            let exceptions: HashSet<&str> = r.exceptions.iter().map(String::as_str).collect();
            let excepted = |d: &str| {
                let mut rest = d;
                loop {
                    if exceptions.contains(rest) {
                        return true;
                    }
                    match rest.split_once('.') {
                        Some((_, parent)) => rest = parent,
                        None => return false,
                    }
                }
            };
            for e in r.entries.into_iter().filter(|e| !excepted(&e.domain)) {
                let idx = entry_for(self, e.company, e.category);
                self.matcher.add_normalized(e.domain, idx);
                info.domains += 1;
            }
            info.skipped += r.exceptions.len();
            for (p, comp) in r.patterns {
                let idx = entry_for(self, comp, None);
                patterns.push((p, idx));
                info.patterns += 1;
            }
        }
        info.destinations = by_key_len(&self.entries, &name);
        Ok(info)
    }
}

fn by_key_len(entries: &[DestEntry], origin: &str) -> usize {
    entries.iter().filter(|e| e.origin == origin).count()
}

fn format_name(f: ImportFormat) -> &'static str {
    match f {
        ImportFormat::Hosts => "hosts",
        ImportFormat::Adblock => "Adblock",
        ImportFormat::Domains => "domain",
        ImportFormat::Disconnect => "Disconnect services.json",
        ImportFormat::TrackerRadar => "DuckDuckGo Tracker Radar",
        ImportFormat::DdgAppTrackers => "DuckDuckGo app tracker",
        ImportFormat::Exodus => "Exodus Privacy tracker",
        ImportFormat::CaBrokerCsv => "California data broker registry",
    }
}
