//! HTTP: routes, request ids, auth, body limits, and turning errors into the JSON envelope.
//! Dialects are known only through [`crate::wire`].

mod admin;
mod auth;
mod body;
mod context;
mod error;
mod fast_lane;
mod llm;
mod messages;
mod models;
mod openai;
mod openapi;
mod serve;
mod validate;

use std::sync::Arc;
use std::time::Instant;

use axum::Router as HttpRouter;
use axum::extract::{FromRequestParts, State};
use axum::routing::{get, post};
use http::Method;
use http::request::Parts;
use tokio::sync::Semaphore;

pub use body::decode as decode_body;
pub use error::ApiError;
pub use fast_lane::Api;

use crate::config::Settings;
use crate::error::{ErrorCode, ProxyError};
use crate::keys::{KeyRing, Principal};
use crate::limits::Limiter;
use crate::router::Router;
use crate::shutdown::Closing;
use crate::telemetry::Metrics;
use context::RequestContextLayer;

/// Everything a handler needs, built once at start and shared.
pub struct AppState {
    pub router: Router,
    pub keys: KeyRing,
    pub limiter: Arc<Limiter>,
    pub metrics: Arc<Metrics>,
    /// The usage ledger, when enabled.
    pub ledger: Option<Arc<crate::ledger::Sink>>,
    /// The trace exporter, when traces are exported.
    pub tracer: Option<Arc<crate::telemetry::otlp::Exporter>>,
    pub default_model: Option<String>,
    pub max_request_bytes: usize,
    pub concurrency: Arc<Semaphore>,
    /// Requests waiting for a concurrency slot.
    pub queue: Queue,
    pub queue_timeout: std::time::Duration,
    /// Fires when in-flight requests must end (graceful shutdown's grace period is over).
    pub closing: Closing,
    pub provider_names: Vec<(String, &'static str)>,
}

/// A counter with a cap: how many requests may wait for a slot.
pub struct Queue {
    waiting: std::sync::atomic::AtomicUsize,
    cap: usize,
}

/// A place in the queue, given back when dropped.
pub struct QueueTicket<'a>(&'a Queue);

impl Queue {
    pub fn new(cap: usize) -> Self {
        Self {
            waiting: std::sync::atomic::AtomicUsize::new(0),
            cap,
        }
    }

    /// A place, or `None` when the queue is full.
    pub fn enter(&self) -> Option<QueueTicket<'_>> {
        use std::sync::atomic::Ordering;
        self.waiting
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < self.cap).then_some(n + 1)
            })
            .ok()
            .map(|_| QueueTicket(self))
    }
}

impl Drop for QueueTicket<'_> {
    fn drop(&mut self) {
        self.0
            .waiting
            .fetch_sub(1, std::sync::atomic::Ordering::AcqRel);
    }
}

impl AppState {
    pub fn new(
        settings: &Settings,
        router: Router,
        limiter: Arc<Limiter>,
        metrics: Arc<Metrics>,
        ledger: Option<Arc<crate::ledger::Sink>>,
        closing: Closing,
    ) -> Self {
        Self {
            queue: Queue::new(settings.server.max_queue),
            queue_timeout: settings.server.queue_timeout,
            closing,
            provider_names: router
                .providers()
                .iter()
                .map(|p| (p.name.to_string(), p.kind.as_str()))
                .collect(),
            router,
            keys: KeyRing::new(&settings.auth),
            limiter,
            metrics,
            ledger,
            tracer: None,
            default_model: settings.default_model.clone(),
            max_request_bytes: settings.server.max_request_bytes,
            concurrency: Arc::new(Semaphore::new(
                settings
                    .server
                    .max_concurrent_requests
                    .clamp(1, Semaphore::MAX_PERMITS),
            )),
        }
    }
}

/// Who is calling and from where: the principal the auth layer identified (anonymous
/// when no key is configured) and the TCP peer.
#[derive(Clone)]
pub struct Caller {
    pub principal: Principal,
    pub peer: Option<std::net::SocketAddr>,
}

impl Caller {
    /// Whether the caller may use `model` (a virtual key only its `models`); listings show
    /// each caller what it may use.
    pub fn may_use(&self, model: &str) -> bool {
        match &self.principal {
            Principal::Key(k) => k.allows(model),
            _ => true,
        }
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Caller {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(Caller {
            principal: parts
                .extensions
                .get::<Principal>()
                .cloned()
                .unwrap_or(Principal::Anonymous),
            peer: parts
                .extensions
                .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
                .map(|c| c.0),
        })
    }
}

/// Per-request context set by the outermost middleware.
#[derive(Clone)]
pub struct RequestCtx {
    pub id: Arc<str>,
    pub started: Instant,
}

impl RequestCtx {
    /// A request's context as it arrives: its id (the caller's, when sane) and now.
    pub fn new(headers: &http::HeaderMap) -> Self {
        Self {
            id: request_id_from(headers),
            started: Instant::now(),
        }
    }

