//! Lists users already trust, parsed from their own formats. Pure functions over text:
//! bounded, never panic; each returns the entries it understood and counts what it skipped.

use std::collections::HashSet;

use serde_json::Value;

use crate::policy::{file::ImportFormat, matcher::normalize_domain};

/// One imported fact.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Imported {
    pub domain: String,
    /// Owner, when the list names one.
    pub company: Option<String>,
    /// Category in brokerwatch's terms, when the list has one.
    pub category: Option<String>,
}

/// What an import produced.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ImportResult {
    pub entries: Vec<Imported>,
    /// Regular expressions (Exodus) with their owner.
    pub patterns: Vec<(String, Option<String>)>,
    /// Domains that exception rules (`@@||d^`) take out of the list.
    pub exceptions: Vec<String>,
    pub skipped: usize,
}

#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    #[error("not valid JSON: {0}")]
    Json(#[from] serde_json::Error),
    #[error("not a {format} list: {why}")]
    Shape { format: &'static str, why: String },
    #[error("CSV: {0}")]
    Csv(#[from] csv::Error),
}

pub fn parse(format: ImportFormat, text: &str) -> Result<ImportResult, ImportError> {
    match format {
        ImportFormat::Hosts => Ok(hosts(text)),
        ImportFormat::Adblock => Ok(adblock(text)),
        ImportFormat::Domains => Ok(domains(text)),
        ImportFormat::Disconnect => disconnect(text),
        ImportFormat::TrackerRadar => tracker_radar(text),
        ImportFormat::DdgAppTrackers => ddg_app(text),
        ImportFormat::Exodus => exodus(text),
        ImportFormat::CaBrokerCsv => ca_brokers(text),
    }
}

fn push(out: &mut ImportResult, name: &str, company: Option<String>, category: Option<String>) {
    match normalize_domain(name) {
        Ok(domain) => out.entries.push(Imported {
            domain,
            company,
            category,
        }),
        Err(_) => out.skipped += 1,
    }
}

/// `0.0.0.0 a.example b.example  # comment`
pub fn hosts(text: &str) -> ImportResult {
    let mut out = ImportResult::default();
    for line in text.lines() {
        let line = line.split('#').next().unwrap_or("").trim();
        let mut fields = line.split_whitespace();
        let Some(addr) = fields.next() else { continue };
        if addr.parse::<std::net::IpAddr>().is_err() {
            out.skipped += 1;
            continue;
        }
        for name in fields {
            if matches!(
                name,
                "localhost"
                    | "localhost.localdomain"
                    | "local"
                    | "broadcasthost"
                    | "ip6-localhost"
                    | "ip6-loopback"
                    | "0.0.0.0"
            ) {
                continue;
            }
            push(&mut out, name, None, None);
        }
    }
    out
}

/// One domain per line, `#` comments.
pub fn domains(text: &str) -> ImportResult {
    let mut out = ImportResult::default();
    for line in text.lines() {
        let line = line.split('#').next().unwrap_or("").trim();
        if !line.is_empty() {
            push(&mut out, line, None, None);
        }
    }
    out
}

/// Adblock syntax: `||domain^` (with options that do not narrow it to some pages),
/// `@@||domain^` exceptions, `!` comments; cosmetic and path rules are skipped.
pub fn adblock(text: &str) -> ImportResult {
    let mut out = ImportResult::default();
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('!') || line.starts_with('[') {
            continue;
        }
        if line.contains("##") || line.contains("#@#") || line.contains("#?#") {
            out.skipped += 1;
            continue;
        }
        let (exception, rule) = match line.strip_prefix("@@") {
            Some(r) => (true, r),
            None => (false, line),
        };
        let Some(rest) = rule.strip_prefix("||") else {
            out.skipped += 1;
            continue;
        };
        let (body, options) = match rest.split_once('$') {
            Some((b, o)) => (b, Some(o)),
            None => (rest, None),
        };
        // `domain=` options restrict the rule to some sites: not a statement about the host.
        if options.is_some_and(|o| o.split(',').any(|opt| opt.starts_with("domain="))) {
            out.skipped += 1;
            continue;
        }
        let Some(host) = body
            .strip_suffix('^')
            .or(Some(body).filter(|b| !b.contains(['/', '*', '^'])))
        else {
            out.skipped += 1;
            continue;
        };
        if host.contains(['/', '*', '^', ':']) {
            out.skipped += 1;
            continue;
        }
        if exception {
            match normalize_domain(host) {
                Ok(d) => out.exceptions.push(d),
                Err(_) => out.skipped += 1,
            }
        } else {
            push(&mut out, host, None, None);
        }
    }
    out
}

/// Disconnect's category names in brokerwatch's terms (unknown ones become their own
/// lower-case name).
pub fn disconnect_category(name: &str) -> String {
    match name {
        "Advertising" => "ad-attribution".into(),
        "Analytics" => "product-analytics".into(),
        "Social" => "social-sdk".into(),
        "FingerprintingInvasive" | "FingerprintingGeneral" => "fingerprinting".into(),
        "Cryptomining" => "cryptomining".into(),
        "Email" | "EmailAggressive" => "email-tracking".into(),
        other => other
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() {
                    c.to_ascii_lowercase()
                } else {
                    '-'
                }
            })
            .collect(),
    }
}

