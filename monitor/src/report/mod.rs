//! What apps talked to, as people read it: per app -> company (category, severity, the
//! source of the fact) -> destination (count, first and last seen, how it was named). Built
//! from one audit's findings or from the daemon's store; the writers live here together:
//! [`text`] for terminals, JSON, [`csv`] (also the audit's rows), and [`html`] one
//! self-contained page. [`write`] picks one.

pub mod csv;
pub mod fleet;
pub mod html;
pub mod received;
pub mod text;

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

pub use received::{Received, SentContact};

use crate::{
    finding::Finding,
    naming::NameSource,
    policy::{Category, Severity},
};

/// Version of the report's JSON shape (bumped on incompatible changes).
pub const SCHEMA: u32 = 1;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Report {
    pub schema: u32,
    /// `audit` (one run) or `store` (the daemon's record).
    pub scope: String,
    pub since_ms: u64,
    pub until_ms: u64,
    /// Apps with the most flagged contacts first.
    pub apps: Vec<AppReport>,
    /// Connections by first sighting, in equal buckets.
    pub timeline: Vec<Bucket>,
    pub bucket_ms: u64,
    /// Facts about how it was gathered (command, kernel, records, duration), in order.
    pub facts: Vec<(String, String)>,
    /// Set when the report holds only what is new since then (`report --new`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub new_since_ms: Option<u64>,
    /// A fleet report (`report --input`): each company and the hosts that saw it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub fleet: Vec<fleet::CompanyHosts>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AppReport {
    pub app: String,
    pub connections: u64,
    /// Listed companies, flagged first, then by connections.
    pub companies: Vec<CompanyReport>,
    /// Destinations no list names (first parties, unknown hosts).
    pub other: Vec<DomainRow>,
    /// What the app sent to hosts no list names, or to its own vendor (issue 25).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sent_elsewhere: Vec<Received>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CompanyReport {
    pub company: String,
    pub category: Category,
    pub severity: Option<Severity>,
    /// Where the fact that this destination is the company's comes from.
    pub source: Option<String>,
    pub flagged: bool,
    pub connections: u64,
    /// Connects and sends to it the kernel denied (blocking).
    #[serde(default)]
    pub blocked: u64,
    pub domains: Vec<DomainRow>,
    /// What the company received from the app (read from its TLS plaintext, issue 25).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub received: Vec<Received>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DomainRow {
    /// The name, or the address when nothing named it.
    pub destination: String,
    pub proto: String,
    pub count: u64,
    pub first_ms: u64,
    pub last_ms: u64,
    /// `sni`, `quic`, `http` or `dns`.
    pub named_by: Option<NameSource>,
    /// For DNS traffic (ports 53, 5353): the names asked, at most [`QUERIES_SHOWN`].
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub queries: Vec<String>,
}

/// Names kept per DNS destination row of a report.
pub const QUERIES_SHOWN: usize = 8;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Bucket {
    pub start_ms: u64,
    pub connections: u64,
    pub flagged: u64,
}

/// One aggregated contact: what the report is built from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Contact {
    pub app: String,
    pub company: Option<String>,
    pub category: Option<Category>,
    pub severity: Option<Severity>,
    pub source: Option<String>,
    pub flagged: bool,
    pub destination: String,
    pub proto: String,
    pub named_by: Option<NameSource>,
    pub count: u64,
    pub first_ms: u64,
    pub last_ms: u64,
    /// Calls the kernel denied.
    pub blocked: u64,
    /// For DNS traffic: the names the queries asked.
    pub queries: Vec<String>,
}

impl Contact {
    pub fn of(f: &Finding, first_ms: u64, last_ms: u64) -> Self {
        Self {
            app: f.app.clone().unwrap_or_else(|| f.who().to_owned()),
            company: f.company.clone(),
            category: f.category.clone(),
            severity: f.severity,
            source: f.source.clone(),
            flagged: f.flagged,
            destination: contact_destination(f),
            proto: f.proto.as_str().to_owned(),
            named_by: f.domain_source,
            count: f.count,
            first_ms,
            last_ms,
            blocked: f.blocked,
            queries: f.dns_queries.clone(),
        }
    }
}

/// Where a contact went, as a report says it: its name, else its address, and DNS queries
/// as what they are.
fn contact_destination(f: &Finding) -> String {
    match (
        &f.domain,
        crate::naming::DNS_QUERY_PORTS.contains(&f.dst_port),
    ) {
        (None, true) => format!("DNS queries to {}", f.dst_ip),
        _ => f.destination(),
    }
}

/// How a report is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Text { color: bool },
    Json,
    Csv,
    Html,
}

