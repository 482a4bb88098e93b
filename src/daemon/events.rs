//! What happens in the daemon, as it happens, for whoever listens (the status API's
//! `GET /api/events`, docs/api.md): readings once the router has handed them to the
//! backends, devices whose state changed, backends whose health changed.
//!
//! One `tokio::sync::broadcast` channel of [`EVENT_CAPACITY`] events. Sending costs
//! nothing when nobody listens (no receiver: the event is not even built), and a
//! listener that falls behind loses the oldest events and is told so (`Lagged`),
//! so a slow page never slows a device down.

use std::sync::Arc;

use tokio::sync::broadcast;

use crate::reading::{DeviceId, Reading};

/// Events a listener may fall behind by before it loses some (and refetches).
pub const EVENT_CAPACITY: usize = 256;

/// One thing that happened.
#[derive(Debug, Clone)]
pub enum Event {
    /// One poll's readings of one device, as handed to the backends.
    Readings(Arc<[Reading]>),
    /// A device started, stopped, began or stopped failing, or its breaker moved.
    Device(DeviceId),
    /// A backend began or stopped failing (its health in the live state).
    Backend(&'static str),
}

/// The sending side, held by the live state (`Status::events`); cheap to clone.
#[derive(Debug, Clone)]
pub struct Events {
    tx: broadcast::Sender<Event>,
}

impl Default for Events {
    fn default() -> Self {
        Events {
            tx: broadcast::channel(EVENT_CAPACITY).0,
        }
    }
}

impl Events {
    /// Whether anybody listens: when not, events are not built at all.
    pub fn listened(&self) -> bool {
        self.tx.receiver_count() > 0
    }

    /// Sends the event `make` builds, if anybody listens.
    pub fn send_with(&self, make: impl FnOnce() -> Event) {
        if self.listened() {
            // An error means the last listener left in between: nothing to do.
            let _ = self.tx.send(make());
        }
    }

    /// Every event from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<Event> {
        self.tx.subscribe()
    }

    /// Listeners right now.
    pub fn listeners(&self) -> usize {
        self.tx.receiver_count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nothing_is_built_without_a_listener() {
        let events = Events::default();
        let mut built = false;
        events.send_with(|| {
            built = true;
            Event::Backend("sqlite")
        });
        assert!(!built);
        let mut rx = events.subscribe();
        events.send_with(|| Event::Device("meter".into()));
        assert!(matches!(rx.try_recv(), Ok(Event::Device(id)) if &*id == "meter"));
    }

    #[test]
    fn a_listener_that_falls_behind_is_told_how_far() {
        let events = Events::default();
        let mut rx = events.subscribe();
        for _ in 0..EVENT_CAPACITY + 10 {
            events.send_with(|| Event::Backend("csv"));
        }
        assert!(matches!(rx.try_recv(), Err(broadcast::error::TryRecvError::Lagged(10))));
        assert!(rx.try_recv().is_ok());
    }
}
