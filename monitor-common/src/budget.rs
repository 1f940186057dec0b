//! Wire types of each user's record budget in the kernel (`monitor-ebpf`'s `budget`):
//! the budgets, the calls refused and folded per process and destination, and the
//! destinations that always pass.

use core::mem::size_of;

/// Entries of `BUDGETS`: users with a record budget at once (least recently used evicted;
/// an evicted user starts again with a full budget).
pub const MAX_BUDGET_USERS: u32 = 4_096;
/// Slots of `BUDGET_SLOTS` (a power of two): a user's budget lives in slot `owner uid %
/// BUDGET_SLOT_COUNT` when that slot is free or already theirs, else in `BUDGETS`. An array's
/// look-up is a few instructions where a hash's is a call (the connect pays it).
pub const BUDGET_SLOT_COUNT: u32 = 1_024;
/// Entries of `BUDGET_OWNERS`: prefixes of subordinate uid ranges (`/etc/subuid`).
pub const MAX_BUDGET_OWNER_PREFIXES: u32 = 4_096;
/// Entries of `FOLDED`: (process, destination) pairs whose calls over budget are counted.
pub const MAX_FOLDED: u32 = 4_096;
/// Entries of `PRIORITY_ADDRS`: destinations whose calls are reported whatever the budget.
pub const MAX_PRIORITY_ADDRS: u32 = 8_192;
/// Uids below this are never subordinate (no `/etc/subuid` look-up in the kernel).
pub const FIRST_SUBORDINATE_UID: u32 = 65_536;

/// A user's record budget (value of `BUDGETS`, keyed by the owning uid): a generic cell
/// rate algorithm, one time stamp per user.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Budget {
    /// When the user's spent credit runs out (`CLOCK_BOOTTIME` ns): a record is admitted
    /// while this, plus its cost, is at most `budget_burst_ns` ahead of now.
    pub tat_ns: u64,
    /// Records refused since the entry was made.
    pub over: u64,
}

/// A slot of `BUDGET_SLOTS`: the budget of the user that claimed it first.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BudgetSlot {
    /// The owning uid whose budget this is (meaningful once `claimed`).
    pub uid: u32,
    /// 1 once a user claimed the slot (slot 0 is root's, uid 0, before and after).
    pub claimed: u32,
    pub budget: Budget,
}

/// The `BUDGET_SLOTS` slot of an owning uid.
#[inline(always)]
pub const fn budget_slot(owner: u32) -> u32 {
    owner & (BUDGET_SLOT_COUNT - 1)
}

/// Key of `FOLDED` (calls over budget, counted per process and destination) and of
/// `PRIORITY_ADDRS` (with `tgid` 0: destinations reported whatever the budget).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct DestKey {
    pub tgid: u32,
    /// The owning uid of the caller (`FOLDED`); 0 in `PRIORITY_ADDRS`.
    pub uid: u32,
    /// [`crate::AF_INET`] or [`crate::AF_INET6`] (ports are not part of the key: a flood across ports
    /// folds into one entry).
    pub family: u32,
    pub _pad: u32,
    /// 4 bytes for [`crate::AF_INET`] (rest zero), 16 for [`crate::AF_INET6`].
    pub addr: [u8; 16],
}

/// Value of `FOLDED`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Folded {
    /// Calls refused (not reported, not captured).
    pub calls: u64,
    /// Distinct ports among them, approximately (the port of a call that differs from the
    /// last one counts).
    pub port_changes: u32,
    /// The last port refused.
    pub last_port: u16,
    pub _pad: u16,
}

const _: () = assert!(size_of::<Budget>() == 16);
const _: () = assert!(size_of::<BudgetSlot>() == 24);
const _: () = assert!(BUDGET_SLOT_COUNT.is_power_of_two());
const _: () = assert!(size_of::<DestKey>() == 32);
const _: () = assert!(size_of::<Folded>() == 16);

#[cfg(feature = "user")]
mod pod {
    use super::*;
    // SAFETY: `#[repr(C)]`, `Copy`, made only of integers and byte arrays, with no padding
    // (sizes asserted above).
    unsafe impl aya::Pod for Budget {}
    // SAFETY: as above.
    unsafe impl aya::Pod for BudgetSlot {}
    // SAFETY: as above.
    unsafe impl aya::Pod for DestKey {}
    // SAFETY: as above.
    unsafe impl aya::Pod for Folded {}
}
