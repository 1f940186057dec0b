//! The audit report: a table for people, JSON lines and CSV for tools.

use std::{
    io::{self, Write},
    time::{Duration, SystemTime},
};

use serde::Serialize;

use crate::{
    engine::{ConnAgg, ConnKey, Engine, Origin, ProcSource},
    naming,
    policy::Policy,
    procinfo::UserNames,
    sensor::KernelCounters,
};

/// `CLOCK_BOOTTIME` now, in nanoseconds (the kernel programs' clock).
pub fn boot_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: valid out-pointer.
    unsafe { libc::clock_gettime(libc::CLOCK_BOOTTIME, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// Converts kernel `CLOCK_BOOTTIME` stamps to wall-clock time.
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    boot_epoch: SystemTime,
}

impl Clock {
    pub fn now() -> Self {
        let mut ts = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: valid out-pointer.
        unsafe { libc::clock_gettime(libc::CLOCK_BOOTTIME, &mut ts) };
        let since_boot = Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32);
        Self {
            boot_epoch: SystemTime::now() - since_boot,
        }
    }

    pub fn wall(&self, boot_ns: u64) -> SystemTime {
        self.boot_epoch + Duration::from_nanos(boot_ns)
    }

    pub fn rfc3339(&self, boot_ns: u64) -> String {
        humantime::format_rfc3339_millis(self.wall(boot_ns)).to_string()
    }

    /// Local `HH:MM:SS` for the table.
    pub fn hms(&self, boot_ns: u64) -> String {
        let secs = self
            .wall(boot_ns)
            .duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| d.as_secs() as libc::time_t)
            .unwrap_or(0);
        // SAFETY: zeroed tm is a valid out-parameter; localtime_r is thread-safe.
        let mut tm: libc::tm = unsafe { std::mem::zeroed() };
        unsafe { libc::localtime_r(&secs, &mut tm) };
        format!("{:02}:{:02}:{:02}", tm.tm_hour, tm.tm_min, tm.tm_sec)
    }
}

/// One connection row, flat so that JSON and CSV share it. Fields that later stages fill
/// (naming, policy) are `null` until then.
#[derive(Debug, Clone, Serialize)]
pub struct Row {
    pub ts: String,
    pub last_seen: String,
    pub pid: u32,
    pub ppid: Option<u32>,
    pub comm: String,
    pub thread_comm: String,
    pub exe: Option<String>,
    pub cmdline: Option<String>,
    pub app: Option<String>,
    /// Policy app id (`zoom`, `teams`, ...).
    pub app_id: Option<String>,
    pub watch: Option<String>,
    pub uid: u32,
    pub user: Option<String>,
    pub proto: &'static str,
    pub via: &'static str,
    pub dst_ip: String,
    pub dst_port: u16,
    pub domain: Option<String>,
    /// `sni`, `quic`, `http` or `dns`.
    pub domain_source: Option<String>,
    /// The DNS name asked for and every CNAME after it (empty when DNS named nothing).
    pub dns_chain: Vec<String>,
    /// The DNS name, when SNI/Host named something else.
    pub dns_name: Option<String>,
    /// Why the name is missing or not to be trusted.
    pub name_note: Option<String>,
    /// The connection goes to an encrypted DNS resolver (DoH/DoT).
    pub encrypted_dns: bool,
    pub category: Option<String>,
    pub company: Option<String>,
    pub severity: Option<String>,
    /// `alert`, `log` or `ignore`.
    pub action: Option<String>,
    /// The policy domain, range or pattern that matched.
    pub matched: Option<String>,
    pub rule: Option<String>,
    /// Where the destination fact comes from.
    pub source: Option<String>,
    /// An alert-worthy contact (decides exit status 1).
    pub flagged: bool,
    pub count: u64,
    pub socket_cookie: u64,
    /// Parent chain, nearest first, `>`-separated pids.
    pub ancestry: String,
}

/// Totals printed after the rows.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Summary {
    pub duration_ms: u64,
    pub processes_seen: u64,
    pub connection_rows: usize,
    pub connections: u64,
    /// Rows whose destination the policy flags (alert).
    pub flagged: usize,
    pub records_generated: u64,
    pub records_delivered: u64,
    pub records_lost: u64,
    pub records_undecodable: u64,
    pub watch_table_full: u64,
    pub udp_repeats_folded: u64,
    pub rows_dropped: u64,
    pub command: Option<String>,
    pub command_pid: Option<u32>,
    pub command_status: Option<String>,
    pub command_exit_code: Option<i32>,
    pub still_running: Vec<u32>,
}

impl Summary {
    pub fn fill_counters(&mut self, k: &KernelCounters, delivered: u64, undecodable: u64) {
        self.records_generated = k.generated;
        self.records_lost = k.lost;
        self.records_delivered = delivered;
        self.records_undecodable = undecodable;
        self.watch_table_full = k.watch_table_full;
        self.udp_repeats_folded = k.udp_repeats;
    }
}

/// Builds the report rows: every aggregated connection joined with its process, and the
/// policy's verdict on its destination.
pub fn rows<P: ProcSource>(
    engine: &Engine<P>,
    clock: &Clock,
    users: &mut UserNames,
    policy: &Policy,
) -> Vec<Row> {
    engine
        .connections()
        .into_iter()
        .map(|(k, agg)| row(engine, &k, agg, clock, users, policy))
        .collect()
}

