//! A fleet report (issue 26, item 4): the alerts desktops forwarded through
//! `dist/rsyslog/60-brokerwatch-forward.conf` (one JSON object a line, as a collector
//! writes them) read back into the same report, per host and app -> company ->
//! destination, with the hosts that saw each company. Streamed line by line: memory grows
//! with the distinct (host, app, company, destination), never with the lines.

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    io::{BufRead, BufReader, Read as _},
    path::PathBuf,
};

use serde::{Deserialize, Serialize};

use super::{Contact, Report};
use crate::policy::{Category, Severity};

/// Longest line read (a forwarded alert is well under 1 KiB); longer ones are skipped.
const MAX_LINE: u64 = 64 << 10;
/// Distinct (host, app, company, destination) kept; lines past it are counted.
const MAX_GROUPS: usize = 1_000_000;

#[derive(Debug, thiserror::Error)]
pub enum FleetError {
    #[error("{path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{0}: not a file or a directory of files (a FIFO or device is not read)")]
    NotAFile(PathBuf),
}

/// One forwarded alert, as the shipped rsyslog template writes it.
#[derive(Debug, Deserialize)]
struct Line {
    host: String,
    time: String,
    app: String,
    company: String,
    #[serde(default)]
    category: String,
    #[serde(default)]
    severity: String,
    #[serde(default)]
    domain: String,
    #[serde(default)]
    destination: String,
}

/// The companies seen across the fleet and by which hosts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CompanyHosts {
    pub company: String,
    pub alerts: u64,
    pub hosts: Vec<String>,
}

/// What reading the lines did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct FleetStats {
    pub files: u64,
    pub lines: u64,
    pub alerts: u64,
    /// Not a forwarded alert (not JSON, or a field missing), or longer than [`MAX_LINE`].
    pub skipped: u64,
    /// Older than the report's start.
    pub older: u64,
    /// Past [`MAX_GROUPS`].
    pub dropped: u64,
}

type Key = (String, String, String, String, String, String);

/// The report of the forwarded alerts in `paths` (files, or directories whose regular
/// files are read) since `since_ms`.
pub fn read(paths: &[PathBuf], since_ms: u64) -> Result<(Report, FleetStats), FleetError> {
    let mut stats = FleetStats::default();
    let mut groups: HashMap<Key, (u64, u64, u64)> = HashMap::new();
    for file in files(paths)? {
        stats.files += 1;
        let f = std::fs::File::open(&file).map_err(|source| FleetError::Read {
            path: file.clone(),
            source,
        })?;
        read_lines(BufReader::new(f), since_ms, &mut groups, &mut stats).map_err(|source| {
            FleetError::Read {
                path: file.clone(),
                source,
            }
        })?;
    }
    let mut by_company: BTreeMap<String, (u64, BTreeSet<String>)> = BTreeMap::new();
    let contacts: Vec<Contact> = groups
        .into_iter()
        .map(
            |((host, app, company, category, severity, destination), (n, first, last))| {
                let co = by_company.entry(company.clone()).or_default();
                co.0 += n;
                co.1.insert(host.clone());
                Contact {
                    app: format!("{app} on {host}"),
                    company: Some(company),
                    category: Some(Category::from(category)),
                    severity: Severity::parse(&severity),
                    source: None,
                    flagged: true,
                    destination,
                    proto: "tcp".into(),
                    named_by: None,
                    count: n,
                    first_ms: first,
                    last_ms: last,
                    blocked: 0,
                    queries: Vec::new(),
                }
            },
        )
        .collect();
    let mut r = super::build(
        contacts,
        [],
        "fleet",
        since_ms,
        crate::host::clock::now_ms(),
    );
    let mut fleet: Vec<CompanyHosts> = by_company
        .into_iter()
        .map(|(company, (alerts, hosts))| CompanyHosts {
            company,
            alerts,
            hosts: hosts.into_iter().collect(),
        })
        .collect();
    fleet.sort_by(|a, b| {
        b.hosts
            .len()
            .cmp(&a.hosts.len())
            .then(b.alerts.cmp(&a.alerts))
    });
    r.fleet = fleet;
    r.facts = vec![
        ("Read".into(), format!("{} lines in {} files", stats.lines, stats.files)),
        ("Alerts".into(), stats.alerts.to_string()),
        (
            "Not read".into(),
            format!(
                "{} lines that are not forwarded alerts, {} older than the report, {} past the bound of {MAX_GROUPS} groups",
                stats.skipped, stats.older, stats.dropped
            ),
        ),
    ];
    Ok((r, stats))
}

