//! What each company received from an app (issue 25): "LinkedIn received your e-mail address
//! (SHA-256) in the URL". Built from leak findings (an audit's, or the store's rows); an
//! identifier is named by kind and form, never by value.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::{
    inspect::{Form, IdKind, Place},
    leak::{what_phrase, Leak},
    policy::{Category, Severity},
};

/// One thing a destination received from an app, summed over requests and processes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Received {
    /// "your e-mail address (SHA-256)", "3 e-mail addresses that are not yours".
    pub what: String,
    /// `None` for other people's addresses.
    pub identifier: Option<IdKind>,
    pub form: Option<Form>,
    /// Distinct addresses that are not the user's (the most one process sent).
    #[serde(default)]
    pub other_addresses: u64,
    pub place: Place,
    /// The host the requests named.
    pub host: Option<String>,
    pub requests: u64,
    pub first_ms: u64,
    pub last_ms: u64,
}

impl Received {
    /// "your e-mail address (SHA-256) in the URL".
    pub fn phrase(&self) -> String {
        format!("{} {}", self.what, self.place.phrase())
    }
}

/// One leak as a report groups it: which app, which company, what.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SentContact {
    pub app: String,
    pub company: Option<String>,
    pub category: Option<Category>,
    pub severity: Option<Severity>,
    pub flagged: bool,
    pub received: Received,
}

impl SentContact {
    /// A leak finding's part of a report (first parties go with unlisted hosts: they are
    /// not a company that received something).
    pub fn of(l: &Leak) -> Self {
        let company = l.company.clone().filter(|_| !l.first_party);
        Self {
            app: l.app.clone().unwrap_or_else(|| l.comm.clone()),
            category: l.category.clone().filter(|_| company.is_some()),
            severity: l.severity.filter(|_| company.is_some()),
            flagged: l.flagged && company.is_some(),
            company,
            received: Received {
                what: what_phrase(l.identifier, l.form, l.other_addresses),
                identifier: l.identifier,
                form: l.form,
                other_addresses: l.other_addresses,
                place: l.place,
                host: l.host.clone(),
                requests: l.requests,
                first_ms: l.first_ms,
                last_ms: l.last_ms,
            },
        }
    }
}

/// The key rows merge on: what, where in the request, to which host.
type Key = (Option<IdKind>, Option<Form>, Place, Option<String>);

/// Received rows while grouping.
#[derive(Debug, Default)]
pub(super) struct ReceivedGroup(BTreeMap<Key, Received>);

impl ReceivedGroup {
    pub(super) fn add(&mut self, r: &Received) {
        let key = (r.identifier, r.form, r.place, r.host.clone());
        match self.0.get_mut(&key) {
            Some(row) => {
                row.requests += r.requests;
                row.first_ms = row.first_ms.min(r.first_ms);
                row.last_ms = row.last_ms.max(r.last_ms);
                if r.other_addresses > row.other_addresses {
                    row.other_addresses = r.other_addresses;
                    row.what = r.what.clone();
                }
            }
            None => {
                self.0.insert(key, r.clone());
            }
        }
    }

    /// The user's own identifiers first (by kind), then other people's addresses; most
    /// requests first within each.
    pub(super) fn into_rows(self) -> Vec<Received> {
        let mut v: Vec<Received> = self.0.into_values().collect();
        v.sort_by(|a, b| {
            (a.identifier.is_none(), a.identifier)
                .cmp(&(b.identifier.is_none(), b.identifier))
                .then(b.requests.cmp(&a.requests))
                .then(a.host.cmp(&b.host))
        });
        v
    }
}
