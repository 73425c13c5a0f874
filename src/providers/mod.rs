//! Upstream providers. A provider is a wire codec, a URL, auth headers and the shared HTTP
//! client; nothing else. All of them implement [`ChatProvider`]; [`Provider`] dispatches
//! statically, so the hot path pays for no boxing beyond one stream per streaming request.

pub mod anthropic;
pub mod build;
mod connect;
pub mod gemini;
pub mod http;
pub mod mock;
pub mod openai;
mod pool;
pub mod sse_stream;

use std::pin::Pin;
use std::time::Duration;

use futures_util::Stream;

use crate::error::{ErrorCode, ProxyError};
use crate::types::{ChatRequest, ChatResponse, StreamChunk};

/// The stream of canonical chunks a provider returns for a streaming request.
pub type EventStream = Pin<Box<dyn Stream<Item = Result<StreamChunk, UpstreamError>> + Send>>;

/// Which deadline ran out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimeoutKind {
    Connect,
    /// The whole request (non-streaming), or the wait for a stream's first chunk.
    Total,
    /// Too long between two chunks of a stream.
    StreamIdle,
    /// Too long waiting for a stream's first chunk.
    FirstToken,
}

/// Who a failure says something about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Blame {
    /// The request itself: the same request fails anywhere; never retried, never counted
    /// against the deployment.
    Client,
    /// The deployment: counted by its circuit breaker, retried (on the same deployment
    /// only when `retry_same`, otherwise on another one if the model has one).
    Deployment { retry_same: bool },
}

/// What went wrong talking to an upstream. Messages never contain a secret: providers
/// redact their own keys before building one.
#[derive(Debug, Clone, thiserror::Error)]
pub enum UpstreamError {
    #[error("could not connect to the upstream: {0}")]
    Connect(String),
    #[error("the upstream did not answer in time ({0:?} timeout of {1:?})")]
    Timeout(TimeoutKind, Duration),
    #[error("the upstream returned HTTP {status}: {message}")]
    Status {
        status: u16,
        message: String,
        retry_after: Option<Duration>,
    },
    #[error("the upstream reply could not be understood: {0}")]
    Malformed(String),
    /// The request cannot be expressed in this provider's format (e.g. tool arguments that
    /// are not a JSON object, for a provider that needs one). The client's to fix.
    #[error("{message}")]
    Untranslatable { param: String, message: String },
    /// The provider's content filter refused the prompt (Azure's `content_filter` 400).
    #[error("the provider's content filter blocked the prompt: {0}")]
    ContentFilter(String),
    #[error("the upstream stream failed: {0}")]
    Stream(String),
}

impl UpstreamError {
    /// Whose fault the failure is, which decides retries and cooldowns.
    pub fn blame(&self) -> Blame {
        match self {
            UpstreamError::Connect(_) | UpstreamError::Timeout(..) | UpstreamError::Stream(_) => {
                Blame::Deployment { retry_same: true }
            }
            UpstreamError::Status { status, .. } => match *status {
                s if s >= 500 => Blame::Deployment { retry_same: true },
                429 | 408 => Blame::Deployment { retry_same: true },
                // This deployment's credentials: another deployment may have good ones.
                401 | 403 => Blame::Deployment { retry_same: false },
                _ => Blame::Client,
            },
            // An unreadable reply will be unreadable again from the same upstream.
            UpstreamError::Malformed(_) => Blame::Deployment { retry_same: false },
            UpstreamError::Untranslatable { .. } | UpstreamError::ContentFilter(_) => Blame::Client,
        }
    }

    /// Whether the request was too long for the model's context window, as providers word
    /// it (`context_length_exceeded`, "prompt is too long", …): what
    /// `context_window_fallbacks` are for.
    pub fn is_context_window(&self) -> bool {
        let UpstreamError::Status {
            status: 400 | 413 | 422,
            message,
            ..
        } = self
        else {
            return false;
        };
        let m = message.to_ascii_lowercase();
        [
            "context length",
            "context_length",
            "context window",
            "maximum context",
            "prompt is too long",
            "too many tokens",
            "input is too long",
            "exceeds the maximum number of tokens",
        ]
        .iter()
        .any(|p| m.contains(p))
    }

    pub fn into_proxy_error(self) -> ProxyError {
        match self {
            UpstreamError::Timeout(kind, after) => {
                let what = match kind {
                    TimeoutKind::Connect => "connecting to the provider",
                    TimeoutKind::Total => "waiting for the provider",
                    TimeoutKind::StreamIdle => "waiting for the next chunk of the stream",
                    TimeoutKind::FirstToken => "waiting for the stream's first chunk",
                };
                ProxyError::new(
                    ErrorCode::Timeout,
                    format!("timed out after {after:?} {what}"),
                )
            }
            UpstreamError::Status {
                status,
                message,
                retry_after,
            } => {
                let mut e = ProxyError::new(
                    status_code(status),
                    format!("provider returned HTTP {status}: {message}"),
                );
                e.upstream_status = Some(status);
                e.retry_after = retry_after;
                e
            }
            UpstreamError::Untranslatable { param, message } => ProxyError::invalid(param, message),
            e @ UpstreamError::ContentFilter(_) => {
                let mut out = ProxyError::invalid("messages", e.to_string());
                out.upstream_status = Some(400);
                out
            }
            other => ProxyError::new(ErrorCode::ProviderError, other.to_string()),
        }
    }

