//! Blocking, for every session: the policy's `block` rules and users' own blocks become
//! the kernel's tables when a session starts and whenever the policy or a user's blocks
//! change; a contact a block covers that went through anyway (only its first bytes named
//! it) has its address blocked for that app from then on. Users' blocks live here alone:
//! kept in the daemon's state directory, changed only through [`Blocking::user_request`].
//! When the session ends its links go and nothing stays blocked.

use std::{
    collections::{HashMap, HashSet, VecDeque},
    net::IpAddr,
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use crate::{
    finding::Finding,
    kernel::{BlockError, Sensor},
    naming::DnsCache,
    policy::{Action, AppDef, BlockPlan, Policy, UserBlock},
    protocol::Peer,
    watch,
};

/// Users' own blocks, in the state directory.
pub const USER_BLOCKS_FILE: &str = "user-blocks.json";
/// Users' blocks kept at most (per machine), and per user.
const MAX_USER_BLOCKS: usize = 10_000;
const MAX_USER_BLOCKS_PER_USER: usize = 200;
/// The largest user-blocks file read.
const MAX_USER_BLOCKS_BYTES: u64 = 4 << 20;
/// Addresses blocked after a first connection, remembered to not block them twice.
const MAX_LEARNED: usize = 4096;
/// Block requests a user may make per minute (each one recomputes the kernel's tables on
/// the daemon's thread).
const REQUESTS_PER_MINUTE: usize = 20;

#[derive(Default)]
pub struct Blocking {
    /// Where users' blocks are kept (the daemon's state directory), if anywhere.
    path: Option<PathBuf>,
    user_blocks: Vec<UserBlock>,
    /// The kernel denies what the tables say (some rule blocks, and the tables loaded).
    pub enforcing: bool,
    /// Why the policy's blocks are not in force, if they are not.
    pub error: Option<String>,
    learned: HashSet<(u64, u32, IpAddr, u64)>,
    /// Recent block requests per user.
    requests: HashMap<u32, VecDeque<Instant>>,
}

/// What a user's block request did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    /// What to tell the user.
    pub message: String,
    /// The blocks changed (the kernel's tables must follow).
    pub changed: bool,
}

impl Blocking {
    /// Blocking for a session without users' blocks (an audit).
    pub fn new() -> Self {
        Self::default()
    }

    /// The daemon's blocking: users' blocks are read from (and kept in) `state_dir`. A
    /// broken file is set aside and logged: blocks are the user's to make again,
    /// monitoring goes on.
    pub fn open(state_dir: &Path) -> Self {
        let path = state_dir.join(USER_BLOCKS_FILE);
        let user_blocks = read_user_blocks(&path);
        Self {
            path: Some(path),
            user_blocks,
            ..Self::default()
        }
    }

    /// Users' blocks in force.
    pub fn user_blocks(&self) -> &[UserBlock] {
        &self.user_blocks
    }

    /// The blocks `peer` may see: their own, everyone's for root and admins.
    pub fn visible_to(&self, peer: Peer) -> Vec<UserBlock> {
        self.user_blocks
            .iter()
            .filter(|b| peer.admin || b.uid == peer.uid)
            .cloned()
            .collect()
    }

    /// Makes the kernel deny what `policy` blocks for `apps` (each under the watch tag of
    /// the same index): nothing, when no rule blocks. On failure the reason is kept for
    /// `status` and returned. Addresses the DNS cache
    /// already holds for newly blocked names are denied at once: apps cache answers, and
    /// their next connection would otherwise go through.
    pub fn apply(
        &mut self,
        sensor: &mut Sensor,
        apps: &[Option<&AppDef>],
        tags: &[u32],
        policy: &Policy,
        dns: &DnsCache,
    ) -> Result<(), BlockError> {
        let plan_for = |users: &[UserBlock]| {
            let plan = policy.block_plan(apps, users);
            let tables = watch::block_tables(&plan, tags);
            (plan, tables)
        };
        let (mut plan, tables) = plan_for(&self.user_blocks);
        let mut outcome = sensor.set_blocks(&tables);
        let mut users_left_out = None;
        // Users' blocks must never cost the administrator's: when together they do not fit
        // the kernel's tables, the administrator's go in alone.
        if let Err(e @ BlockError::TooMany { .. }) = &outcome {
            if !self.user_blocks.is_empty() {
                users_left_out = Some(e.to_string());
                let (admin_plan, admin_tables) = plan_for(&[]);
                plan = admin_plan;
                outcome = sensor.set_blocks(&admin_tables);
            }
        }
        if let Err(e) = outcome {
            // Said by the caller: in the log, or as the error of an audit that must block.
            self.error = Some(format!("blocking is not in force: {e}"));
            self.enforcing = false;
            return Err(e);
        }
        self.error = users_left_out.map(|e| {
            let m = format!("users' blocks are not in force: {e}");
            log::error!("{m}");
            m
        });
        self.enforcing = sensor.blocking();
        if self.enforcing {
            let learned = self.learn_cached(sensor, &plan, dns);
            if learned > 0 {
                log::info!("{learned} address(es) resolved earlier are blocked too");
            }
        }
        log_plan(&plan, self.enforcing);
        Ok(())
    }

