//! Reading configuration an administrator points us at (policy files, imported lists) safely:
//! a path that someone swapped for a FIFO, a device or a huge file is refused quickly with a
//! clear message instead of freezing or filling the daemon, and files others could rewrite
//! are pointed out.

use std::{
    fs::{File, Metadata, OpenOptions},
    io::{self, Read as _},
    os::unix::fs::{FileTypeExt as _, MetadataExt as _, OpenOptionsExt as _},
    path::Path,
};

/// Largest policy (TOML) file read.
pub const MAX_POLICY_BYTES: u64 = 16 << 20;
/// Largest imported list read (the biggest public lists are tens of MiB).
pub const MAX_LIST_BYTES: u64 = 512 << 20;

#[derive(Debug, thiserror::Error)]
pub enum FileError {
    #[error("{0}")]
    Io(#[from] io::Error),
    #[error("is a {0}, not a regular file (refused: reading it could block or never end)")]
    NotRegular(&'static str),
    #[error("is a directory")]
    Directory,
    #[error("is larger than the {} MiB limit", .0 >> 20)]
    TooLarge(u64),
    #[error("line {line}, column {column}: invalid UTF-8 (byte 0x{byte:02x})")]
    InvalidUtf8 {
        line: usize,
        column: usize,
        byte: u8,
    },
}

fn kind(meta: &Metadata) -> Option<&'static str> {
    let t = meta.file_type();
    if t.is_file() {
        None
    } else if t.is_fifo() {
        Some("FIFO")
    } else if t.is_char_device() {
        Some("character device")
    } else if t.is_block_device() {
        Some("block device")
    } else if t.is_socket() {
        Some("socket")
    } else {
        Some("special file")
    }
}

/// Opens `path` without ever blocking (a FIFO opens at once and is then refused) and
/// checks that what was opened, after following symlinks, is a regular file.
fn open_regular(path: &Path) -> Result<(File, Metadata), FileError> {
    let f = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(path)?;
    let meta = f.metadata()?;
    if meta.is_dir() {
        return Err(FileError::Directory);
    }
    if let Some(k) = kind(&meta) {
        return Err(FileError::NotRegular(k));
    }
    Ok((f, meta))
}

/// Who besides root could change what a root daemon reads at `path`, if anyone: the file's
/// owner or group/other write bits, or the same for its directory (which lets one swap the
/// file) unless the directory is sticky and the file root's.
pub fn writable_by_others(path: &Path, meta: &Metadata) -> Option<String> {
    if meta.uid() != 0 {
        return Some(format!("it belongs to uid {}", meta.uid()));
    }
    if meta.mode() & 0o022 != 0 {
        return Some(format!("its mode is {:o}", meta.mode() & 0o7777));
    }
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty())?;
    let dmeta = std::fs::metadata(dir).ok()?;
    let sticky = dmeta.mode() & 0o1000 != 0;
    if dmeta.uid() != 0 {
        return Some(format!("{} belongs to uid {}", dir.display(), dmeta.uid()));
    }
    if dmeta.mode() & 0o022 != 0 && !sticky {
        return Some(format!(
            "{} has mode {:o}",
            dir.display(),
            dmeta.mode() & 0o7777
        ));
    }
    None
}

/// Writes `bytes` to a new root-only (0600) file beside `path` and renames it over:
/// never half a file, never through a link someone planted.
pub fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    write_atomic(path, bytes, 0o600)
}

/// Writes `bytes` to a new file of `mode` beside `path` (`NAME.tmp.PID`) and renames it
/// over: readers see the old file or the new one, never half of one, and never write
/// through a link someone planted.
pub fn write_atomic(path: &Path, bytes: &[u8], mode: u32) -> std::io::Result<()> {
    use std::io::Write as _;
    let tmp = path.with_extension(format!("tmp.{}", std::process::id()));
    let _ = std::fs::remove_file(&tmp);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .custom_flags(libc::O_NOFOLLOW)
        .open(&tmp)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)
}

