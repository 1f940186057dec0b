//! How a session is doing: the kernel's counters, and lost records said one way for every
//! sink (the audit logs it, the daemon logs it and tells its subscribers).

use std::time::{Duration, Instant};

use crate::{
    host::clock::now_ms,
    kernel::{FoldedCalls, KernelCounters, UserOver},
    protocol::{Notice, NoticeKind},
};

/// What [`super::Session::tick`] found.
#[derive(Debug, Clone)]
pub struct Health {
    /// `None` when the counters could not be read.
    pub counters: Option<KernelCounters>,
    /// Records were lost since the last notice (and the last one is old enough).
    pub loss: Option<Notice>,
    /// Users went over their record budget since the last notice (for administrators: it
    /// names uids and processes).
    pub over_budget: Option<Notice>,
}

/// Says when kernel records were lost, at most once per [`LossReporter::EVERY`], with the
/// number lost since it last spoke.
#[derive(Debug, Default)]
pub struct LossReporter {
    reported: u64,
    last: Option<Instant>,
}

impl LossReporter {
    pub const EVERY: Duration = crate::defaults::LOSS_NOTICE_EVERY;

    /// A notice if `lost` (the kernel's running total) grew and the last one is old enough.
    pub fn check(&mut self, lost: u64) -> Option<Notice> {
        if lost <= self.reported || self.last.is_some_and(|t| t.elapsed() < Self::EVERY) {
            return None;
        }
        let new = lost - self.reported;
        self.reported = lost;
        self.last = Some(Instant::now());
        Some(Notice {
            kind: NoticeKind::RecordsLost,
            message: format!(
                "{new} kernel records lost ({lost} since start): some connections of watched apps were not seen; the ring buffer is too small for this load (--ring-size)"
            ),
            ts_ms: now_ms(),
        })
    }
}

/// Calls of one process to one destination refused over budget, summed between notices.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FoldedSum {
    pub uid: u32,
    pub tgid: u32,
    /// The process's name, where the session knows it.
    pub process: Option<String>,
    pub dst: std::net::IpAddr,
    pub calls: u64,
    pub ports: u64,
}

/// Says which users went over their record budget, at most once per
/// [`BudgetReporter::EVERY`], with the processes and destinations that cost the most.
#[derive(Debug, Default)]
pub struct BudgetReporter {
    /// Refused records per uid already told.
    told: std::collections::HashMap<u32, u64>,
    /// Folded calls since the last notice, per (uid, tgid, destination).
    folded: std::collections::HashMap<(u32, u32, std::net::IpAddr), FoldedSum>,
    last: Option<Instant>,
    /// The kernel's over-budget count when the users' totals were last compared.
    compared_at: Option<u64>,
}

/// Processes named in one notice.
const NAMED_IN_NOTICE: usize = 3;
/// Folded (process, destination) sums kept between notices.
const FOLDED_KEPT: usize = 4096;

impl BudgetReporter {
    pub const EVERY: Duration = crate::defaults::BUDGET_NOTICE_EVERY;

    /// Adds calls the kernel folded (`name` gives a process's name).
    pub fn add_folded(&mut self, calls: &[FoldedCalls], name: impl Fn(u32) -> Option<String>) {
        for c in calls {
            let key = (c.uid, c.tgid, c.dst);
            if !self.folded.contains_key(&key) && self.folded.len() >= FOLDED_KEPT {
                continue;
            }
            let e = self.folded.entry(key).or_insert_with(|| FoldedSum {
                uid: c.uid,
                tgid: c.tgid,
                process: name(c.tgid),
                dst: c.dst,
                calls: 0,
                ports: 0,
            });
            e.calls += c.calls;
            e.ports += u64::from(c.ports);
        }
    }

    /// Whether the users' totals are worth reading now: a notice may go out, and the
    /// kernel's over-budget count (`None`: unknown) moved since they were last compared
    /// (a user's total grows only with it).
    pub fn wants_totals(&self, over_budget: Option<u64>) -> bool {
        if self.last.is_some_and(|t| t.elapsed() < Self::EVERY) {
            return false;
        }
        over_budget.is_none() || over_budget != self.compared_at
    }

    /// A notice if a user's refused total grew and the last notice is old enough;
    /// `over_budget` is the kernel's count the totals were read at.
    pub fn check(&mut self, users: &[UserOver], over_budget: Option<u64>) -> Option<Notice> {
        if self.last.is_some_and(|t| t.elapsed() < Self::EVERY) {
            return None;
        }
        self.compared_at = over_budget;
        let mut grown: Vec<(u32, u64, u64)> = users
            .iter()
            .filter_map(|u| {
                let before = self.told.get(&u.uid).copied().unwrap_or(0);
                // An entry evicted and made again starts from zero.
                let new = if u.refused >= before {
                    u.refused - before
                } else {
                    u.refused
                };
                (new > 0).then_some((u.uid, new, u.refused))
            })
            .collect();
        if grown.is_empty() {
            return None;
        }
        grown.sort_by_key(|g| std::cmp::Reverse(g.1));
        for u in users {
            self.told.insert(u.uid, u.refused);
        }
        self.last = Some(Instant::now());
        let mut folded: Vec<FoldedSum> = self.folded.drain().map(|(_, v)| v).collect();
        folded.sort_by_key(|f| std::cmp::Reverse(f.calls));
        let message = budget_message(&grown, &folded);
        Some(Notice {
            kind: NoticeKind::OverBudget,
            message,
            ts_ms: now_ms(),
        })
    }
}

/// The notice's text: who went over, by how much, and what cost the most.
fn budget_message(grown: &[(u32, u64, u64)], folded: &[FoldedSum]) -> String {
    let users: Vec<String> = grown
        .iter()
        .map(|(uid, new, total)| format!("uid {uid}: {new} records refused ({total} in all)"))
        .collect();
    let mut text = format!(
        "over their kernel record budget (--user-budget), so their own records were refused and no one else's: {}",
        users.join("; ")
    );
    let top: Vec<String> = folded
        .iter()
        .take(NAMED_IN_NOTICE)
        .map(|f| {
            let who = match &f.process {
                Some(name) => format!("{} (pid {})", crate::display::safe(name), f.tgid),
                None => format!("pid {}", f.tgid),
            };
            let ports = if f.ports > 1 {
                format!(" on about {} ports", f.ports)
            } else {
                String::new()
            };
            format!(
                "{who} of uid {}: {} calls to {}{ports}",
                f.uid, f.calls, f.dst
            )
        })
        .collect();
    if !top.is_empty() {
        text.push_str(&format!(". Most refused: {}", top.join("; ")));
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    fn over(uid: u32, refused: u64) -> UserOver {
        UserOver { uid, refused }
    }

    #[test]
    fn budget_totals_are_read_again_only_when_the_kernel_refused_more() {
        let mut r = BudgetReporter::default();
        assert!(r.wants_totals(Some(0)), "never compared yet");
        assert!(r.check(&[], Some(0)).is_none());
        assert!(!r.wants_totals(Some(0)), "nothing refused since");
        assert!(r.wants_totals(None), "the count unknown: read");
        assert!(r.wants_totals(Some(7)), "refusals since");
        let notice = r.check(&[over(1000, 7)], Some(7)).expect("a notice");
        assert!(
            notice.message.contains("uid 1000: 7 records refused"),
            "{}",
            notice.message
        );
        // Within the notice interval nothing is read, whatever the count.
        assert!(!r.wants_totals(Some(9)));
        assert!(r.check(&[over(1000, 9)], Some(9)).is_none());
    }
}
