//! The notifications' actions (Details, Mute, Block): one listener on the session bus for
//! the notification server's `ActionInvoked` and `NotificationClosed` signals, subscribed
//! before the first notification that offers them is shown. (A listener per notification,
//! subscribing only after the notification was shown, lost a click that came first, and
//! kept a thread per notification waiting.)

use std::{
    collections::{HashMap, VecDeque},
    num::NonZeroUsize,
    sync::{Arc, Mutex},
};

use futures_util::StreamExt as _;

use super::Note;

/// How many notifications' actions are remembered; a click on an older one does nothing.
pub const REMEMBERED: usize = 64;

/// Signals queued for the listener while it acts on one (a click is a few signals).
const QUEUED: usize = 256;

const PATH: &str = "/org/freedesktop/Notifications";
const INTERFACE: &str = "org.freedesktop.Notifications";

#[derive(Debug, thiserror::Error)]
pub enum ActionsError {
    #[error("no session bus to hear the notifications' buttons on ({0}); notifications are shown without Details, Mute and Block")]
    Bus(#[from] zbus::Error),
    #[error("cannot start the thread that answers the notifications' buttons: {0}")]
    Thread(#[from] std::io::Error),
}

/// What the user picked on a notification.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Details,
    Mute,
    Block,
}

impl Action {
    /// The action's key in the notification and in the server's signal.
    pub fn key(self) -> &'static str {
        match self {
            Action::Details => "details",
            Action::Mute => "mute",
            Action::Block => "block",
        }
    }

    fn parse(key: &str) -> Option<Self> {
        [Action::Details, Action::Mute, Action::Block]
            .into_iter()
            .find(|a| a.key() == key)
    }
}

/// The notes shown with actions, by notification id: the newest [`REMEMBERED`].
#[derive(Debug, Default)]
pub struct Offered {
    notes: HashMap<u32, Note>,
    order: VecDeque<u32>,
}

impl Offered {
    /// A note shown as notification `id` (again, when a burst's summary replaced it).
    pub fn offer(&mut self, id: u32, note: Note) {
        if self.notes.insert(id, note).is_none() {
            self.order.push_back(id);
        }
        while self.order.len() > REMEMBERED {
            if let Some(old) = self.order.pop_front() {
                self.notes.remove(&old);
            }
        }
    }

    /// The server closed notification `id`: its buttons are gone.
    pub fn closed(&mut self, id: u32) {
        if self.notes.remove(&id).is_some() {
            self.order.retain(|&i| i != id);
        }
    }

    /// The user picked `key` on notification `id`: the note it showed and what to do, if
    /// it is one of ours and an action we offered.
    pub fn invoked(&self, id: u32, key: &str) -> Option<(Note, Action)> {
        let note = self.notes.get(&id)?;
        let action = Action::parse(key)?;
        (action != Action::Block || !note.blocked).then(|| (note.clone(), action))
    }

    pub fn len(&self) -> usize {
        self.notes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.notes.is_empty()
    }
}

/// The listener: subscribed when [`Listener::start`] returns; acts on its own thread.
pub struct Listener {
    offered: Arc<Mutex<Offered>>,
}