/// Reads a text file of at most `limit` bytes. Refuses FIFOs, devices, sockets and
/// directories; reports invalid UTF-8 with its line and column. When we run as root, warns
/// (in the log) if anyone else could rewrite the file.
pub fn read_text(path: &Path, limit: u64) -> Result<String, FileError> {
    let (f, meta) = open_regular(path)?;
    if meta.len() > limit {
        return Err(FileError::TooLarge(limit));
    }
    if super::users::euid() == 0 {
        if let Some(why) = writable_by_others(path, &meta) {
            log::warn!(
                "{}: others than root can change this file ({why}); anyone who can may change what brokerwatch flags",
                path.display()
            );
        }
    }
    let mut buf = Vec::with_capacity(meta.len() as usize);
    f.take(limit + 1).read_to_end(&mut buf)?;
    if buf.len() as u64 > limit {
        return Err(FileError::TooLarge(limit));
    }
    String::from_utf8(buf).map_err(|e| {
        let at = e.utf8_error().valid_up_to();
        let bytes = e.as_bytes();
        let line_start = bytes[..at]
            .iter()
            .rposition(|&b| b == b'\n')
            .map_or(0, |i| i + 1);
        let line = 1 + bytes[..at].iter().filter(|&&b| b == b'\n').count();
        // Columns count characters, as editors show them.
        let column = 1 + String::from_utf8_lossy(&bytes[line_start..at])
            .chars()
            .count();
        FileError::InvalidUtf8 {
            line,
            column,
            byte: bytes[at],
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, Instant};

    fn dir(name: &str) -> std::path::PathBuf {
        let d = std::env::temp_dir().join(format!("bw-files-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn list_path_swapped_for_a_fifo_or_device_is_refused_at_once() {
        // Issue 16, item 7: a FIFO froze the daemon; a symlink to /dev/zero ate 4 GB.
        let d = dir("fifo");
        let fifo = d.join("list.txt");
        let c = std::ffi::CString::new(fifo.as_os_str().as_encoded_bytes()).unwrap();
        // SAFETY: a valid NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o644) }, 0);
        let t = Instant::now();
        let e = read_text(&fifo, MAX_LIST_BYTES).unwrap_err();
        assert!(t.elapsed() < Duration::from_secs(5), "blocked on the FIFO");
        assert!(e.to_string().contains("FIFO"), "{e}");

        let zero = d.join("zero.txt");
        std::os::unix::fs::symlink("/dev/zero", &zero).unwrap();
        let e = read_text(&zero, MAX_LIST_BYTES).unwrap_err();
        assert!(e.to_string().contains("character device"), "{e}");
        let e = read_text(&d, MAX_LIST_BYTES).unwrap_err();
        assert!(matches!(e, FileError::Directory), "{e}");
        std::fs::remove_dir_all(&d).ok();
    }

    #[test]
    fn list_larger_than_the_limit_is_refused_without_reading_it_all() {
        let d = dir("big");
        let p = d.join("big.txt");
        std::fs::write(&p, vec![b'a'; 4096]).unwrap();
        assert!(matches!(
            read_text(&p, 1024).unwrap_err(),
            FileError::TooLarge(1024)
        ));
        assert_eq!(read_text(&p, 4096).unwrap().len(), 4096);
        std::fs::remove_dir_all(&d).ok();
    }

    #[test]
    fn invalid_utf8_is_reported_with_line_and_column() {
        // Issue 16, item 9: one bad byte rejected a whole list with no position.
        let d = dir("utf8");
        let p = d.join("list.txt");
        std::fs::write(&p, b"ok.example\nt\xc3\xa9st.example\nab\xffcd\n").unwrap();
        let e = read_text(&p, MAX_LIST_BYTES).unwrap_err();
        assert_eq!(
            e.to_string(),
            "line 3, column 3: invalid UTF-8 (byte 0xff)",
            "{e:?}"
        );
        std::fs::remove_dir_all(&d).ok();
    }

    #[test]
    fn files_others_can_rewrite_are_pointed_out() {
        let d = dir("perm");
        let p = d.join("p.toml");
        std::fs::write(&p, "x").unwrap();
        let m = std::fs::metadata(&p).unwrap();
        let me = crate::host::users::euid();
        let why = writable_by_others(&p, &m);
        if me == 0 {
            // Root's own file in a root-owned temp dir: fine unless the mode says otherwise.
            std::fs::set_permissions(&p, std::os::unix::fs::PermissionsExt::from_mode(0o666))
                .unwrap();
            let m = std::fs::metadata(&p).unwrap();
            assert!(writable_by_others(&p, &m).unwrap().contains("mode"));
        } else {
            assert!(why.unwrap().contains(&format!("uid {me}")));
        }
        std::fs::remove_dir_all(&d).ok();
    }
}
