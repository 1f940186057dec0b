//! `brokerwatch policy check|explain|list`: what the loaded policy says, for people.

use std::{
    io::{self, Write},
    net::IpAddr,
    path::PathBuf,
};

use crate::policy::{file, LoadError, Policy, PolicySources};

/// A directory stands for the policy files (`*.toml`) in it, as `/etc/brokerwatch/policies.d`
/// holds them.
fn expand(paths: &[PathBuf]) -> Vec<Result<PathBuf, String>> {
    let mut out = Vec::new();
    for p in paths {
        if !p.is_dir() {
            out.push(Ok(p.clone()));
            continue;
        }
        match std::fs::read_dir(p) {
            Err(e) => out.push(Err(format!("{}: cannot list: {e}", p.display()))),
            Ok(rd) => {
                let mut found: Vec<PathBuf> = rd
                    .flatten()
                    .map(|e| e.path())
                    .filter(|f| f.extension().is_some_and(|e| e == "toml"))
                    .collect();
                found.sort();
                if found.is_empty() {
                    out.push(Err(format!(
                        "{}: no policy files (*.toml) in it",
                        p.display()
                    )));
                }
                out.extend(found.into_iter().map(Ok));
            }
        }
    }
    out
}

/// `policy check PATH...`: every problem of every file (not only the first), then the files
/// resolved together with the built-in policy, as the daemon would load them.
fn check_files(out: &mut dyn Write, paths: &[PathBuf]) -> io::Result<bool> {
    let mut ok = true;
    let mut parsed = Vec::new();
    let mut names = Vec::new();
    for p in expand(paths) {
        let p = match p {
            Ok(p) => p,
            Err(message) => {
                writeln!(out, "{message}")?;
                ok = false;
                continue;
            }
        };
        let name = p.display().to_string();
        match crate::host::files::read_text(&p, crate::host::files::MAX_POLICY_BYTES) {
            Err(e) => {
                writeln!(out, "{name}: cannot read: {e}")?;
                ok = false;
            }
            Ok(text) => match file::parse(&name, &text) {
                Err(diags) => {
                    for d in diags {
                        writeln!(out, "{d}")?;
                    }
                    ok = false;
                }
                Ok(f) => {
                    parsed.push(f);
                    names.push(name);
                }
            },
        }
    }
    if parsed.is_empty() {
        return Ok(ok);
    }
    let mut files = Policy::parse_all(&PolicySources::default()).map_err(io::Error::other)?;
    files.extend(parsed);
    match Policy::resolve(files, &[]) {
        Ok(_) => {
            for name in names {
                writeln!(out, "{name}: ok")?;
            }
        }
        Err(e) => {
            writeln!(out, "{e}")?;
            ok = false;
        }
    }
    Ok(ok)
}

/// `policy check [PATH...]`: stage one for the given files (or everything configured),
/// then stage two (imports resolved). Returns whether everything is valid.
pub fn check(out: &mut dyn Write, sources: &PolicySources, paths: &[PathBuf]) -> io::Result<bool> {
    if !paths.is_empty() {
        return check_files(out, paths);
    }
    match Policy::load(sources) {
        Ok(p) => {
            let (d, c, r) = p.matcher_counts();
            writeln!(
                out,
                "ok: {} sources, {} apps, {} destination entries, {d} domains, {c} ranges, {r} patterns, {} rules, {} allow entries",
                p.sources.len(),
                p.apps.apps.len(),
                p.entries().len(),
                p.rules().len(),
                p.allows().len()
            )?;
            Ok(true)
        }
        Err(LoadError::Invalid(diags)) => {
            for d in diags {
                writeln!(out, "{d}")?;
            }
            Ok(false)
        }
        Err(e) => {
            writeln!(out, "{e}")?;
            Ok(false)
        }
    }
}

