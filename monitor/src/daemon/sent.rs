//! What watched apps sent (issue 25), from the daemon's side: each leak finding is told
//! once per (process, host, what) to the journal and, when its destination is flagged, to
//! the user's desktop; every new or changed one goes to the store; the rows of processes
//! that ended are let go once stored, so that the inspector's bounded table never fills.

use std::{collections::HashMap, sync::Arc};

use crate::{inspect::Sent, leak::Leak, protocol::Event};

/// What was told and stored already.
#[derive(Debug, Default)]
pub struct SentBook {
    /// Told to the journal (and the desktop), per (process, host, what).
    told: std::collections::HashSet<(u32, Option<String>, Sent)>,
    /// Stored, per row key: (process, requests, other addresses, company, flagged).
    stored: HashMap<String, (u32, u64, u64, Option<String>, bool)>,
}

/// What a leak row is about.
fn sent_of(leak: &Leak) -> Sent {
    match (leak.identifier, leak.form) {
        (Some(kind), Some(form)) => Sent::Identifier {
            kind,
            form,
            place: leak.place,
        },
        _ => Sent::OtherEmails { place: leak.place },
    }
}

/// A row's key in the store: one per (user, process and its first sighting, host, what).
fn row_key(leak: &Leak) -> String {
    format!(
        "sent|{}|{}|{}|{:?}|{:?}",
        leak.uid,
        leak.pid,
        leak.first_ms,
        leak.host,
        sent_of(leak)
    )
}

impl super::Daemon {
    /// Tells and stores what watched apps sent; forgets the rows of processes that ended.
    pub(super) fn tell_sent(&mut self) {
        if self.session.plaintext.is_none() {
            return;
        }
        for leak in self.session.leaks(&self.policy.policy) {
            let key = row_key(&leak);
            let now = (
                leak.pid,
                leak.requests,
                leak.other_addresses,
                leak.company.clone(),
                leak.flagged,
            );
            let changed = self.sent.stored.get(&key) != Some(&now);
            let new = self
                .sent
                .told
                .insert((leak.pid, leak.host.clone(), sent_of(&leak)));
            if new {
                self.journal.sent(&leak);
            }
            if changed {
                self.sent.stored.insert(key.clone(), now);
                self.store.record_sent(key, leak.clone());
            }
            // The user's desktop hears of leaks to flagged destinations.
            if new && leak.flagged {
                let _ = self.shared.alerts.send(Event::Sent(Arc::new(leak)));
            }
        }
        for pid in self.session.forget_finished_leaks() {
            self.sent.told.retain(|(p, ..)| *p != pid);
            self.sent.stored.retain(|_, v| v.0 != pid);
        }
    }
}
