//! The last policy that loaded, kept on disk: a daemon restarted with a broken policy file
//! (or a list that vanished) starts with it instead of exiting and monitoring nothing.
//!
//! A copy is a directory holding the policy files' texts, copies of every imported list
//! and `manifest.json`, which maps each original path to its copy. It is written beside
//! the old one, loaded back to prove it good, and only then swapped in.

use std::{
    collections::HashMap,
    io,
    os::unix::fs::DirBuilderExt as _,
    path::{Path, PathBuf},
};

use serde::{Deserialize, Serialize};

use super::{ImportFormat, ImportSpec, LoadError, Policy, PolicySources, BUILTIN};
use crate::host::files::{self, MAX_LIST_BYTES, MAX_POLICY_BYTES};

#[derive(Debug, thiserror::Error)]
pub enum LastGoodError {
    #[error("no last good policy saved at {0}")]
    Missing(PathBuf),
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error("{path}: {source}")]
    File {
        path: PathBuf,
        source: files::FileError,
    },
    #[error("{path}: not a last good policy ({message})")]
    Manifest { path: PathBuf, message: String },
    #[error(transparent)]
    Policy(#[from] LoadError),
}

#[derive(Debug, Serialize, Deserialize)]
struct Manifest {
    /// When it was saved, epoch milliseconds.
    saved_ms: u64,
    /// Policy files in load order (built-in ones are not copied: they are in the binary).
    files: Vec<Copy>,
    /// Lists named by `[[import]]` entries, by the path written there.
    imports: Vec<Copy>,
    /// Lists given with `--import`.
    cli_imports: Vec<CliImport>,
}

#[derive(Debug, Serialize, Deserialize)]
struct Copy {
    original: String,
    copy: String,
}

#[derive(Debug, Serialize, Deserialize)]
struct CliImport {
    format: String,
    copy: String,
    category: Option<String>,
}

/// A policy read back from a copy.
pub struct LastGood {
    pub policy: Policy,
    pub saved_ms: u64,
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> LastGoodError + '_ {
    move |source| LastGoodError::Io {
        path: path.to_owned(),
        source,
    }
}

/// Saves the policy `sources` describe as the last good one at `dir` (replacing the one
/// there only once the new copy loads).
pub fn save(dir: &Path, sources: &PolicySources) -> Result<(), LastGoodError> {
    let texts = Policy::source_texts(sources)?;
    let parsed = Policy::parse_texts(&texts)?;
    let tmp = dir.with_extension("new");
    remove_dir(&tmp)?;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&tmp)
        .map_err(io_err(&tmp))?;
    let mut manifest = Manifest {
        saved_ms: crate::host::clock::now_ms(),
        files: Vec::new(),
        imports: Vec::new(),
        cli_imports: Vec::new(),
    };
    let builtin = |name: &str| BUILTIN.iter().any(|(n, _)| *n == name);
    for (n, (name, text)) in texts.iter().filter(|(n, _)| !builtin(n)).enumerate() {
        let copy = format!("policy-{n:03}.toml");
        std::fs::write(tmp.join(&copy), text).map_err(io_err(&tmp.join(&copy)))?;
        manifest.files.push(Copy {
            original: name.clone(),
            copy,
        });
    }
    let mut seen = HashMap::new();
    for f in &parsed {
        for i in &f.raw.import {
            let original = i.path.get_ref().clone();
            if seen.contains_key(&original) {
                continue;
            }
            let copy = format!("list-{:03}", seen.len());
            copy_tree(Path::new(&original), &tmp.join(&copy), 0)?;
            seen.insert(original.clone(), ());
            manifest.imports.push(Copy { original, copy });
        }
    }
    for (n, spec) in sources.imports.iter().enumerate() {
        let copy = format!("cli-list-{n:03}");
        copy_tree(&spec.path, &tmp.join(&copy), 0)?;
        manifest.cli_imports.push(CliImport {
            format: spec.format.name().to_owned(),
            copy,
            category: spec.category.clone(),
        });
    }
    let path = tmp.join("manifest.json");
    let text = serde_json::to_string_pretty(&manifest).expect("manifests serialize");
    std::fs::write(&path, text).map_err(io_err(&path))?;
    // Proven good before it replaces anything.
    load(&tmp)?;
    let old = dir.with_extension("old");
    remove_dir(&old)?;
    if dir.exists() {
        std::fs::rename(dir, &old).map_err(io_err(dir))?;
    }
    std::fs::rename(&tmp, dir).map_err(io_err(dir))?;
    remove_dir(&old)
}

