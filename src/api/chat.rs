//! `POST /v1/chat/completions`: the OpenAI dialect in, any provider out.

use std::convert::Infallible;
use std::sync::Arc;

use axum::body::Body;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use futures_util::StreamExt;
use http::{HeaderMap, HeaderValue, StatusCode};
use tokio::sync::OwnedSemaphorePermit;

use super::{ApiError, AppState, AppStateRef, Logged, RequestCtx, body, validate};
use crate::error::{ErrorCode, ProxyError};
use crate::providers::EventStream;
use crate::providers::mock::unix_now;
use crate::router::{OpenStream, Outcome, Resolved};
use crate::telemetry::RequestLog;
use crate::types::{ChatRequest, StreamChunk};
use crate::wire::openai::{ChunkEncoder, encode_response, is_usage_only_chunk};
use crate::wire::sse::{DONE_FRAME, data_frame};

/// Decodes, validates and resolves the model; the parts of a request shared by every
/// chat-style endpoint.
pub(crate) fn prepare(
    state: &AppState,
    bytes: &[u8],
    log: &mut RequestLog,
) -> Result<(ChatRequest, Resolved), ProxyError> {
    let mut req: ChatRequest = body::decode(bytes)?;
    if req.model.trim().is_empty() {
        match &state.default_model {
            Some(m) => req.model = m.clone(),
            None => {
                return Err(ProxyError::invalid(
                    "model",
                    "`model` is required (no default model is configured)",
                ));
            }
        }
    }
    log.model = Some(req.model.as_str().into());
    log.stream = req.is_stream();
    validate::chat_request(&req)?;
    let route = state.router.resolve(&req.model)?;
    Ok((req, route))
}

fn admit(state: &AppState) -> Result<OwnedSemaphorePermit, ProxyError> {
    state.concurrency.clone().try_acquire_owned().map_err(|_| {
        ProxyError::new(
            ErrorCode::Unavailable,
            "the proxy is at its concurrent request limit; retry shortly",
        )
        .with_retry_after(std::time::Duration::from_secs(1))
    })
}

fn routing_headers(headers: &mut HeaderMap, model: &str, outcome: &Outcome) {
    if let Ok(v) = HeaderValue::from_str(model) {
        headers.insert("x-llm-proxy-model", v);
    }
    if let Some(d) = &outcome.deployment {
        if let Ok(v) = HeaderValue::from_str(&d.id) {
            headers.insert("x-llm-proxy-deployment", v);
        }
    }
    headers.insert("x-llm-proxy-attempts", HeaderValue::from(outcome.attempts));
}

fn fail(mut log: RequestLog, err: ProxyError, ctx: &RequestCtx) -> Response {
    log.fail(&err);
    log.emit("error");
    let mut resp = ApiError::new(err, ctx).into_response();
    resp.extensions_mut().insert(Logged);
    resp
}

pub async fn chat_completions(
    state: AppStateRef,
    ctx: RequestCtx,
    headers: HeaderMap,
    raw: Body,
) -> Response {
    let state = state.0;
    let mut log = RequestLog::new(ctx.id.clone(), "chat_completions", ctx.started);
    let bytes = match body::read(&headers, raw, state.max_request_bytes).await {
        Ok(b) => b,
        Err(e) => return fail(log, e, &ctx),
    };
    let (req, route) = match prepare(&state, &bytes, &mut log) {
        Ok(x) => x,
        Err(e) => return fail(log, e, &ctx),
    };
    let permit = match admit(&state) {
        Ok(p) => p,
        Err(e) => return fail(log, e, &ctx),
    };
    if req.is_stream() {
        stream_response(state, ctx, req, route, log, permit).await
    } else {
        let mut outcome = Outcome::default();
        let result = state.router.chat(&req, &route, &mut outcome).await;
        log.outcome = outcome;
        drop(permit);
        match result {
            Ok(resp) => {
                log.stats.usage = resp.usage;
                log.stats.finish = resp.finish_reason;
                let body = match &resp.raw_openai {
                    Some(raw) => raw.clone(),
                    None => Bytes::from(encode_response(&resp, &req.model)),
                };
                log.emit("ok");
                let mut out = (
                    StatusCode::OK,
                    [(http::header::CONTENT_TYPE, "application/json")],
                    body,
                )
                    .into_response();
                routing_headers(out.headers_mut(), &req.model, &log.outcome);
                out.extensions_mut().insert(Logged);
                out
            }
            Err(e) => {
                let outcome = log.outcome.clone();
                let mut resp = fail(log, e, &ctx);
                routing_headers(resp.headers_mut(), &req.model, &outcome);
                resp
            }
        }
    }
}

