//! Each user's record budget in the kernel (see `monitor-ebpf`'s `budget`): its settings,
//! the subordinate uid ranges as prefixes, and what the kernel refused. `Sensor` fills and
//! reads the maps.

use std::net::IpAddr;

use aya::maps::{lpm_trie::Key, Array, HashMap, LpmTrie, MapData};
use monitor_common::{names::map, Budget, BudgetSlot, DestKey, Folded, AF_INET, AF_INET6};

use super::{error::map_err, Sensor, SensorError};
use crate::host::users::SubUids;

/// A budget: a sustained rate and a burst, in record bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BudgetSettings {
    /// Bytes a second; 0 turns budgets off.
    pub bytes_per_sec: u64,
    /// Bytes a user may send at once.
    pub burst_bytes: u64,
}

impl BudgetSettings {
    /// The defaults for a ring of `ring_bytes`.
    pub fn for_ring(ring_bytes: u32) -> Self {
        Self::new(crate::defaults::USER_RECORD_RATE, ring_bytes)
    }

    /// `bytes_per_sec` (0: off), with the burst a ring of `ring_bytes` allows a user.
    pub fn new(bytes_per_sec: u64, ring_bytes: u32) -> Self {
        Self {
            bytes_per_sec,
            burst_bytes: u64::from(ring_bytes >> crate::defaults::USER_BURST_SHIFT),
        }
    }

    /// No budget: every record is admitted.
    pub const OFF: Self = Self {
        bytes_per_sec: 0,
        burst_bytes: 0,
    };

    /// (nanoseconds of credit a KiB costs, burst in nanoseconds) for the kernel.
    pub fn kernel_terms(self) -> (u32, u64) {
        if self.bytes_per_sec == 0 {
            return (0, 0);
        }
        let ns_per_kib = (1024 * 1_000_000_000u64 / self.bytes_per_sec).clamp(1, u32::MAX as u64);
        let burst_ns = self.burst_bytes.saturating_mul(1_000_000_000) / self.bytes_per_sec;
        (ns_per_kib as u32, burst_ns)
    }
}

/// Calls of one process to one destination that its user's budget refused since the last
/// look.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FoldedCalls {
    pub tgid: u32,
    /// The owning uid (subordinate uids count as their owner's).
    pub uid: u32,
    pub dst: IpAddr,
    pub calls: u64,
    /// Distinct ports among them, about.
    pub ports: u32,
}

/// A user over budget: records refused since the kernel made the user's entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UserOver {
    pub uid: u32,
    pub refused: u64,
}

/// `[first, first + count)` as the fewest prefixes of a 32-bit number: (value, length).
pub fn range_prefixes(first: u32, count: u32) -> Vec<(u32, u32)> {
    let (mut start, end) = (u64::from(first), u64::from(first) + u64::from(count));
    let mut out = Vec::new();
    while start < end {
        let align = if start == 0 {
            1u64 << 32
        } else {
            1u64 << start.trailing_zeros()
        };
        let fits = 1u64 << (63 - (end - start).leading_zeros());
        let size = align.min(fits);
        out.push((start as u32, 32 - size.trailing_zeros()));
        start += size;
    }
    out
}

pub(super) fn dest_key(tgid: u32, uid: u32, addr: IpAddr) -> DestKey {
    let (family, bytes) = match addr {
        IpAddr::V4(v4) => {
            let mut b = [0u8; 16];
            b[..4].copy_from_slice(&v4.octets());
            (AF_INET, b)
        }
        IpAddr::V6(v6) => (AF_INET6, v6.octets()),
    };
    DestKey {
        tgid,
        uid,
        family: u32::from(family),
        _pad: 0,
        addr: bytes,
    }
}

pub(super) fn key_addr(key: &DestKey) -> IpAddr {
    if key.family == u32::from(AF_INET) {
        IpAddr::from([key.addr[0], key.addr[1], key.addr[2], key.addr[3]])
    } else {
        IpAddr::from(key.addr)
    }
}

/// Each user's record budget.
impl Sensor {
    /// Counts every uid of `subuids`' ranges as its owner's in the kernel's budgets (a
    /// table of [`monitor_common::MAX_BUDGET_OWNER_PREFIXES`] prefixes; ranges past it
    /// keep budgets of their own, said in the log).
    pub fn set_budget_owners(&mut self, subuids: &SubUids) -> Result<(), SensorError> {
        let mut trie: LpmTrie<&mut MapData, [u8; 4], u32> = self
            .map_mut(map::BUDGET_OWNERS)?
            .try_into()
            .map_err(map_err(map::BUDGET_OWNERS))?;
        let mut full = false;
        for (first, count, owner) in subuids.ranges() {
            for (value, len) in range_prefixes(first, count) {
                let key = Key::new(len, value.to_be_bytes());
                if trie.insert(&key, owner, 0).is_err() {
                    full = true;
                }
            }
        }
        if full {
            log::warn!(
                "/etc/subuid has more ranges than the kernel's table holds; the rest have record budgets of their own"
            );
        }
        Ok(())
    }

