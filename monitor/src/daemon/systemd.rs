//! Talking to systemd: readiness and watchdog (`sd_notify`), and structured journal entries
//! for alerts.

use std::{os::unix::net::UnixDatagram, path::PathBuf};

use crate::{defaults, finding::Finding};

/// Tells the service manager something (`READY=1`, `WATCHDOG=1`, `STATUS=...`), if one
/// asked (`$NOTIFY_SOCKET`).
pub fn notify(state: &str) {
    let Some(path) = std::env::var_os("NOTIFY_SOCKET") else {
        return;
    };
    let sock = match UnixDatagram::unbound() {
        Ok(s) => s,
        Err(_) => return,
    };
    let bytes = path.as_encoded_bytes();
    let res = if let Some(name) = bytes.strip_prefix(b"@") {
        use std::os::linux::net::SocketAddrExt as _;
        std::os::unix::net::SocketAddr::from_abstract_name(name)
            .and_then(|addr| sock.send_to_addr(state.as_bytes(), &addr))
    } else {
        sock.send_to(state.as_bytes(), PathBuf::from(&path))
    };
    if let Err(e) = res {
        log::debug!("sd_notify {state:?}: {e}");
    }
}

/// The watchdog interval systemd asked for, halved (`$WATCHDOG_USEC`).
pub fn watchdog_interval() -> Option<std::time::Duration> {
    std::env::var("WATCHDOG_USEC")
        .ok()
        .and_then(|v| v.parse::<u64>().ok())
        .map(|us| std::time::Duration::from_micros(us / 2))
}

/// Sends a structured entry to the systemd journal when running under it (fields
/// `BW_APP`, `BW_PID`, ...); plain logging otherwise.
pub fn journal_alert(f: &Finding) {
    let message = format!(
        "{} (pid {}) contacted {} ({}, {}) severity {}",
        f.who(),
        f.pid,
        f.destination(),
        f.company.as_deref().unwrap_or("?"),
        f.category.as_deref().unwrap_or("?"),
        f.severity.as_deref().unwrap_or("?"),
    );
    if std::env::var_os("JOURNAL_STREAM").is_some() {
        let clean = |s: &str| s.replace('\n', " ");
        let fields = [
            ("MESSAGE", message.clone()),
            ("PRIORITY", "4".to_owned()),
            ("SYSLOG_IDENTIFIER", defaults::APP_NAME.to_owned()),
            ("BW_APP", f.who().to_owned()),
            ("BW_PID", f.pid.to_string()),
            ("BW_UID", f.uid.to_string()),
            ("BW_DOMAIN", f.domain.clone().unwrap_or_default()),
            ("BW_DST", format!("{}:{}", f.dst_ip, f.dst_port)),
            ("BW_COMPANY", f.company.clone().unwrap_or_default()),
            ("BW_CATEGORY", f.category.clone().unwrap_or_default()),
            ("BW_SEVERITY", f.severity.clone().unwrap_or_default()),
        ];
        let payload: String = fields
            .iter()
            .map(|(k, v)| format!("{k}={}\n", clean(v)))
            .collect();
        if let Ok(sock) = UnixDatagram::unbound() {
            if sock
                .send_to(payload.as_bytes(), defaults::JOURNAL_SOCKET)
                .is_ok()
            {
                return;
            }
        }
    }
    log::warn!("alert: {message}");
}