    /// The context the request-context layer set, or a fresh one outside it.
    pub fn of(extensions: &http::Extensions, headers: &http::HeaderMap) -> Self {
        extensions
            .get::<RequestCtx>()
            .cloned()
            .unwrap_or_else(|| Self::new(headers))
    }
}

impl<S: Send + Sync> FromRequestParts<S> for RequestCtx {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(Self::of(&parts.extensions, &parts.headers))
    }
}

/// Marks a response whose handler already wrote the request's log line, for the
/// request-context layer (`context.rs`) on the router's path.
#[derive(Clone, Copy)]
pub(crate) struct Logged;

/// A reply whose request's log line is written: what the chat handlers return. On the
/// router's path it becomes a response marked [`Logged`]; the fast lane knows it without
/// the mark, which costs an extensions map (two allocations) per request.
///
/// The field is private to `api`: only `serve` makes one, so the type cannot claim a log
/// line that was never written.
pub(crate) struct LoggedResponse(axum::response::Response);

impl axum::response::IntoResponse for LoggedResponse {
    fn into_response(self) -> axum::response::Response {
        let mut resp = self.0;
        resp.extensions_mut().insert(Logged);
        resp
    }
}

/// A new UUID written straight into the shared string: no `fmt` and no intermediate
/// `String` on every request.
fn new_request_id() -> Arc<str> {
    let mut buf = uuid::Uuid::encode_buffer();
    Arc::from(&*crate::ids::uuid_v4().hyphenated().encode_lower(&mut buf))
}

/// Accepts the caller's `X-Request-Id` when it is a sane token, so ids can be correlated
/// across services; otherwise makes one. Never trusts arbitrary bytes into logs.
fn request_id_from(headers: &http::HeaderMap) -> Arc<str> {
    const X_REQUEST_ID: http::HeaderName = http::HeaderName::from_static("x-request-id");
    headers
        .get(X_REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .filter(|v| {
            !v.is_empty()
                && v.len() <= 128
                && v.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_.:".contains(&b))
        })
        .map(Arc::from)
        .unwrap_or_else(new_request_id)
}

async fn not_found(ctx: RequestCtx, method: Method, uri: http::Uri) -> ApiError {
    ApiError::new(
        ProxyError::new(
            ErrorCode::NotFound,
            format!("no route for {method} {}", uri.path()),
        ),
        &ctx,
    )
}

/// Builds the HTTP application.
pub fn app(state: Arc<AppState>) -> HttpRouter {
    let protected = HttpRouter::new()
        .route("/v1/chat/completions", post(openai::chat_completions))
        .route("/chat/completions", post(openai::chat_completions))
        .route("/v1/messages", post(messages::messages))
        .route("/v1/messages/count_tokens", post(messages::count_tokens))
        .route("/v1/models", get(models::openai_models))
        .route("/models", get(models::openai_models))
        .route("/v1/llm/models", get(models::llm_models))
        .route("/llm/models", get(models::llm_models))
        .route("/llm/chat", post(llm::chat))
        .route("/v1/llm/chat", post(llm::chat))
        .route("/llm/stream", post(llm::stream))
        .route("/v1/llm/stream", post(llm::stream))
        .route("/llm/completions", post(llm::completions))
        .route("/metrics", get(models::metrics))
        .route("/admin/usage", get(admin::usage))
        .route("/admin/requests", get(admin::requests))
        .route("/v1/llm/completions", post(llm::completions))
        .route_layer(auth::RequireKeyLayer::new(state.clone()));
    HttpRouter::new()
        .route("/health", get(models::health))
        .route("/openapi.json", get(openapi::spec))
        .route("/docs", get(openapi::docs))
        .merge(protected)
        .fallback(not_found)
        .method_not_allowed_fallback(not_found)
        .layer(RequestContextLayer)
        .with_state(state)
}

/// `/metrics` alone, for `server.metrics_port` (the same key rule as on the API port).
pub fn metrics_app(state: Arc<AppState>) -> HttpRouter {
    HttpRouter::new()
        .route("/metrics", get(models::metrics))
        .route_layer(auth::RequireKeyLayer::new(state.clone()))
        .fallback(not_found)
        .method_not_allowed_fallback(not_found)
        .layer(RequestContextLayer)
        .with_state(state)
}

/// Shorthand for handlers.
pub(crate) type AppStateRef = State<Arc<AppState>>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_ids_are_lowercase_uuids_unless_the_caller_sent_a_sane_one() {
        let made = request_id_from(&http::HeaderMap::new());
        let uuid = uuid::Uuid::parse_str(&made).unwrap();
        assert_eq!(uuid.get_version_num(), 4);
        assert_eq!(&*made, uuid.hyphenated().to_string());
        assert_ne!(made, request_id_from(&http::HeaderMap::new()));

        let mut headers = http::HeaderMap::new();
        headers.insert(
            "x-request-id",
            http::HeaderValue::from_static("trace-abc.123"),
        );
        assert_eq!(&*request_id_from(&headers), "trace-abc.123");
        headers.insert("x-request-id", http::HeaderValue::from_static("a b"));
        assert_ne!(&*request_id_from(&headers), "a b");
    }
}
