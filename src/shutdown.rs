//! Graceful shutdown as requests see it. On SIGTERM the server stops accepting and lets
//! what is in flight finish; after the grace period the trigger fires, and every request
//! still open ends cleanly: a stream with an error event in its dialect, a reply with 503.
//! Nothing in flight is cut without a word.
//!
//! A flag and a [`Notify`] rather than a `watch` channel: every request waits on this, and
//! a watch receiver costs a clone, a read lock and a randomly picked notifier per wait
//! (about 1% of a request's instructions); here a wait is one load and, while pending, one
//! entry in the waiter list.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use tokio::sync::Notify;

#[derive(Debug, Default)]
struct State {
    fired: AtomicBool,
    notify: Notify,
}

/// Fires once, when the grace period is over.
#[derive(Debug)]
pub struct Trigger(Arc<State>);

/// What a request watches to learn that it must end now.
#[derive(Debug, Clone)]
pub struct Closing(Arc<State>);

pub fn channel() -> (Trigger, Closing) {
    let state = Arc::new(State::default());
    (Trigger(state.clone()), Closing(state))
}

impl Trigger {
    pub fn fire(&self) {
        self.0.fired.store(true, Ordering::Release);
        self.0.notify.notify_waiters();
    }
}

impl Closing {
    /// Resolves once the grace period is over (never, if the server is not shutting down).
    pub async fn fired(&self) {
        // Made before the flag is read: `notify_waiters` wakes every `Notified` that
        // exists when it is called, polled yet or not, so a fire between the load and
        // the await is not missed.
        let notified = self.0.notify.notified();
        if self.0.fired.load(Ordering::Acquire) {
            return;
        }
        notified.await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn waiters_before_and_after_the_fire_all_see_it() {
        let (trigger, closing) = channel();
        let early: Vec<_> = (0..3)
            .map(|_| {
                let c = closing.clone();
                tokio::spawn(async move { c.fired().await })
            })
            .collect();
        // Not fired: a wait does not end.
        assert!(
            tokio::time::timeout(Duration::from_millis(50), closing.fired())
                .await
                .is_err()
        );
        trigger.fire();
        for w in early {
            tokio::time::timeout(Duration::from_secs(5), w)
                .await
                .unwrap()
                .unwrap();
        }
        // After the fire, a new wait ends at once.
        tokio::time::timeout(Duration::from_secs(5), closing.fired())
            .await
            .unwrap();
    }

    #[tokio::test]
    async fn a_dropped_trigger_never_fires() {
        let (trigger, closing) = channel();
        drop(trigger);
        assert!(
            tokio::time::timeout(Duration::from_millis(50), closing.fired())
                .await
                .is_err()
        );
    }
}
