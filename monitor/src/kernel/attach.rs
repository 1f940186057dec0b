//! Where the socket and packet programs run. A cgroup program runs for every process of
//! its cgroup and of the cgroups below it, so brokerwatch attaches where watched apps live
//! (or at the cgroup v2 root, where every process pays the hook) and detaches when they
//! are gone. Links are owned: dropping one detaches it.

use std::{
    collections::BTreeMap,
    fs::File,
    path::{Path, PathBuf},
};

use aya::{
    programs::{
        cgroup_skb::CgroupSkbLink, cgroup_sock_addr::CgroupSockAddrLink, CgroupSkb, CgroupSockAddr,
    },
    Ebpf,
};

use super::{
    error::SensorError,
    programs::{self, cgroup_attach_mode, Direction, Kind, Program},
};
use crate::host::cgroup::CgroupError;

/// Which programs a cgroup gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Hooks {
    /// DNS answers only (`bw_ingress`): a stub resolver's cgroup.
    DnsAnswers,
    /// Everything: connects, sends, DNS answers, first payloads (a watched app's cgroup).
    All,
}

impl Hooks {
    /// Whether `kind` is one of these hooks' programs.
    pub fn runs(self, kind: Kind) -> bool {
        matches!(
            (self, kind),
            (Self::All, Kind::SockAddr | Kind::Skb(_))
                | (Self::DnsAnswers, Kind::Skb(Direction::Ingress))
        )
    }

    /// The names of these hooks' programs.
    pub fn programs(self) -> impl Iterator<Item = &'static str> {
        programs::cgroup_programs()
            .filter(move |p| self.runs(p.kind))
            .map(|p| p.name)
    }
}

/// One cgroup program's link to one cgroup; dropping it detaches the program.
pub(super) enum CgroupLink {
    // Held for their drop.
    Sock(#[allow(dead_code)] CgroupSockAddrLink),
    Skb(#[allow(dead_code)] CgroupSkbLink),
}

/// The cgroup directory `dir`, open for attaching.
pub(super) fn open_cgroup(dir: &Path) -> Result<File, SensorError> {
    Ok(File::open(dir).map_err(|source| CgroupError::Read {
        path: dir.to_owned(),
        source,
    })?)
}

/// Attaches the loaded cgroup program `program` to the cgroup open as `fd` (`dir` names it
/// in errors); the one attach step of the sensor's programs and the benchmarks' floor.
pub(super) fn attach_to_cgroup(
    ebpf: &mut Ebpf,
    program: &Program,
    fd: &File,
    dir: &Path,
) -> Result<CgroupLink, SensorError> {
    let name = program.name;
    let err = |source| SensorError::Attach {
        program: name,
        target: dir.display().to_string(),
        source,
    };
    Ok(match program.kind {
        Kind::Skb(direction) => {
            let prog: &mut CgroupSkb = programs::get(ebpf, name)?;
            let id = prog
                .attach(fd, direction.into(), cgroup_attach_mode())
                .map_err(err)?;
            CgroupLink::Skb(prog.take_link(id).map_err(err)?)
        }
        _ => {
            let prog: &mut CgroupSockAddr = programs::get(ebpf, name)?;
            let id = prog.attach(fd, cgroup_attach_mode()).map_err(err)?;
            CgroupLink::Sock(prog.take_link(id).map_err(err)?)
        }
    })
}

struct Links {
    hooks: Hooks,
    _links: Vec<CgroupLink>,
}

/// The cgroups the programs are attached to.
#[derive(Default)]
pub struct Attachments {
    at: BTreeMap<PathBuf, Links>,
}

impl Attachments {
    /// Whether processes of `dir` already run programs of `hooks` (attached at `dir` or an
    /// ancestor).
    pub fn covers(&self, dir: &Path, hooks: Hooks) -> bool {
        self.at
            .iter()
            .any(|(p, l)| l.hooks >= hooks && dir.starts_with(p))
    }

    /// Attaches `hooks` to the cgroup directory `dir` unless already covered; cgroups
    /// below it that it now covers are detached (programs would otherwise run twice for
    /// their processes). Returns whether anything was attached.
    pub fn attach(
        &mut self,
        ebpf: &mut Ebpf,
        dir: &Path,
        hooks: Hooks,
    ) -> Result<bool, SensorError> {
        if self.covers(dir, hooks) {
            return Ok(false);
        }
        let fd = open_cgroup(dir)?;
        let links = programs::cgroup_programs()
            .filter(|p| hooks.runs(p.kind))
            .map(|p| attach_to_cgroup(ebpf, p, &fd, dir))
            .collect::<Result<_, _>>()?;
        let links = Links {
            hooks,
            _links: links,
        };
        // Now covered from above: their own links go.
        self.at
            .retain(|p, l| !(p.starts_with(dir) && p != dir && l.hooks <= hooks));
        self.at.insert(dir.to_owned(), links);
        Ok(true)
    }

    /// Detaches whatever is attached to `dir` exactly.
    pub fn detach(&mut self, dir: &Path) -> bool {
        self.at.remove(dir).is_some()
    }

    /// Where programs are attached, and which.
    pub fn points(&self) -> Vec<(PathBuf, Hooks)> {
        self.at.iter().map(|(p, l)| (p.clone(), l.hooks)).collect()
    }
}
