//! What procfs says about a live process (for processes that started before brokerwatch,
//! and to add a command line to a process whose exec the kernel reported).

use std::path::PathBuf;

use procfs::process::Process;

/// The v2 path of a process's cgroup from the text of `/proc/PID/cgroup` (`0::/path`).
pub fn parse_proc_cgroup(text: &str) -> Option<String> {
    text.lines()
        .find_map(|l| l.strip_prefix("0::"))
        .map(|p| p.trim_end().to_owned())
}

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
    let stat = read_stat(pid)?;
    Some(ProcSnapshot {
        pid,
        ppid: stat.ppid,
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
    let stat = Stat::parse(text)?;
    Some((stat.comm, stat.ppid))
}

/// The fields of `/proc/PID/stat` brokerwatch uses. Parsed here rather than by procfs,
/// whose parser panics on some malformed texts (found by fuzzing: a `)` before the `(`, a
/// multibyte character right after the `)`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stat {
    pub comm: String,
    pub ppid: u32,
    /// Clock ticks after boot (field 22).
    pub starttime: u64,
}

impl Stat {
    pub fn parse(text: &str) -> Option<Self> {
        let open = text.find('(')?;
        let close = text.rfind(')')?;
        let comm = text.get(open + 1..close)?.to_owned();
        // Fields 3 onwards: state, ppid, ..., starttime (22).
        let mut rest = text.get(close + 1..)?.split_ascii_whitespace();
        let ppid = rest.nth(1)?.parse::<i64>().ok()?.max(0) as u32;
        let starttime = rest.nth(22 - 5)?.parse().ok()?;
        Some(Self {
            comm,
            ppid,
            starttime,
        })
    }
}

fn read_stat(pid: u32) -> Option<Stat> {
    let bytes = std::fs::read(format!("/proc/{pid}/stat")).ok()?;
    Stat::parse(&String::from_utf8_lossy(&bytes))
}

/// When process `pid` started (clock ticks after boot, field 22 of `/proc/PID/stat`), if it
/// runs.
pub fn start_time(pid: u32) -> Option<u64> {
    read_stat(pid).map(|s| s.starttime)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_proc_pid_cgroup() {
        let text = "12:pids:/user.slice\n1:name=systemd:/user.slice/x.scope\n0::/user.slice/user-1000.slice/user@1000.service/app.slice/app-flatpak-us.zoom.Zoom-1234.scope\n";
        assert_eq!(
            parse_proc_cgroup(text).as_deref(),
            Some("/user.slice/user-1000.slice/user@1000.service/app.slice/app-flatpak-us.zoom.Zoom-1234.scope")
        );
        assert_eq!(parse_proc_cgroup("0::/\n").as_deref(), Some("/"));
        assert_eq!(parse_proc_cgroup("5:cpu:/x\n"), None);
    }

    #[test]
    fn stat_with_spaces_and_parens_in_the_name() {
        let text = "4242 (Web Content (x)) S 4100 4242 4100 0 -1 4194560 1 0 0 0 0 0 0 0 20 0 1 0 100 1000 10 18446744073709551615 1 1 0 0 0 0 0 0 0 0 0 0 17 1 0 0 0 0 0 0 0 0 0 0 0 0 0\n";
        assert_eq!(parse_stat(text), Some(("Web Content (x)".into(), 4100)));
        assert_eq!(Stat::parse(text).unwrap().starttime, 100);
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

    // Found by fuzzing: procfs panicked on a `)` before the `(` and on a multibyte
    // character right after the `)`.
    #[test]
    fn procinfo_parse_stat_refuses_malformed_texts_without_panicking() {
        assert_eq!(parse_stat(")(>"), None);
        assert_eq!(parse_stat(""), None);
        assert_eq!(parse_stat("1 (a)\u{e9}\u{e9} 2"), None);
        // Too few fields.
        assert_eq!(parse_stat("1 (a) S -5 0"), None);
    }

    #[test]
    fn procinfo_start_time_agrees_with_procfs() {
        let me = std::process::id();
        let theirs = procfs::process::Process::new(me as i32)
            .unwrap()
            .stat()
            .unwrap()
            .starttime;
        assert_eq!(start_time(me), Some(theirs));
    }
}
