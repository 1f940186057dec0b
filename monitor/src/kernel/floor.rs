//! The floor the benchmarks measure against: empty programs of the socket and packet hooks'
//! types attached to one cgroup, so that a loop run under them shows what the kernel's
//! hooks cost by themselves (and what its run-time statistics add to every run).

use std::path::Path;

use aya::{
    programs::{CgroupSkb, CgroupSockAddr},
    Ebpf, EbpfLoader,
};

use super::{
    attach::{attach_to_cgroup, open_cgroup, CgroupLink},
    error::SensorError,
    preflight,
    programs::{self, Kind, FLOOR, OBJECT},
};

/// Empty programs attached to a cgroup; detached when dropped.
pub struct Floor {
    _links: Vec<CgroupLink>,
    _ebpf: Ebpf,
}

impl Floor {
    /// Loads the floor's programs and attaches them to the cgroup directory `dir` (the
    /// cgroup v2 root for every process).
    pub fn attach(dir: &Path) -> Result<Self, SensorError> {
        preflight::check_privileges()?;
        preflight::raise_memlock_limit();
        let mut ebpf = EbpfLoader::new().load(OBJECT).map_err(SensorError::Load)?;
        let fd = open_cgroup(dir)?;
        let mut links = Vec::new();
        for p in FLOOR {
            let name = p.name;
            let loaded = match p.kind {
                Kind::Skb(_) => programs::get::<CgroupSkb>(&mut ebpf, name)?.load(),
                _ => programs::get::<CgroupSockAddr>(&mut ebpf, name)?.load(),
            };
            loaded.map_err(|source| SensorError::Program {
                program: name,
                source,
            })?;
            links.push(attach_to_cgroup(&mut ebpf, p, &fd, dir)?);
        }
        Ok(Self {
            _links: links,
            _ebpf: ebpf,
        })
    }
}