/// Disconnect `services.json`:
/// `{"categories": {"Advertising": [{"LiveRamp": {"https://liveramp.com/": ["liveramp.com"]}}]}}`
pub fn disconnect(text: &str) -> Result<ImportResult, ImportError> {
    let v: Value = serde_json::from_str(text)?;
    let shape = |why: &str| ImportError::Shape {
        format: "Disconnect services.json",
        why: why.to_owned(),
    };
    let cats = v
        .get("categories")
        .and_then(Value::as_object)
        .ok_or_else(|| shape("no \"categories\" object"))?;
    let mut out = ImportResult::default();
    for (cat_name, companies) in cats {
        let category = disconnect_category(cat_name);
        for company_obj in companies.as_array().map(Vec::as_slice).unwrap_or(&[]) {
            let Some(obj) = company_obj.as_object() else {
                out.skipped += 1;
                continue;
            };
            for (company, sites) in obj {
                for (_url, doms) in sites.as_object().into_iter().flatten() {
                    for d in doms.as_array().map(Vec::as_slice).unwrap_or(&[]) {
                        // Non-strings are flags like "performance": "true".
                        if let Some(d) = d.as_str() {
                            push(&mut out, d, Some(company.clone()), Some(category.clone()));
                        }
                    }
                }
            }
        }
    }
    Ok(out)
}

/// DuckDuckGo Tracker Radar categories in brokerwatch's terms.
pub fn radar_category(cats: &[&str]) -> Option<String> {
    let has = |c: &str| cats.contains(&c);
    Some(
        if has("Session Replay") {
            "session-replay"
        } else if has("Social - Share") || has("Social - Comment") || has("Social Network") {
            "social-sdk"
        } else if has("Advertising") || has("Ad Motivated Tracking") || has("Ad Fraud") {
            "ad-attribution"
        } else if has("Analytics")
            || has("Audience Measurement")
            || has("Third-Party Analytics Marketing")
        {
            "product-analytics"
        } else {
            return None;
        }
        .to_owned(),
    )
}

/// The `categories` strings of a Tracker Radar / DuckDuckGo entry.
fn categories(v: &Value) -> Vec<&str> {
    v.get("categories")
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default()
}

/// The `{"trackers": {...}}` object of a DuckDuckGo app list or an Exodus list.
fn trackers_object<'a>(
    v: &'a Value,
    format: &'static str,
) -> Result<&'a serde_json::Map<String, Value>, ImportError> {
    v.get("trackers")
        .and_then(Value::as_object)
        .ok_or_else(|| ImportError::Shape {
            format,
            why: "no \"trackers\" object".into(),
        })
}

fn owner_name(v: &Value) -> Option<String> {
    let owner = v.get("owner")?;
    owner
        .get("displayName")
        .or_else(|| owner.get("name"))
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
}

/// One Tracker Radar domain file (`{"domain": ..., "owner": {...}, "subdomains": [...],
/// "categories": [...]}`), or a JSON array of them.
pub fn tracker_radar(text: &str) -> Result<ImportResult, ImportError> {
    let v: Value = serde_json::from_str(text)?;
    let items: Vec<&Value> = match &v {
        Value::Array(a) => a.iter().collect(),
        other => vec![other],
    };
    let mut out = ImportResult::default();
    for item in items {
        let Some(domain) = item.get("domain").and_then(Value::as_str) else {
            return Err(ImportError::Shape {
                format: "Tracker Radar domain",
                why: "no \"domain\" field".into(),
            });
        };
        push(
            &mut out,
            domain,
            owner_name(item),
            radar_category(&categories(item)),
        );
    }
    Ok(out)
}