async fn stream_response(
    state: Arc<AppState>,
    ctx: RequestCtx,
    req: ChatRequest,
    route: Resolved,
    mut log: RequestLog,
    permit: OwnedSemaphorePermit,
) -> Response {
    let mut outcome = Outcome::default();
    let opened = state.router.chat_stream(&req, &route, &mut outcome).await;
    log.outcome = outcome;
    let open = match opened {
        Ok(o) => o,
        Err(e) => {
            let outcome = log.outcome.clone();
            let mut resp = fail(log, e, &ctx);
            routing_headers(resp.headers_mut(), &req.model, &outcome);
            return resp;
        }
    };
    let mut headers = HeaderMap::new();
    routing_headers(&mut headers, &req.model, &log.outcome);
    let encoder = ChunkEncoder::new(
        format!("chatcmpl-{}", uuid::Uuid::new_v4().simple()),
        req.model.clone(),
        unix_now(),
    );
    let body = Body::from_stream(openai_sse(
        open,
        encoder,
        req.wants_stream_usage(),
        log,
        permit,
    ));
    let mut resp = (
        StatusCode::OK,
        [
            (http::header::CONTENT_TYPE, "text/event-stream"),
            (http::header::CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
        .into_response();
    resp.headers_mut().extend(headers);
    // Tell nginx-style front proxies not to buffer the stream.
    resp.headers_mut()
        .insert("x-accel-buffering", HeaderValue::from_static("no"));
    resp.extensions_mut().insert(Logged);
    resp
}

struct SseState {
    first: Option<StreamChunk>,
    rest: EventStream,
    encoder: ChunkEncoder,
    wants_usage: bool,
    log: RequestLog,
    _permit: OwnedSemaphorePermit,
    finished: bool,
}

/// Frames one canonical chunk for an OpenAI-dialect client: the upstream's own JSON when it
/// has it (no re-serialization), otherwise encoded from events. The usage-only chunk is
/// dropped for clients that did not ask for it.
fn frame_chunk(st: &mut SseState, chunk: StreamChunk) -> Option<Bytes> {
    let started = st.log.started;
    for ev in &chunk.events {
        st.log.stats.observe(started, ev);
    }
    st.log.stats.chunks += 1;
    if !st.wants_usage && is_usage_only_chunk(&chunk.events) {
        return None;
    }
    match chunk.raw_openai {
        Some(raw) => Some(data_frame(&raw)),
        None => {
            let mut out = Vec::new();
            for ev in &chunk.events {
                if !st.wants_usage && matches!(ev, crate::types::ChatEvent::Usage(_)) {
                    continue;
                }
                out.extend_from_slice(&data_frame(&st.encoder.encode(ev)));
            }
            (!out.is_empty()).then(|| Bytes::from(out))
        }
    }
}

fn openai_sse(
    open: OpenStream,
    encoder: ChunkEncoder,
    wants_usage: bool,
    log: RequestLog,
    permit: OwnedSemaphorePermit,
) -> impl futures_util::Stream<Item = Result<Bytes, Infallible>> + Send {
    let st = SseState {
        first: open.first,
        rest: open.rest,
        encoder,
        wants_usage,
        log,
        _permit: permit,
        finished: false,
    };
    futures_util::stream::unfold(st, |mut st| async move {
        loop {
            if st.finished {
                return None;
            }
            let next = match st.first.take() {
                Some(c) => Some(Ok(c)),
                None => st.rest.next().await,
            };
            match next {
                Some(Ok(chunk)) => {
                    if let Some(frame) = frame_chunk(&mut st, chunk) {
                        return Some((Ok(frame), st));
                    }
                }
                Some(Err(e)) => {
                    st.finished = true;
                    let err = e.into_proxy_error();
                    st.log.fail(&err);
                    st.log.emit("stream_error");
                    let payload = err.envelope(&st.log.request_id).to_string();
                    let mut frame = data_frame(payload.as_bytes()).to_vec();
                    frame.extend_from_slice(DONE_FRAME);
                    return Some((Ok(Bytes::from(frame)), st));
                }
                None => {
                    st.finished = true;
                    st.log.emit("ok");
                    return Some((Ok(Bytes::from_static(DONE_FRAME)), st));
                }
            }
        }
    })
}
