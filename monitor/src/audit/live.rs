//! The live view of an audit on a terminal: a status line on stderr (elapsed time,
//! processes, connections, flagged contacts) and each flagged contact as it happens.
//! Nothing of it reaches the report (stdout or `--output`).

use std::{
    io::Write as _,
    time::{Duration, Instant},
};

use crate::{display::safe, finding::Finding};

pub struct Live {
    on: bool,
    started: Instant,
    flagged: u64,
}

impl Live {
    /// Shown when asked and standard error is a terminal.
    pub fn new(wanted: bool) -> Self {
        use std::io::IsTerminal as _;
        Self {
            on: wanted && std::io::stderr().is_terminal(),
            started: Instant::now(),
            flagged: 0,
        }
    }

    pub fn on(&self) -> bool {
        self.on
    }

    /// A new connection row: printed (above the status line) when flagged.
    pub fn contact(&mut self, f: &Finding) {
        if !self.on || !f.flagged {
            return;
        }
        self.flagged += 1;
        let _ = writeln!(std::io::stderr(), "{}", contact_line(f));
    }

    /// Redraws the status line.
    pub fn status(&self, processes: u64, connections: u64) {
        if !self.on {
            return;
        }
        let _ = write!(
            std::io::stderr(),
            "\r\x1b[K[{}] {processes} processes, {connections} connections, {} flagged",
            elapsed(self.started.elapsed()),
            self.flagged
        );
        let _ = std::io::stderr().flush();
    }

    /// Clears the status line before the report.
    pub fn finish(&self) {
        if self.on {
            let _ = write!(std::io::stderr(), "\r\x1b[K");
        }
    }
}

/// The live line of a flagged contact (after clearing the status line); names are made
/// safe to show: only brokerwatch's own escapes reach the terminal.
fn contact_line(f: &Finding) -> String {
    let ts = f.ts();
    format!(
        "\r\x1b[K\x1b[1;31m{} {}\x1b[0m {}[{}] -> {} ({}, {}){}",
        ts.get(11..19).unwrap_or(""),
        f.severity.map_or("", |s| s.as_str()).to_uppercase(),
        safe(f.who()),
        f.pid,
        safe(&f.destination()),
        safe(f.company.as_deref().unwrap_or("?")),
        safe(f.category.as_ref().map_or("?", |c| c.as_str())),
        crate::report::text::block_mark(f),
    )
}

fn elapsed(d: Duration) -> String {
    let s = d.as_secs();
    format!("{:02}:{:02}", s / 60, s % 60)
}

#[cfg(test)]
mod tests {
    use super::*;

    // Issue 22, item 2: the live line is the only text brokerwatch colours itself.
    #[test]
    fn live_lines_keep_only_brokerwatchs_own_escapes() {
        let f = Finding {
            comm: "\u{1b}[2J".into(),
            domain: Some("x\u{9b}31m\u{202e}".into()),
            flagged: true,
            ..Finding::default()
        };
        let line = contact_line(&f);
        let ours = ["\r\x1b[K\x1b[1;31m", "\x1b[0m"];
        let mut rest = line.clone();
        for e in ours {
            rest = rest.replacen(e, "", 1);
        }
        for c in ['\u{1b}', '\u{9b}', '\u{202e}'] {
            assert!(!rest.contains(c), "{line:?}");
        }
    }
}
