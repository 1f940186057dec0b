//! Wakes the daemon when a policy file may have changed, instead of it looking at every
//! file every second: inotify on the directories that hold the policy's files (editors and
//! package managers replace a file by renaming a new one over it, which a watch on the
//! file itself would miss) and on the directories of symbolic links' targets.
//!
//! An event only says "look": the daemon compares the files' sizes and times as before,
//! so an event in a watched directory that touches no policy file reloads nothing. What a
//! watch cannot see (a directory missing at start, a network filesystem, a full event
//! queue) the daemon's slower periodic look still finds, at most
//! [`crate::defaults::POLICY_LOOK_EVERY`] late; a watch that broke makes it look on every
//! tick again.

use std::{
    collections::BTreeSet,
    path::{Path, PathBuf},
};

use inotify::{EventMask, Inotify, WatchMask};
use tokio::io::{unix::AsyncFd, Interest};

use crate::policy::PolicySources;

/// What makes a directory's policy files worth a look.
const MASK: WatchMask = WatchMask::CLOSE_WRITE
    .union(WatchMask::MOVED_TO)
    .union(WatchMask::MOVED_FROM)
    .union(WatchMask::CREATE)
    .union(WatchMask::DELETE)
    .union(WatchMask::ATTRIB)
    .union(WatchMask::DELETE_SELF)
    .union(WatchMask::MOVE_SELF);

pub struct PolicyWatch {
    fd: Option<AsyncFd<Inotify>>,
    /// Every directory of the policy is watched, and no watch broke since.
    complete: bool,
    buf: Vec<u8>,
}

impl PolicyWatch {
    /// Watches the directories of `sources`' files; without inotify (or its limits
    /// reached), nothing, and [`Self::complete`] says so.
    pub fn new(sources: &PolicySources) -> Self {
        let dirs = directories(sources);
        let mut watch = Self {
            fd: None,
            complete: false,
            buf: vec![0; 4096],
        };
        let inotify = match Inotify::init() {
            Ok(i) => i,
            Err(e) => {
                log::info!("cannot watch the policy files ({e}): looking at them every tick");
                return watch;
            }
        };
        let mut complete = true;
        for dir in &dirs {
            if let Err(e) = inotify.watches().add(dir, MASK) {
                log::debug!("cannot watch {}: {e}", dir.display());
                complete = false;
            }
        }
        // SAFETY: `Inotify` owns its descriptor, closes it only when dropped (with the
        // `AsyncFd` that owns it) and hands out the same one every time.
        match unsafe { AsyncFd::register_with_interest(inotify, Interest::READABLE) } {
            Ok(fd) => {
                watch.fd = Some(fd);
                watch.complete = complete;
            }
            Err(e) => log::info!("cannot watch the policy files ({e}): looking every tick"),
        }
        watch
    }

    /// Whether every directory of the policy is watched (else the daemon looks at the
    /// files on every tick).
    pub fn complete(&self) -> bool {
        self.complete
    }

    /// Resolves when something happened in a watched directory (every event waiting is
    /// taken); never while nothing is watched. Cancel-safe: events wait in the kernel.
    pub async fn changed(&mut self) {
        let Self { fd, complete, buf } = self;
        let Some(async_fd) = fd else {
            return std::future::pending().await;
        };
        loop {
            let mut guard = match async_fd.readable_mut().await {
                Ok(g) => g,
                Err(e) => {
                    log::info!("the policy watch failed ({e}): looking every tick");
                    *fd = None;
                    *complete = false;
                    return;
                }
            };
            let read = guard.try_io(|inner| {
                let mut broke = false;
                let mut any = false;
                for event in inner.get_mut().read_events(buf)? {
                    any = true;
                    // The queue overflowed, or a watched directory went away.
                    broke |= event.mask.intersects(
                        EventMask::Q_OVERFLOW | EventMask::IGNORED | EventMask::DELETE_SELF,
                    );
                }
                Ok((any, broke))
            });
            match read {
                Ok(Ok((any, broke))) => {
                    if broke {
                        *complete = false;
                    }
                    if any || broke {
                        return;
                    }
                }
                Ok(Err(e)) => {
                    log::info!("the policy watch failed ({e}): looking every tick");
                    *fd = None;
                    *complete = false;
                    return;
                }
                // Not readable after all: wait again.
                Err(_) => continue,
            }
        }
    }
}

