//! The floor the benchmarks measure against: empty programs of the socket and packet hooks'
//! types attached to one cgroup, so that a loop run under them shows what the kernel's
//! hooks cost by themselves (and what its run-time statistics add to every run).

use std::{fs::File, path::Path};

use aya::{
    programs::{CgroupSkb, CgroupSockAddr},
    Ebpf, EbpfLoader,
};

use super::{
    error::SensorError,
    preflight,
    programs::{self, cgroup_attach_mode, Kind, FLOOR, OBJECT},
};
use crate::host::cgroup::CgroupError;

/// Empty programs attached to a cgroup; detached when dropped.
pub struct Floor {
    _ebpf: Ebpf,
}

impl Floor {
    /// Loads the floor's programs and attaches them to the cgroup directory `dir` (the
    /// cgroup v2 root for every process).
    pub fn attach(dir: &Path) -> Result<Self, SensorError> {
        preflight::check_privileges()?;
        preflight::raise_memlock_limit();
        let mut ebpf = EbpfLoader::new().load(OBJECT).map_err(SensorError::Load)?;
        let fd = File::open(dir).map_err(|source| CgroupError::Read {
            path: dir.to_owned(),
            source,
        })?;
        for p in FLOOR {
            let name = p.name;
            let err = |source| SensorError::Attach {
                program: name,
                target: dir.display().to_string(),
                source,
            };
            match p.kind {
                Kind::Skb(direction) => {
                    let prog: &mut CgroupSkb = programs::get(&mut ebpf, name)?;
                    prog.load().map_err(|source| SensorError::Program {
                        program: name,
                        source,
                    })?;
                    prog.attach(&fd, direction.into(), cgroup_attach_mode())
                        .map_err(err)?;
                }
                _ => {
                    let prog: &mut CgroupSockAddr = programs::get(&mut ebpf, name)?;
                    prog.load().map_err(|source| SensorError::Program {
                        program: name,
                        source,
                    })?;
                    prog.attach(&fd, cgroup_attach_mode()).map_err(err)?;
                }
            }
        }
        Ok(Self { _ebpf: ebpf })
    }
}
