//! Talking to systemd: readiness and watchdog (`sd_notify`). Journal entries: `journal.rs`.

use std::{os::unix::net::UnixDatagram, path::PathBuf};

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
