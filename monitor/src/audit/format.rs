//! The audit report: a table for people, JSON lines and CSV for tools.

use std::io::{self, Write};

use serde::Serialize;

use super::Summary;
use crate::finding::Finding;

/// Where the report goes: the file `path` (created or truncated), or standard output.
pub fn open_report(path: Option<&std::path::Path>) -> io::Result<Box<dyn Write>> {
    match path {
        Some(p) => std::fs::File::create(p)
            .map(|f| Box::new(io::BufWriter::new(f)) as Box<dyn Write>)
            .map_err(|e| {
                io::Error::new(
                    e.kind(),
                    format!("cannot write the report to {}: {e}", p.display()),
                )
            }),
        None => Ok(Box::new(io::stdout().lock())),
    }
}

/// One line of `--json` output.
#[derive(Serialize)]
#[serde(tag = "type", rename_all = "lowercase")]
enum Line<'a> {
    Connection(&'a Finding),
    Summary(&'a Summary),
}

fn json_line(out: &mut dyn Write, line: &Line<'_>) -> io::Result<()> {
    serde_json::to_writer(&mut *out, line).map_err(io::Error::other)?;
    writeln!(out)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Table,
    Json,
    Csv,
}

/// Writes rows and summary. JSON: one object per line, rows with `"type":"connection"`,
/// then one `"type":"summary"` line.
pub fn write(
    out: &mut dyn Write,
    format: Format,
    rows: &[Finding],
    summary: &Summary,
    clock_note: &str,
) -> io::Result<()> {
    match format {
        Format::Json => {
            for row in rows {
                json_line(out, &Line::Connection(row))?;
            }
            json_line(out, &Line::Summary(summary))?;
        }
        Format::Csv => {
            let mut w = csv::Writer::from_writer(out);
            w.write_record(CSV_HEADER).map_err(io::Error::other)?;
            for row in rows {
                let v = serde_json::to_value(row).map_err(io::Error::other)?;
                let fields = CSV_HEADER.iter().map(|c| match &v[*c] {
                    serde_json::Value::Null => String::new(),
                    serde_json::Value::String(s) => s.clone(),
                    serde_json::Value::Array(a) => a
                        .iter()
                        .map(|x| {
                            x.as_str()
                                .map(str::to_owned)
                                .unwrap_or_else(|| x.to_string())
                        })
                        .collect::<Vec<_>>()
                        .join(" > "),
                    other => other.to_string(),
                });
                w.write_record(fields).map_err(io::Error::other)?;
            }
            w.flush()?;
        }
        Format::Table => write_table(out, rows, summary, clock_note)?,
    }
    Ok(())
}

const CSV_HEADER: &[&str] = &[
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

/// `…tail` of `s` in at most `width` characters.
fn shorten_left(s: &str, width: usize) -> String {
    let n = s.chars().count();
    if n <= width {
        return s.to_owned();
    }
    let tail: String = s.chars().skip(n - (width - 1)).collect();
    format!("…{tail}")
}

fn finding(r: &Finding) -> String {
    match (&r.severity, &r.category, &r.company) {
        (Some(sev), Some(cat), Some(company)) => {
            let sev = if r.flagged {
                sev.to_uppercase()
            } else {
                sev.clone()
            };
            format!("{sev} {cat}: {company}")
        }
        _ => "-".to_owned(),
    }
}

fn write_table(
    out: &mut dyn Write,
    rows: &[Finding],
    s: &Summary,
    clock_note: &str,
) -> io::Result<()> {
    let who = |r: &Finding| format!("{}[{}]", r.who(), r.pid);
    let dst = |r: &Finding| {
        let addr = match r.dst_ip.contains(':') {
            true => format!("[{}]:{}", r.dst_ip, r.dst_port),
            false => format!("{}:{}", r.dst_ip, r.dst_port),
        };
        match &r.domain {
            Some(d) => format!("{d} ({addr})"),
            None => addr,
        }
    };
    let w_who = rows
        .iter()
        .map(|r| who(r).len())
        .max()
        .unwrap_or(0)
        .max("PROCESS".len());
    let w_exe = rows
        .iter()
        .map(|r| r.exe.as_deref().unwrap_or("?").chars().count())
        .max()
        .unwrap_or(0)
        .clamp(3, 48);
    let w_dst = rows
        .iter()
        .map(|r| dst(r).chars().count())
        .max()
        .unwrap_or(0)
        .max("DESTINATION".len());
    if rows.is_empty() {
        writeln!(out, "No connections by watched processes.")?;
    } else {
        writeln!(
            out,
            "{:<w_who$}  {:<w_exe$}  {:<w_dst$}  {:<5}  {:>6}  {:<8}  {:<8}  FINDING",
            "PROCESS", "EXE", "DESTINATION", "PROTO", "COUNT", "FIRST", "LAST"
        )?;
        for r in rows {
            let exe = r.exe.as_deref().unwrap_or("?");
            let exe = shorten_left(exe, w_exe);
            writeln!(
                out,
                "{:<w_who$}  {:<w_exe$}  {:<w_dst$}  {:<5}  {:>6}  {:<8}  {:<8}  {}",
                who(r),
                exe,
                dst(r),
                r.proto.as_str(),
                r.count,
                &r.ts.get(11..19).unwrap_or(""),
                &r.last_seen.get(11..19).unwrap_or(""),
                finding(r),
            )?;
        }
    }
    writeln!(out)?;
    writeln!(
        out,
        "Summary: {} processes seen, {} connections to {} destinations in {:.1}s{}",
        s.processes_seen,
        s.connections,
        s.connection_rows,
        s.duration_ms as f64 / 1000.0,
        clock_note
    )?;
    writeln!(
        out,
        "Records: {} generated, {} delivered, {} lost{}",
        s.records_generated,
        s.records_delivered,
        s.records_lost,
        if s.records_lost > 0 {
            " (the ring buffer was full: rerun with a larger --ring-size)"
        } else {
            ""
        }
    )?;
    if s.flagged > 0 {
        writeln!(
            out,
            "Flagged: {} destination(s) the policy alerts on (exit status 1)",
            s.flagged
        )?;
    }
    if s.watch_table_full > 0 || s.rows_dropped > 0 || s.records_undecodable > 0 {
        writeln!(
            out,
            "Warnings: {} processes not watched (watch table full), {} rows dropped (row limit), {} undecodable records",
            s.watch_table_full, s.rows_dropped, s.records_undecodable
        )?;
    }
    if let Some(cmd) = &s.command {
        writeln!(
            out,
            "Command: {cmd} {}",
            s.command_status.as_deref().unwrap_or("(still running)")
        )?;
    }
    if !s.still_running.is_empty() {
        writeln!(
            out,
            "Still running after the audit (not killed): {:?}",
            s.still_running
        )?;
    }
    Ok(())
}
