//! Connecting to an upstream within one deadline that covers everything before the request
//! can be written: name resolution, TCP and the TLS handshake.
//!
//! The TCP connector's own timeout bounds each `connect(2)` only; an upstream that accepts
//! the connection and then stalls in the handshake, or a resolver that never answers, would
//! otherwise hold a request until the router's overall deadline (600 s by default) instead
//! of failing over after `routing.connect_timeout`.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use http::Uri;
use tower::Service;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Wraps a connector; a connection not ready within `limit` fails with an
/// [`std::io::ErrorKind::TimedOut`] error (which the client reports as a connect timeout).
#[derive(Clone)]
pub struct DeadlineConnector<C> {
    inner: C,
    limit: Duration,
}

impl<C> DeadlineConnector<C> {
    pub fn new(inner: C, limit: Duration) -> Self {
        Self { inner, limit }
    }
}

impl<C> Service<Uri> for DeadlineConnector<C>
where
    C: Service<Uri>,
    C::Future: Send + 'static,
    C::Error: Into<BoxError>,
{
    type Response = C::Response;
    type Error = BoxError;
    // Boxed: connections are opened rarely (the pool keeps them), so the allocation is
    // nothing next to a handshake.
    type Future = Pin<Box<dyn Future<Output = Result<C::Response, BoxError>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let limit = self.limit;
        let connecting = self.inner.call(uri);
        Box::pin(async move {
            match tokio::time::timeout(limit, connecting).await {
                Ok(result) => result.map_err(Into::into),
                Err(_) => Err(Box::new(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    format!("no connection within {limit:?}"),
                )) as BoxError),
            }
        })
    }
}
