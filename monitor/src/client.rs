//! `brokerwatch status|history|events`: the daemon's answers, as text for people or JSON for
//! tools.

use std::{
    io::{self, Write},
    path::Path,
    time::Duration,
};

use crate::{
    display::safe,
    protocol::{self, Alert, ClientError, Reply, Request, Status},
};

#[derive(Debug, thiserror::Error)]
pub enum ClientCommandError {
    #[error(transparent)]
    Client(#[from] ClientError),
    #[error("writing the output: {0}")]
    Output(#[from] io::Error),
    #[error("the daemon answered {0:?} with something else")]
    Unexpected(&'static str),
    #[error(transparent)]
    Fleet(#[from] crate::report::fleet::FleetError),
}

/// `brokerwatch block|unblock APP COMPANY`: the daemon's answer on one line.
pub async fn block(
    socket: &Path,
    app: &str,
    company: &str,
    unblock: bool,
    out: &mut dyn Write,
) -> Result<(), ClientCommandError> {
    let req = Request::Block {
        app: app.to_owned(),
        company: company.to_owned(),
        unblock,
    };
    match protocol::request(socket, &req).await? {
        Reply::Done { message } => writeln!(out, "{message}")?,
        _ => return Err(ClientCommandError::Unexpected("block")),
    }
    Ok(out.flush()?)
}

/// `brokerwatch identity add|remove|list`: the asking user's own identifiers. Values go
/// to the daemon and never come back.
pub async fn identity(
    socket: &Path,
    op: protocol::IdentityOp,
    json: bool,
    out: &mut dyn Write,
) -> Result<(), ClientCommandError> {
    match protocol::request(socket, &Request::Identity(op)).await? {
        Reply::Done { message } => writeln!(out, "{message}")?,
        reply @ Reply::Identities { .. } if json => {
            out.write_all(protocol::encode(&reply).as_bytes())?
        }
        Reply::Identities {
            identities,
            inspecting,
        } => {
            if identities.is_empty() {
                writeln!(
                    out,
                    "No identifiers kept (`brokerwatch identity add --email ADDR`)."
                )?;
            }
            for i in &identities {
                let when = crate::host::clock::local_hm_of_ms(i.added_ms);
                writeln!(
                    out,
                    "{:<10} {}  (added {when})",
                    i.kind.label(),
                    i.fingerprint
                )?;
            }
            if !inspecting {
                writeln!(out, "The daemon does not read what apps send: an administrator turns it on with `[settings] inspect_plaintext = true`.")?;
            }
        }
        _ => return Err(ClientCommandError::Unexpected("identity")),
    }
    Ok(out.flush()?)
}

/// `brokerwatch blocks`: the asking user's blocks, a line each (or JSON).
pub async fn blocks(
    socket: &Path,
    json: bool,
    out: &mut dyn Write,
) -> Result<(), ClientCommandError> {
    let reply = protocol::request(socket, &Request::Blocks).await?;
    let Reply::Blocks { blocks } = reply else {
        return Err(ClientCommandError::Unexpected("blocks"));
    };
    if json {
        out.write_all(protocol::encode(&Reply::Blocks { blocks }).as_bytes())?;
    } else if blocks.is_empty() {
        writeln!(
            out,
            "No blocks (`brokerwatch block APP COMPANY` makes one)."
        )?;
    } else {
        for b in &blocks {
            writeln!(out, "{} -> {}  (uid {})", b.app, b.company, b.uid)?;
        }
    }
    Ok(out.flush()?)
}

/// `brokerwatch status`.
pub async fn status(
    socket: &Path,
    json: bool,
    out: &mut dyn Write,
) -> Result<(), ClientCommandError> {
    let reply = protocol::request(socket, &Request::Status).await?;
    let Reply::Status(status) = reply else {
        return Err(ClientCommandError::Unexpected("status"));
    };
    if json {
        out.write_all(protocol::encode(&Reply::Status(status)).as_bytes())?;
    } else {
        write_status(out, &status)?;
    }
    Ok(out.flush()?)
}

fn write_status(out: &mut dyn Write, s: &Status) -> io::Result<()> {
    writeln!(
        out,
        "brokerwatch daemon, pid {}, up {}s, Linux {}",
        s.pid, s.uptime_s, s.kernel
    )?;
    writeln!(out, "Watched apps: {}", s.watched_apps.join(", "))?;
    if !s.all_users {
        // The machine's figures would tell when other users' apps make connections.
        writeln!(
            out,
            "Your alerts since the daemon started: {} (the machine's figures are for root and the brokerwatch-admin group)",
            s.alerts
        )?;
    } else {
        match &s.counters {
            Some(k) => writeln!(
                out,
                "Kernel records: {} generated, {} lost; {} processes not watched (table full); {} UDP repeats folded",
                k.generated, k.lost, k.watch_table_full, k.udp_repeats
            )?,
            None => writeln!(out, "Kernel records: counters unreadable")?,
        }
        writeln!(
            out,
            "Records delivered: {}; alerts: {}",
            s.records_delivered, s.alerts
        )?;
    }
    writeln!(
        out,
        "Programs ({}):",
        match s.attach {
            crate::kernel::AttachScope::Root => "every process runs the hooks",
            _ => "only the watched apps' cgroups run the hooks",
        }
    )?;
    for p in &s.attached {
        writeln!(out, "  {p}")?;
    }
    let st = &s.store;
    if s.all_users {
        writeln!(
            out,
            "Store: {}; {} connection updates and {} alerts written since start; {} waiting; {} dropped",
            st.path.display(),
            st.connections_written,
            st.alerts_written,
            st.pending,
            st.dropped
        )?;
    } else {
        writeln!(out, "Store: {}", st.path.display())?;
    }
    if st.quota_refused > 0 {
        let who: Vec<String> = st
            .over_quota
            .iter()
            .map(|q| format!("uid {} ({} rows)", q.uid, q.refused))
            .collect();
        writeln!(
            out,
            "Store quota: {} rows not stored because their user reached the quota: {}",
            st.quota_refused,
            who.join(", ")
        )?;
    }
    if let Some(e) = &st.error {
        writeln!(out, "STORE ERROR: {e} (alerts are still shown; rows wait in memory until it can be written)")?;
    }
    if let Some(e) = &s.policy_error {
        writeln!(out, "POLICY ERROR: {e}")?;
    }
    match (&s.block_error, s.blocking) {
        (Some(e), _) => writeln!(out, "BLOCK ERROR: {e}")?,
        (None, true) => {
            let denied = s.counters.map(|k| k.blocked).unwrap_or(0);
            writeln!(out, "Blocking: on ({denied} connects and sends denied so far); it ends when the daemon stops")?
        }
        (None, false) => writeln!(out, "Blocking: off (no rule blocks)")?,
    }
    writeln!(out, "Policy sources:")?;
    for p in &s.policy_sources {
        writeln!(
            out,
            "  {} ({} destinations, {} domains)",
            p.name, p.destinations, p.domains
        )?;
    }
    Ok(())
}

/// `brokerwatch history`.
pub async fn history(
    socket: &Path,
    since: Duration,
    json: bool,
    out: &mut dyn Write,
) -> Result<(), ClientCommandError> {
    let since_ms = crate::host::clock::now_ms().saturating_sub(since.as_millis() as u64);
    let reply = protocol::request(socket, &Request::History { since_ms }).await?;
    let Reply::History {
        alerts,
        schema,
        sent,
    } = reply
    else {
        return Err(ClientCommandError::Unexpected("history"));
    };
    if json {
        let reply = Reply::History {
            alerts,
            schema,
            sent,
        };
        out.write_all(protocol::encode(&reply).as_bytes())?;
        return Ok(out.flush()?);
    }
    if alerts.is_empty() {
        writeln!(
            out,
            "No alerts in the last {}.",
            humantime::format_duration(since)
        )?;
    }
    for a in &alerts {
        write_alert(out, a)?;
    }
    if !sent.is_empty() {
        writeln!(out, "What your apps sent:")?;
    }
    for l in &sent {
        let mark = if l.flagged { "!" } else { " " };
        writeln!(
            out,
            "{}{mark} {} ({}x, pid {})",
            crate::report::text::when(l.last_ms, true),
            safe(&l.summary),
            l.requests,
            l.pid
        )?;
    }
    Ok(out.flush()?)
}

fn write_alert(out: &mut dyn Write, a: &Alert) -> io::Result<()> {
    let f = &a.finding;
    writeln!(
        out,
        "{}  {}[{}] -> {} ({}:{})  {} {}: {}{}",
        f.ts(),
        safe(f.who()),
        f.pid,
        safe(f.domain.as_deref().unwrap_or("-")),
        f.dst_ip,
        f.dst_port,
        f.severity.map_or("?", |s| s.as_str()).to_uppercase(),
        safe(f.category.as_ref().map_or("?", |c| c.as_str())),
        safe(f.company.as_deref().unwrap_or("?")),
        crate::report::text::block_mark(f),
    )
}

/// `brokerwatch events`: alerts and lag notices as JSON lines until the daemon hangs up.
pub async fn events(socket: &Path, out: &mut dyn Write) -> Result<(), ClientCommandError> {
    let mut conn = protocol::Connection::open(socket, &Request::Subscribe).await?;
    while let Some(reply) = conn.next().await? {
        match reply {
            Reply::Alert { .. } | Reply::Lagged { .. } | Reply::Sent { .. } => {
                out.write_all(protocol::encode(&reply).as_bytes())?;
                out.flush()?;
            }
            Reply::Error { message } => return Err(ClientError::Refused(message).into()),
            _ => {}
        }
    }
    Ok(())
}

/// `brokerwatch report`: what apps talked to, from the daemon's store (your own processes',
/// or everyone's for root and the admin group).
/// What `brokerwatch report` asks for.
pub struct ReportQuery {
    pub since: Duration,
    pub apps: Vec<String>,
    /// Only what is new, against this much before `since` (`--new --baseline`).
    pub baseline: Option<Duration>,
    /// Forwarded alerts to read instead of asking the daemon (`--input`).
    pub input: Vec<std::path::PathBuf>,
}

pub async fn report(
    socket: &Path,
    q: ReportQuery,
    format: crate::report::Format,
    out: &mut dyn Write,
) -> Result<(), ClientCommandError> {
    let since_ms = crate::host::clock::now_ms().saturating_sub(q.since.as_millis() as u64);
    if !q.input.is_empty() {
        // A fleet report: the forwarded lines, no daemon.
        let (r, _) = crate::report::fleet::read(&q.input, since_ms)?;
        crate::report::write(
            out,
            &r,
            format,
            "brokerwatch: what the fleet's apps talked to",
        )?;
        return Ok(out.flush()?);
    }
    let baseline_ms = q
        .baseline
        .map(|b| since_ms.saturating_sub(b.as_millis() as u64));
    let req = Request::Report {
        since_ms,
        apps: q.apps,
        baseline_ms,
    };
    let reply = protocol::request(socket, &req).await?;
    let Reply::Report(r) = reply else {
        return Err(ClientCommandError::Unexpected("report"));
    };
    let title = match baseline_ms {
        Some(_) => "brokerwatch: what apps started talking to",
        None => "brokerwatch: what apps talked to",
    };
    crate::report::write(out, &r, format, title)?;
    Ok(out.flush()?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::finding::Finding;

    // Issue 22, items 2 and 7: `history` printed a DNS name of terminal escapes raw.
    #[test]
    fn history_lines_show_hostile_names_written_out() {
        let alert = Alert {
            finding: Finding {
                comm: "\u{1b}]0;owned\u{7}".into(),
                domain: Some("a\u{1b}[2J\u{202e}b".into()),
                company: Some("\u{9b}31mX".into()),
                category: Some("data-broker".into()),
                ..Finding::default()
            },
            ts_ms: 0,
            connect_boot_ns: 0,
            decided_boot_ns: 0,
        };
        let mut out = Vec::new();
        write_alert(&mut out, &alert).unwrap();
        let line = String::from_utf8(out).unwrap();
        for c in ['\u{1b}', '\u{7}', '\u{9b}', '\u{202e}'] {
            assert!(!line.contains(c), "{line:?}");
        }
        assert!(line.contains("\\u{202E}"), "{line}");
    }
}
