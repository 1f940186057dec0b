//! The report for a terminal: one block per app, one line per company and per destination
//! and protocol (with counts), flagged companies first, in colour when asked.

use std::io::{self, Write};

use super::{DomainRow, Report};
use crate::display::safe;

const RED: &str = "\x1b[1;31m";
const DIM: &str = "\x1b[2m";
const RESET: &str = "\x1b[0m";

/// Whether to colour output written to standard output: a terminal, and `NO_COLOR` unset.
pub fn color_for_stdout() -> bool {
    use std::io::IsTerminal as _;
    std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty()) && io::stdout().is_terminal()
}

/// Wall-clock text of an epoch-milliseconds time: local `HH:MM:SS` within a day of `now`,
/// else the UTC date and time.
pub fn when(ms: u64, long: bool) -> String {
    let t = std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms);
    if long {
        let s = humantime::format_rfc3339_seconds(t).to_string();
        format!("{} {}", &s[..10], &s[11..16])
    } else {
        let (h, m, s) = crate::host::clock::local_hms(t);
        format!("{h:02}:{m:02}:{s:02}")
    }
}

pub fn write(out: &mut dyn Write, r: &Report, color: bool) -> io::Result<()> {
    let paint = |on: bool, code: &'static str| if on && color { code } else { "" };
    let reset = |on: bool| if on && color { RESET } else { "" };
    let long = r.until_ms.saturating_sub(r.since_ms) > 86_400_000;
    preamble(out, r)?;
    let dest_line = |out: &mut dyn Write, d: &DomainRow| -> io::Result<()> {
        let span = match d.first_ms == d.last_ms {
            true => when(d.first_ms, long),
            false => format!("{} - {}", when(d.first_ms, long), when(d.last_ms, long)),
        };
        writeln!(
            out,
            "      {:<40} {:<4} {:>6}x  {}{}",
            safe(&d.destination),
            d.proto,
            d.count,
            span,
            d.named_by
                .map(|n| format!("  (named by {})", n.as_str()))
                .unwrap_or_default()
        )?;
        if !d.queries.is_empty() {
            let names: Vec<String> = d.queries.iter().map(|q| safe(q).into_owned()).collect();
            writeln!(out, "        asked: {}", names.join(", "))?;
        }
        Ok(())
    };
    for app in &r.apps {
        writeln!(
            out,
            "{}: {}. {}",
            safe(&app.app),
            connections(app.connections),
            safe(&app.headline())
        )?;
        for c in &app.companies {
            let sev = c.severity.map_or("-", |s| s.as_str());
            let sev = if c.flagged {
                sev.to_uppercase()
            } else {
                sev.to_owned()
            };
            writeln!(
                out,
                "  {}{:<6} {:<18} {}{} ({}{}){}",
                paint(c.flagged, RED),
                sev,
                c.category,
                safe(&c.company),
                reset(c.flagged),
                connections(c.connections),
                if c.blocked > 0 {
                    format!(", {} blocked", c.blocked)
                } else {
                    String::new()
                },
                c.source
                    .as_deref()
                    .map(|s| format!("  {}source: {}{}", paint(true, DIM), safe(s), reset(true)))
                    .unwrap_or_default()
            )?;
            for d in &c.domains {
                dest_line(out, d)?;
            }
            for r in &c.received {
                received_line(out, r, paint(c.flagged, RED), reset(c.flagged))?;
            }
        }
        if !app.other.is_empty() {
            writeln!(out, "  not on any list (first parties, unknown hosts):")?;
            for d in &app.other {
                dest_line(out, d)?;
            }
        }
        if !app.sent_elsewhere.is_empty() {
            writeln!(out, "  sent to its own service or unlisted hosts:")?;
            for r in &app.sent_elsewhere {
                received_line(out, r, "", "")?;
            }
        }
        writeln!(out)?;
    }
    Ok(())
}

/// What the report is before its apps: what is new, the fleet's companies, or that it is
/// empty.
fn preamble(out: &mut dyn Write, r: &Report) -> io::Result<()> {
    match (r.new_since_ms, r.apps.is_empty()) {
        (Some(t), true) => writeln!(
            out,
            "Nothing new: no app contacted a company or destination since {} that it had not contacted before.",
            when(t, true)
        )?,
        (Some(t), false) => writeln!(
            out,
            "New since {}: companies and destinations each app had not contacted before.\n",
            when(t, true)
        )?,
        (None, true) => writeln!(out, "No connections in this report.")?,
        (None, false) => {}
    }
    if !r.fleet.is_empty() {
        writeln!(
            out,
            "Companies across the fleet, by the hosts that saw them:"
        )?;
        for c in &r.fleet {
            let hosts: Vec<String> = c.hosts.iter().map(|h| safe(h).into_owned()).collect();
            writeln!(
                out,
                "  {:<24} {:>6} alerts, {} hosts: {}",
                safe(&c.company),
                c.alerts,
                c.hosts.len(),
                hosts.join(", ")
            )?;
        }
        writeln!(out)?;
    }
    Ok(())
}

/// "    received: your e-mail address (SHA-256) in the URL, 3 requests (sales.linkedin.com)".
fn received_line(out: &mut dyn Write, r: &super::Received, on: &str, off: &str) -> io::Result<()> {
    let requests = match r.requests {
        1 => "1 request".to_owned(),
        n => format!("{n} requests"),
    };
    writeln!(
        out,
        "      {on}received: {}{off}, {requests} ({})",
        r.phrase(),
        safe(r.host.as_deref().unwrap_or("no host named"))
    )
}

/// `  BLOCKED` for a contact the kernel denied, `  NOT BLOCKED (...)` for one a block rule
/// covers that went through; nothing otherwise (the notes are brokerwatch's own text).
pub fn block_mark(f: &crate::finding::Finding) -> String {
    if f.blocked > 0 {
        "  BLOCKED".to_owned()
    } else if let Some(note) = &f.block_note {
        let why = note.split(':').next().unwrap_or(note);
        format!("  NOT BLOCKED ({why})")
    } else {
        String::new()
    }
}

/// "1 connection", "2 connections".
fn connections(n: u64) -> String {
    if n == 1 {
        "1 connection".to_owned()
    } else {
        format!("{n} connections")
    }
}