    /// Reports calls to `addr` whatever their user's budget (a destination that alerted).
    pub fn prioritise(&mut self, addr: IpAddr) -> Result<(), SensorError> {
        let mut m: HashMap<&mut MapData, DestKey, u32> = self
            .map_mut(map::PRIORITY_ADDRS)?
            .try_into()
            .map_err(map_err(map::PRIORITY_ADDRS))?;
        m.insert(dest_key(0, 0, addr), 1, 0)
            .map_err(map_err(map::PRIORITY_ADDRS))
    }

    /// Takes the calls refused over budget since the last call, per process and
    /// destination (the kernel's table is emptied).
    pub fn take_folded(&mut self) -> Result<Vec<FoldedCalls>, SensorError> {
        let mut m: HashMap<&mut MapData, DestKey, Folded> = self
            .map_mut(map::FOLDED)?
            .try_into()
            .map_err(map_err(map::FOLDED))?;
        let entries: Vec<(DestKey, Folded)> = m.iter().filter_map(Result::ok).collect();
        let mut out = Vec::with_capacity(entries.len());
        for (key, f) in entries {
            let _ = m.remove(&key);
            out.push(FoldedCalls {
                tgid: key.tgid,
                uid: key.uid,
                dst: key_addr(&key),
                calls: f.calls,
                ports: f.port_changes + 1,
            });
        }
        Ok(out)
    }

    /// Users the kernel refused records of, with their totals (the array's slots, then the
    /// hash of users whose slot another user held). One look-up a slot: read it when the
    /// kernel's over-budget counter moved, not on every tick.
    pub fn users_over(&self) -> Result<Vec<UserOver>, SensorError> {
        let slots: Array<&MapData, BudgetSlot> = self
            .map(map::BUDGET_SLOTS)?
            .try_into()
            .map_err(map_err(map::BUDGET_SLOTS))?;
        let mut over: Vec<UserOver> = slots
            .iter()
            .filter_map(Result::ok)
            .filter(|s| s.claimed != 0 && s.budget.over > 0)
            .map(|s| UserOver {
                uid: s.uid,
                refused: s.budget.over,
            })
            .collect();
        let m: HashMap<&MapData, u32, Budget> = self
            .map(map::BUDGETS)?
            .try_into()
            .map_err(map_err(map::BUDGETS))?;
        over.extend(
            m.iter()
                .filter_map(Result::ok)
                .filter(|(_, b)| b.over > 0)
                .map(|(uid, b)| UserOver {
                    uid,
                    refused: b.over,
                }),
        );
        Ok(over)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn covers(prefixes: &[(u32, u32)]) -> Vec<(u64, u64)> {
        prefixes
            .iter()
            .map(|&(v, len)| (u64::from(v), u64::from(v) + (1u64 << (32 - len))))
            .collect()
    }

    #[test]
    fn subuid_range_becomes_exact_prefixes() {
        // Debian's first range: 100000:65536 is not aligned.
        let p = range_prefixes(100_000, 65_536);
        let spans = covers(&p);
        assert_eq!(spans.first().unwrap().0, 100_000);
        assert_eq!(spans.last().unwrap().1, 165_536);
        for w in spans.windows(2) {
            assert_eq!(w[0].1, w[1].0, "prefixes must tile the range: {p:?}");
        }
        assert!(p.len() <= 32, "{} prefixes", p.len());
        assert_eq!(range_prefixes(65_536, 65_536), vec![(65_536, 16)]);
        assert!(range_prefixes(5, 0).is_empty());
        assert_eq!(range_prefixes(0, u32::MAX).len(), 32);
    }

    #[test]
    fn budget_terms_match_the_rate() {
        let t = BudgetSettings {
            bytes_per_sec: 1024 * 1024,
            burst_bytes: 1024 * 1024,
        }
        .kernel_terms();
        assert_eq!(t, (976_562, 1_000_000_000));
        assert_eq!(BudgetSettings::OFF.kernel_terms(), (0, 0));
    }
}
