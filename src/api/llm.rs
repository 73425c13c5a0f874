//! The spec's normalized API at the edge: `POST /llm/chat` (one reply object),
//! `POST /llm/stream` (the streaming normalizer's events, SSE or NDJSON) and
//! `POST /llm/completions` (prompt in, text out, served by chat-only providers too).
//! Requests are OpenAI-shaped chat requests; the codec is [`crate::wire::llm`].

use axum::body::Body;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use http::{HeaderMap, Uri};
use serde_json::Value;

use super::openapi::{CompletionRequest, LlmChatRequest};
use super::serve::{Dialect, Exchange, StreamSummary, serve};
use super::{ApiError, AppStateRef, Caller, RequestCtx, body};
use crate::error::{ErrorEnvelope, ProxyError};
use crate::types::{ChatRequest, ChatResponse, StreamChunk};
use crate::wire::llm::{
    EventEncoder, LlmChatResponse, LlmCompletionResponse, Meta, StreamEvent, StreamFormat,
    StreamTiming, completion_to_chat, encode_chat, encode_completion,
};

/// What the client chose besides the chat request itself.
pub(crate) struct LlmOptions {
    format: StreamFormat,
    /// Send `tool_call_delta` events as arguments arrive.
    deltas: bool,
    /// Reply in the completion shape (`text`) instead of the chat shape (`message`).
    completion: bool,
}

/// `?format=ndjson|sse` wins over `Accept: application/x-ndjson`; SSE otherwise.
fn stream_format(headers: &HeaderMap, uri: &Uri) -> Result<StreamFormat, ProxyError> {
    let query_format = uri
        .query()
        .into_iter()
        .flat_map(|q| q.split('&'))
        .find_map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            (k == "format").then_some(v)
        });
    match query_format {
        Some("ndjson" | "jsonl") => return Ok(StreamFormat::Ndjson),
        Some("sse") => return Ok(StreamFormat::Sse),
        Some(other) => {
            return Err(ProxyError::invalid(
                "format",
                format!("unknown stream format `{other}` (use sse or ndjson)"),
            ));
        }
        None => {}
    }
    let accept = headers
        .get(http::header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    Ok(
        if accept.contains("application/x-ndjson") || accept.contains("application/jsonl") {
            StreamFormat::Ndjson
        } else {
            StreamFormat::Sse
        },
    )
}

/// Takes our own fields out of the request, so they never reach an upstream.
fn take_deltas(req: &mut ChatRequest) -> Result<bool, ProxyError> {
    match req.extra.remove("tool_call_deltas") {
        None | Some(Value::Null) => Ok(false),
        Some(Value::Bool(b)) => Ok(b),
        Some(_) => Err(ProxyError::invalid(
            "tool_call_deltas",
            "`tool_call_deltas` must be a boolean",
        )),
    }
}

fn meta<'a>(x: &'a Exchange<'a>) -> Meta<'a> {
    Meta {
        trace_id: x.request_id,
        model: x.model,
        provider: x.provider(),
    }
}

/// The encoding every `/llm/*` endpoint shares; each endpoint only decodes differently.
trait LlmEndpoint: Send + Sync + 'static {
    const ENDPOINT: &'static str;
    fn decode(
        bytes: &[u8],
        headers: &HeaderMap,
        uri: &Uri,
    ) -> Result<(ChatRequest, LlmOptions), ProxyError>;
}

impl<E: LlmEndpoint> Dialect for E {
    const ENDPOINT: &'static str = <E as LlmEndpoint>::ENDPOINT;
    type Options = LlmOptions;
    type Stream = EventEncoder;

    fn decode(
        bytes: &[u8],
        headers: &HeaderMap,
        uri: &Uri,
    ) -> Result<(ChatRequest, LlmOptions), ProxyError> {
        <E as LlmEndpoint>::decode(bytes, headers, uri)
    }

    fn error(err: ProxyError, ctx: &RequestCtx) -> Response {
        ApiError::new(err, ctx).into_response()
    }

    fn body(resp: ChatResponse, opts: &LlmOptions, x: &Exchange<'_>) -> Bytes {
        let latency = x.started.elapsed();
        Bytes::from(if opts.completion {
            encode_completion(&resp, meta(x), latency)
        } else {
            encode_chat(&resp, meta(x), latency)
        })
    }

