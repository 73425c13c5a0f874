//! Inbound authentication: `Authorization: Bearer`, `x-api-key` (Anthropic SDK style) and
//! the predecessor's `x-internal-auth` all carry the same key, compared in constant time.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use axum::extract::Request;
use axum::response::{IntoResponse, Response};
use tower::{Layer, Service};

use super::{ApiError, AppState, RequestCtx};
use crate::error::{ErrorCode, ProxyError};
use crate::keys::AuthFailure;

/// Every key the request presents, from every accepted header.
pub(super) fn presented_keys(headers: &http::HeaderMap) -> impl Iterator<Item = &[u8]> {
    let bearer = headers
        .get_all(http::header::AUTHORIZATION)
        .into_iter()
        .filter_map(|v| {
            let b = v.as_bytes();
            (b.len() > 7 && b[..7].eq_ignore_ascii_case(b"bearer ")).then(|| b[7..].trim_ascii())
        });
    // Names made once: looking a header up by text parses the text on every request.
    const PLAIN: [http::HeaderName; 2] = [
        http::HeaderName::from_static("x-api-key"),
        http::HeaderName::from_static("x-internal-auth"),
    ];
    let plain = PLAIN.into_iter().flat_map(move |h| {
        headers
            .get_all(h)
            .into_iter()
            .map(|v| v.as_bytes().trim_ascii())
    });
    bearer.chain(plain).filter(|k| !k.is_empty())
}

/// Identifies the caller (master key, virtual key, or anonymous when no key is
/// configured) and hands the principal to the handler; anything else is a 401.
///
/// A tower layer of its own rather than `axum::middleware::from_fn`, which boxes a future
/// and clones the inner service on every request (see `api/context.rs`).
#[derive(Clone)]
pub struct RequireKeyLayer {
    state: Arc<AppState>,
}

impl RequireKeyLayer {
    pub fn new(state: Arc<AppState>) -> Self {
        Self { state }
    }
}

impl<S> Layer<S> for RequireKeyLayer {
    type Service = RequireKey<S>;

    fn layer(&self, inner: S) -> Self::Service {
        RequireKey {
            inner,
            state: self.state.clone(),
        }
    }
}

#[derive(Clone)]
pub struct RequireKey<S> {
    inner: S,
    state: Arc<AppState>,
}

impl<S> Service<Request> for RequireKey<S>
where
    S: Service<Request, Response = Response, Error = Infallible>,
{
    type Response = Response;
    type Error = Infallible;
    type Future = KeyFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request) -> Self::Future {
        match self.state.keys.identify(presented_keys(req.headers())) {
            Ok(principal) => {
                req.extensions_mut().insert(principal);
                KeyFuture::Admitted {
                    inner: self.inner.call(req),
                }
            }
            Err(failure) => {
                let ctx = RequestCtx::of(req.extensions(), req.headers());
                let resp = refusal(failure, &ctx);
                KeyFuture::Refused { resp: Some(resp) }
            }
        }
    }
}

pin_project_lite::pin_project! {
    #[project = KeyFutureProj]
    pub enum KeyFuture<F> {
        Admitted { #[pin] inner: F },
        Refused { resp: Option<Response> },
    }
}

impl<F> Future for KeyFuture<F>
where
    F: Future<Output = Result<Response, Infallible>>,
{
    type Output = Result<Response, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project() {
            KeyFutureProj::Admitted { inner } => inner.poll(cx),
            KeyFutureProj::Refused { resp } => match resp.take() {
                Some(r) => Poll::Ready(Ok(r)),
                // Polled again after answering: a caller error; answer again rather than panic.
                None => Poll::Ready(Ok(http::StatusCode::UNAUTHORIZED.into_response())),
            },
        }
    }
}

/// The 401 for a request whose key is missing or wrong.
pub(super) fn refusal(failure: AuthFailure, ctx: &RequestCtx) -> Response {
    let message = match failure {
        AuthFailure::Invalid => "invalid API key",
        AuthFailure::Missing => {
            "missing API key: send `Authorization: Bearer <key>`, `x-api-key: <key>` or `x-internal-auth: <key>`"
        }
    };
    ApiError::new(ProxyError::new(ErrorCode::Unauthorized, message), ctx).into_response()
}
