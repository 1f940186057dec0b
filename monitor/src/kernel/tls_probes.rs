//! The plaintext sensor's uprobes (issue 25): on the TLS libraries' write calls, attached
//! for one watched process at a time, so that no other process on the machine pays for
//! them. Loaded on first use; a library or symbol that is not there is said, not fatal.

use std::{
    collections::HashMap,
    num::NonZeroU32,
    path::{Path, PathBuf},
};

use aya::{
    programs::{
        uprobe::{UProbeLink, UProbeLinkId, UProbeScope},
        UProbe,
    },
    Ebpf,
};
use monitor_common::TlsLib;

use super::programs::{self, Kind, PROGRAMS};

/// Library file names of each TLS library: the system's, and copies an app ships.
const LIBRARIES: &[(TlsLib, &str)] = &[
    (TlsLib::OpenSsl, "libssl.so.3"),
    (TlsLib::OpenSsl, "libssl.so.1.1"),
    (TlsLib::GnuTls, "libgnutls.so.30"),
    (TlsLib::Nspr, "libnspr4.so"),
];

/// Which library a mapped file is, by its name (`libssl.so.3`, `libgnutls.so.30.34.3`).
pub fn library_of(path: &Path) -> Option<TlsLib> {
    let name = path.file_name()?.to_str()?;
    LIBRARIES
        .iter()
        .find(|(_, lib)| name == *lib || name.starts_with(&format!("{lib}.")))
        .map(|(kind, _)| *kind)
}

/// Where the plaintext uprobes are, per watched process.
#[derive(Debug, Default)]
pub struct TlsProbes {
    /// Whether the programs loaded (`None`: not tried yet).
    loaded: Option<Result<(), String>>,
    /// The system's copies, found next to this process's own C library.
    system: Vec<(TlsLib, PathBuf)>,
    /// Links per process, and the libraries they are on.
    links: HashMap<u32, Vec<(&'static str, UProbeLinkId)>>,
    probed: HashMap<u32, Vec<PathBuf>>,
    /// The program each process ran when its own directories were last looked at.
    scanned: HashMap<u32, PathBuf>,
    /// What each program has of TLS built in, by path (looked at once).
    builtin: HashMap<PathBuf, super::tls_binary::Builtin>,
    /// Libraries read at least once, for `hooks()`.
    seen: Vec<PathBuf>,
    /// Where detached probes are closed (a thread of its own).
    reaper: Option<std::sync::mpsc::Sender<Vec<UProbeLink>>>,
}

/// What attaching for one process did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Attached {
    /// Probes attached (library, symbol).
    pub probes: usize,
    /// Libraries or symbols that could not be probed, and why.
    pub problems: Vec<String>,
    /// The process's program has TLS built in that cannot be read, said as people read it.
    pub not_readable: Option<String>,
}

impl TlsProbes {
    /// Processes read now.
    pub fn processes(&self) -> usize {
        self.links.len()
    }

    /// Whether `pid` is read.
    pub fn reads(&self, pid: u32) -> bool {
        self.links.contains_key(&pid)
    }

    /// The processes read.
    pub fn pids(&self) -> Vec<u32> {
        self.links.keys().copied().collect()
    }

    /// The libraries probed, for `hooks()`.
    pub fn libraries(&self) -> &[PathBuf] {
        &self.seen
    }

    fn load(&mut self, ebpf: &mut Ebpf) -> Result<(), String> {
        if let Some(done) = &self.loaded {
            return done.clone();
        }
        let result = (|| {
            for p in PROGRAMS {
                if let Kind::TlsProbe { .. } = p.kind {
                    let prog: &mut UProbe =
                        programs::get(ebpf, p.name).map_err(|e| e.to_string())?;
                    prog.load().map_err(|e| {
                        // The verifier's log runs to pages: its last lines say why.
                        let text = error_chain(&e);
                        let tail: Vec<&str> = text.lines().rev().take(3).collect();
                        let tail: Vec<&str> = tail.into_iter().rev().collect();
                        format!("the kernel rejected {}: {}", p.name, tail.join(" / "))
                    })?;
                }
            }
            Ok(())
        })();
        self.system = system_libraries();
        self.loaded = Some(result.clone());
        result
    }

