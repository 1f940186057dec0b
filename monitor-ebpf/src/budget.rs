//! Fairness before the ring: every user has a budget of record bytes (a sustained rate and
//! a burst), so that one user's flood costs that user's records and never another's.
//!
//! * A generic cell rate algorithm per owning uid: one time stamp per user, no timer. A
//!   user's budget lives in its slot of an array (`BUDGET_SLOTS`, the owner uid's low
//!   bits: the first user to come claims it), else, when another user holds that slot, in
//!   a least recently used hash (`BUDGETS`). Subordinate uids (`/etc/subuid`) count as
//!   their owner's (`BUDGET_OWNERS`), so that user namespaces do not multiply a budget.
//! * Calls refused over budget are folded into counts per (process, destination), ports
//!   aside (`FOLDED`): userspace reports what the flood was, and nothing is silent.
//! * Destinations that userspace found flagged (`PRIORITY_ADDRS`) and denied calls pass
//!   whatever the budget: a flood in the same account cannot starve the records that alert.
//!
//! Concurrent updates of one user's entry from two CPUs may lose one of the two charges; the
//! budget is a bound on the order of magnitude, not an exact meter.

use aya_ebpf::{
    macros::map,
    maps::{lpm_trie::Key, Array, LpmTrie, LruHashMap},
};
use monitor_common::{
    budget_slot, Budget, BudgetSlot, Counter, DestKey, Folded, BUDGET_SLOT_COUNT,
    FIRST_SUBORDINATE_UID, MAX_BUDGET_OWNER_PREFIXES, MAX_BUDGET_USERS, MAX_FOLDED,
    MAX_PRIORITY_ADDRS,
};

use crate::state::{count, CONFIG};

#[map]
pub static BUDGET_SLOTS: Array<BudgetSlot> = Array::with_max_entries(BUDGET_SLOT_COUNT, 0);

#[map]
pub static BUDGETS: LruHashMap<u32, Budget> = LruHashMap::with_max_entries(MAX_BUDGET_USERS, 0);

/// Subordinate uid ranges as prefixes of the big-endian uid -> owning uid.
#[map]
pub static BUDGET_OWNERS: LpmTrie<[u8; 4], u32> =
    LpmTrie::with_max_entries(MAX_BUDGET_OWNER_PREFIXES, 0);

#[map]
pub static FOLDED: LruHashMap<DestKey, Folded> = LruHashMap::with_max_entries(MAX_FOLDED, 0);

#[map]
pub static PRIORITY_ADDRS: LruHashMap<DestKey, u32> =
    LruHashMap::with_max_entries(MAX_PRIORITY_ADDRS, 0);

/// Whose budget `uid` spends: the owner of its subordinate range, else itself.
#[inline(always)]
pub fn owner(uid: u32) -> u32 {
    if uid < FIRST_SUBORDINATE_UID {
        return uid;
    }
    match BUDGET_OWNERS.get(Key::new(32, uid.to_be_bytes())) {
        Some(owner) => *owner,
        None => uid,
    }
}

/// Charges `bytes` of records to `uid`'s owner at `now_ns`; `false` (counted) when that
/// would run the owner's credit further ahead than the burst allows, unless `passes()`
/// (asked only then) lets the record through uncharged.
#[inline(always)]
pub fn admit(uid: u32, bytes: u32, now_ns: u64, passes: impl FnOnce() -> bool) -> bool {
    let Some(cfg) = CONFIG.get(0) else {
        return true;
    };
    if cfg.budget_ns_per_kib == 0 {
        return true;
    }
    let cost = (bytes as u64 * cfg.budget_ns_per_kib as u64) >> 10;
    let owner = owner(uid);
    let budget = match slot_of(owner) {
        Some(budget) => budget,
        None => match BUDGETS.get_ptr_mut(owner) {
            Some(budget) => budget,
            None => {
                let fresh = Budget {
                    tat_ns: now_ns + cost,
                    over: 0,
                };
                let _ = BUDGETS.insert(owner, fresh, 0);
                return true;
            }
        },
    };
    // SAFETY: this user's slot or LRU entry; a racing CPU can only lose one charge.
    unsafe {
        let tat = if (*budget).tat_ns > now_ns {
            (*budget).tat_ns
        } else {
            now_ns
        };
        let next = tat + cost;
        if next - now_ns > cfg.budget_burst_ns {
            if passes() {
                return true;
            }
            (*budget).over += 1;
            count(Counter::OverBudget);
            return false;
        }
        (*budget).tat_ns = next;
    }
    true
}

/// `owner`'s budget in its array slot, claiming the slot when it is free; `None` when
/// another user holds it. Two users claiming one slot at once on two CPUs: the last
/// write names the slot's owner, and the other goes to `BUDGETS` from its next call (it
/// keeps its credit then, a burst at most).
#[inline(always)]
fn slot_of(owner: u32) -> Option<*mut Budget> {
    let slot = BUDGET_SLOTS.get_ptr_mut(budget_slot(owner))?;
    // SAFETY: a slot of the array, written in place.
    unsafe {
        if (*slot).claimed == 0 {
            (*slot).uid = owner;
            (*slot).claimed = 1;
        } else if (*slot).uid != owner {
            return None;
        }
        Some(core::ptr::addr_of_mut!((*slot).budget))
    }
}

/// Whether calls to this destination are reported whatever the budget.
#[inline(always)]
pub fn priority(family: u16, addr: &[u8; 16]) -> bool {
    let key = DestKey {
        tgid: 0,
        uid: 0,
        family: family as u32,
        _pad: 0,
        addr: *addr,
    };
    // SAFETY: plain values.
    unsafe { PRIORITY_ADDRS.get(key) }.is_some()
}

/// Counts a call refused over budget against its process and destination.
#[inline(always)]
pub fn fold(tgid: u32, uid: u32, family: u16, addr: &[u8; 16], port: u16) {
    let key = DestKey {
        tgid,
        uid: owner(uid),
        family: family as u32,
        _pad: 0,
        addr: *addr,
    };
    if let Some(f) = FOLDED.get_ptr_mut(key) {
        // SAFETY: LRU value slot; a racing update can only lose an increment.
        unsafe {
            (*f).calls += 1;
            if (*f).last_port != port {
                (*f).port_changes += 1;
                (*f).last_port = port;
            }
        }
        return;
    }
    let fresh = Folded {
        calls: 1,
        port_changes: 0,
        last_port: port,
        _pad: 0,
    };
    let _ = FOLDED.insert(key, fresh, 0);
}