/// Writes `r` as `format` (`title` heads the HTML page).
pub fn write(
    out: &mut dyn std::io::Write,
    r: &Report,
    format: Format,
    title: &str,
) -> std::io::Result<()> {
    match format {
        Format::Text { color } => text::write(out, r, color),
        Format::Json => {
            // The daemon's reply shape (`"type":"report"` first), as tools already read it.
            #[derive(Serialize)]
            #[serde(tag = "type", rename_all = "lowercase")]
            enum Tagged<'a> {
                Report(&'a Report),
            }
            serde_json::to_writer(&mut *out, &Tagged::Report(r)).map_err(std::io::Error::other)?;
            writeln!(out)
        }
        Format::Csv => csv::write_report(out, r),
        Format::Html => out.write_all(html::render(r, title).as_bytes()),
    }
}

/// Bucket sizes the timeline may use.
const BUCKETS: &[u64] = &[
    1_000, 10_000, 60_000, 300_000, 900_000, 3_600_000, 21_600_000, 86_400_000,
];

/// Groups contacts, and what companies received, into the report. `since_ms`/`until_ms`
/// bound the timeline (0: the contacts' own span).
pub fn build(
    contacts: impl IntoIterator<Item = Contact>,
    sent: impl IntoIterator<Item = SentContact>,
    scope: &str,
    since_ms: u64,
    until_ms: u64,
) -> Report {
    let mut grouped: BTreeMap<String, AppGroup> = BTreeMap::new();
    let mut times = Vec::new();
    for c in contacts {
        times.push((c.first_ms, c.count, c.flagged));
        grouped.entry(c.app.clone()).or_default().add(&c);
    }
    for s in sent {
        grouped.entry(s.app.clone()).or_default().add_sent(&s);
    }
    let mut apps: Vec<AppReport> = grouped
        .into_iter()
        .map(|(app, g)| g.into_report(app))
        .collect();
    let flagged_count = |a: &AppReport| a.companies.iter().filter(|c| c.flagged).count();
    apps.sort_by(|a, b| {
        flagged_count(b)
            .cmp(&flagged_count(a))
            .then(b.connections.cmp(&a.connections))
            .then(a.app.cmp(&b.app))
    });
    let (timeline, bucket_ms, lo, hi) = timeline(&times, since_ms, until_ms);
    Report {
        schema: SCHEMA,
        scope: scope.to_owned(),
        since_ms: lo,
        until_ms: hi,
        apps,
        timeline,
        bucket_ms,
        facts: Vec::new(),
        new_since_ms: None,
        fleet: Vec::new(),
    }
}

/// A destination row's key: (destination, protocol).
type DomKey = (String, String);

/// One company's contacts of one app, while grouping.
#[derive(Default)]
struct CompanyGroup {
    category: Category,
    severity: Option<Severity>,
    source: Option<String>,
    flagged: bool,
    blocked: u64,
    domains: BTreeMap<DomKey, DomainRow>,
    received: received::ReceivedGroup,
}

/// One app's contacts, while grouping.
#[derive(Default)]
struct AppGroup {
    companies: BTreeMap<String, CompanyGroup>,
    other: BTreeMap<DomKey, DomainRow>,
    sent_elsewhere: received::ReceivedGroup,
}

impl AppGroup {
    fn add(&mut self, c: &Contact) {
        match &c.company {
            Some(company) => {
                let co = self.companies.entry(company.clone()).or_default();
                co.category = c.category.clone().unwrap_or_default();
                co.flagged |= c.flagged;
                co.blocked += c.blocked;
                if co.severity.is_none() || c.flagged {
                    co.severity = c.severity;
                }
                if co.source.is_none() {
                    co.source = c.source.clone();
                }
                merge(&mut co.domains, c);
            }
            None => merge(&mut self.other, c),
        }
    }

    fn add_sent(&mut self, s: &SentContact) {
        match &s.company {
            Some(company) => {
                let co = self.companies.entry(company.clone()).or_default();
                if let Some(category) = &s.category {
                    co.category = category.clone();
                }
                co.flagged |= s.flagged;
                if co.severity.is_none() || s.flagged {
                    co.severity = s.severity.or(co.severity);
                }
                co.received.add(&s.received);
            }
            None => self.sent_elsewhere.add(&s.received),
        }
    }