impl Listener {
    /// Subscribes to the notification server's signals and calls `on_action` for each
    /// button picked on a notification [`offer`](Self::offer)ed here.
    pub fn start(on_action: impl Fn(Note, Action) + Send + 'static) -> Result<Self, ActionsError> {
        let (conn, mut stream) = zbus::block_on(async {
            let conn = zbus::Connection::session().await?;
            let rule = zbus::MatchRule::builder()
                .msg_type(zbus::message::Type::Signal)
                .path(PATH)
                .interface(INTERFACE)
                .build()?;
            let stream =
                zbus::MessageStream::for_match_rule(rule, &conn, NonZeroUsize::new(QUEUED)).await?;
            Ok::<_, zbus::Error>((conn, stream))
        })?;
        let offered = Arc::new(Mutex::new(Offered::default()));
        let shared = offered.clone();
        std::thread::Builder::new()
            .name("notify-actions".into())
            .spawn(move || {
                let _conn = conn;
                // Each signal is awaited alone: acting (showing a notification, asking the
                // daemon) runs outside zbus's executor, as notify-rust's own calls must.
                loop {
                    let msg = match zbus::block_on(stream.next()) {
                        Some(Ok(msg)) => msg,
                        Some(Err(e)) => {
                            log::warn!("the session bus: {e}; notifications' buttons no longer answered");
                            return;
                        }
                        None => {
                            log::warn!("the session bus went away; notifications' buttons no longer answered");
                            return;
                        }
                    };
                    let header = msg.header();
                    let picked = match header.member().map(|m| m.as_str()) {
                        Some("ActionInvoked") => msg
                            .body()
                            .deserialize::<(u32, String)>()
                            .ok()
                            .and_then(|(id, key)| {
                                let hit = shared.lock().ok()?.invoked(id, &key);
                                log::info!(
                                    "notification {id}: {key:?} picked{}",
                                    if hit.is_some() { "" } else { " (not ours, or forgotten)" }
                                );
                                hit
                            }),
                        Some("NotificationClosed") => {
                            if let (Ok((id, _reason)), Ok(mut o)) =
                                (msg.body().deserialize::<(u32, u32)>(), shared.lock())
                            {
                                o.closed(id);
                            }
                            None
                        }
                        _ => None,
                    };
                    if let Some((note, action)) = picked {
                        on_action(note, action);
                    }
                }
            })?;
        Ok(Listener { offered })
    }

    /// Notification `id` shows `note` with its buttons.
    pub fn offer(&self, id: u32, note: Note) {
        if let Ok(mut o) = self.offered.lock() {
            o.offer(id, note);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn note(blocked: bool) -> Note {
        Note {
            summary: "Zoom contacted LinkedIn".into(),
            body: String::new(),
            details: String::new(),
            urgency: "normal",
            pairs: vec![("Zoom".into(), "LinkedIn".into())],
            update: false,
            blocked,
        }
    }

    #[test]
    fn offered_answers_our_notifications_only_and_forgets_the_closed() {
        let mut o = Offered::default();
        o.offer(7, note(false));
        assert_eq!(o.invoked(7, "block").map(|(_, a)| a), Some(Action::Block));
        assert_eq!(o.invoked(7, "mute").map(|(_, a)| a), Some(Action::Mute));
        assert_eq!(
            o.invoked(7, "details").map(|(_, a)| a),
            Some(Action::Details)
        );
        assert!(
            o.invoked(8, "block").is_none(),
            "another app's notification"
        );
        assert!(
            o.invoked(7, "default").is_none(),
            "an action we did not offer"
        );
        o.closed(7);
        assert!(o.invoked(7, "block").is_none());
        assert!(o.is_empty());
    }

    #[test]
    fn offered_a_blocked_note_has_no_block_button() {
        let mut o = Offered::default();
        o.offer(3, note(true));
        assert!(o.invoked(3, "block").is_none());
        assert!(o.invoked(3, "mute").is_some());
    }

    #[test]
    fn offered_a_replaced_notification_answers_with_its_latest_note() {
        let mut o = Offered::default();
        o.offer(1, note(false));
        let mut burst = note(false);
        burst.pairs.push(("Zoom".into(), "Meta".into()));
        o.offer(1, burst);
        assert_eq!(o.len(), 1);
        assert_eq!(o.invoked(1, "block").unwrap().0.pairs.len(), 2);
    }

    #[test]
    fn offered_remembers_a_bounded_number_of_notifications() {
        let mut o = Offered::default();
        for id in 0..(REMEMBERED as u32 + 10) {
            o.offer(id, note(false));
        }
        assert_eq!(o.len(), REMEMBERED);
        assert!(o.invoked(0, "block").is_none(), "the oldest forgotten");
        assert!(o.invoked(REMEMBERED as u32 + 9, "block").is_some());
    }
}
