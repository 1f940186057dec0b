//! The CSV writers: the audit's connection rows (one line per row, every field) and the
//! report (one line per app, company, destination and protocol).

use std::io::{self, Write};

use super::Report;
use crate::{display::csv_cell, finding::Finding};

/// The audit's columns: every field of a [`Finding`], in its JSON order.
const ROW_HEADER: &[&str] = &[
    "ts",
    "last_seen",
    "pid",
    "ppid",
    "comm",
    "thread_comm",
    "exe",
    "cmdline",
    "app",
    "app_id",
    "app_by",
    "watch",
    "uid",
    "user",
    "proto",
    "via",
    "dst_ip",
    "dst_port",
    "domain",
    "domain_source",
    "dns_chain",
    "dns_name",
    "dns_queries",
    "name_note",
    "encrypted_dns",
    "sent",
    "category",
    "company",
    "severity",
    "action",
    "matched",
    "rule",
    "source",
    "flagged",
    "count",
    "socket_cookie",
    "ancestry",
];

/// The report's columns.
const REPORT_HEADER: &[&str] = &[
    "app",
    "company",
    "category",
    "severity",
    "flagged",
    "destination",
    "proto",
    "count",
    "first_ms",
    "last_ms",
    "named_by",
    "source",
    "received",
];

/// Connection rows with a header: each field as its JSON text (lists joined with ` > `,
/// empty for null).
pub fn write_rows(out: &mut dyn Write, rows: &[Finding]) -> io::Result<()> {
    let mut w = csv::Writer::from_writer(out);
    w.write_record(ROW_HEADER).map_err(io::Error::other)?;
    for row in rows {
        let fields = row_fields(row)?;
        let cells = ROW_HEADER
            .iter()
            .map(|c| csv_cell(fields.get(*c).map_or("", String::as_str)).into_owned());
        w.write_record(cells).map_err(io::Error::other)?;
    }
    w.flush()
}

/// A row's fields as text, by name: the finding's JSON object, flattened.
fn row_fields(row: &Finding) -> io::Result<std::collections::HashMap<String, String>> {
    use serde_json::Value;
    let Value::Object(map) = serde_json::to_value(row).map_err(io::Error::other)? else {
        return Err(io::Error::other("a finding is not a JSON object"));
    };
    let text = |v: Value| match v {
        Value::Null => String::new(),
        Value::String(s) => s,
        Value::Array(a) => a
            .into_iter()
            .map(|x| match x {
                Value::String(s) => s,
                other => other.to_string(),
            })
            .collect::<Vec<_>>()
            .join(" > "),
        other => other.to_string(),
    };
    Ok(map.into_iter().map(|(k, v)| (k, text(v))).collect())
}

/// The report, one line per app, company, destination and protocol, with a header.
pub fn write_report(out: &mut dyn Write, r: &Report) -> io::Result<()> {
    let mut w = csv::Writer::from_writer(out);
    w.write_record(REPORT_HEADER).map_err(io::Error::other)?;
    for a in &r.apps {
        let listed = a
            .companies
            .iter()
            .flat_map(|c| c.domains.iter().map(move |d| (Some(c), d)));
        for (c, d) in listed.chain(a.other.iter().map(|d| (None, d))) {
            let cells = [
                a.app.clone(),
                c.map(|c| c.company.clone()).unwrap_or_default(),
                c.map(|c| c.category.to_string()).unwrap_or_default(),
                c.and_then(|c| c.severity)
                    .map(|s| s.to_string())
                    .unwrap_or_default(),
                c.is_some_and(|c| c.flagged).to_string(),
                d.destination.clone(),
                d.proto.clone(),
                d.count.to_string(),
                d.first_ms.to_string(),
                d.last_ms.to_string(),
                d.named_by
                    .map(|n| n.as_str().to_owned())
                    .unwrap_or_default(),
                c.and_then(|c| c.source.clone()).unwrap_or_default(),
                received(a, c, &d.destination),
            ];
            w.write_record(cells.iter().map(|c| csv_cell(c).into_owned()))
                .map_err(io::Error::other)?;
        }
    }
    w.flush()
}

/// What the company (or, for an unlisted destination, that host) received, joined with `; `.
fn received(a: &super::AppReport, c: Option<&super::CompanyReport>, destination: &str) -> String {
    let rows: Vec<String> = match c {
        Some(c) => c.received.iter().map(|r| r.phrase()).collect(),
        None => a
            .sent_elsewhere
            .iter()
            .filter(|r| r.host.as_deref() == Some(destination))
            .map(|r| r.phrase())
            .collect(),
    };
    rows.join("; ")
}