    /// The app's report: listed companies flagged first, then by connections.
    fn into_report(self, app: String) -> AppReport {
        let mut companies: Vec<CompanyReport> = self
            .companies
            .into_iter()
            .map(|(company, co)| {
                let domains = by_count(co.domains);
                CompanyReport {
                    company,
                    category: co.category,
                    severity: co.severity,
                    source: co.source,
                    flagged: co.flagged,
                    blocked: co.blocked,
                    connections: domains.iter().map(|d| d.count).sum(),
                    domains,
                    received: co.received.into_rows(),
                }
            })
            .collect();
        companies.sort_by(|a, b| {
            (b.flagged, b.connections)
                .cmp(&(a.flagged, a.connections))
                .then(a.company.cmp(&b.company))
        });
        let other = by_count(self.other);
        let connections = companies.iter().map(|c| c.connections).sum::<u64>()
            + other.iter().map(|d| d.count).sum::<u64>();
        AppReport {
            app,
            connections,
            companies,
            other,
            sent_elsewhere: self.sent_elsewhere.into_rows(),
        }
    }
}

/// Adds a contact to its destination row.
fn merge(rows: &mut BTreeMap<DomKey, DomainRow>, c: &Contact) {
    let row = rows
        .entry((c.destination.clone(), c.proto.clone()))
        .or_insert_with(|| DomainRow {
            destination: c.destination.clone(),
            proto: c.proto.clone(),
            count: 0,
            first_ms: c.first_ms,
            last_ms: c.last_ms,
            named_by: c.named_by,
            queries: Vec::new(),
        });
    for q in &c.queries {
        if row.queries.len() < QUERIES_SHOWN && !row.queries.contains(q) {
            row.queries.push(q.clone());
        }
    }
    row.count += c.count;
    row.first_ms = row.first_ms.min(c.first_ms);
    row.last_ms = row.last_ms.max(c.last_ms);
    if row.named_by.is_none() {
        row.named_by = c.named_by;
    }
}

/// Destination rows, most connections first.
fn by_count(rows: BTreeMap<DomKey, DomainRow>) -> Vec<DomainRow> {
    let mut v: Vec<DomainRow> = rows.into_values().collect();
    v.sort_by(|a, b| {
        b.count
            .cmp(&a.count)
            .then(a.destination.cmp(&b.destination))
    });
    v
}

/// Connections by first sighting (`times`: first sighting, count, flagged) in at most about
/// 60 equal buckets between `since_ms` and `until_ms` (0: the contacts' own span). Returns
/// the buckets, their size and the span.
fn timeline(
    times: &[(u64, u64, bool)],
    since_ms: u64,
    until_ms: u64,
) -> (Vec<Bucket>, u64, u64, u64) {
    let lo = match since_ms {
        0 => times.iter().map(|t| t.0).min().unwrap_or(0),
        s => s,
    };
    let hi = match until_ms {
        0 => times.iter().map(|t| t.0).max().unwrap_or(lo),
        u => u,
    }
    .max(lo);
    let span = hi - lo;
    let bucket_ms = *BUCKETS
        .iter()
        .find(|b| span / **b <= 60)
        .unwrap_or(&BUCKETS[BUCKETS.len() - 1]);
    let start = lo - lo % bucket_ms;
    let n = ((hi - start) / bucket_ms + 1) as usize;
    let mut buckets: Vec<Bucket> = (0..n)
        .map(|i| Bucket {
            start_ms: start + i as u64 * bucket_ms,
            connections: 0,
            flagged: 0,
        })
        .collect();
    for &(t, count, flagged) in times {
        if let Some(b) = buckets.get_mut(((t.max(start) - start) / bucket_ms) as usize) {
            b.connections += count;
            if flagged {
                b.flagged += count;
            }
        }
    }
    (buckets, bucket_ms, lo, hi)
}

impl AppReport {
    /// "Zoom contacted 3 data brokers and 5 analytics companies" (or that it contacted no
    /// listed company).
    pub fn headline(&self) -> String {
        let mut per: BTreeMap<&Category, usize> = BTreeMap::new();
        for c in &self.companies {
            *per.entry(&c.category).or_default() += 1;
        }
        // Data brokers and social SDKs first: they are why brokerwatch exists.
        let mut parts: Vec<(&Category, usize)> = per.into_iter().collect();
        parts.sort_by_key(|(c, n)| (c.rank(), usize::MAX - n));
        let parts: Vec<String> = parts.into_iter().map(|(c, n)| c.count(n)).collect();
        match parts.len() {
            0 => format!("{} contacted no listed company", self.app),
            1 => format!("{} contacted {}", self.app, parts[0]),
            _ => format!(
                "{} contacted {} and {}",
                self.app,
                parts[..parts.len() - 1].join(", "),
                parts[parts.len() - 1]
            ),
        }
    }
}

#[cfg(test)]
mod tests;
