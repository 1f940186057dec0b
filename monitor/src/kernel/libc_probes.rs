//! The uprobes on the system's C library (`getaddrinfo()`): found through this process's
//! own memory map, loaded and attached for the whole machine (the programs check
//! watching). A machine without glibc runs without them, and says so.

use std::path::PathBuf;

use aya::Ebpf;

use super::programs::{self, Kind, PROGRAMS};

/// The C library this process runs with (glibc: `libc.so.6`), from its own memory map:
/// the one the machine's dynamically linked apps use.
fn own_libc() -> Result<PathBuf, String> {
    let maps = std::fs::read_to_string("/proc/self/maps")
        .map_err(|e| format!("cannot read /proc/self/maps: {e}"))?;
    maps.lines()
        .filter_map(|l| l.split_whitespace().nth(5))
        .find(|p| p.ends_with("/libc.so.6"))
        .map(PathBuf::from)
        .ok_or_else(|| "this system's C library is not glibc (no libc.so.6 mapped)".to_owned())
}

/// Loads the uprobes on the C library and attaches them for the whole machine; returns
/// the library, or why they do not run.
pub(super) fn attach(ebpf: &mut Ebpf) -> Result<PathBuf, String> {
    use aya::programs::{uprobe::UProbeScope, UProbe};
    let lib = own_libc()?;
    for p in PROGRAMS {
        let Kind::LibcProbe { symbol, .. } = p.kind else {
            continue;
        };
        let prog: &mut UProbe = programs::get(ebpf, p.name).map_err(|e| e.to_string())?;
        prog.load()
            .map_err(|e| format!("the kernel rejected {}: {e}", p.name))?;
        prog.attach(symbol, &lib, UProbeScope::AllProcesses)
            .map_err(|e| {
                format!(
                    "cannot attach {} to {symbol} in {}: {e}",
                    p.name,
                    lib.display()
                )
            })?;
    }
    Ok(lib)
}
