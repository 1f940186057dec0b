//! What can go wrong loading, attaching and steering the kernel programs.

use aya::{maps::MapError, programs::ProgramError, EbpfError};

use super::{btf::BtfError, preflight};
use crate::host::cgroup::CgroupError;

#[derive(Debug, thiserror::Error)]
pub enum SensorError {
    #[error(transparent)]
    Privileges(#[from] preflight::PrivilegeError),
    #[error(transparent)]
    Kernel(#[from] preflight::KernelError),
    #[error(transparent)]
    Btf(#[from] BtfError),
    #[error(transparent)]
    Cgroup(#[from] CgroupError),
    #[error("cannot load brokerwatch's kernel object: {0}")]
    Load(#[source] EbpfError),
    #[error("the kernel rejected program {program}: {source}")]
    Program {
        program: &'static str,
        #[source]
        source: ProgramError,
    },
    #[error("cannot attach {program} to {target}: {source}")]
    Attach {
        program: &'static str,
        target: String,
        #[source]
        source: ProgramError,
    },
    #[error("kernel map {name}: {source}")]
    Map {
        name: &'static str,
        #[source]
        source: MapError,
    },
    #[error("kernel object lacks {0}; it was built from different sources than this binary")]
    Missing(&'static str),
}

/// A map error of `name`, as a [`SensorError`].
pub fn map_err(name: &'static str) -> impl FnOnce(MapError) -> SensorError {
    move |source| SensorError::Map { name, source }
}
