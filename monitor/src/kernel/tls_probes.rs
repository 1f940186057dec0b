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
        uprobe::{UProbeLinkId, UProbeScope},
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
    /// Links per process.
    links: HashMap<u32, Vec<(&'static str, UProbeLinkId)>>,
    /// Libraries read at least once, for `hooks()`.
    seen: Vec<PathBuf>,
}

/// What attaching for one process did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Attached {
    /// Probes attached (library, symbol).
    pub probes: usize,
    /// Libraries or symbols that could not be probed, and why.
    pub problems: Vec<String>,
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
                    prog.load()
                        .map_err(|e| format!("the kernel rejected {}: {e}", p.name))?;
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
    /// the same process adds libraries it mapped since.
    pub fn attach(&mut self, ebpf: &mut Ebpf, pid: u32) -> Result<Attached, String> {
        self.load(ebpf)?;
        let scope = NonZeroU32::new(pid).ok_or("pid 0 cannot be read")?;
        let mut libs = self.system.clone();
        for path in mapped_libraries(pid) {
            if let Some(lib) = library_of(&path) {
                if !libs.iter().any(|(_, p)| same_file(p, &path)) {
                    libs.push((lib, path));
                }
            }
        }
        let mut out = Attached::default();
        let links = self.links.entry(pid).or_default();
        for (lib, path) in libs {
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
                        Err(e) => out
                            .problems
                            .push(format!("{symbol} in {}: {e}", path.display())),
                    }
                }
            }
        }
        Ok(out)
    }

    /// Detaches `pid`'s probes (it exited, or is no longer watched).
    pub fn detach(&mut self, ebpf: &mut Ebpf, pid: u32) {
        let Some(links) = self.links.remove(&pid) else {
            return;
        };
        for (name, link) in links {
            if let Ok(prog) = programs::get::<UProbe>(ebpf, name) {
                // A process that is gone took its perf events along: nothing to report.
                let _ = prog.detach(link);
            }
        }
    }
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
        assert_eq!(library_of(Path::new("/usr/lib/x86_64-linux-gnu/libssl.so.3")), Some(TlsLib::OpenSsl));
        assert_eq!(library_of(Path::new("/opt/zoom/libssl.so.1.1")), Some(TlsLib::OpenSsl));
        assert_eq!(library_of(Path::new("/usr/lib/libgnutls.so.30.34.3")), Some(TlsLib::GnuTls));
        assert_eq!(library_of(Path::new("/usr/lib/libnspr4.so")), Some(TlsLib::Nspr));
        assert_eq!(library_of(Path::new("/usr/lib/libssl3.so")), None, "NSS's libssl3 has no SSL_write");
        assert_eq!(library_of(Path::new("/usr/lib/libssl.so.30")), None);
        assert_eq!(library_of(Path::new("/usr/lib/libcrypto.so.3")), None);
    }
}