    /// Attaches the write probes for `pid`: the system's TLS libraries and any copy the
    /// process has mapped from elsewhere (an app's bundled `libssl`). Attaching again for
    /// the same process adds libraries it mapped since. `exec` (the process's exec record):
    /// its program's directories and `LD_LIBRARY_PATH` are looked at again even when
    /// `/proc/PID/exe` names the program looked at last. A look made while the kernel was
    /// still executing that program saw its new `exe` but no environment yet (the kernel
    /// sets it up last), and would otherwise stand for the program: the exec record is sent
    /// once the new image is whole.
    pub fn attach(&mut self, ebpf: &mut Ebpf, pid: u32, exec: bool) -> Result<Attached, String> {
        self.load(ebpf)?;
        let scope = NonZeroU32::new(pid).ok_or("pid 0 cannot be read")?;
        if exec {
            self.scanned.remove(&pid);
        }
        let mut libs = self.system.clone();
        // An app's own copies, found when it starts (before it loads them), and again
        // after it executes another program.
        let exe = std::fs::read_link(format!("/proc/{pid}/exe")).ok();
        let mut not_readable = None;
        if let Some(exe) = exe.filter(|e| self.scanned.get(&pid) != Some(e)) {
            for (lib, path) in bundled_libraries(pid, &exe) {
                if !libs.iter().any(|(_, p)| same_file(p, &path)) {
                    libs.push((lib, path));
                }
            }
            use super::tls_binary::{builtin_tls, not_readable as unreadable, Builtin};
            if self.builtin.len() >= 1024 {
                self.builtin.clear();
            }
            let builtin = *self
                .builtin
                .entry(exe.clone())
                .or_insert_with(|| builtin_tls(&exe));
            match builtin {
                Builtin::Symbols => libs.push((TlsLib::OpenSsl, exe.clone())),
                Builtin::Stripped => not_readable = Some(unreadable(&exe)),
                Builtin::Nothing => {}
            }
            self.scanned.insert(pid, exe);
        }
        for path in mapped_libraries(pid) {
            if let Some(lib) = library_of(&path) {
                if !libs.iter().any(|(_, p)| same_file(p, &path)) {
                    libs.push((lib, path));
                }
            }
        }
        let mut out = Attached {
            not_readable,
            ..Attached::default()
        };
        let links = self.links.entry(pid).or_default();
        let probed = self.probed.entry(pid).or_default();
        for (lib, path) in libs {
            if probed.iter().any(|p| same_file(p, &path)) {
                continue;
            }
            probed.push(path.clone());
            for p in PROGRAMS {
                let Kind::TlsProbe { lib: want, symbols } = p.kind else {
                    continue;
                };
                if want != lib {
                    continue;
                }
                let prog: &mut UProbe = programs::get(ebpf, p.name).map_err(|e| e.to_string())?;
                for symbol in symbols {
                    match prog.attach(*symbol, &path, UProbeScope::OneProcess(scope)) {
                        Ok(link) => {
                            links.push((p.name, link));
                            out.probes += 1;
                            if !self.seen.contains(&path) {
                                self.seen.push(path.clone());
                            }
                        }
                        Err(e) => out.problems.push(format!(
                            "{symbol} in {}: {}",
                            path.display(),
                            error_chain(&e)
                        )),
                    }
                }
            }
        }
        log::debug!(
            "process {pid}: {} plaintext probes attached, problems: {:?}",
            out.probes,
            out.problems
        );
        Ok(out)
    }

