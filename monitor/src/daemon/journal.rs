//! Structured journal entries through journald's native protocol (systemd-journal-logger):
//! one fixed `MESSAGE_ID` per kind, `PRIORITY` from the alert's severity, and the fields
//! `BROKERWATCH_APP`, `_COMPANY`, `_DOMAIN`, `_CATEGORY`, `_SEVERITY`, `_PID`, `_UID` a
//! log pipeline can filter on (`journalctl MESSAGE_ID=... BROKERWATCH_COMPANY=...`).

use log::{kv::Value, Level, Record};
use systemd_journal_logger::JournalLog;

use crate::{defaults, finding::Finding, policy::Severity};

/// `MESSAGE_ID` of an alert (a watched app contacted a listed company).
pub const ALERT_ID: &str = "806cbbec17284d22a0d15f53c69e089b";
/// `MESSAGE_ID` of lost kernel records.
pub const LOSS_ID: &str = "5145711e8dee41838df1398e8dda3bf4";
/// `MESSAGE_ID` of a policy that does not load.
pub const POLICY_ERROR_ID: &str = "6824dcee4d324eb68b749d4f564892da";
/// `MESSAGE_ID` of a store that cannot be written.
pub const STORE_ERROR_ID: &str = "54fdbbe4d38741a4898bde21aefe31dc";

/// Where alerts are written: the journal when its socket answers, else the log.
pub struct Journal {
    log: Option<JournalLog>,
}

/// The log level whose journal priority matches an alert's severity: high -> warning (4),
/// medium -> notice (5), low and info -> info (6).
pub fn level_of(severity: Option<Severity>) -> Level {
    match severity {
        Some(Severity::High) => Level::Warn,
        Some(Severity::Medium) => Level::Info,
        Some(Severity::Low | Severity::Info) | None => Level::Debug,
    }
}

impl Journal {
    /// Connects to journald if it runs.
    pub fn open() -> Self {
        let log = JournalLog::new()
            .ok()
            .map(|j| j.with_syslog_identifier(defaults::APP_NAME.to_owned()));
        Self { log }
    }

    /// Whether alerts reach the journal.
    pub fn connected(&self) -> bool {
        self.log.is_some()
    }

    /// Writes one alert: to the journal with its fields, or (no journal) as a log line.
    pub fn alert(&self, f: &Finding) {
        let message = format!(
            "{} (pid {}) contacted {} ({}, {}) severity {}",
            f.who(),
            f.pid,
            f.destination(),
            f.company.as_deref().unwrap_or("?"),
            f.category.as_ref().map_or("?", |c| c.as_str()),
            f.severity.map_or("?", |s| s.as_str()),
        );
        let Some(journal) = &self.log else {
            log::warn!("alert: {message}");
            return;
        };
        let pid = f.pid.to_string();
        let uid = f.uid.to_string();
        let dst = format!("{}:{}", f.dst_ip, f.dst_port);
        let opt = |s: &Option<String>| s.clone().unwrap_or_default();
        let (company, domain) = (opt(&f.company), opt(&f.domain));
        let category = f.category.as_ref().map_or("", |c| c.as_str());
        let severity = f.severity.map_or("", |s| s.as_str());
        let app_id = opt(&f.app_id);
        let fields: [(&str, Value); 10] = [
            ("MESSAGE_ID", Value::from(ALERT_ID)),
            ("BROKERWATCH_APP", Value::from(f.who())),
            ("BROKERWATCH_APP_ID", Value::from(app_id.as_str())),
            ("BROKERWATCH_COMPANY", Value::from(company.as_str())),
            ("BROKERWATCH_DOMAIN", Value::from(domain.as_str())),
            ("BROKERWATCH_CATEGORY", Value::from(category)),
            ("BROKERWATCH_SEVERITY", Value::from(severity)),
            ("BROKERWATCH_PID", Value::from(pid.as_str())),
            ("BROKERWATCH_UID", Value::from(uid.as_str())),
            ("BROKERWATCH_DESTINATION", Value::from(dst.as_str())),
        ];
        let sent = journal.journal_send(
            &Record::builder()
                .level(level_of(f.severity))
                .target(defaults::APP_NAME)
                .args(format_args!("{message}"))
                .key_values(&fields)
                .build(),
        );
        if let Err(e) = sent {
            log::warn!("cannot write to the journal ({e}); alert: {message}");
        }
    }
}

/// Sends daemon logs to the journal when systemd connected stderr to it (`JOURNAL_STREAM`);
/// `false` when the caller should log to stderr instead.
pub fn install_logger(max: log::LevelFilter) -> bool {
    if !systemd_journal_logger::connected_to_journal() {
        return false;
    }
    let Ok(j) = JournalLog::new() else {
        return false;
    };
    if j.with_syslog_identifier(defaults::APP_NAME.to_owned())
        .install()
        .is_err()
    {
        return false;
    }
    log::set_max_level(max);
    true
}