    /// A short label for logs and metrics (low cardinality).
    pub fn class(&self) -> &'static str {
        match self {
            UpstreamError::Connect(_) => "connect",
            UpstreamError::Timeout(..) => "timeout",
            UpstreamError::Status { status, .. } if *status >= 500 => "status_5xx",
            UpstreamError::Status { status: 429, .. } => "status_429",
            UpstreamError::Status { .. } => "status_4xx",
            UpstreamError::Malformed(_) => "malformed",
            UpstreamError::Untranslatable { .. } => "untranslatable",
            UpstreamError::ContentFilter(_) => "content_filter",
            UpstreamError::Stream(_) => "stream",
        }
    }
}

/// Our code for an upstream's HTTP status once retries are spent. What the client can fix
/// keeps its class, so SDKs raise the right exception and do not retry a request that will
/// fail again: 400/422 → `INVALID_REQUEST` (e.g. "prompt is too long"), 404 → `NOT_FOUND`,
/// 413 → `PAYLOAD_TOO_LARGE`, 429 → `RATE_LIMIT` (with the upstream's retry hint), 408 →
/// `TIMEOUT`. The rest — 5xx, 529, and 401/403, which mean the proxy's own upstream
/// credentials are wrong, not the client's — is `PROVIDER_ERROR`.
fn status_code(status: u16) -> ErrorCode {
    match status {
        400 | 422 => ErrorCode::InvalidRequest,
        404 => ErrorCode::NotFound,
        413 => ErrorCode::PayloadTooLarge,
        429 => ErrorCode::RateLimit,
        408 => ErrorCode::Timeout,
        _ => ErrorCode::ProviderError,
    }
}

/// The capability every upstream kind implements: the spec's adapter interface
/// (`complete`, `stream`, `get_models`).
pub trait ChatProvider: Send + Sync {
    /// One complete reply. `model` is the upstream's id for the model.
    fn chat(
        &self,
        req: &ChatRequest,
        model: &str,
    ) -> impl Future<Output = Result<ChatResponse, UpstreamError>> + Send;

    /// A stream of canonical chunks. Returns once the upstream accepted the request.
    fn chat_stream(
        &self,
        req: &ChatRequest,
        model: &str,
    ) -> impl Future<Output = Result<EventStream, UpstreamError>> + Send;

    /// The model ids the upstream reports.
    fn models(&self) -> impl Future<Output = Result<Vec<String>, UpstreamError>> + Send;
}

/// Every provider kind this build can call.
///
/// The variants differ in size by a few hundred bytes (the OpenAI one keeps two header
/// templates); a provider is built once at start and held behind an `Arc`, so boxing the
/// larger one would buy no memory and cost an indirection on every request.
#[derive(Debug)]
#[allow(clippy::large_enum_variant)]
pub enum Provider {
    OpenAi(openai::OpenAiProvider),
    Anthropic(anthropic::AnthropicProvider),
    Gemini(gemini::GeminiProvider),
    Mock(mock::MockProvider),
}

impl Provider {
    pub fn kind(&self) -> &'static str {
        match self {
            Provider::OpenAi(_) => "openai",
            Provider::Anthropic(_) => "anthropic",
            Provider::Gemini(_) => "gemini",
            Provider::Mock(_) => "mock",
        }
    }
}

impl ChatProvider for Provider {
    async fn chat(&self, req: &ChatRequest, model: &str) -> Result<ChatResponse, UpstreamError> {
        match self {
            Provider::OpenAi(p) => p.chat(req, model).await,
            Provider::Anthropic(p) => p.chat(req, model).await,
            Provider::Gemini(p) => p.chat(req, model).await,
            Provider::Mock(p) => p.chat(req, model).await,
        }
    }

    async fn chat_stream(
        &self,
        req: &ChatRequest,
        model: &str,
    ) -> Result<EventStream, UpstreamError> {
        match self {
            Provider::OpenAi(p) => p.chat_stream(req, model).await,
            Provider::Anthropic(p) => p.chat_stream(req, model).await,
            Provider::Gemini(p) => p.chat_stream(req, model).await,
            Provider::Mock(p) => p.chat_stream(req, model).await,
        }
    }

    async fn models(&self) -> Result<Vec<String>, UpstreamError> {
        match self {
            Provider::OpenAi(p) => p.models().await,
            Provider::Anthropic(p) => p.models().await,
            Provider::Gemini(p) => p.models().await,
            Provider::Mock(p) => p.models().await,
        }
    }
}