/// DuckDuckGo's app tracker list: `{"trackers": {"host": {"owner": {...}, "default": "block"}}}`.
pub fn ddg_app(text: &str) -> Result<ImportResult, ImportError> {
    let v: Value = serde_json::from_str(text)?;
    let trackers = trackers_object(&v, "DuckDuckGo app tracker list")?;
    let mut out = ImportResult::default();
    for (host, t) in trackers {
        if t.get("default").and_then(Value::as_str) == Some("ignore") {
            out.skipped += 1;
            continue;
        }
        push(
            &mut out,
            host,
            owner_name(t),
            radar_category(&categories(t)),
        );
    }
    Ok(out)
}

/// Exodus Privacy trackers: `{"trackers": {"69": {"name": ..., "network_signature": "regex"}}}`.
/// Signatures are regular expressions over host names; `|` separates alternatives.
pub fn exodus(text: &str) -> Result<ImportResult, ImportError> {
    let v: Value = serde_json::from_str(text)?;
    let trackers = trackers_object(&v, "Exodus trackers")?;
    let mut out = ImportResult::default();
    for t in trackers.values() {
        let name = t.get("name").and_then(Value::as_str).map(str::to_owned);
        match t.get("network_signature").and_then(Value::as_str) {
            Some(sig) if !sig.trim().is_empty() => {
                if regex::Regex::new(sig).is_ok() {
                    out.patterns.push((sig.to_owned(), name));
                } else {
                    out.skipped += 1;
                }
            }
            _ => out.skipped += 1,
        }
    }
    Ok(out)
}