/// The directories whose entries make up the policy: the system directory, the files' and
/// imports' directories, and those of symbolic links' targets among them.
pub fn directories(sources: &PolicySources) -> BTreeSet<PathBuf> {
    let mut paths: Vec<PathBuf> = sources.files.clone();
    paths.extend(sources.imports.iter().map(|i| i.path.clone()));
    let mut dirs = BTreeSet::new();
    if let Some(dir) = &sources.system_dir {
        dirs.insert(dir.clone());
        if let Ok(rd) = std::fs::read_dir(dir) {
            paths.extend(rd.flatten().map(|e| e.path()));
        }
    }
    for path in &paths {
        if let Some(parent) = parent_of(path) {
            dirs.insert(parent);
        }
        let is_link = std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_symlink());
        if is_link {
            if let Some(parent) = std::fs::canonicalize(path).ok().and_then(|t| parent_of(&t)) {
                dirs.insert(parent);
            }
        }
    }
    dirs
}

fn parent_of(path: &Path) -> Option<PathBuf> {
    match path.parent() {
        Some(p) if p.as_os_str().is_empty() => Some(PathBuf::from(".")),
        Some(p) => Some(p.to_owned()),
        None => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn sources_in(dir: &Path, files: Vec<PathBuf>) -> PolicySources {
        PolicySources {
            system_dir: Some(dir.to_owned()),
            files,
            imports: Vec::new(),
        }
    }

    #[test]
    fn policy_watch_covers_the_directory_the_files_and_a_links_target() {
        let base = std::env::temp_dir().join(format!("bw-pw-dirs-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&base);
        let (sys, other, target) = (base.join("sys"), base.join("other"), base.join("target"));
        for d in [&sys, &other, &target] {
            std::fs::create_dir_all(d).unwrap();
        }
        std::fs::write(target.join("shared.toml"), "").unwrap();
        std::os::unix::fs::symlink(target.join("shared.toml"), sys.join("shared.toml")).unwrap();
        let dirs = directories(&sources_in(&sys, vec![other.join("mine.toml")]));
        let want: BTreeSet<PathBuf> = [sys, other, target.canonicalize().unwrap()].into();
        assert_eq!(dirs, want);
        std::fs::remove_dir_all(&base).unwrap();
    }

    #[tokio::test]
    async fn policy_watch_wakes_on_a_file_renamed_into_place_and_stays_asleep_otherwise() {
        let dir = std::env::temp_dir().join(format!("bw-pw-wake-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let mut watch = PolicyWatch::new(&sources_in(&dir, Vec::new()));
        assert!(watch.complete(), "the directory is watched");
        let quiet = tokio::time::timeout(Duration::from_millis(200), watch.changed()).await;
        assert!(quiet.is_err(), "nothing happened: no wake");
        // An editor's save: a new file renamed over the old name.
        std::fs::write(dir.join(".rules.toml.swp"), "x").unwrap();
        std::fs::rename(dir.join(".rules.toml.swp"), dir.join("rules.toml")).unwrap();
        tokio::time::timeout(Duration::from_secs(5), watch.changed())
            .await
            .expect("woken by the save");
        // The directory removed: the watch says it is no longer complete.
        std::fs::remove_dir_all(&dir).unwrap();
        for _ in 0..4 {
            if !watch.complete() {
                break;
            }
            tokio::time::timeout(Duration::from_secs(5), watch.changed())
                .await
                .expect("woken by the removal");
        }
        assert!(
            !watch.complete(),
            "a broken watch makes the daemon look every tick"
        );
    }
}