/// One report row: a connection row joined with its process and the policy's verdict.
pub fn row<P: ProcSource>(
    engine: &Engine<P>,
    k: &ConnKey,
    agg: &ConnAgg,
    clock: &Clock,
    users: &mut UserNames,
    policy: &Policy,
) -> Row {
    {
        {
            let proc = engine.process(k.pid);
            let comm = proc.map(|p| p.comm.as_str()).unwrap_or(agg.comm.as_str());
            let app = policy.app_of(
                proc.and_then(|p| p.watch.as_deref()),
                comm,
                proc.and_then(|p| p.exe.as_deref()),
                proc.and_then(|p| p.app.as_ref()),
                proc.is_some_and(|p| p.origin == Origin::Exec),
            );
            let domain = k.domain.as_deref().map(str::to_owned);
            let dns_chain: Vec<String> = agg
                .dns
                .as_ref()
                .map(|d| d.chain.clone())
                .unwrap_or_default();
            // The DNS name, when the connection's own bytes named something else.
            let dns_name = agg
                .dns
                .as_ref()
                .map(|d| d.qname.clone())
                .filter(|q| Some(q) != domain.as_ref());
            // The DNS chain speaks for the connection only when its own bytes did not name
            // something else: an address can serve many names (CDNs), and the cache may
            // hold another process's answer.
            let chain_applies = dns_name.is_none();
            let mut names: Vec<&str> = Vec::new();
            names.extend(domain.as_deref());
            if chain_applies {
                names.extend(dns_chain.iter().map(String::as_str));
            }
            let verdict = policy.classify(app, &names, Some(k.dst));
            let encrypted = naming::encrypted_dns(k.dst, k.port, domain.as_deref());
            let name_note = if agg.ech {
                Some("Encrypted Client Hello: the name shown is the outer, public one; the real name is hidden".to_owned())
            } else if domain.is_none() {
                Some(match encrypted {
                    Some(e) => e.to_owned(),
                    None => "no DNS answer for this address was seen and the connection carried no SNI or Host: a literal IP, a name resolved over encrypted DNS, or resolved before brokerwatch started".to_owned(),
                })
            } else {
                encrypted.map(str::to_owned)
            };
            let ancestry = engine
                .ancestry(k.pid)
                .iter()
                .map(u32::to_string)
                .collect::<Vec<_>>()
                .join(">");
            Row {
                ts: clock.rfc3339(agg.first_ns),
                last_seen: clock.rfc3339(agg.last_ns),
                pid: k.pid,
                ppid: proc.map(|p| p.ppid).filter(|&p| p != 0),
                comm: proc
                    .map(|p| p.comm.clone())
                    .unwrap_or_else(|| agg.comm.clone()),
                thread_comm: agg.thread_comm.clone(),
                exe: proc.and_then(|p| p.exe.clone()),
                cmdline: proc.map(|p| p.cmdline.join(" ")).filter(|c| !c.is_empty()),
                app: app
                    .map(|a| a.name.clone())
                    .or_else(|| proc.and_then(|p| p.app.as_ref().map(|a| a.display_id()))),
                app_id: app.map(|a| a.id.clone()),
                watch: proc.and_then(|p| p.watch.clone()),
                uid: agg.uid,
                user: users.name(agg.uid),
                proto: k.proto.as_str(),
                via: agg.via,
                dst_ip: k.dst.to_string(),
                dst_port: k.port,
                domain,
                domain_source: agg.domain_source.map(|s| s.as_str().to_owned()),
                dns_chain,
                dns_name,
                name_note,
                encrypted_dns: encrypted.is_some(),
                category: verdict.as_ref().map(|v| v.entry.category.clone()),
                company: verdict.as_ref().map(|v| v.entry.company.clone()),
                severity: verdict.as_ref().map(|v| v.severity.as_str().to_owned()),
                action: verdict.as_ref().map(|v| v.action.as_str().to_owned()),
                matched: verdict.as_ref().map(|v| v.matched.clone()),
                rule: verdict.as_ref().and_then(|v| v.rule.clone()),
                source: verdict.as_ref().map(|v| v.entry.source.clone()),
                flagged: verdict.as_ref().is_some_and(|v| v.flagged()),
                count: agg.count,
                socket_cookie: agg.first_cookie,
                ancestry,
            }
        }
    }
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
    rows: &[Row],
    summary: &Summary,
    clock_note: &str,
) -> io::Result<()> {
    match format {
        Format::Json => {
            for row in rows {
                let mut v = serde_json::to_value(row).map_err(io::Error::other)?;
                v.as_object_mut()
                    .expect("row is an object")
                    .insert("type".into(), "connection".into());
                writeln!(out, "{v}")?;
            }
            let mut v = serde_json::to_value(summary).map_err(io::Error::other)?;
            v.as_object_mut()
                .expect("summary is an object")
                .insert("type".into(), "summary".into());
            writeln!(out, "{v}")?;
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
    "name_note",
    "encrypted_dns",
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

fn finding(r: &Row) -> String {
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

fn write_table(out: &mut dyn Write, rows: &[Row], s: &Summary, clock_note: &str) -> io::Result<()> {
    let who = |r: &Row| {
        let name = r.app.clone().unwrap_or_else(|| r.comm.clone());
        format!("{name}[{}]", r.pid)
    };
    let dst = |r: &Row| {
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
                r.proto,
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