    /// Detaches `pid`'s probes (it exited, or is no longer watched).
    pub fn detach(&mut self, ebpf: &mut Ebpf, pid: u32) {
        self.probed.remove(&pid);
        self.scanned.remove(&pid);
        let Some(links) = self.links.remove(&pid) else {
            return;
        };
        let mut owned = Vec::new();
        for (name, link) in links {
            if let Ok(prog) = programs::get::<UProbe>(ebpf, name) {
                if let Ok(link) = prog.take_link(link) {
                    owned.push(link);
                }
            }
        }
        // Closing a uprobe waits for the kernel's grace periods (about 0.1 s each here):
        // another thread does it, so that records keep flowing meanwhile.
        let reaper = self.reaper.get_or_insert_with(|| {
            let (tx, rx) = std::sync::mpsc::channel::<Vec<UProbeLink>>();
            let spawned = std::thread::Builder::new()
                .name("bw-uprobe-close".into())
                .spawn(move || rx.into_iter().for_each(drop));
            if let Err(e) = spawned {
                log::warn!("cannot start the thread that closes uprobes ({e}): closing them here");
            }
            tx
        });
        if let Err(std::sync::mpsc::SendError(links)) = reaper.send(owned) {
            drop(links);
        }
    }
}

impl super::Sensor {
    /// From now on, every process watched by pid (`watch_tgid`) is also read
    /// (plaintext inspection, opt-in).
    pub fn read_plaintext(&mut self) {
        self.plaintext = true;
    }

    /// Reads what `pid` hands its TLS libraries to send, from now on (uprobes bound to
    /// it); again for a process read already adds the libraries it mapped since. Nothing
    /// unless `read_plaintext` was called. `exec`: the process just executed a program (its
    /// exec record), whose directories and library path are looked at again.
    pub fn read_plaintext_of(&mut self, pid: u32, exec: bool) -> Result<Attached, String> {
        if !self.plaintext {
            return Ok(Attached::default());
        }
        self.tls.attach(&mut self.ebpf, pid, exec)
    }

    /// The processes whose plaintext is read.
    pub fn plaintext_pids(&self) -> Vec<u32> {
        self.tls.pids()
    }

    /// Stops reading `pid` (it ended).
    pub fn stop_reading_plaintext_of(&mut self, pid: u32) {
        self.tls.detach(&mut self.ebpf, pid);
    }
}

/// An error with its causes (`perf_event_open failed: No such process`).
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        text.push_str(&format!(": {c}"));
        cause = c.source();
    }
    text
}

fn same_file(a: &Path, b: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    match (std::fs::metadata(a), std::fs::metadata(b)) {
        (Ok(x), Ok(y)) => x.dev() == y.dev() && x.ino() == y.ino(),
        _ => a == b,
    }
}

/// The system's TLS libraries: those in the directory of this process's own C library
/// (Debian's multiarch directory), the one apps load by name.
fn system_libraries() -> Vec<(TlsLib, PathBuf)> {
    let Some(dir) = mapped_libraries(std::process::id())
        .into_iter()
        .find(|p| p.file_name().is_some_and(|n| n == "libc.so.6"))
        .and_then(|p| p.parent().map(Path::to_path_buf))
    else {
        return Vec::new();
    };
    LIBRARIES
        .iter()
        .map(|(lib, name)| (*lib, dir.join(name)))
        .filter(|(_, p)| p.is_file())
        .collect()
}

/// Directories whose programs are the system's: they hold no app's own libraries.
const SYSTEM_BIN: &[&str] = &["/usr/bin", "/bin", "/usr/sbin", "/sbin", "/usr/local/bin"];
/// Bounds of the look for bundled libraries (a hostile directory costs no more).
const MAX_DIRS: usize = 32;
const MAX_ENTRIES: usize = 1024;
const MAX_ENVIRON: u64 = 256 << 10;

/// TLS libraries an app ships, as Zoom and Webex do: in its program's directory and the
/// directories right under it (`/opt/zoom/`, `/opt/zoom/cef/`), and in the directories its
/// `LD_LIBRARY_PATH` names (their launch scripts set it). Looked for by file name, so that
/// the probes are in place before the app loads them.
pub fn bundled_libraries(pid: u32, exe: &Path) -> Vec<(TlsLib, PathBuf)> {
    let mut dirs: Vec<PathBuf> = Vec::new();
    if let Some(dir) = exe
        .parent()
        .filter(|d| !SYSTEM_BIN.iter().any(|s| *d == Path::new(s)))
    {
        dirs.push(dir.to_path_buf());
        if let Ok(entries) = std::fs::read_dir(dir) {
            for e in entries.flatten().take(MAX_ENTRIES) {
                if e.file_type().is_ok_and(|t| t.is_dir()) {
                    dirs.push(e.path());
                }
            }
        }
    }
    dirs.extend(library_path(pid));
    let mut out: Vec<(TlsLib, PathBuf)> = Vec::new();
    for dir in dirs.iter().take(MAX_DIRS) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            continue;
        };
        for e in entries.flatten().take(MAX_ENTRIES) {
            let path = e.path();
            if let Some(lib) = library_of(&path) {
                if path.is_file() && !out.iter().any(|(_, p)| same_file(p, &path)) {
                    out.push((lib, path));
                }
            }
        }
    }
    out
}