/// Loads the last good policy saved at `dir`.
pub fn load(dir: &Path) -> Result<LastGood, LastGoodError> {
    let path = dir.join("manifest.json");
    if !path.exists() {
        return Err(LastGoodError::Missing(dir.to_owned()));
    }
    let text = files::read_text(&path, MAX_POLICY_BYTES).map_err(|source| LastGoodError::File {
        path: path.clone(),
        source,
    })?;
    let manifest: Manifest = serde_json::from_str(&text).map_err(|e| LastGoodError::Manifest {
        path: path.clone(),
        message: e.to_string(),
    })?;
    let bad = |message: String| LastGoodError::Manifest {
        path: path.clone(),
        message,
    };
    let inside = |copy: &str| -> Result<PathBuf, LastGoodError> {
        if copy.is_empty() || copy.contains('/') || copy.starts_with('.') {
            return Err(bad(format!("copy name {copy:?} leaves the directory")));
        }
        Ok(dir.join(copy))
    };
    let mut texts: Vec<(String, String)> = BUILTIN
        .iter()
        .map(|(n, t)| (n.to_string(), t.to_string()))
        .collect();
    for f in &manifest.files {
        let p = inside(&f.copy)?;
        let text = files::read_text(&p, MAX_POLICY_BYTES)
            .map_err(|source| LastGoodError::File { path: p, source })?;
        texts.push((f.original.clone(), text));
    }
    let copies: HashMap<&str, &str> = manifest
        .imports
        .iter()
        .map(|c| (c.original.as_str(), c.copy.as_str()))
        .collect();
    let mut parsed = Policy::parse_texts(&texts)?;
    for f in &mut parsed {
        for i in &mut f.raw.import {
            let original = i.path.get_ref().as_str();
            let copy = copies
                .get(original)
                .ok_or_else(|| bad(format!("no copy of the list {original}")))?;
            let copy = inside(copy)?.display().to_string();
            i.path = toml::Spanned::new(i.path.span(), copy);
        }
    }
    let mut cli = Vec::new();
    for c in &manifest.cli_imports {
        cli.push(ImportSpec {
            format: ImportFormat::parse(&c.format)
                .ok_or_else(|| bad(format!("unknown list format {:?}", c.format)))?,
            path: inside(&c.copy)?,
            category: c.category.clone(),
        });
    }
    Ok(LastGood {
        policy: Policy::resolve(parsed, &cli)?,
        saved_ms: manifest.saved_ms,
    })
}

/// Copies a list (a regular file, or a directory of them for tracker-radar), no links,
/// nothing larger than a list may be.
fn copy_tree(from: &Path, to: &Path, depth: u32) -> Result<(), LastGoodError> {
    let meta = std::fs::metadata(from).map_err(io_err(from))?;
    if meta.is_dir() && depth < 8 {
        std::fs::DirBuilder::new()
            .mode(0o700)
            .create(to)
            .map_err(io_err(to))?;
        for e in std::fs::read_dir(from).map_err(io_err(from))? {
            let e = e.map_err(io_err(from))?;
            copy_tree(&e.path(), &to.join(e.file_name()), depth + 1)?;
        }
        return Ok(());
    }
    let refused = if !meta.is_file() {
        Some(files::FileError::NotRegular("special file"))
    } else if meta.len() > MAX_LIST_BYTES {
        Some(files::FileError::TooLarge(MAX_LIST_BYTES))
    } else {
        None
    };
    if let Some(source) = refused {
        return Err(LastGoodError::File {
            path: from.to_owned(),
            source,
        });
    }
    std::fs::copy(from, to).map_err(io_err(to))?;
    Ok(())
}

fn remove_dir(dir: &Path) -> Result<(), LastGoodError> {
    match std::fs::remove_dir_all(dir) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(io_err(dir)(e)),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("bw-lastgood-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    fn lookup(p: &Policy, domain: &str) -> Option<String> {
        p.lookup(Some(domain), None).map(|(e, _)| e.company.clone())
    }

    // Issue 16, item 8: a broken policy at restart made the daemon exit.
    #[test]
    fn last_good_policy_outlives_its_files_and_a_bad_save_keeps_the_old_copy() {
        let dir = scratch("save");
        let list = dir.join("list.txt");
        std::fs::write(&list, "||tracker.example^\n").unwrap();
        let policy = dir.join("local.toml");
        std::fs::write(
            &policy,
            format!(
                "[[destination]]\nid = \"b\"\ncompany = \"Broker Inc\"\ncategory = \"data-broker\"\ndomains = [\"broker.example\"]\nsource = \"test\"\n\n[[import]]\nid = \"l\"\npath = \"{}\"\nformat = \"adblock\"\ncategory = \"advertising\"\ncompany = \"Ad Co\"\n",
                list.display()
            ),
        )
        .unwrap();
        let cli_list = dir.join("cli.txt");
        std::fs::write(&cli_list, "cli.example\n").unwrap();
        let sources = PolicySources {
            system_dir: None,
            files: vec![policy.clone()],
            imports: vec![format!("domains:{}:advertising", cli_list.display())
                .parse()
                .unwrap()],
        };
        let copy = dir.join("last-good");
        save(&copy, &sources).unwrap();
        // The originals break or vanish.
        std::fs::write(&policy, "[[destination]\nbroken").unwrap();
        std::fs::remove_file(&list).unwrap();
        std::fs::remove_file(&cli_list).unwrap();
        assert!(Policy::load(&sources).is_err());
        assert!(
            save(&copy, &sources).is_err(),
            "a broken policy is not saved"
        );
        let lg = load(&copy).unwrap();
        assert_eq!(
            lookup(&lg.policy, "broker.example").as_deref(),
            Some("Broker Inc")
        );
        assert_eq!(
            lookup(&lg.policy, "ads.tracker.example").as_deref(),
            Some("Ad Co")
        );
        assert!(lookup(&lg.policy, "cli.example").is_some());
        assert!(lg
            .policy
            .sources
            .iter()
            .any(|s| s.name == policy.display().to_string()));
        std::fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn last_good_manifest_cannot_point_outside_its_directory() {
        let dir = scratch("escape");
        std::fs::write(
            dir.join("manifest.json"),
            r#"{"saved_ms":1,"files":[{"original":"x","copy":"../../etc/passwd"}],"imports":[],"cli_imports":[]}"#,
        )
        .unwrap();
        let err = load(&dir).err().unwrap().to_string();
        assert!(err.contains("leaves the directory"), "{err}");
        assert!(matches!(
            load(&dir.join("none")),
            Err(LastGoodError::Missing(_))
        ));
        std::fs::remove_dir_all(&dir).ok();
    }
}