    fn stream_start(_: &ChatRequest, opts: LlmOptions, x: &Exchange<'_>) -> EventEncoder {
        EventEncoder::new(opts.format, opts.deltas, meta(x))
    }

    fn stream_content_type(st: &EventEncoder) -> &'static str {
        st.format().content_type()
    }

    fn stream_chunk(st: &mut EventEncoder, chunk: StreamChunk) -> Option<Bytes> {
        let mut out = Vec::new();
        for ev in &chunk.events {
            st.encode(ev, &mut out);
        }
        (!out.is_empty()).then(|| Bytes::from(out))
    }

    fn stream_error(st: &mut EventEncoder, err: &ProxyError, request_id: &str) -> Bytes {
        Bytes::from(st.error(err, request_id))
    }

    fn stream_end(st: &mut EventEncoder, s: &StreamSummary) -> Bytes {
        let mut out = Vec::new();
        st.finish(
            StreamTiming {
                latency: s.latency,
                ttft: s.ttft,
                tokens_per_sec: s.tokens_per_sec,
            },
            &mut out,
        );
        Bytes::from(out)
    }
}

pub(crate) struct Chat;

impl LlmEndpoint for Chat {
    const ENDPOINT: &'static str = "llm_chat";

    fn decode(
        bytes: &[u8],
        _: &HeaderMap,
        _: &Uri,
    ) -> Result<(ChatRequest, LlmOptions), ProxyError> {
        let mut req: ChatRequest = body::decode(bytes)?;
        if req.stream == Some(true) {
            return Err(ProxyError::invalid(
                "stream",
                "/llm/chat answers with one object; POST /llm/stream to stream",
            ));
        }
        req.stream = Some(false);
        let deltas = take_deltas(&mut req)?;
        Ok((
            req,
            LlmOptions {
                format: StreamFormat::Sse,
                deltas,
                completion: false,
            },
        ))
    }
}

pub(crate) struct Stream;

impl LlmEndpoint for Stream {
    const ENDPOINT: &'static str = "llm_stream";

    fn decode(
        bytes: &[u8],
        headers: &HeaderMap,
        uri: &Uri,
    ) -> Result<(ChatRequest, LlmOptions), ProxyError> {
        let format = stream_format(headers, uri)?;
        let mut req: ChatRequest = body::decode(bytes)?;
        req.stream = Some(true);
        let deltas = take_deltas(&mut req)?;
        Ok((
            req,
            LlmOptions {
                format,
                deltas,
                completion: false,
            },
        ))
    }
}

pub(crate) struct Completions;

impl LlmEndpoint for Completions {
    const ENDPOINT: &'static str = "llm_completions";

    /// `stream: true` streams the same events as `/llm/stream`.
    fn decode(
        bytes: &[u8],
        headers: &HeaderMap,
        uri: &Uri,
    ) -> Result<(ChatRequest, LlmOptions), ProxyError> {
        let Value::Object(map) = body::decode::<Value>(bytes)? else {
            return Err(ProxyError::invalid(
                "(body)",
                "the request body must be a JSON object",
            ));
        };
        let chat = completion_to_chat(map)?;
        // Decoded like every other body, so a wrong type names its field.
        let chat =
            serde_json::to_vec(&chat).map_err(|e| ProxyError::invalid("(body)", e.to_string()))?;
        let mut req: ChatRequest = body::decode(&chat)?;
        // The stream format matters only to a stream.
        let format = if req.is_stream() {
            stream_format(headers, uri)?
        } else {
            StreamFormat::Sse
        };
        let deltas = take_deltas(&mut req)?;
        Ok((
            req,
            LlmOptions {
                format,
                deltas,
                completion: true,
            },
        ))
    }
}

