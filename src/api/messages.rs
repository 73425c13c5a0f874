//! The Anthropic Messages dialect at the edge: `POST /v1/messages` (routed to any model:
//! Anthropic-, OpenAI- or mock-backed) and `POST /v1/messages/count_tokens`.

use axum::Json;
use axum::body::Body;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use http::{HeaderMap, Uri};
use serde_json::json;

use super::serve::{Dialect, Exchange, StreamSummary, serve};
use super::{AppStateRef, Caller, RequestCtx, body};
use crate::error::ProxyError;
use std::sync::Arc;

use crate::types::{AnthropicRequest, ChatRequest, ChatResponse, Raw, StreamChunk};
use crate::wire::anthropic::{
    EventEncoder, MessagesRequest, decode_request, encode_response, error_type,
};

pub(crate) struct Anthropic;

impl Dialect for Anthropic {
    const ENDPOINT: &'static str = "messages";
    type Options = ();
    type Stream = EventEncoder;

    /// Keeps the request as sent too, for Anthropic upstreams (see
    /// [`ChatRequest::anthropic_raw`]).
    fn decode(bytes: &[u8], headers: &HeaderMap, _: &Uri) -> Result<(ChatRequest, ()), ProxyError> {
        let r: MessagesRequest = body::decode(bytes)?;
        if r.max_tokens.is_none() {
            return Err(ProxyError::invalid(
                "max_tokens",
                "`max_tokens` is required",
            ));
        }
        let raw: serde_json::Map<String, serde_json::Value> = body::decode(bytes)?;
        let mut req = decode_request(r);
        req.anthropic_raw = Some(Arc::new(AnthropicRequest {
            body: raw,
            beta: headers
                .get("anthropic-beta")
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned),
        }));
        Ok((req, ()))
    }

    /// Anthropic's error shape (`{"type":"error","error":{…}}`), carrying our stable code
    /// and the request id as well, so both Anthropic SDKs and our clients can read it.
    fn error(err: ProxyError, ctx: &RequestCtx) -> Response {
        let mut envelope = err.envelope(&ctx.id);
        if let Some(inner) = envelope.get_mut("error").and_then(|e| e.as_object_mut()) {
            inner.insert("type".into(), json!(error_type(err.code)));
        }
        if let Some(obj) = envelope.as_object_mut() {
            obj.insert("type".into(), json!("error"));
        }
        let mut resp = (err.code.status(), Json(envelope)).into_response();
        if let Some(after) = err.retry_after {
            let secs = after.as_secs_f64().ceil().max(1.0) as u64;
            resp.headers_mut()
                .insert(http::header::RETRY_AFTER, http::HeaderValue::from(secs));
        }
        resp
    }

    /// An Anthropic upstream's own reply verbatim, else the translation.
    fn body(resp: ChatResponse, _: &(), x: &Exchange<'_>) -> Bytes {
        match resp.raw {
            Raw::Anthropic(raw) => raw,
            _ => Bytes::from(encode_response(&resp, x.model)),
        }
    }

    fn stream_start(req: &ChatRequest, _: (), _: &Exchange<'_>) -> EventEncoder {
        EventEncoder::new(
            crate::ids::uuid_v4().simple().to_string(),
            req.model.clone(),
        )
    }

    fn stream_chunk(st: &mut EventEncoder, chunk: StreamChunk) -> Option<Bytes> {
        if let Raw::Anthropic(frame) = chunk.raw {
            st.pass_through();
            return Some(frame);
        }
        let mut frames = Vec::new();
        for ev in &chunk.events {
            st.encode(ev, &mut frames);
        }
        join(frames)
    }

    fn stream_error(st: &mut EventEncoder, err: &ProxyError, request_id: &str) -> Bytes {
        st.error(err, request_id)
    }

    fn stream_end(st: &mut EventEncoder, _: &StreamSummary) -> Bytes {
        let mut frames = Vec::new();
        st.finish(&mut frames);
        join(frames).unwrap_or_default()
    }
}

fn join(frames: Vec<Bytes>) -> Option<Bytes> {
    match frames.len() {
        0 => None,
        1 => frames.into_iter().next(),
        _ => Some(Bytes::from(frames.concat())),
    }
}

/// Anthropic Messages, to any model: a `message`, or with `stream: true` Anthropic's event
/// sequence. Errors use Anthropic's shape (`{"type":"error","error":{…}}`) with our `code`.
#[utoipa::path(post, path = "/v1/messages", tag = "anthropic",
    request_body(content = Object, description = "An Anthropic Messages request (`max_tokens` required)"),
    responses(
        (status = 200, description = "`message`, or an SSE stream of Anthropic events",
         content((Object = "application/json"), (String = "text/event-stream"))),
        (status = 400, description = "invalid_request_error / INVALID_REQUEST", body = Object),
        (status = 502, description = "api_error / PROVIDER_ERROR", body = Object),
    ))]
pub async fn messages(
    state: AppStateRef,
    ctx: RequestCtx,
    caller: Caller,
    headers: HeaderMap,
    uri: Uri,
    raw: Body,
) -> Response {
    serve::<Anthropic>(state.0, ctx, caller, headers, uri, raw)
        .await
        .into_response()
}

/// An estimate (about four characters a token) — enough for clients that budget context;
/// exact counts need the provider's own tokenizer.
#[utoipa::path(post, path = "/v1/messages/count_tokens", tag = "anthropic",
    request_body(content = Object, description = "An Anthropic Messages request without `max_tokens`"),
    responses((status = 200, description = "`{\"input_tokens\": N}`, an estimate", body = Object)))]
pub async fn count_tokens(
    state: AppStateRef,
    ctx: RequestCtx,

    headers: HeaderMap,
    raw: Body,
) -> Response {
    let bytes = match body::read(&headers, raw, state.max_request_bytes).await {
        Ok(b) => b,
        Err(e) => return Anthropic::error(e, &ctx),
    };
    let mut v: serde_json::Value = match body::decode(&bytes) {
        Ok(v) => v,
        Err(e) => return Anthropic::error(e, &ctx),
    };
    // count_tokens takes no max_tokens; give the decoder one.
    if let Some(obj) = v.as_object_mut() {
        obj.entry("max_tokens").or_insert(json!(1));
    }
    let req = match serde_json::from_value::<MessagesRequest>(v) {
        Ok(r) => decode_request(r),
        Err(e) => return Anthropic::error(ProxyError::invalid("messages", e.to_string()), &ctx),
    };
    let chars: usize = req.messages.iter().map(|m| m.text().len()).sum::<usize>()
        + req
            .tools
            .iter()
            .flatten()
            .map(|t| serde_json::to_string(t).map(|s| s.len()).unwrap_or(0))
            .sum::<usize>();
    Json(json!({"input_tokens": (chars as u64).div_ceil(4).max(1)})).into_response()
}