/// The regular files of `paths`, directories opened one level, in name order.
fn files(paths: &[PathBuf]) -> Result<Vec<PathBuf>, FleetError> {
    let mut out = Vec::new();
    for p in paths {
        let meta = std::fs::metadata(p).map_err(|source| FleetError::Read {
            path: p.clone(),
            source,
        })?;
        if meta.is_dir() {
            let mut inside: Vec<PathBuf> = std::fs::read_dir(p)
                .map_err(|source| FleetError::Read {
                    path: p.clone(),
                    source,
                })?
                .flatten()
                .map(|e| e.path())
                .filter(|f| std::fs::metadata(f).is_ok_and(|m| m.is_file()))
                .collect();
            inside.sort();
            out.extend(inside);
        } else if meta.is_file() {
            out.push(p.clone());
        } else {
            return Err(FleetError::NotAFile(p.clone()));
        }
    }
    Ok(out)
}

/// Adds every line of `r` to `groups`.
fn read_lines(
    mut r: impl BufRead,
    since_ms: u64,
    groups: &mut HashMap<Key, (u64, u64, u64)>,
    stats: &mut FleetStats,
) -> std::io::Result<()> {
    let mut buf = Vec::new();
    loop {
        buf.clear();
        let n = r.by_ref().take(MAX_LINE + 1).read_until(b'\n', &mut buf)?;
        if n == 0 {
            return Ok(());
        }
        stats.lines += 1;
        if n as u64 > MAX_LINE && buf.last() != Some(&b'\n') {
            // The rest of a line too long to be an alert.
            let mut rest = Vec::new();
            while r.by_ref().take(MAX_LINE).read_until(b'\n', &mut rest)? > 0 {
                if rest.last() == Some(&b'\n') {
                    break;
                }
                rest.clear();
            }
            stats.skipped += 1;
            continue;
        }
        let Some((line, t)) = serde_json::from_slice::<Line>(&buf)
            .ok()
            .and_then(|l| parse_time(&l.time).map(|t| (l, t)))
        else {
            stats.skipped += 1;
            continue;
        };
        if t < since_ms {
            stats.older += 1;
            continue;
        }
        stats.alerts += 1;
        let destination = match line.domain.is_empty() {
            true => line.destination,
            false => line.domain,
        };
        let key = (
            line.host,
            line.app,
            line.company,
            line.category,
            line.severity,
            destination,
        );
        let full = groups.len() >= MAX_GROUPS;
        match groups.get_mut(&key) {
            Some(g) => {
                g.0 += 1;
                g.1 = g.1.min(t);
                g.2 = g.2.max(t);
            }
            None if !full => {
                groups.insert(key, (1, t, t));
            }
            None => stats.dropped += 1,
        }
    }
}