/// The California data broker registry as CSV (The Markup's `data-broker-opt-out-pages.csv`
/// layout: `company_name`, `hostname_original`, ...). Hosts shared by several brokers
/// (privacy portals) are skipped; `www.` is dropped.
pub fn ca_brokers(text: &str) -> Result<ImportResult, ImportError> {
    let mut rdr = csv::ReaderBuilder::new()
        .flexible(true)
        .from_reader(text.as_bytes());
    let headers = rdr.headers()?.clone();
    let col = |names: &[&str]| headers.iter().position(|h| names.contains(&h.trim()));
    let (Some(name_col), Some(host_col)) = (
        col(&["company_name", "Data Broker Name", "name"]),
        col(&[
            "hostname_original",
            "hostname",
            "Website URL",
            "website",
            "url",
        ]),
    ) else {
        return Err(ImportError::Shape {
            format: "California data broker CSV",
            why: "needs a company_name and a hostname_original (or website) column".into(),
        });
    };
    let mut rows = Vec::new();
    for rec in rdr.records() {
        let rec = rec?;
        let (Some(name), Some(host)) = (rec.get(name_col), rec.get(host_col)) else {
            continue;
        };
        let host = host
            .trim()
            .trim_start_matches("https://")
            .trim_start_matches("http://")
            .split('/')
            .next()
            .unwrap_or("");
        let host = host.strip_prefix("www.").unwrap_or(host);
        rows.push((name.trim().to_owned(), host.to_owned()));
    }
    let mut seen = HashSet::new();
    let mut shared = HashSet::new();
    for (name, host) in &rows {
        if !seen.insert(host.clone()) && rows.iter().any(|(n, h)| h == host && n != name) {
            shared.insert(host.clone());
        }
    }
    let mut out = ImportResult::default();
    for (name, host) in rows {
        if shared.contains(&host) || host.is_empty() {
            out.skipped += 1;
            continue;
        }
        push(&mut out, &host, Some(name), Some("data-broker".into()));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn doms(r: &ImportResult) -> Vec<&str> {
        r.entries.iter().map(|e| e.domain.as_str()).collect()
    }

    #[test]
    fn hosts_file() {
        let r = hosts("# comment\n127.0.0.1 localhost\n0.0.0.0 ads.example.com tracker.example.net # x\n::1 ip6-localhost\nnot-an-ip foo\n");
        assert_eq!(doms(&r), vec!["ads.example.com", "tracker.example.net"]);
        assert_eq!(r.skipped, 1);
    }

    #[test]
    fn adblock_rules_exceptions_and_skips() {
        let text = "[Adblock Plus 2.0]\n! Title: test\n||metrics.example.com^\n||ads.example.org^$third-party\n@@||good.example.com^\n||cdn.example.com/track.js\nexample.com##.banner\n||site.example^$domain=news.example\n||Mixed.Example.NET^\n";
        let r = adblock(text);
        assert_eq!(
            doms(&r),
            vec![
                "metrics.example.com",
                "ads.example.org",
                "mixed.example.net"
            ]
        );
        assert_eq!(r.exceptions, vec!["good.example.com"]);
        assert_eq!(r.skipped, 3);
    }

    #[test]
    fn plain_domains() {
        let r = domains("a.example\n\n# c\nb.example # tail\nbad domain\n");
        assert_eq!(doms(&r), vec!["a.example", "b.example"]);
        assert_eq!(r.skipped, 1);
    }

    #[test]
    fn disconnect_keeps_company_and_category() {
        let text = r#"{"license": "x", "categories": {
            "Advertising": [{"LiveRamp": {"https://liveramp.com/": ["liveramp.com", "rlcdn.com"]}}],
            "Social": [{"Facebook": {"https://www.facebook.com/": ["facebook.com", "fbcdn.net"], "performance": "true"}}]
        }}"#;
        let r = disconnect(text).unwrap();
        let got: Vec<(&str, &str, &str)> = r
            .entries
            .iter()
            .map(|e| {
                (
                    e.domain.as_str(),
                    e.company.as_deref().unwrap(),
                    e.category.as_deref().unwrap(),
                )
            })
            .collect();
        assert_eq!(
            got,
            vec![
                ("liveramp.com", "LiveRamp", "ad-attribution"),
                ("rlcdn.com", "LiveRamp", "ad-attribution"),
                ("facebook.com", "Facebook", "social-sdk"),
                ("fbcdn.net", "Facebook", "social-sdk"),
            ]
        );
        assert!(disconnect("{}").is_err());
        assert!(disconnect("not json").is_err());
    }

    #[test]
    fn tracker_radar_and_ddg_app_keep_owners() {
        let radar = r#"{"domain": "hotjar.com", "owner": {"name": "Hotjar Ltd", "displayName": "Hotjar"}, "categories": ["Session Replay", "Analytics"], "subdomains": ["script"]}"#;
        let r = tracker_radar(radar).unwrap();
        assert_eq!(r.entries[0].company.as_deref(), Some("Hotjar"));
        assert_eq!(r.entries[0].category.as_deref(), Some("session-replay"));
        let app = r#"{"trackers": {"a.applovin.com": {"owner": {"name": "AppLovin Corporation", "displayName": "AppLovin"}, "default": "block"}, "ok.example": {"owner": {"name": "x"}, "default": "ignore"}}}"#;
        let r = ddg_app(app).unwrap();
        assert_eq!(doms(&r), vec!["a.applovin.com"]);
        assert_eq!(r.entries[0].company.as_deref(), Some("AppLovin"));
        assert_eq!(r.skipped, 1);
    }

    #[test]
    fn exodus_signatures_are_patterns() {
        let text = r#"{"trackers": {"69": {"name": "Facebook Login", "network_signature": "\\.facebook\\.com"}, "70": {"name": "Broken", "network_signature": "(("}, "71": {"name": "None", "network_signature": ""}}}"#;
        let r = exodus(text).unwrap();
        assert_eq!(
            r.patterns,
            vec![(
                r"\.facebook\.com".to_owned(),
                Some("Facebook Login".to_owned())
            )]
        );
        assert_eq!(r.skipped, 2);
    }

    #[test]
    fn california_registry_csv() {
        let text = "order_original,company_name,hostname_original,hiding_found\n\
1,Explorium Inc.,www.explorium.ai,FALSE\n\
2,\"M1 Data & Analytics, LLC\",www.m1-data.com,FALSE\n\
3,Malvern Media Inc.,privacyportal.privacypillar.com,FALSE\n\
4,\"Throtle, Inc\",privacyportal.privacypillar.com,FALSE\n";
        let r = ca_brokers(text).unwrap();
        let got: Vec<(&str, &str)> = r
            .entries
            .iter()
            .map(|e| (e.domain.as_str(), e.company.as_deref().unwrap()))
            .collect();
        assert_eq!(
            got,
            vec![
                ("explorium.ai", "Explorium Inc."),
                ("m1-data.com", "M1 Data & Analytics, LLC")
            ]
        );
        assert_eq!(
            r.skipped, 2,
            "a privacy portal shared by two brokers is nobody's domain"
        );
        assert!(ca_brokers("a,b\n1,2\n").is_err());
    }

    #[test]
    fn hostile_input_never_panics() {
        let junk = [
            "",
            "\u{0}\u{1}",
            "||^",
            "@@||",
            "{\"trackers\": 5}",
            "[1,2,3]",
            "||a^$",
            "0.0.0.0",
        ];
        for j in junk {
            for f in ImportFormat::NAMES {
                let _ = parse(ImportFormat::parse(f).unwrap(), j);
            }
        }
    }
}
