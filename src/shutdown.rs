//! Graceful shutdown as requests see it. On SIGTERM the server stops accepting and lets
//! what is in flight finish; after the grace period the trigger fires, and every request
//! still open ends cleanly: a stream with an error event in its dialect, a reply with 503.
//! Nothing in flight is cut without a word.

use tokio::sync::watch;

/// Fires once, when the grace period is over.
#[derive(Debug)]
pub struct Trigger(watch::Sender<bool>);

/// What a request watches to learn that it must end now.
#[derive(Debug, Clone)]
pub struct Closing(watch::Receiver<bool>);

pub fn channel() -> (Trigger, Closing) {
    let (tx, rx) = watch::channel(false);
    (Trigger(tx), Closing(rx))
}

impl Trigger {
    pub fn fire(&self) {
        let _ = self.0.send(true);
    }
}

impl Closing {
    /// Resolves once the grace period is over (never, if the server is not shutting down).
    pub async fn fired(&self) {
        let mut rx = self.0.clone();
        if rx.wait_for(|closing| *closing).await.is_err() {
            // The trigger is gone without firing: the server is not shutting down.
            std::future::pending::<()>().await;
        }
    }
}
