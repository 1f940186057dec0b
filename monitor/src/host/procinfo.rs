//! What procfs says about a live process (for processes that started before brokerwatch,
//! and to add a command line to a process whose exec the kernel reported).

use std::path::PathBuf;

use procfs::process::Process;

use super::cgroup::parse_proc_cgroup;

/// A live process as procfs shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcSnapshot {
    pub pid: u32,
    pub ppid: u32,
    pub comm: String,
    pub exe: Option<PathBuf>,
    pub cmdline: Vec<String>,
    pub uid: u32,
    /// cgroup v2 path (`/user.slice/...`).
    pub cgroup: Option<String>,
}

/// Reads `/proc/PID`; `None` when the process is gone.
pub fn snapshot(pid: u32) -> Option<ProcSnapshot> {
    let proc = Process::new(pid as i32).ok()?;
    let stat = proc.stat().ok()?;
    Some(ProcSnapshot {
        pid,
        ppid: stat.ppid.max(0) as u32,
        comm: stat.comm,
        exe: proc.exe().ok(),
        cmdline: proc.cmdline().unwrap_or_default(),
        uid: proc.uid().unwrap_or(u32::MAX),
        cgroup: std::fs::read_to_string(format!("/proc/{pid}/cgroup"))
            .ok()
            .and_then(|t| parse_proc_cgroup(&t)),
    })
}

/// Every live process id.
pub fn all_pids() -> Vec<u32> {
    match procfs::process::all_processes() {
        Ok(iter) => iter.flatten().map(|p| p.pid as u32).collect(),
        Err(_) => Vec::new(),
    }
}

/// Parses the text of `/proc/PID/stat` into (comm, ppid). The name may hold spaces and
/// parentheses, so it runs from the first `(` to the last `)`.
pub fn parse_stat(text: &str) -> Option<(String, u32)> {
    let stat = stat_of(text)?;
    Some((stat.comm, stat.ppid.max(0) as u32))
}

/// procfs's parser, behind a check it lacks: it panics when the last `)` comes before the
/// first `(` (found by fuzzing).
fn stat_of(text: &str) -> Option<procfs::process::Stat> {
    use procfs::FromRead as _;
    match (text.find('('), text.rfind(')')) {
        (Some(open), Some(close)) if open < close => {}
        _ => return None,
    }
    procfs::process::Stat::from_read(text.as_bytes()).ok()
}

/// When process `pid` started (clock ticks after boot, field 22 of `/proc/PID/stat`), if it
/// runs.
pub fn start_time(pid: u32) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat_of(&text).map(|s| s.starttime)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_with_spaces_and_parens_in_the_name() {
        let text = "4242 (Web Content (x)) S 4100 4242 4100 0 -1 4194560 1 0 0 0 0 0 0 0 20 0 1 0 100 1000 10 18446744073709551615 1 1 0 0 0 0 0 0 0 0 0 0 17 1 0 0 0 0 0 0 0 0 0 0 0 0 0\n";
        assert_eq!(parse_stat(text), Some(("Web Content (x)".into(), 4100)));
        assert_eq!(parse_stat("garbage"), None);
    }

    #[test]
    fn snapshot_of_self_and_of_a_dead_pid() {
        let me = snapshot(std::process::id()).expect("self");
        assert_eq!(me.pid, std::process::id());
        assert!(me.exe.is_some());
        assert!(me.cgroup.is_some());
        assert_eq!(snapshot(u32::MAX - 1), None);
    }

    // Found by fuzzing: procfs panicked on a `)` before the `(`.
    #[test]
    fn procinfo_parse_stat_refuses_a_close_paren_before_the_open_one() {
        assert_eq!(parse_stat(")(>"), None);
        assert_eq!(parse_stat(""), None);
    }
}
