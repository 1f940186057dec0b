//! The plaintext part of a session (issue 25, opt-in): the sensor reads every process
//! watched by pid from the moment it is watched; processes the kernel starts watching
//! (fork) are read as soon as their record arrives; the inspector takes the plaintext
//! records; a process that ends is let go. A uprobe bound to a process follows it through
//! `execve()` (the launched command is read from before its first instruction); a
//! library it maps later is found on the next tick. A process the kernel starts watching at
//! its exec (an app found by name) is read from when its exec record is handled, a few
//! milliseconds later: writes before that are not read.

use std::collections::HashMap;

use crate::{
    inspect::{Identifier, InspectStats, Inspector, LeakAgg, LeakKey},
    kernel::{wire::Record, Sensor},
};

/// What a session reads, and for whom.
#[derive(Debug, Clone, Default)]
pub struct PlaintextSettings {
    /// The machine's identifiers (every user's processes are searched for them).
    pub machine: Vec<Identifier>,
    /// Each user's own identifiers, by uid.
    pub own: HashMap<u32, Vec<Identifier>>,
}

/// The inspector and the processes waiting to be read or let go.
#[derive(Debug)]
pub struct Plaintext {
    pub inspector: Inspector,
    /// Processes to read, and whether each just executed a program (its own directories
    /// and library path are then looked at again).
    to_read: Vec<(u32, bool)>,
    ended: Vec<u32>,
    /// Processes that ended whose rows are still held (see [`Plaintext::forget_finished`]).
    finished: Vec<u32>,
    /// Libraries or symbols that could not be probed, each said once.
    said: Vec<String>,
    /// Programs whose TLS cannot be read (built in without symbols), each once.
    pub not_readable: Vec<String>,
}

impl Plaintext {
    pub fn new(settings: PlaintextSettings) -> Self {
        Self {
            inspector: Inspector::new(settings.machine, settings.own),
            to_read: Vec::new(),
            ended: Vec::new(),
            finished: Vec::new(),
            said: Vec::new(),
            not_readable: Vec::new(),
        }
    }

    /// Takes what concerns plaintext in one record.
    pub fn observe(&mut self, r: &Record) {
        match r {
            Record::Plain(p) => self.inspector.feed(p),
            // A process the kernel starts watching when it executes an app's program.
            Record::Exec(e) => self.to_read.push((e.header.tgid, true)),
            Record::Fork(f) => self.to_read.push((f.child_tgid, false)),
            Record::Exit(e) => self.ended.push(e.header.tgid),
            _ => {}
        }
    }

    /// Reads the processes that became watched, lets go of those that ended.
    pub fn apply(&mut self, sensor: &mut Sensor) {
        for pid in std::mem::take(&mut self.ended) {
            sensor.stop_reading_plaintext_of(pid);
            self.inspector.forget_process(pid);
            self.to_read.retain(|(p, _)| *p != pid);
            self.finished.push(pid);
        }
        for (pid, exec) in std::mem::take(&mut self.to_read) {
            self.read(sensor, pid, exec);
        }
    }

    /// Looks again at every process read for TLS libraries it mapped since (an app
    /// loads its own copy after it starts).
    pub fn rescan(&mut self, sensor: &mut Sensor) {
        for pid in sensor.plaintext_pids() {
            if std::path::Path::new(&format!("/proc/{pid}")).exists() {
                self.read(sensor, pid, false);
            } else {
                sensor.stop_reading_plaintext_of(pid);
                self.inspector.forget_process(pid);
                self.finished.push(pid);
            }
        }
    }

    fn read(&mut self, sensor: &mut Sensor, pid: u32, exec: bool) {
        let result = sensor.read_plaintext_of(pid, exec);
        // A process that ended before its probes were made: nothing to say.
        if !std::path::Path::new(&format!("/proc/{pid}")).exists() {
            sensor.stop_reading_plaintext_of(pid);
            return;
        }
        match result {
            Ok(done) => {
                if let Some(why) = done.not_readable {
                    if !self.not_readable.contains(&why) && self.not_readable.len() < 64 {
                        log::warn!("plaintext not readable: {why}");
                        self.not_readable.push(why);
                    }
                }
                for p in done.problems {
                    if !self.said.contains(&p) {
                        log::info!("plaintext not read: {p}");
                        self.said.push(p);
                    }
                }
            }
            Err(why) => {
                if !self.said.contains(&why) {
                    log::warn!("cannot read what watched processes send: {why}");
                    self.said.push(why);
                }
            }
        }
    }

    /// Lets go of the rows of processes that ended (a daemon calls it once it stored them;
    /// an audit keeps every row to its end). Returns those processes.
    pub fn forget_finished(&mut self) -> Vec<u32> {
        let pids = std::mem::take(&mut self.finished);
        for pid in &pids {
            self.inspector.forget_rows_of(*pid);
        }
        pids
    }

    /// Every row found so far.
    pub fn rows(&self) -> Vec<(&LeakKey, &LeakAgg)> {
        self.inspector.leaks()
    }

    pub fn stats(&self) -> InspectStats {
        self.inspector.stats
    }
}
