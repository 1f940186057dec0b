//! The alert history: one JSON object per line in the state directory, appended as alerts
//! happen, trimmed to a retention limit, and read back by `brokerwatch history`.

use std::{
    fs::{File, OpenOptions},
    io::{self, BufRead, BufReader, Write},
    os::unix::fs::{
        DirBuilderExt as _, MetadataExt as _, OpenOptionsExt as _, PermissionsExt as _,
    },
    path::{Path, PathBuf},
    time::Duration,
};

use crate::{host::clock::now_ms, protocol::Alert};

/// Bounds of the history kept on disk.
#[derive(Debug, Clone, Copy)]
pub struct Retention {
    pub max_age: Duration,
    pub max_entries: usize,
}

impl Default for Retention {
    fn default() -> Self {
        Self {
            max_age: Duration::from_secs(30 * 24 * 3600),
            max_entries: 100_000,
        }
    }
}

pub struct History {
    path: PathBuf,
    file: File,
    retention: Retention,
    appended: usize,
}

impl History {
    /// Opens (creating) `dir/history.jsonl` and trims it. The directory must be ours (it is
    /// made 0700) and the file is 0600: the history holds every user's alerts and command
    /// lines, and only the daemon (and root) may read it.
    pub fn open(dir: &Path, retention: Retention) -> io::Result<Self> {
        private_dir(dir)?;
        let path = dir.join("history.jsonl");
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&path)?;
        file.set_permissions(std::fs::Permissions::from_mode(0o600))?;
        let mut h = Self {
            file,
            path,
            retention,
            appended: 0,
        };
        h.trim()?;
        Ok(h)
    }

    /// Appends one alert, handed to the kernel at once so that a crash right after loses
    /// nothing already announced.
    pub fn append(&mut self, alert: &Alert) -> io::Result<()> {
        let line = crate::protocol::encode(alert);
        self.file.write_all(line.as_bytes())?;
        self.appended += 1;
        if self.appended.is_multiple_of(1024) {
            self.trim()?;
        }
        Ok(())
    }

    /// Alerts since `since_ms` (epoch milliseconds), oldest first.
    pub fn read_since(&self, since_ms: u64) -> io::Result<Vec<Alert>> {
        Self::read_file(&self.path, since_ms)
    }

    /// Where the history is kept.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// [`History::read_since`] without the writer: for queries on other threads (appends
    /// are whole lines, and a trim replaces the file atomically).
    pub fn read_file(path: &Path, since_ms: u64) -> io::Result<Vec<Alert>> {
        let f = File::open(path)?;
        Ok(BufReader::new(f)
            .lines()
            .map_while(Result::ok)
            .filter_map(|l| serde_json::from_str::<Alert>(&l).ok())
            .filter(|a| a.ts_ms >= since_ms)
            .collect())
    }

    /// Drops entries past the retention limits (rewrites the file atomically).
    pub fn trim(&mut self) -> io::Result<()> {
        let oldest = now_ms().saturating_sub(self.retention.max_age.as_millis() as u64);
        let mut keep = self.read_since(oldest)?;
        let total_lines = BufReader::new(File::open(&self.path)?).lines().count();
        if keep.len() > self.retention.max_entries {
            keep.drain(..keep.len() - self.retention.max_entries);
        }
        if keep.len() == total_lines {
            return Ok(());
        }
        let tmp = self.path.with_extension("jsonl.tmp");
        {
            // Never through a link someone left at the temporary name.
            match std::fs::remove_file(&tmp) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
                _ => {}
            }
            let mut f = OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&tmp)?;
            for a in &keep {
                f.write_all(crate::protocol::encode(a).as_bytes())?;
            }
            f.sync_all()?;
        }
        std::fs::rename(&tmp, &self.path)?;
        self.file = OpenOptions::new().append(true).open(&self.path)?;
        Ok(())
    }
}

/// Creates `dir` (0700) or checks that it belongs to us, and makes it 0700.
fn private_dir(dir: &Path) -> io::Result<()> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)?;
    let meta = std::fs::symlink_metadata(dir)?;
    // SAFETY: no arguments.
    let me = unsafe { libc::geteuid() };
    if !meta.is_dir() || meta.uid() != me {
        return Err(io::Error::new(
            io::ErrorKind::PermissionDenied,
            format!(
                "is not a directory owned by uid {me} (owner uid {}); refusing to keep the history where another user can change it",
                meta.uid()
            ),
        ));
    }
    if meta.mode() & 0o077 != 0 {
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::finding::Finding;

    fn alert(ts_ms: u64, pid: u32) -> Alert {
        Alert {
            finding: Finding {
                pid,
                ..Finding::default()
            },
            ts_ms,
            connect_boot_ns: 0,
            decided_boot_ns: 0,
        }
    }

    #[test]
    fn history_appends_survive_reopen_and_retention_trims() {
        let dir = std::env::temp_dir().join(format!("bw-history-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let now = now_ms();
        {
            let mut h = History::open(&dir, Retention::default()).unwrap();
            h.append(&alert(now - 10_000, 1)).unwrap();
            h.append(&alert(now, 2)).unwrap();
            h.append(&alert(now - 40 * 24 * 3600 * 1000, 0)).unwrap();
        }
        let h = History::open(
            &dir,
            Retention {
                max_age: Duration::from_secs(24 * 3600),
                max_entries: 1,
            },
        )
        .unwrap();
        let all = h.read_since(0).unwrap();
        assert_eq!(all.len(), 1, "{all:?}");
        assert_eq!(all[0].finding.pid, 2);
        assert_eq!(h.read_since(now + 1).unwrap().len(), 0);
        std::fs::remove_dir_all(&dir).ok();
    }
}
