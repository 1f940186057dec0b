//! Per-user bounds on what the store keeps (issue 22, item 5): one user's connections and
//! alerts can neither push out another user's history nor fill the disk. Each uid may keep
//! at most [`super::Retention::rows_per_uid`] connection rows and
//! [`super::Retention::alerts_per_uid`] alerts; past that its new rows are refused (updates
//! of its rows go on) and counted, and administrators see who hit the quota in `status`.

use std::collections::HashMap;

use rusqlite::Connection;

use super::StoreError;
use crate::protocol::UidQuota;

/// uids whose refusals are shown in `status` (the most refused first).
const SHOWN: usize = 20;
/// uids counted at most (a user with many subordinate uids cannot grow this without end;
/// past it, unknown uids are refused).
const MAX_UIDS: usize = 65_536;

/// What each uid keeps in the store, and what was refused.
#[derive(Debug, Default)]
pub(super) struct Usage {
    rows: HashMap<u32, u64>,
    alerts: HashMap<u32, u64>,
    /// Rows of what apps sent (issue 25).
    sent: HashMap<u32, u64>,
    refused: HashMap<u32, u64>,
}

impl Usage {
    /// The store's rows and alerts per uid, as they are on disk, each counted for its
    /// `owner` (subordinate uids for the user they belong to).
    pub(super) fn load(db: &Connection, owner: impl Fn(u32) -> u32) -> Result<Self, StoreError> {
        let per_uid = |table: &str| -> Result<HashMap<u32, u64>, StoreError> {
            let mut st = db.prepare(&format!("SELECT uid, count(*) FROM {table} GROUP BY uid"))?;
            let rows = st.query_map([], |r| Ok((r.get::<_, u32>(0)?, r.get::<_, i64>(1)?)))?;
            let mut out = HashMap::new();
            for row in rows {
                let (uid, n) = row?;
                *out.entry(owner(uid)).or_default() += n.max(0) as u64;
            }
            Ok(out)
        };
        Ok(Self {
            rows: per_uid("connections")?,
            alerts: per_uid("alerts")?,
            sent: per_uid("sent")?,
            refused: HashMap::new(),
        })
    }

    /// Whether `uid` may add a connection row (and counts it if so).
    pub(super) fn admit_row(&mut self, uid: u32, limit: u64) -> bool {
        admit(
            &mut self.rows,
            &mut self.refused,
            uid,
            limit,
            "connection rows",
        )
    }

    /// Whether `uid` may add an alert (and counts it if so).
    pub(super) fn admit_alert(&mut self, uid: u32, limit: u64) -> bool {
        admit(&mut self.alerts, &mut self.refused, uid, limit, "alerts")
    }

    /// Whether `uid` may add a row of what an app sent (and counts it if so).
    pub(super) fn admit_sent(&mut self, uid: u32, limit: u64) -> bool {
        admit(
            &mut self.sent,
            &mut self.refused,
            uid,
            limit,
            "rows of what apps sent",
        )
    }

    /// The uids over a limit, with how many rows each keeps: what trimming must cut.
    pub(super) fn over(&self, rows_limit: u64, alerts_limit: u64) -> Vec<(&'static str, u32, u64)> {
        let rows = self
            .rows
            .iter()
            .filter(|(_, n)| **n > rows_limit)
            .map(|(uid, _)| ("connections", *uid, rows_limit));
        let alerts = self
            .alerts
            .iter()
            .filter(|(_, n)| **n > alerts_limit)
            .map(|(uid, _)| ("alerts", *uid, alerts_limit));
        rows.chain(alerts).collect()
    }

    /// The uids whose rows were refused, the most refused first (at most [`SHOWN`]).
    pub(super) fn over_quota(&self) -> Vec<UidQuota> {
        let mut v: Vec<UidQuota> = self
            .refused
            .iter()
            .map(|(uid, refused)| UidQuota {
                uid: *uid,
                refused: *refused,
            })
            .collect();
        v.sort_by(|a, b| b.refused.cmp(&a.refused).then(a.uid.cmp(&b.uid)));
        v.truncate(SHOWN);
        v
    }

    /// Everything refused since the daemon started.
    pub(super) fn refused_total(&self) -> u64 {
        self.refused.values().sum()
    }

    /// Keeps what was refused when the counts are read again from disk.
    pub(super) fn reload(
        &mut self,
        db: &Connection,
        owner: impl Fn(u32) -> u32,
    ) -> Result<(), StoreError> {
        let refused = std::mem::take(&mut self.refused);
        *self = Self::load(db, owner)?;
        self.refused = refused;
        Ok(())
    }
}

fn admit(
    counts: &mut HashMap<u32, u64>,
    refused: &mut HashMap<u32, u64>,
    uid: u32,
    limit: u64,
    what: &str,
) -> bool {
    let known = counts.contains_key(&uid) || counts.len() < MAX_UIDS;
    let n = counts.get(&uid).copied().unwrap_or(0);
    if known && n < limit {
        counts.insert(uid, n + 1);
        return true;
    }
    let r = refused.entry(uid).or_default();
    if *r == 0 {
        log::warn!(
            "uid {uid} reached its store quota ({limit} {what}): its new rows are not stored (alerts still reach agents and the journal)"
        );
    }
    *r += 1;
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quota_admits_each_uid_up_to_its_limit_and_counts_what_it_refused() {
        let mut u = Usage::default();
        for _ in 0..5 {
            assert!(u.admit_row(1000, 3) || u.refused_total() > 0);
        }
        assert_eq!(u.rows[&1000], 3);
        assert!(u.admit_row(1001, 3), "another user is not affected");
        assert_eq!(u.refused_total(), 2);
        assert_eq!(
            u.over_quota(),
            [UidQuota {
                uid: 1000,
                refused: 2
            }]
        );
        assert!(u.admit_alert(1000, 1));
        assert!(!u.admit_alert(1000, 1));
        assert_eq!(
            u.over(2, 0).len(),
            2,
            "rows and alerts of 1000 over smaller limits"
        );
    }
}
