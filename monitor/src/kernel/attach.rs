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
    programs::{self, cgroup_attach_mode, Direction, Kind},
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

struct Links {
    hooks: Hooks,
    sock: Vec<CgroupSockAddrLink>,
    skb: Vec<CgroupSkbLink>,
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
        let fd = File::open(dir).map_err(|source| CgroupError::Read {
            path: dir.to_owned(),
            source,
        })?;
        let target = dir.display().to_string();
        let err = |program: &'static str| {
            let target = target.clone();
            move |source| SensorError::Attach {
                program,
                target,
                source,
            }
        };
        let mut links = Links {
            hooks,
            sock: Vec::new(),
            skb: Vec::new(),
        };
        for p in programs::cgroup_programs().filter(|p| hooks.runs(p.kind)) {
            let name = p.name;
            match p.kind {
                Kind::Skb(direction) => {
                    let prog: &mut CgroupSkb = programs::get(ebpf, name)?;
                    let id = prog
                        .attach(&fd, direction.into(), cgroup_attach_mode())
                        .map_err(err(name))?;
                    links.skb.push(prog.take_link(id).map_err(err(name))?);
                }
                _ => {
                    let prog: &mut CgroupSockAddr = programs::get(ebpf, name)?;
                    let id = prog.attach(&fd, cgroup_attach_mode()).map_err(err(name))?;
                    links.sock.push(prog.take_link(id).map_err(err(name))?);
                }
            }
        }
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
