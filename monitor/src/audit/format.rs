//! The audit report: a table for people, JSON lines and CSV for tools.

use std::io::{self, Write};

use serde::Serialize;

use super::Summary;
use crate::{finding::Finding, leak::Leak};

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

/// One line of `--json` output: its type, the shape's version, then the fields.
#[derive(Serialize)]
struct Line<'a, T: Serialize> {
    #[serde(rename = "type")]
    kind: &'static str,
    schema: u32,
    #[serde(flatten)]
    body: &'a T,
}

fn json_line<T: Serialize>(out: &mut dyn Write, kind: &'static str, body: &T) -> io::Result<()> {
    let line = Line {
        kind,
        schema: crate::report::SCHEMA,
        body,
    };
    serde_json::to_writer(&mut *out, &line).map_err(io::Error::other)?;
    writeln!(out)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Table,
    Json,
    Csv,
}

/// Writes rows and summary for tools. JSON: one object per line, rows with
/// `"type":"connection"`, then one `"type":"summary"` line. (The table is [`write_text`].)
pub fn write(
    out: &mut dyn Write,
    format: Format,
    rows: &[Finding],
    leaks: &[Leak],
    summary: &Summary,
) -> io::Result<()> {
    match format {
        Format::Json => {
            for row in rows {
                json_line(out, "connection", row)?;
            }
            for leak in leaks {
                json_line(out, "sent", leak)?;
            }
            json_line(out, "summary", summary)?;
        }
        Format::Csv => crate::report::csv::write_rows(out, rows)?,
        Format::Table => {
            let d = Destinations {
                all: summary.connection_rows,
                flagged: summary.flagged,
            };
            write_summary(out, summary, d)?
        }
    }
    Ok(())
}

/// The table format: the report grouped per app, company and destination (flagged first,
/// in colour on a terminal), or what was watched when nothing was seen; then the summary.
pub fn write_text(
    out: &mut dyn Write,
    report: &crate::report::Report,
    leaks: &[Leak],
    s: &Summary,
    color: bool,
) -> io::Result<()> {
    if report.apps.is_empty() {
        nothing_seen(out, s)?;
    } else {
        crate::report::text::write(out, report, color)?;
    }
    write_sent(out, leaks, s)?;
    write_summary(out, s, Destinations::of(report))
}

/// What the watched apps sent (plaintext inspection): flagged destinations first, one
/// sentence each; nothing when plaintext was not read.
fn write_sent(out: &mut dyn Write, leaks: &[Leak], s: &Summary) -> io::Result<()> {
    let Some(stats) = s.plaintext else {
        return Ok(());
    };
    writeln!(out)?;
    for why in &s.plaintext_not_readable {
        writeln!(out, "Not readable: {}.", crate::display::safe(why))?;
    }
    if leaks.is_empty() {
        writeln!(
            out,
            "What the watched apps sent: no identifier found in {} requests read.",
            stats.requests
        )?;
        return Ok(());
    }
    writeln!(out, "What the watched apps sent:")?;
    let mut sorted: Vec<&Leak> = leaks.iter().collect();
    sorted.sort_by_key(|l| (!l.flagged, l.first_party, l.first_ms));
    for l in sorted {
        let mark = if l.flagged { "!" } else { " " };
        let times = match l.requests {
            1 => String::new(),
            n => format!(" ({n} requests)"),
        };
        writeln!(
            out,
            "  {mark} {}{times}, pid {}",
            crate::display::safe(&l.summary),
            l.pid
        )?;
    }
    Ok(())
}

/// "Nothing seen", with what was watched, whether it ran, and what to try.
fn nothing_seen(out: &mut dyn Write, s: &Summary) -> io::Result<()> {
    writeln!(
        out,
        "No connections by watched processes. Watched: {}.",
        s.watched.join(", ")
    )?;
    if s.processes_seen == 0 {
        writeln!(
            out,
            "None of them ran while the audit watched: start the app during the audit, launch it under watch (`brokerwatch audit -- CMD`), or watch everything with `--all`."
        )
    } else {
        writeln!(
            out,
            "{} watched processes ran and made no connection: audit longer (`--duration`), or use the app (join a meeting) while the audit runs.",
            s.processes_seen
        )
    }
}

/// Destinations as people count them: distinct (app, destination, protocol), all and
/// flagged. (The report is grouped that way; connection rows are per process.)
#[derive(Debug, Clone, Copy)]
struct Destinations {
    all: usize,
    flagged: usize,
}

impl Destinations {
    fn of(r: &crate::report::Report) -> Self {
        let (mut all, mut flagged) = (0, 0);
        for a in &r.apps {
            all += a.other.len();
            for c in &a.companies {
                all += c.domains.len();
                if c.flagged {
                    flagged += c.domains.len();
                }
            }
        }
        Self { all, flagged }
    }
}

fn write_summary(out: &mut dyn Write, s: &Summary, d: Destinations) -> io::Result<()> {
    writeln!(
        out,
        "Summary: {} processes seen, {} connections to {} destination{} in {:.1}s",
        s.processes_seen,
        s.connections,
        d.all,
        if d.all == 1 { "" } else { "s" },
        s.duration_ms as f64 / 1000.0,
    )?;
    writeln!(
        out,
        "Records: {} generated, {} delivered, {} lost{}{}",
        s.records_generated,
        s.records_delivered,
        s.records_lost,
        if s.records_lost > 0 {
            " (the ring buffer was full: rerun with a larger --ring-size)"
        } else {
            ""
        },
        if s.records_over_budget > 0 {
            format!(
                ", {} refused over a user's budget (a flood: see the log; --user-budget)",
                s.records_over_budget
            )
        } else {
            String::new()
        }
    )?;
    if s.flagged > 0 {
        writeln!(
            out,
            "Flagged: {} destination(s) the policy alerts on (exit status 1)",
            d.flagged
        )?;
    }
    if s.enforced {
        writeln!(
            out,
            "Blocked: {} connect(s) and send(s) denied{}",
            s.blocked_calls,
            if s.not_blocked > 0 {
                format!(
                    "; {} contact(s) a block rule covers went through (nothing named them before the connect)",
                    s.not_blocked
                )
            } else {
                String::new()
            }
        )?;
    } else if s.not_blocked > 0 {
        writeln!(
            out,
            "Would block: {} contact(s) a block rule covers (`--enforce` blocks them)",
            s.not_blocked
        )?;
    }
    if s.watch_table_full > 0
        || s.rows_dropped > 0
        || s.records_undecodable > 0
        || s.sockets_unread > 0
    {
        writeln!(
            out,
            "Warnings: {} processes not watched (watch table full), {} rows dropped (row limit), {} undecodable records, {} sockets' first payloads not read (socket table slot reused)",
            s.watch_table_full, s.rows_dropped, s.records_undecodable, s.sockets_unread
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