    /// Files the cached answers' addresses of blocked names as the kernel would have.
    fn learn_cached(&mut self, sensor: &mut Sensor, plan: &BlockPlan, dns: &DnsCache) -> usize {
        let now = crate::host::clock::boot_ns();
        let mut n = 0;
        for (addr, name, from) in dns.answers(now) {
            let names = std::iter::once(&name.qname).chain(name.chain.iter());
            let Some(id) = names.filter_map(|n| plan.destination_of(n)).next_back() else {
                continue;
            };
            let dest = monitor_common::dest_hash(id);
            match sensor.learn_block(from.netns, from.uid, addr, dest) {
                Ok(()) => n += 1,
                Err(e) => {
                    log::warn!("cannot block {addr} resolved earlier: {e}");
                    break;
                }
            }
        }
        n
    }

    /// A contact a block covers that the kernel let through (nothing named it before the
    /// connect): its address is denied to the app's user from now on.
    pub fn after_finding(&mut self, sensor: &mut Sensor, f: &Finding, netns: u64) {
        if !self.enforcing || f.blocked > 0 || f.action != Some(Action::Block) {
            return;
        }
        let Some(id) = &f.destination_id else {
            return;
        };
        let (ip, dest) = (f.dst_ip, monitor_common::dest_hash(id));
        if self.learned.len() >= MAX_LEARNED {
            self.learned.clear();
        }
        if !self.learned.insert((netns, f.uid, ip, dest)) {
            return;
        }
        if let Err(e) = sensor.learn_block(netns, f.uid, ip, dest) {
            log::warn!("cannot block {ip} for later connections: {e}");
        }
    }

    /// `brokerwatch block|unblock APP COMPANY` from `peer`: the user's own block, for their
    /// own processes, where the policy allows users to block. A new block is admitted only
    /// if `fits` says the kernel's tables hold it with everyone's blocks: a block that does
    /// not fit is refused, and no one else's changes. Says what to tell the user, and
    /// whether anything changed (then the caller applies the blocks again).
    pub fn user_request(
        &mut self,
        policy: &Policy,
        peer: Peer,
        app: &str,
        company: &str,
        unblock: bool,
        fits: impl FnOnce(&[UserBlock]) -> Result<(), BlockError>,
    ) -> Result<Outcome, String> {
        if !policy.allow_user_blocks {
            return Err("the administrator's policy does not let users block (it needs `[settings] allow_user_blocks = true` in /etc/brokerwatch/policies.d/)".into());
        }
        let (block, name) = resolve_request(policy, peer, app, company)?;
        let company = block.company.clone();
        let mut blocks = self.user_blocks.clone();
        let had = blocks.contains(&block);
        let unchanged = |message: String| Outcome {
            message,
            changed: false,
        };
        if unblock {
            if !had {
                return Ok(unchanged(format!(
                    "{name} -> {company} was not blocked for you"
                )));
            }
            blocks.retain(|b| *b != block);
        } else {
            if had {
                return Ok(unchanged(format!(
                    "{name} -> {company} is already blocked for you"
                )));
            }
            let mine = blocks.iter().filter(|b| b.uid == peer.uid).count();
            if mine >= MAX_USER_BLOCKS_PER_USER || blocks.len() >= MAX_USER_BLOCKS {
                return Err(format!(
                    "too many blocks (at most {MAX_USER_BLOCKS_PER_USER} per user); unblock some first"
                ));
            }
            blocks.push(block);
            if let Err(e) = fits(&blocks) {
                return Err(format!(
                    "{name} -> {company} cannot be blocked: with the blocks in force it does not fit the kernel's tables ({e}); nothing changed"
                ));
            }
        }
        // Only requests that change something cost the daemon's thread (a new plan for
        // the kernel): those are limited per user.
        self.charge(peer.uid)?;
        if let Some(path) = &self.path {
            save(path, &blocks)
                .map_err(|e| format!("cannot save users' blocks in {}: {e}", path.display()))?;
        }
        self.user_blocks = blocks;
        let what = if unblock { "unblocked" } else { "blocked" };
        Ok(Outcome {
            message: format!("{name} -> {company}: {what} for you"),
            changed: true,
        })
    }

