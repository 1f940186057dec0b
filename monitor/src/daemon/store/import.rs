//! Alerts from the JSON-lines history of earlier versions move into the store once, a
//! chunk at a time between the writer's other work: a long old history never holds up the
//! alerts of now. The old file is renamed `history.jsonl.imported` when it is done.

use std::{
    fs::File,
    io::{self, BufRead as _},
    os::unix::fs::OpenOptionsExt as _,
    path::PathBuf,
};

use rusqlite::Connection;

use super::{sql, StoreError};

/// Alerts imported per transaction.
pub const IMPORT_CHUNK: usize = 1000;

/// An import under way.
pub struct JsonlImport {
    old: PathBuf,
    lines: io::Split<io::BufReader<File>>,
    ok: usize,
    bad: usize,
}

impl JsonlImport {
    /// The old history next to the store at `store_path`, if there is one to import (a
    /// regular file, not followed through a symlink).
    pub fn find(store_path: &std::path::Path) -> Option<Self> {
        let old = store_path.with_file_name("history.jsonl");
        let file = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
            .open(&old)
            .ok()?;
        if !file.metadata().is_ok_and(|m| m.is_file()) {
            return None;
        }
        Some(Self {
            old,
            lines: io::BufReader::new(file).split(b'\n'),
            ok: 0,
            bad: 0,
        })
    }

    /// Imports up to [`IMPORT_CHUNK`] alerts in one transaction; `Ok(true)` once the file
    /// is done (and renamed).
    pub fn step(&mut self, db: &mut Connection) -> Result<bool, StoreError> {
        let tx = db.transaction()?;
        let mut done = true;
        for _ in 0..IMPORT_CHUNK {
            let Some(line) = self.lines.next() else {
                break;
            };
            done = false;
            match sql::decode_alert(&line?) {
                Ok(a) => {
                    sql::insert_alert(&tx, &a)?;
                    self.ok += 1;
                }
                Err(_) => self.bad += 1,
            }
        }
        tx.commit()?;
        if done {
            let _ = std::fs::rename(&self.old, self.old.with_extension("jsonl.imported"));
            log::info!(
                "imported {} alerts from {} ({} unreadable lines skipped)",
                self.ok,
                self.old.display(),
                self.bad
            );
        }
        Ok(done)
    }
}
