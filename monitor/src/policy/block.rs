//! What the policy blocks, in the terms the kernel can act on: the destinations that some
//! `block` rule (or a user's own block) covers for some watched app, with their domains and
//! address ranges. Built once per policy load, and only from the rules that block, so a
//! policy without them costs nothing.

use std::{
    collections::{HashMap, HashSet},
    sync::Arc,
};

use ipnet::IpNet;

use super::{Action, AppDef, Hit, Policy, UserBlock};

/// A destination's domains with more labels than the kernel checks cannot be blocked there.
pub const MAX_LABELS: usize = monitor_common::BLOCK_NAME_LABELS;

/// Who a kernel pair applies to: every user, or one.
pub const EVERY_USER: Option<u32> = None;

/// The blocked destinations and who may not reach them.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct BlockPlan {
    /// Blocked domains, by `monitor_common::domain_hash` (as the kernel matches them) ->
    /// destination id. Hashes, not names: a plan may hold a million.
    pub domains: HashMap<u64, Arc<str>>,
    /// Blocked ranges -> destination id.
    pub cidrs: Vec<(IpNet, Arc<str>)>,
    /// (destination id, index into the apps given, user or every user).
    pub pairs: HashSet<(String, usize, Option<u32>)>,
    /// Domains too deep for the kernel to check (blocked after the first connection only).
    pub too_deep: usize,
    /// Patterns of blocked destinations (Exodus signatures): the kernel cannot match them,
    /// so they are blocked after the first connection only.
    pub patterns: usize,
    /// Blocked domains left out of the kernel's name table because a blocked app calls
    /// them its own (`first_party`): the policy never flags an app's first-party names, so
    /// the kernel must not deny them by name either.
    pub first_party: usize,
}

impl BlockPlan {
    pub fn is_empty(&self) -> bool {
        self.pairs.is_empty()
    }

    /// The blocked destination `name` or one of its parent domains is, if any (whole
    /// labels, the most specific first), as the kernel matches it.
    pub fn destination_of(&self, name: &str) -> Option<&str> {
        let name = super::matcher::normalize_domain(name).ok()?;
        let mut rest = name.as_str();
        loop {
            if let Some(id) = self.domains.get(&monitor_common::domain_hash(rest).0) {
                return Some(id);
            }
            rest = &rest[rest.find('.')? + 1..];
        }
    }
}

impl Policy {
    /// Whether any rule blocks, or users may block and some of `users` did.
    pub fn blocks_anything(&self, users: &[UserBlock]) -> bool {
        self.rules.iter().any(|r| r.action == Action::Block)
            || (self.allow_user_blocks && !users.is_empty())
    }

    /// What to block for each of `apps` (the watched apps; `None` for a watch that is no
    /// known app, which only `apps = "*"` rules cover), with `users`' own blocks where the
    /// administrator lets users block.
    pub fn block_plan(&self, apps: &[Option<&AppDef>], users: &[UserBlock]) -> BlockPlan {
        let mut plan = BlockPlan::default();
        if !self.blocks_anything(users) {
            return plan;
        }
        let block_rules: Vec<_> = self
            .rules
            .iter()
            .filter(|r| r.action == Action::Block)
            .collect();
        let mut blocked_entries: HashSet<u32> = HashSet::new();
        for (idx, entry) in self.entries.iter().enumerate() {
            let idx = idx as u32;
            // Only entries some block rule could cover are decided per app.
            let maybe = block_rules.iter().any(|r| r.covers(entry).is_some());
            if maybe {
                for (i, app) in apps.iter().enumerate() {
                    let hit = Hit::Pattern(String::new());
                    if self.decide(*app, idx, hit, None).action == Action::Block {
                        plan.pairs.insert((entry.id.clone(), i, EVERY_USER));
                        blocked_entries.insert(idx);
                    }
                }
            }
            if self.allow_user_blocks {
                for b in users {
                    if !b.company.eq_ignore_ascii_case(&entry.company) {
                        continue;
                    }
                    for (i, app) in apps.iter().enumerate() {
                        if app.is_some_and(|a| a.id == b.app) {
                            plan.pairs.insert((entry.id.clone(), i, Some(b.uid)));
                            blocked_entries.insert(idx);
                        }
                    }
                }
            }
        }
        if blocked_entries.is_empty() {
            return plan;
        }
        // First-party domains of the apps that block anything.
        let blocking_apps: HashSet<usize> = plan.pairs.iter().map(|(_, i, _)| *i).collect();
        let own: HashSet<String> = blocking_apps
            .iter()
            .filter_map(|&i| apps.get(i).copied().flatten())
            .flat_map(|a| a.first_party.iter())
            .filter_map(|d| super::matcher::normalize_domain(d).ok())
            .collect();
        let is_own = |domain: &str| {
            let mut rest = domain;
            loop {
                if own.contains(rest) {
                    return true;
                }
                match rest.find('.') {
                    Some(dot) => rest = &rest[dot + 1..],
                    None => return false,
                }
            }
        };
        let ids: HashMap<u32, Arc<str>> = blocked_entries
            .iter()
            .map(|&e| (e, Arc::from(self.entries[e as usize].id.as_str())))
            .collect();
        for (domain, entry) in self.matcher.domains() {
            let Some(id) = ids.get(&entry) else {
                continue;
            };
            if !own.is_empty() && is_own(domain) {
                plan.first_party += 1;
                continue;
            }
            let (hash, labels) = monitor_common::domain_hash(domain);
            if labels > MAX_LABELS {
                plan.too_deep += 1;
                continue;
            }
            plan.domains.insert(hash, id.clone());
        }
        for (net, entry) in self.matcher.cidrs() {
            if let Some(id) = ids.get(&entry) {
                plan.cidrs.push((net, id.clone()));
            }
        }
        plan.patterns = self
            .matcher
            .pattern_entries()
            .filter(|e| blocked_entries.contains(e))
            .count();
        plan
    }

    /// The block among `users` of `uid` that covers a contact of `app` with `company`, if
    /// the administrator lets users block.
    pub fn user_block<'u>(
        &self,
        users: &'u [UserBlock],
        uid: u32,
        app: Option<&AppDef>,
        company: &str,
    ) -> Option<&'u UserBlock> {
        if !self.allow_user_blocks {
            return None;
        }
        let app = app?;
        users
            .iter()
            .find(|b| b.uid == uid && b.app == app.id && b.company.eq_ignore_ascii_case(company))
    }
}