/// `policy explain NAME-OR-IP [--app APP]`.
pub fn explain(
    out: &mut dyn Write,
    policy: &Policy,
    target: &str,
    app: Option<&str>,
) -> io::Result<bool> {
    let app_def = match app {
        Some(a) => match policy
            .apps
            .apps
            .iter()
            .find(|d| d.id.eq_ignore_ascii_case(a))
        {
            Some(d) => Some(d),
            None => {
                writeln!(
                    out,
                    "unknown app {a:?}; known: {}",
                    policy
                        .apps
                        .apps
                        .iter()
                        .map(|a| a.id.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                )?;
                return Ok(false);
            }
        },
        None => None,
    };
    let ip: Option<IpAddr> = target.parse().ok();
    let names: Vec<&str> = if ip.is_some() { vec![] } else { vec![target] };
    match policy.classify(app_def, &names, ip) {
        None => {
            let first_party = app_def.is_some_and(|a| {
                a.first_party
                    .iter()
                    .any(|fp| target == fp || target.ends_with(&format!(".{fp}")))
            });
            if first_party {
                writeln!(
                    out,
                    "{target}: first-party domain of {}: not flagged",
                    app_def.map(|a| a.name.as_str()).unwrap_or("?")
                )?;
            } else {
                writeln!(out, "{target}: no policy entry matches")?;
            }
        }
        Some(v) => {
            writeln!(out, "{target}")?;
            writeln!(
                out,
                "  matched:  {} (entry {:?} from {})",
                v.matched, v.entry.id, v.entry.origin
            )?;
            writeln!(out, "  company:  {}", v.entry.company)?;
            writeln!(out, "  category: {}", v.entry.category)?;
            writeln!(
                out,
                "  for app:  {}",
                app_def
                    .map(|a| format!("{} ({})", a.name, a.id))
                    .unwrap_or_else(|| "any process (no --app)".into())
            )?;
            writeln!(out, "  severity: {}", v.severity.as_str())?;
            writeln!(out, "  action:   {}", v.action.as_str())?;
            writeln!(
                out,
                "  rule:     {}",
                v.rule.as_deref().unwrap_or("(none: default low/log)")
            )?;
            if let Some(a) = &v.allowed_by {
                writeln!(out, "  allowed by: {a}")?;
            }
            writeln!(out, "  source:   {}", v.entry.source)?;
        }
    }
    Ok(true)
}

/// `policy list [--category C]`.
/// `policy list --apps`: every app definition and how it is recognised.
pub fn list_apps(out: &mut dyn Write, policy: &Policy) -> io::Result<()> {
    for a in &policy.apps.apps {
        writeln!(
            out,
            "{} ({}), groups: {}",
            a.id,
            a.name,
            a.groups.join(", ")
        )?;
        for (what, v) in [
            ("exe", &a.exe),
            ("comm", &a.comm),
            ("flatpak", &a.flatpak),
            ("snap", &a.snap),
            ("desktop", &a.desktop),
            ("first party", &a.first_party),
        ] {
            if !v.is_empty() {
                writeln!(out, "  {what:<12} {}", v.join(", "))?;
            }
        }
    }
    Ok(())
}

/// The categories the loaded policy has destinations in.
pub fn categories(policy: &Policy) -> Vec<&str> {
    let mut c: Vec<&str> = policy
        .entries()
        .iter()
        .map(|e| e.category.as_str())
        .collect();
    c.sort();
    c.dedup();
    c
}

pub fn list(out: &mut dyn Write, policy: &Policy, category: Option<&str>) -> io::Result<()> {
    if let Some(c) = category.filter(|c| !categories(policy).contains(c)) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "no destinations have the category {c:?}; the categories are: {}",
                categories(policy).join(", ")
            ),
        ));
    }
    writeln!(
        out,
        "Sources (in load order; later entries override earlier ones with the same id):"
    )?;
    for s in &policy.sources {
        writeln!(
            out,
            "  {}: {} apps, {} destinations, {} domains, {} ranges, {} patterns, {} rules, {} allows{}",
            s.name,
            s.apps,
            s.destinations,
            s.domains,
            s.cidrs,
            s.patterns,
            s.rules,
            s.allows,
            if s.skipped > 0 { format!(", {} lines skipped", s.skipped) } else { String::new() }
        )?;
    }
    let mut by_cat: std::collections::BTreeMap<&str, Vec<&crate::policy::DestEntry>> =
        Default::default();
    for e in policy.entries() {
        if category.is_none_or(|c| c == e.category) {
            by_cat.entry(e.category.as_str()).or_default().push(e);
        }
    }
    for (cat, entries) in by_cat {
        writeln!(out, "\n{cat} ({} companies):", entries.len())?;
        for e in entries.iter().take(200) {
            writeln!(out, "  {:<28} {:<32} {}", e.id, e.company, e.origin)?;
        }
        if entries.len() > 200 {
            writeln!(out, "  ... and {} more", entries.len() - 200)?;
        }
    }
    writeln!(out, "\nRules:")?;
    for r in policy.rules() {
        writeln!(
            out,
            "  {:<28} apps={:<10} category={:<18} {:<6} {}",
            r.id,
            r.apps,
            r.category,
            r.severity.as_str(),
            r.action.as_str()
        )?;
    }
    if !policy.allows().is_empty() {
        writeln!(out, "\nAllowed:")?;
        for a in policy.allows() {
            writeln!(out, "  {:<28} {} may contact {}", a.id, a.app, a.company)?;
        }
    }
    Ok(())
}
