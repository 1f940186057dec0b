//! Structured journal entries through journald's native protocol (systemd-journal-logger):
//! one fixed `MESSAGE_ID` per kind, `PRIORITY` from the alert's severity, and the fields
//! `BROKERWATCH_APP`, `_COMPANY`, `_DOMAIN`, `_CATEGORY`, `_SEVERITY`, `_PID`, `_UID` a
//! log pipeline can filter on (`journalctl MESSAGE_ID=... BROKERWATCH_COMPANY=...`).

use log::{kv::Value, Level, Record};
use systemd_journal_logger::JournalLog;

use crate::{defaults, display::safe, finding::Finding, policy::Severity};

/// `MESSAGE_ID` of an alert (a watched app contacted a listed company).
pub const ALERT_ID: &str = "806cbbec17284d22a0d15f53c69e089b";
/// `MESSAGE_ID` of what a watched app sent (an identifier, other people's addresses).
pub const SENT_ID: &str = "3f0b6a1d9c2e4e7fb5a8d6c4e2f1a9b7";
/// `MESSAGE_ID` of lost kernel records.
pub const LOSS_ID: &str = "5145711e8dee41838df1398e8dda3bf4";
/// `MESSAGE_ID` of users over their kernel record budget (a flood).
pub const OVER_BUDGET_ID: &str = "b25710faa7684771801ba3c81afaf6dc";
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
        let message = message(f);
        let Some(journal) = &self.log else {
            log::warn!("alert: {message}");
            return;
        };
        let pid = f.pid.to_string();
        let uid = f.uid.to_string();
        let dst = format!("{}:{}", f.dst_ip, f.dst_port);
        // Fields are shown by log tools too: as safe as the message.
        let opt = |s: &Option<String>| safe(s.as_deref().unwrap_or("")).into_owned();
        let (company, domain) = (opt(&f.company), opt(&f.domain));
        let category = safe(f.category.as_ref().map_or("", |c| c.as_str())).into_owned();
        let severity = f.severity.map_or("", |s| s.as_str());
        let (app_id, app) = (opt(&f.app_id), safe(f.who()).into_owned());
        let fields: [(&str, Value); 10] = [
            ("MESSAGE_ID", Value::from(ALERT_ID)),
            ("BROKERWATCH_APP", Value::from(app.as_str())),
            ("BROKERWATCH_APP_ID", Value::from(app_id.as_str())),
            ("BROKERWATCH_COMPANY", Value::from(company.as_str())),
            ("BROKERWATCH_DOMAIN", Value::from(domain.as_str())),
            ("BROKERWATCH_CATEGORY", Value::from(category.as_str())),
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

impl Journal {
    /// Writes what a watched app sent: the sentence and its fields (the identifier's kind
    /// and form, never its value).
    pub fn sent(&self, l: &crate::leak::Leak) {
        let message = safe(&l.summary).into_owned();
        let Some(journal) = &self.log else {
            log::warn!("sent: {message} (pid {})", l.pid);
            return;
        };
        let (pid, uid) = (l.pid.to_string(), l.uid.to_string());
        let opt = |s: &Option<String>| safe(s.as_deref().unwrap_or("")).into_owned();
        let (company, host, app) = (opt(&l.company), opt(&l.host), opt(&l.app));
        let what = l.identifier.map_or("other_emails", |k| k.label());
        let form = l
            .form
            .map_or(String::new(), |f| format!("{f:?}").to_lowercase());
        let fields: [(&str, Value); 9] = [
            ("MESSAGE_ID", Value::from(SENT_ID)),
            ("BROKERWATCH_APP", Value::from(app.as_str())),
            ("BROKERWATCH_COMPANY", Value::from(company.as_str())),
            ("BROKERWATCH_DOMAIN", Value::from(host.as_str())),
            ("BROKERWATCH_IDENTIFIER", Value::from(what)),
            ("BROKERWATCH_FORM", Value::from(form.as_str())),
            ("BROKERWATCH_PLACE", Value::from(l.place.phrase())),
            ("BROKERWATCH_PID", Value::from(pid.as_str())),
            ("BROKERWATCH_UID", Value::from(uid.as_str())),
        ];
        let level = if l.flagged { Level::Warn } else { Level::Info };
        let sent = journal.journal_send(
            &Record::builder()
                .level(level)
                .target(defaults::APP_NAME)
                .args(format_args!("{message}"))
                .key_values(&fields)
                .build(),
        );
        if let Err(e) = sent {
            log::warn!("cannot write to the journal ({e}); sent: {message}");
        }
    }
}

/// An alert's MESSAGE: names made safe to show (`journalctl` prints it to terminals).
pub fn message(f: &Finding) -> String {
    format!(
        "{} (pid {}) contacted {} ({}, {}) severity {}",
        safe(f.who()),
        f.pid,
        safe(&f.destination()),
        safe(f.company.as_deref().unwrap_or("?")),
        safe(f.category.as_ref().map_or("?", |c| c.as_str())),
        f.severity.map_or("?", |s| s.as_str()),
    )
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

#[cfg(test)]
mod tests {
    use super::*;

    // Issue 22, items 2 and 7: `journalctl` prints MESSAGE to terminals.
    #[test]
    fn journal_messages_show_hostile_names_written_out() {
        let f = Finding {
            comm: "\u{1b}]0;owned\u{7}".into(),
            domain: Some("\u{202e}moc.evil".into()),
            ..Finding::default()
        };
        let m = message(&f);
        for c in ['\u{1b}', '\u{7}', '\u{202e}'] {
            assert!(!m.contains(c), "{m:?}");
        }
        assert!(m.contains("\\u{202E}moc.evil"), "{m}");
    }
}