/// One normalized reply (`message`, `usage`, `provider`, `trace_id`, `latency_ms`) from
/// any provider.
#[utoipa::path(post, path = "/llm/chat", tag = "llm",
    request_body = LlmChatRequest,
    responses(
        (status = 200, description = "The normalized reply", body = LlmChatResponse),
        (status = 400, description = "INVALID_REQUEST: bad JSON, types or parameters", body = ErrorEnvelope),
        (status = 401, description = "UNAUTHORIZED: missing or wrong key", body = ErrorEnvelope),
        (status = 404, description = "NOT_FOUND: unknown model", body = ErrorEnvelope),
        (status = 413, description = "PAYLOAD_TOO_LARGE", body = ErrorEnvelope),
        (status = 502, description = "PROVIDER_ERROR: the upstream failed", body = ErrorEnvelope),
        (status = 503, description = "UNAVAILABLE: at the concurrency limit", body = ErrorEnvelope),
        (status = 504, description = "TIMEOUT: the upstream did not answer in time", body = ErrorEnvelope),
    ))]
pub async fn chat(
    state: AppStateRef,
    ctx: RequestCtx,
    caller: Caller,
    headers: HeaderMap,
    uri: Uri,
    raw: Body,
) -> Response {
    serve::<Chat>(state.0, ctx, caller, headers, uri, raw)
        .await
        .into_response()
}

/// The streaming normalizer: `token`, `reasoning`, `tool_call` (and `tool_call_delta` with
/// `"tool_call_deltas": true`), then `end` or `error`. SSE with named events by default;
/// JSON lines with `Accept: application/x-ndjson` or `?format=ndjson`.
#[utoipa::path(post, path = "/llm/stream", tag = "llm",
    request_body = LlmChatRequest,
    params(("format" = Option<String>, Query, description = "`sse` (default) or `ndjson`")),
    responses(
        (status = 200, description = "The event stream; each event's `type` is its SSE event name",
         content((StreamEvent = "text/event-stream"), (StreamEvent = "application/x-ndjson"))),
        (status = 400, description = "INVALID_REQUEST: bad JSON, types or parameters", body = ErrorEnvelope),
        (status = 401, description = "UNAUTHORIZED: missing or wrong key", body = ErrorEnvelope),
        (status = 404, description = "NOT_FOUND: unknown model", body = ErrorEnvelope),
        (status = 413, description = "PAYLOAD_TOO_LARGE", body = ErrorEnvelope),
        (status = 502, description = "PROVIDER_ERROR: the upstream failed", body = ErrorEnvelope),
        (status = 503, description = "UNAVAILABLE: at the concurrency limit", body = ErrorEnvelope),
        (status = 504, description = "TIMEOUT: the upstream did not answer in time", body = ErrorEnvelope),
    ))]
pub async fn stream(
    state: AppStateRef,
    ctx: RequestCtx,
    caller: Caller,
    headers: HeaderMap,
    uri: Uri,
    raw: Body,
) -> Response {
    serve::<Stream>(state.0, ctx, caller, headers, uri, raw)
        .await
        .into_response()
}

/// A prompt in, text out, from any provider (chat-only ones included); `stream: true`
/// streams the same events as `/llm/stream`.
#[utoipa::path(post, path = "/llm/completions", tag = "llm",
    request_body = CompletionRequest,
    responses(
        (status = 200, description = "The completion; with `stream: true` the events of `/llm/stream`",
         content((LlmCompletionResponse = "application/json"), (StreamEvent = "text/event-stream"),
                 (StreamEvent = "application/x-ndjson"))),
        (status = 400, description = "INVALID_REQUEST: bad JSON, types or parameters", body = ErrorEnvelope),
        (status = 401, description = "UNAUTHORIZED: missing or wrong key", body = ErrorEnvelope),
        (status = 404, description = "NOT_FOUND: unknown model", body = ErrorEnvelope),
        (status = 413, description = "PAYLOAD_TOO_LARGE", body = ErrorEnvelope),
        (status = 502, description = "PROVIDER_ERROR: the upstream failed", body = ErrorEnvelope),
        (status = 503, description = "UNAVAILABLE: at the concurrency limit", body = ErrorEnvelope),
        (status = 504, description = "TIMEOUT: the upstream did not answer in time", body = ErrorEnvelope),
    ))]
pub async fn completions(
    state: AppStateRef,
    ctx: RequestCtx,
    caller: Caller,
    headers: HeaderMap,
    uri: Uri,
    raw: Body,
) -> Response {
    serve::<Completions>(state.0, ctx, caller, headers, uri, raw)
        .await
        .into_response()
}
