//! The store's figures read from anywhere: a client's `status` asks them on its own task,
//! while the daemon's main loop sleeps between idle ticks.

use std::{path::PathBuf, sync::atomic::Ordering::Relaxed, sync::Arc};

use super::Health;
use crate::protocol::StoreStatus;

/// Reads a store's figures from anywhere (see [`super::Store::gauge`]); the default reads a store
/// that wrote nothing.
#[derive(Clone, Default)]
pub struct Gauge {
    pub(super) path: PathBuf,
    pub(super) health: Arc<Health>,
}

impl Gauge {
    pub fn status(&self) -> StoreStatus {
        let h = &self.health;
        StoreStatus {
            path: self.path.clone(),
            alerts_written: h.alerts.load(Relaxed),
            connections_written: h.connections.load(Relaxed),
            sent_written: h.sent.load(Relaxed),
            pending: h.pending.load(Relaxed),
            dropped: h.dropped.load(Relaxed),
            error: h.error.lock().ok().and_then(|e| e.clone()),
            quota_refused: h.refused.load(Relaxed),
            over_quota: h.over_quota.lock().map(|q| q.clone()).unwrap_or_default(),
        }
    }
}