    /// Counts a request that changes something against `uid`'s allowance.
    fn charge(&mut self, uid: u32) -> Result<(), String> {
        let recent = self.requests.entry(uid).or_default();
        while recent
            .front()
            .is_some_and(|t| t.elapsed() >= Duration::from_secs(60))
        {
            recent.pop_front();
        }
        if recent.len() >= REQUESTS_PER_MINUTE {
            return Err(format!(
                "too many block requests (at most {REQUESTS_PER_MINUTE} a minute); try again in a minute"
            ));
        }
        recent.push_back(Instant::now());
        if self.requests.len() > 10_000 {
            self.requests.retain(|_, r| !r.is_empty());
        }
        Ok(())
    }
}

/// The block a request names (app and company as the policy spells them), and the app's
/// name for the answer.
fn resolve_request(
    policy: &Policy,
    peer: Peer,
    app: &str,
    company: &str,
) -> Result<(UserBlock, String), String> {
    let Some(def) = policy
        .apps
        .apps
        .iter()
        .find(|a| a.id.eq_ignore_ascii_case(app) || a.name.eq_ignore_ascii_case(app))
    else {
        return Err(format!(
            "no app {app:?} in the policy (`brokerwatch policy list --apps` lists them)"
        ));
    };
    let Some(company) = policy
        .entries()
        .iter()
        .map(|e| e.company.as_str())
        .find(|c| c.eq_ignore_ascii_case(company))
    else {
        return Err(format!(
            "no company {company:?} in the policy (`brokerwatch policy list` lists them)"
        ));
    };
    let block = UserBlock {
        uid: peer.uid,
        app: def.id.clone(),
        company: company.to_owned(),
    };
    Ok((block, def.name.clone()))
}

fn log_plan(plan: &BlockPlan, enforcing: bool) {
    if enforcing {
        let dests: HashSet<&str> = plan.pairs.iter().map(|(d, _, _)| d.as_str()).collect();
        log::info!(
            "blocking {} destination(s) ({} domains, {} ranges) for the watched apps",
            dests.len(),
            plan.domains.len(),
            plan.cidrs.len()
        );
    }
    if plan.first_party > 0 {
        log::info!(
            "{} blocked domain(s) are a blocked app's own (first_party): not denied by name",
            plan.first_party
        );
    }
    if plan.too_deep + plan.patterns > 0 {
        log::warn!(
            "{} blocked domain(s) have more than {} labels and {} are patterns: the kernel cannot match them by name, so they are blocked from their second connection on",
            plan.too_deep,
            crate::policy::block::MAX_LABELS,
            plan.patterns
        );
    }
}

/// Users' blocks from `path` (none when it is missing, broken or not a plain file).
fn read_user_blocks(path: &Path) -> Vec<UserBlock> {
    match crate::host::files::read_text(path, MAX_USER_BLOCKS_BYTES) {
        Ok(text) => match serde_json::from_str::<Vec<UserBlock>>(&text) {
            Ok(b) => b,
            Err(e) => {
                log::error!(
                    "{}: {e}; users' blocks are not in force (the file is kept as .broken)",
                    path.display()
                );
                let _ = std::fs::rename(path, path.with_extension("json.broken"));
                Vec::new()
            }
        },
        Err(crate::host::files::FileError::Io(e)) if e.kind() == std::io::ErrorKind::NotFound => {
            Vec::new()
        }
        Err(e) => {
            log::error!("{}: {e}; users' blocks are not in force", path.display());
            Vec::new()
        }
    }
}

/// Writes the blocks (root only, atomically; see [`crate::host::files::write_private`]).
fn save(path: &Path, blocks: &[UserBlock]) -> std::io::Result<()> {
    let text = serde_json::to_string_pretty(blocks).map_err(std::io::Error::other)?;
    crate::host::files::write_private(path, text.as_bytes())
}
