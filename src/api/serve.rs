//! The request flow every chat-style endpoint shares — read, decode, validate, resolve,
//! admit, route, encode, log — parameterized by the client's [`Dialect`].

use std::convert::Infallible;

use axum::body::Body;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use futures_util::StreamExt;
use http::{HeaderMap, HeaderValue, StatusCode};
use tokio::sync::OwnedSemaphorePermit;

use super::{AppState, AppStateRef, Logged, RequestCtx, body, validate};
use crate::error::{ErrorCode, ProxyError};
use crate::providers::EventStream;
use crate::router::{OpenStream, Outcome};
use crate::telemetry::RequestLog;
use crate::types::{ChatRequest, ChatResponse, StreamChunk};

/// A client dialect: how its requests decode and its replies, streams and errors encode.
pub(crate) trait Dialect: Send + Sync + 'static {
    /// The endpoint name logs use.
    const ENDPOINT: &'static str;
    /// Per-stream encoder state.
    type Stream: Send + 'static;

    fn decode(bytes: &[u8]) -> Result<ChatRequest, ProxyError>;
    /// The error response in this dialect's shape.
    fn error(err: ProxyError, ctx: &RequestCtx) -> Response;
    /// A complete reply body (JSON).
    fn body(resp: ChatResponse, model: &str) -> Bytes;
    fn stream_start(req: &ChatRequest) -> Self::Stream;
    /// Frames for one upstream chunk; `None` when it has nothing for this client.
    fn stream_chunk(st: &mut Self::Stream, chunk: StreamChunk) -> Option<Bytes>;
    fn stream_error(st: &mut Self::Stream, err: &ProxyError, request_id: &str) -> Bytes;
    fn stream_end(st: &mut Self::Stream) -> Bytes;
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
    if outcome.attempts > 0 {
        headers.insert("x-llm-proxy-attempts", HeaderValue::from(outcome.attempts));
    }
}

/// Logs the failure and renders it in the dialect's shape.
fn fail<D: Dialect>(mut log: RequestLog, err: ProxyError, ctx: &RequestCtx) -> Response {
    log.fail(&err);
    log.emit("error");
    let mut resp = D::error(err, ctx);
    if let Some(model) = log.model.clone() {
        routing_headers(resp.headers_mut(), &model, &log.outcome);
    }
    resp.extensions_mut().insert(Logged);
    resp
}

/// Decodes, fills the default model, validates.
fn prepare<D: Dialect>(
    state: &AppState,
    bytes: &[u8],
    log: &mut RequestLog,
) -> Result<ChatRequest, ProxyError> {
    let mut req = D::decode(bytes)?;
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
    Ok(req)
}

/// The handler body for any dialect.
pub(crate) async fn serve<D: Dialect>(
    state: AppStateRef,
    ctx: RequestCtx,
    headers: HeaderMap,
    raw: Body,
) -> Response {
    let state = state.0;
    let mut log = RequestLog::new(ctx.id.clone(), D::ENDPOINT, ctx.started);
    let bytes = match body::read(&headers, raw, state.max_request_bytes).await {
        Ok(b) => b,
        Err(e) => return fail::<D>(log, e, &ctx),
    };
    let req = match prepare::<D>(&state, &bytes, &mut log) {
        Ok(r) => r,
        Err(e) => return fail::<D>(log, e, &ctx),
    };
    drop(bytes);
    let route = match state.router.resolve(&req.model) {
        Ok(r) => r,
        Err(e) => return fail::<D>(log, e, &ctx),
    };
    let permit = match admit(&state) {
        Ok(p) => p,
        Err(e) => return fail::<D>(log, e, &ctx),
    };
    let mut outcome = Outcome::default();
    if req.is_stream() {
        let opened = state.router.chat_stream(&req, &route, &mut outcome).await;
        log.outcome = outcome;
        match opened {
            Ok(open) => stream_response::<D>(&req, open, log, permit),
            Err(e) => fail::<D>(log, e, &ctx),
        }
    } else {
        let result = state.router.chat(&req, &route, &mut outcome).await;
        log.outcome = outcome;
        drop(permit);
        match result {
            Ok(resp) => {
                log.stats.usage = resp.usage;
                log.stats.finish = resp.finish_reason;
                log.emit("ok");
                let mut out = (
                    StatusCode::OK,
                    [(http::header::CONTENT_TYPE, "application/json")],
                    D::body(resp, &req.model),
                )
                    .into_response();
                routing_headers(out.headers_mut(), &req.model, &log.outcome);
                out.extensions_mut().insert(Logged);
                out
            }
            Err(e) => fail::<D>(log, e, &ctx),
        }
    }
}

fn stream_response<D: Dialect>(
    req: &ChatRequest,
    open: OpenStream,
    log: RequestLog,
    permit: OwnedSemaphorePermit,
) -> Response {
    let mut headers = HeaderMap::new();
    routing_headers(&mut headers, &req.model, &log.outcome);
    let st = SseState::<D> {
        first: open.first,
        rest: open.rest,
        enc: D::stream_start(req),
        log,
        _permit: permit,
        finished: false,
    };
    let mut resp = (
        StatusCode::OK,
        [
            (http::header::CONTENT_TYPE, "text/event-stream"),
            (http::header::CACHE_CONTROL, "no-cache"),
        ],
        Body::from_stream(sse_body(st)),
    )
        .into_response();
    resp.headers_mut().extend(headers);
    // Tell nginx-style front proxies not to buffer the stream.
    resp.headers_mut()
        .insert("x-accel-buffering", HeaderValue::from_static("no"));
    resp.extensions_mut().insert(Logged);
    resp
}

struct SseState<D: Dialect> {
    first: Option<StreamChunk>,
    rest: EventStream,
    enc: D::Stream,
    log: RequestLog,
    _permit: OwnedSemaphorePermit,
    finished: bool,
}

/// Forwards each upstream chunk as soon as it is decoded; ends with the dialect's closing
/// frames, or its error event when the upstream fails mid-stream. Dropping the body (client
/// gone) drops the upstream stream, and the log record says `client_closed`.
fn sse_body<D: Dialect>(
    st: SseState<D>,
) -> impl futures_util::Stream<Item = Result<Bytes, Infallible>> + Send {
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
                    let started = st.log.started;
                    for ev in &chunk.events {
                        st.log.stats.observe(started, ev);
                    }
                    st.log.stats.chunks += 1;
                    if let Some(frame) = D::stream_chunk(&mut st.enc, chunk) {
                        return Some((Ok(frame), st));
                    }
                }
                Some(Err(e)) => {
                    st.finished = true;
                    let err = e.into_proxy_error();
                    st.log.fail(&err);
                    st.log.emit("stream_error");
                    let frame = D::stream_error(&mut st.enc, &err, &st.log.request_id);
                    return Some((Ok(frame), st));
                }
                None => {
                    st.finished = true;
                    st.log.emit("ok");
                    return Some((Ok(D::stream_end(&mut st.enc)), st));
                }
            }
        }
    })
}
