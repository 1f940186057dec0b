//! The live view of an audit on a terminal: a status line on stderr (elapsed time,
//! processes, connections, flagged contacts) and each flagged contact as it happens.
//! Nothing of it reaches the report (stdout or `--output`).

use std::{
    io::Write as _,
    time::{Duration, Instant},
};

use crate::finding::Finding;

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
        let ts = f.ts();
        let _ = writeln!(
            std::io::stderr(),
            "\r\x1b[K\x1b[1;31m{} {}\x1b[0m {}[{}] -> {} ({}, {}){}",
            ts.get(11..19).unwrap_or(""),
            f.severity.map_or("", |s| s.as_str()).to_uppercase(),
            f.who(),
            f.pid,
            f.destination(),
            f.company.as_deref().unwrap_or("?"),
            f.category.as_ref().map_or("?", |c| c.as_str()),
            crate::report::text::block_mark(f),
        );
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

fn elapsed(d: Duration) -> String {
    let s = d.as_secs();
    format!("{:02}:{:02}", s / 60, s % 60)
}
