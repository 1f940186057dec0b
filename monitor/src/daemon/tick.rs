//! The daemon's periodic work ([`Daemon::on_tick`]): sooner while records come in, every
//! [`defaults::DAEMON_IDLE_TICK`] when nothing does, and then only what time alone
//! changes (the store's writer, old rows, the watchdog). What the daemon tells about
//! itself lives here too: the status, the standing faults, the metrics file, the store's
//! notices.

use std::time::Instant;

use super::{journal, metrics, systemd, Daemon};
use crate::{
    defaults,
    host::clock::now_ms,
    kernel::KernelCounters,
    protocol::{Event, Notice, NoticeKind, Status},
};

impl Daemon {
    /// The periodic work: policy files (when their watch cannot be trusted, or now and
    /// then), the session's health, the store, status, standing faults, old rows, the
    /// watchdog. Returns when the next tick is due: sooner while records come in.
    pub fn on_tick(&mut self) -> std::time::Duration {
        if !self.policy_watch.complete()
            || self.last_policy_look.elapsed() >= defaults::POLICY_LOOK_EVERY
        {
            self.look_at_policy_files();
        }
        // Every record counts as generated first (admitted, refused or lost): when neither
        // that nor what was delivered moved since a tick that did all its work, there is
        // nothing to read, hand over or tell, and one look-up says so.
        let books = (
            self.session.capture.delivered,
            self.session.sensor.generated().ok(),
        );
        let quiet = self.idle && books == self.last_books;
        self.idle = books == self.last_books;
        self.last_books = books;
        if !quiet {
            self.busy_tick();
        }
        // Rows and sockets age out while nothing comes too (a flood's tables are given
        // back once it is over).
        self.session.forget_older_than(defaults::ROWS_KEPT_FOR);
        // The store's writer works after the tick that handed it rows.
        let store = self.store.status();
        if self.status_store.as_ref() != Some(&store) {
            self.update_status(self.session.counters().ok());
        }
        if let Some(notice) = store_notice(&mut self.store_error, store) {
            let _ = self.shared.alerts.send(Event::Notice(notice));
            self.update_standing();
        }
        self.write_metrics(false);
        if let Some(every) = self.watchdog {
            if self.last_watchdog.elapsed() >= every {
                systemd::notify("WATCHDOG=1");
                self.last_watchdog = Instant::now();
            }
        }
        if !self.idle {
            return defaults::DAEMON_TICK;
        }
        // systemd's watchdog and the metrics file are told on a tick: never later than
        // they are due.
        let due = [self.watchdog, self.metrics.as_ref().map(|m| m.every())];
        due.into_iter()
            .flatten()
            .fold(defaults::DAEMON_IDLE_TICK, std::time::Duration::min)
            .max(defaults::DAEMON_TICK)
    }

    /// A tick's work when records came: the session's health (ended apps, counters,
    /// losses, budgets), what was sent, the store, the status.
    fn busy_tick(&mut self) {
        let health = self.session.tick();
        self.tell_sent();
        self.store_touched();
        self.update_status(health.counters);
        if let Some(notice) = health.loss {
            log::warn!(message_id = journal::LOSS_ID; "{}", notice.message);
            let _ = self.shared.alerts.send(Event::Notice(notice));
        }
        if let Some(notice) = health.over_budget {
            log::warn!(message_id = journal::OVER_BUDGET_ID; "{}", notice.message);
            let _ = self.shared.alerts.send(Event::Notice(notice));
        }
    }

    /// What holds now, for admins who subscribe later.
    pub(super) fn update_standing(&self) {
        let store = self.store_error.iter().map(|e| Notice {
            kind: NoticeKind::StoreError,
            message: e.clone(),
            ts_ms: now_ms(),
        });
        let standing: Vec<Notice> = self.policy.notice().into_iter().chain(store).collect();
        if let Ok(mut s) = self.shared.standing.lock() {
            *s = standing;
        }
    }

    pub(super) fn update_status(&mut self, counters: Option<KernelCounters>) {
        let store = self.store.status();
        self.status_store = Some(store.clone());
        let s = &self.session;
        let status = Status {
            pid: std::process::id(),
            uptime_s: self.started.elapsed().as_secs(),
            kernel: s.sensor.kernel.release.clone(),
            attach: s.sensor.scope,
            attached: s.sensor.hooks(),
            watched_apps: s.watched().to_vec(),
            counters,
            records_delivered: s.capture.delivered,
            alerts: self.alerts_total,
            policy_sources: self.policy.summary(),
            socket: self.opts.socket.clone(),
            store,
            policy_error: self.policy.error.clone(),
            blocking: s.blocking.enforcing,
            block_error: s.blocking.error.clone(),
            all_users: true,
        };
        if let Ok(mut st) = self.shared.status.lock() {
            *st = Some(status);
        }
    }

    /// The counters to `--metrics-file`: when due, or now (`now`, on stop).
    pub(super) fn write_metrics(&mut self, now: bool) {
        let Some(m) = &mut self.metrics else { return };
        let s = &self.session;
        let store = self.store.status();
        let snapshot = metrics::Snapshot {
            counters: s.counters().ok(),
            delivered: s.capture.delivered,
            store: &store,
            policy_error: self.policy.error.is_some(),
            watched_apps: s.watched().len(),
            uptime: self.started.elapsed(),
        };
        match now {
            true => m.write(&snapshot),
            false => m.tick(&snapshot),
        }
    }
}

/// A notice (and a log line) when the store starts failing, fails differently, or recovers.
fn store_notice(last: &mut Option<String>, status: crate::protocol::StoreStatus) -> Option<Notice> {
    if status.error == *last {
        return None;
    }
    let notice = match &status.error {
        Some(e) => {
            log::error!(
                message_id = journal::STORE_ERROR_ID;
                "{e}; alerts still reach agents and the journal, {} rows wait in memory",
                status.pending
            );
            Notice {
                kind: NoticeKind::StoreError,
                message: format!("the connection store cannot be written: {e}; alerts are still shown, and {} rows wait in memory until it can", status.pending),
                ts_ms: now_ms(),
            }
        }
        None => {
            log::info!("the store is written again");
            Notice {
                kind: NoticeKind::StoreRecovered,
                message: "the connection store is written again; rows that waited were saved"
                    .into(),
                ts_ms: now_ms(),
            }
        }
    };
    *last = status.error;
    Some(notice)
}