/// The absolute directories of `pid`'s `LD_LIBRARY_PATH` (from `/proc/PID/environ`).
fn library_path(pid: u32) -> Vec<PathBuf> {
    use std::io::Read as _;
    let mut environ = Vec::new();
    let read = std::fs::File::open(format!("/proc/{pid}/environ"))
        .and_then(|f| f.take(MAX_ENVIRON).read_to_end(&mut environ));
    if read.is_err() {
        return Vec::new();
    }
    environ
        .split(|b| *b == 0)
        .filter_map(|v| v.strip_prefix(b"LD_LIBRARY_PATH="))
        .flat_map(|v| v.split(|b| *b == b':'))
        .filter_map(|d| std::str::from_utf8(d).ok())
        .map(PathBuf::from)
        .filter(|d| d.is_absolute())
        .take(MAX_DIRS)
        .collect()
}

/// Files mapped by `pid` (its `/proc/PID/maps`), each once.
fn mapped_libraries(pid: u32) -> Vec<PathBuf> {
    let Ok(maps) = std::fs::read_to_string(format!("/proc/{pid}/maps")) else {
        return Vec::new();
    };
    let mut out: Vec<PathBuf> = Vec::new();
    for path in maps.lines().filter_map(|l| l.split_whitespace().nth(5)) {
        let path = PathBuf::from(path);
        if path.is_absolute() && !out.contains(&path) {
            out.push(path);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tls_libraries_are_known_by_name_and_version_suffix() {
        assert_eq!(
            library_of(Path::new("/usr/lib/x86_64-linux-gnu/libssl.so.3")),
            Some(TlsLib::OpenSsl)
        );
        assert_eq!(
            library_of(Path::new("/opt/zoom/libssl.so.1.1")),
            Some(TlsLib::OpenSsl)
        );
        assert_eq!(
            library_of(Path::new("/usr/lib/libgnutls.so.30.34.3")),
            Some(TlsLib::GnuTls)
        );
        assert_eq!(
            library_of(Path::new("/usr/lib/libnspr4.so")),
            Some(TlsLib::Nspr)
        );
        assert_eq!(
            library_of(Path::new("/usr/lib/libssl3.so")),
            None,
            "NSS's libssl3 has no SSL_write"
        );
        assert_eq!(library_of(Path::new("/usr/lib/libssl.so.30")), None);
        assert_eq!(library_of(Path::new("/usr/lib/libcrypto.so.3")), None);
    }

    #[test]
    fn tls_bundled_libraries_are_found_beside_the_program_and_on_its_library_path() {
        let dir = std::env::temp_dir().join(format!("bw-bundled-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("cef")).unwrap();
        std::fs::create_dir_all(dir.join("elsewhere")).unwrap();
        for f in ["zoom", "libssl.so.1.1", "cef/libnspr4.so", "libcrypto.so.3"] {
            std::fs::write(dir.join(f), b"").unwrap();
        }
        let found = bundled_libraries(std::process::id(), &dir.join("zoom"));
        let mut names: Vec<String> = found
            .iter()
            .map(|(_, p)| p.strip_prefix(&dir).unwrap().display().to_string())
            .collect();
        names.sort();
        assert_eq!(names, ["cef/libnspr4.so", "libssl.so.1.1"]);
        assert_eq!(
            bundled_libraries(std::process::id(), Path::new("/usr/bin/curl")),
            [],
            "a system program's directory is not an app's (nor is cargo's library path)"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