/// Epoch milliseconds of rsyslog's RFC 3339 time (`2026-12-03T03:30:00.123456+01:00`).
fn parse_time(s: &str) -> Option<u64> {
    let base = humantime::parse_rfc3339_weak(s.get(..19)?).ok()?;
    let rest = &s[19..];
    let frac_end = rest
        .find(|c: char| c != '.' && !c.is_ascii_digit())
        .unwrap_or(rest.len());
    let (frac, zone) = rest.split_at(frac_end);
    let mut ms = base.duration_since(std::time::UNIX_EPOCH).ok()?.as_millis() as i64;
    if let Some(digits) = frac.strip_prefix('.') {
        let d: String = digits.chars().chain("000".chars()).take(3).collect();
        ms += d.parse::<i64>().ok()?;
    }
    let offset_min = match zone {
        "" | "Z" => 0,
        z => {
            let sign = match z.as_bytes()[0] {
                b'+' => 1,
                b'-' => -1,
                _ => return None,
            };
            let h: i64 = z.get(1..3)?.parse().ok()?;
            let m: i64 = z.get(4..6)?.parse().ok()?;
            sign * (h * 60 + m)
        }
    };
    u64::try_from(ms - offset_min * 60_000).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(host: &str, company: &str, time: &str) -> String {
        format!(
            r#"{{"host":"{host}","time":"{time}","app":"Zoom","company":"{company}","category":"data-broker","severity":"high","domain":"","destination":"127.0.0.2:443","uid":"1000","message":"zoom contacted {company}"}}"#
        )
    }

    #[test]
    fn fleet_times_in_rsyslog_form_are_read_with_their_offset() {
        let utc = parse_time("2026-12-03T03:30:00Z").unwrap();
        assert_eq!(parse_time("2026-12-03T04:30:00.250+01:00"), Some(utc + 250));
        assert_eq!(
            parse_time("2026-12-03T03:30:00.123456+00:00"),
            Some(utc + 123)
        );
        assert_eq!(parse_time("2026-12-02T22:30:00-05:00"), Some(utc));
        assert_eq!(parse_time("yesterday"), None);
        assert_eq!(parse_time("2026-12-03T03:30:00+0"), None);
    }

    #[test]
    fn fleet_report_groups_hosts_apps_and_companies_and_skips_what_is_not_an_alert() {
        let dir = std::env::temp_dir().join(format!("bw-fleet-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("sub")).unwrap();
        let t = "2026-12-03T03:30:00+00:00";
        let a = [
            line("desk-1", "LinkedIn", t),
            line("desk-1", "LinkedIn", t),
            line("desk-2", "LinkedIn", t),
            "not json".to_owned(),
            r#"{"host":"desk-3"}"#.to_owned(),
            "x".repeat(100_000),
            line("desk-2", "Meta", "2020-01-01T00:00:00Z"),
        ];
        std::fs::write(dir.join("a.jsonl"), a.join("\n") + "\n").unwrap();
        std::fs::write(dir.join("b.jsonl"), line("desk-3", "Meta", t) + "\n").unwrap();
        let since = parse_time("2026-12-01T00:00:00Z").unwrap();
        let (r, stats) = read(std::slice::from_ref(&dir), since).unwrap();
        assert_eq!(stats.files, 2, "the subdirectory is not a file");
        assert_eq!(
            (stats.lines, stats.alerts, stats.skipped, stats.older),
            (8, 4, 3, 1)
        );
        let fleet: Vec<(&str, u64, Vec<&str>)> = r
            .fleet
            .iter()
            .map(|c| {
                (
                    c.company.as_str(),
                    c.alerts,
                    c.hosts.iter().map(String::as_str).collect(),
                )
            })
            .collect();
        assert_eq!(
            fleet,
            [
                ("LinkedIn", 3, vec!["desk-1", "desk-2"]),
                ("Meta", 1, vec!["desk-3"])
            ]
        );
        let apps: Vec<&str> = r.apps.iter().map(|a| a.app.as_str()).collect();
        assert_eq!(apps, ["Zoom on desk-1", "Zoom on desk-2", "Zoom on desk-3"]);
        assert_eq!(r.apps[0].companies[0].domains[0].count, 2);
        assert!(matches!(
            read(&[PathBuf::from("/dev/null")], 0),
            Err(FleetError::NotAFile(_))
        ));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
