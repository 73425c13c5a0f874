//! The request flow every chat-style endpoint shares — read, decode, validate, resolve,
//! admit, route, encode, log — parameterized by the client's [`Dialect`].

use std::convert::Infallible;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use futures_util::{FutureExt, StreamExt};
use http::{HeaderMap, HeaderName, HeaderValue, StatusCode, Uri};
use tokio::sync::OwnedSemaphorePermit;

use super::{AppState, Caller, LoggedResponse, RequestCtx, body, validate};
use crate::error::{ErrorCode, ProxyError};
use crate::keys::Principal;
use crate::limits::{RateStatus, Ticket, estimate_tokens};
use crate::providers::EventStream;
use crate::router::{OpenStream, Outcome, RouteCtx};
use crate::shutdown::Closing;
use crate::telemetry::RequestLog;
use crate::telemetry::{Metrics, TraceContext};
use crate::types::{ChatEvent, ChatRequest, ChatResponse, StreamChunk};

/// What a reply is about, for dialects that report it: the model asked for, the request
/// (trace) id, where it was served and when it started.
pub(crate) struct Exchange<'a> {
    pub model: &'a str,
    pub request_id: &'a str,
    pub outcome: &'a Outcome,
    pub started: Instant,
}

impl Exchange<'_> {
    /// The provider that served (or failed last).
    pub fn provider(&self) -> Option<&str> {
        self.outcome.deployment.as_ref().map(|d| &*d.provider.name)
    }
}

/// How a stream went, for dialects that end with a summary.
pub(crate) struct StreamSummary {
    pub latency: Duration,
    pub ttft: Option<Duration>,
    pub tokens_per_sec: Option<f64>,
}

/// A client dialect: how its requests decode and its replies, streams and errors encode.
pub(crate) trait Dialect: Send + Sync + 'static {
    /// The endpoint name logs use.
    const ENDPOINT: &'static str;
    /// Whether [`Dialect::body`] passes an OpenAI upstream's reply on verbatim (so the
    /// proxy need not decode its message).
    const OPENAI_REPLY_VERBATIM: bool = false;
    /// What the client chose besides the request body (e.g. a stream format from `Accept`).
    type Options: Send + 'static;
    /// Per-stream encoder state.
    type Stream: Send + 'static;

    fn decode(
        bytes: &[u8],
        headers: &HeaderMap,
        uri: &Uri,
    ) -> Result<(ChatRequest, Self::Options), ProxyError>;
    /// The error response in this dialect's shape.
    fn error(err: ProxyError, ctx: &RequestCtx) -> Response;
    /// A complete reply body (JSON).
    fn body(resp: ChatResponse, opts: &Self::Options, x: &Exchange<'_>) -> Bytes;
    fn stream_start(req: &ChatRequest, opts: Self::Options, x: &Exchange<'_>) -> Self::Stream;
    /// The stream's `Content-Type`.
    fn stream_content_type(_: &Self::Stream) -> &'static str {
        "text/event-stream"
    }
    /// Frames for one upstream chunk; `None` when it has nothing for this client.
    fn stream_chunk(st: &mut Self::Stream, chunk: StreamChunk) -> Option<Bytes>;
    fn stream_error(st: &mut Self::Stream, err: &ProxyError, request_id: &str) -> Bytes;
    fn stream_end(st: &mut Self::Stream, summary: &StreamSummary) -> Bytes;
}

/// A slot among `max_concurrent_requests`. When none is free, the request waits in a short
/// bounded queue (`max_queue` requests, up to `queue_timeout` each); beyond that it is
/// refused at once with 503 and `retry-after`, so memory stays bounded under any load.
async fn admit(state: &AppState) -> Result<OwnedSemaphorePermit, ProxyError> {
    let busy = || {
        ProxyError::new(
            ErrorCode::Unavailable,
            "the proxy is at its concurrent request limit; retry shortly",
        )
        .with_retry_after(Duration::from_secs(1))
    };
    if let Ok(p) = state.concurrency.clone().try_acquire_owned() {
        return Ok(p);
    }
    let Some(_ticket) = state.queue.enter() else {
        return Err(busy());
    };
    match tokio::time::timeout(
        state.queue_timeout,
        state.concurrency.clone().acquire_owned(),
    )
    .await
    {
        Ok(Ok(p)) => Ok(p),
        _ => Err(busy()),
    }
}

/// Which model and deployment served (a fallback's, when one did) and in how many
/// attempts.
fn routing_headers(headers: &mut HeaderMap, model: &str, outcome: &Outcome) {
    const MODEL: HeaderName = HeaderName::from_static("x-llm-proxy-model");
    const DEPLOYMENT: HeaderName = HeaderName::from_static("x-llm-proxy-deployment");
    const ATTEMPTS: HeaderName = HeaderName::from_static("x-llm-proxy-attempts");
    match &outcome.deployment {
        Some(d) => {
            let (model, id) = d.state.header_values.get_or_init(|| {
                (
                    HeaderValue::from_str(&d.model).ok(),
                    HeaderValue::from_str(&d.id).ok(),
                )
            });
            if let Some(v) = model {
                headers.insert(MODEL, v.clone());
            }
            if let Some(v) = id {
                headers.insert(DEPLOYMENT, v.clone());
            }
        }
        None => {
            if let Ok(v) = HeaderValue::from_str(model) {
                headers.insert(MODEL, v);
            }
        }
    }
    const FEW: [HeaderValue; 4] = [
        HeaderValue::from_static("1"),
        HeaderValue::from_static("2"),
        HeaderValue::from_static("3"),
        HeaderValue::from_static("4"),
    ];
    match outcome.attempts {
        0 => {}
        n @ 1..=4 => {
            headers.insert(ATTEMPTS, FEW[n as usize - 1].clone());
        }
        n => {
            headers.insert(ATTEMPTS, HeaderValue::from(n));
        }
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
    resp
}

/// Decodes, fills the default model, validates.
fn prepare<D: Dialect>(
    state: &AppState,
    bytes: &[u8],
    headers: &HeaderMap,
    uri: &Uri,
    log: &mut RequestLog,
) -> Result<(ChatRequest, D::Options), ProxyError> {
    let (mut req, opts) = D::decode(bytes, headers, uri)?;
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
    Ok((req, opts))
}

/// The handler body for any dialect. Every way out writes the request's log line: a reply
/// and a refusal before it return, a stream when it ends (or, if the client leaves, when
/// its state is dropped).
///
/// A map over the future rather than an `async fn` around it: an async wrapper would keep
/// its own copy of the arguments in every request's future, which the fast lane boxes.
pub(crate) fn serve<D: Dialect>(
    state: Arc<AppState>,
    ctx: RequestCtx,
    caller: Caller,
    headers: HeaderMap,
    uri: Uri,
    raw: Body,
) -> impl Future<Output = LoggedResponse> + Send {
    answer::<D>(state, ctx, caller, headers, uri, raw).map(LoggedResponse)
}

/// `serve`'s work: the same arguments, the reply whose line it wrote.
async fn answer<D: Dialect>(
    state: Arc<AppState>,
    ctx: RequestCtx,
    caller: Caller,
    headers: HeaderMap,
    uri: Uri,
    raw: Body,
) -> Response {
    let mut log = RequestLog::new(ctx.id.clone(), D::ENDPOINT, ctx.started)
        .with_metrics(state.metrics.clone());
    log.ledger = state.ledger.clone();
    // A slot first: bodies are read only by requests being served, so memory stays
    // bounded by max_concurrent_requests × max_request_size, and a request turned away as
    // busy costs no rate limit.
    let permit = match admit(&state).await {
        Ok(p) => p,
        Err(e) => return fail::<D>(log, e, &ctx),
    };
    let bytes = match body::read(&headers, raw, state.max_request_bytes).await {
        Ok(b) => b,
        Err(e) => return fail::<D>(log, e, &ctx),
    };
    let (mut req, opts) = match prepare::<D>(&state, &bytes, &headers, &uri, &mut log) {
        Ok(r) => r,
        Err(e) => return fail::<D>(log, e, &ctx),
    };
    let trace = TraceContext::from_headers(&headers);
    req.traceparent = Some(trace.traceparent());
    if state.tracer.is_some() {
        log.tracer = state.tracer.clone();
        log.trace = Some(trace.clone());
    }
    log.trace_id = Some(trace.trace_id);
    drop(bytes);
    if let Principal::Key(k) = &caller.principal {
        log.key = Some(k.name.clone());
        if k.log_content {
            log.content = Some(crate::telemetry::ContentLog::new(
                serde_json::to_string(&req.messages).unwrap_or_default(),
            ));
        }
        if !k.allows(&req.model) {
            let e = ProxyError::new(
                ErrorCode::Forbidden,
                format!("key `{}` may not use model `{}`", k.name, req.model),
            );
            return fail::<D>(log, e, &ctx);
        }
        if let (Some(b), Some(sink)) = (k.budget, &state.ledger) {
            log.budget = Some(b);
            let spent = sink.spent(&k.name, b.period).await;
            if spent >= b.max_usd {
                let mut e = ProxyError::new(
                    ErrorCode::BudgetExceeded,
                    format!(
                        "key `{}` has spent ${spent:.4} of its ${:.4} budget{}",
                        k.name,
                        b.max_usd,
                        if b.period.is_some() {
                            " for this period"
                        } else {
                            ""
                        }
                    ),
                );
                if let Some(p) = b.period {
                    e = e.with_retry_after(crate::ledger::period_left(p));
                }
                return fail::<D>(log, e, &ctx);
            }
        }
    }
    req.openai_reply_verbatim = D::OPENAI_REPLY_VERBATIM && log.content.is_none();
    let route = match state.router.resolve(&req.model) {
        Ok(r) => r,
        Err(e) => return fail::<D>(log, e, &ctx),
    };
    let ip = state.limiter.client_ip(caller.peer, &headers);
    log.client_ip = ip;
    let mut rate = RateStatus::default();
    let ticket = match state.limiter.scope(&caller.principal, ip) {
        Some(scope) => {
            let kind = if scope.is_key() { "key" } else { "ip" };
            match state
                .limiter
                .admit(scope, estimate_tokens(&req), &ctx.id)
                .await
            {
                Ok(t) => {
                    rate = t.status;
                    Some(t)
                }
                Err((e, status)) => {
                    log.limited_by = Some(kind);
                    let mut resp = fail::<D>(log, e, &ctx);
                    status.headers(resp.headers_mut());
                    return resp;
                }
            }
        }
        None => None,
    };
    let may_use = |m: &str| caller.may_use(m);
    let rc = RouteCtx {
        started: ctx.started,
        may_use: &may_use,
    };
    let mut outcome = Outcome {
        attempt_log: log.tracer.is_some().then(Vec::new),
        ..Outcome::default()
    };
    if req.is_stream() {
        let opened = tokio::select! {
            r = state.router.chat_stream(&req, &route, &rc, &mut outcome) => r,
            _ = state.closing.fired() => Err(shutting_down()),
        };
        log.outcome = outcome;
        match opened {
            Ok(open) => {
                log.stream_opened();
                let mut resp = stream_response::<D>(&req, opts, open, log, permit, ticket, &state);
                rate.headers(resp.headers_mut());
                resp
            }
            Err(e) => {
                if let Some(t) = ticket {
                    t.finish(Some(0));
                }
                let mut resp = fail::<D>(log, e, &ctx);
                rate.headers(resp.headers_mut());
                resp
            }
        }
    } else {
        let result = tokio::select! {
            r = state.router.chat(&req, &route, &rc, &mut outcome) => r,
            _ = state.closing.fired() => Err(shutting_down()),
        };
        log.outcome = outcome;
        drop(permit);
        if let Some(t) = ticket {
            // A failed request used no tokens; a reply, what it reports.
            t.finish(match &result {
                Ok(r) => r.usage.map(|u| u.total_tokens),
                Err(_) => Some(0),
            });
        }
        match result {
            Ok(resp) => {
                log.stats.usage = resp.usage;
                log.stats.finish = resp.finish_reason;
                if let (Some(c), Some(text)) = (&mut log.content, &resp.message.content) {
                    c.push(text);
                }
                log.emit("ok");
                let x = Exchange {
                    model: &req.model,
                    request_id: &ctx.id,
                    outcome: &log.outcome,
                    started: log.started,
                };
                let body = D::body(resp, &opts, &x);
                let mut out = Response::new(Body::from(body));
                // Room for every header added below and the request id, in one allocation:
                // a map that grows (or is reserved into) rehashes on the way.
                *out.headers_mut() = HeaderMap::with_capacity(REPLY_HEADERS);
                out.headers_mut().insert(
                    http::header::CONTENT_TYPE,
                    HeaderValue::from_static("application/json"),
                );
                if let Some(v) = overhead(&log, &state.metrics) {
                    out.headers_mut().insert(OVERHEAD_HEADER, v);
                }
                routing_headers(out.headers_mut(), &req.model, &log.outcome);
                rate.headers(out.headers_mut());
                out
            }
            Err(e) => {
                let mut resp = fail::<D>(log, e, &ctx);
                rate.headers(resp.headers_mut());
                resp
            }
        }
    }
}

/// Headers a reply carries at most: content type, overhead, model, deployment, attempts,
/// six rate-limit headers and the request id.
const REPLY_HEADERS: usize = 12;

const OVERHEAD_HEADER: HeaderName = HeaderName::from_static("x-llm-proxy-overhead-ms");

/// The proxy's own time so far: the request's time minus the time spent waiting on
/// upstreams (to the reply, or to a stream's first chunk). Recorded as a metric and
/// returned as the `x-llm-proxy-overhead-ms` header value.
fn overhead(log: &RequestLog, metrics: &Metrics) -> Option<HeaderValue> {
    let dep = log.outcome.deployment.as_ref()?;
    let overhead = log.started.elapsed().saturating_sub(log.outcome.upstream);
    metrics.overhead(
        &dep.model,
        &dep.provider.name,
        overhead,
        Some(&dep.state.series),
    );
    Some(milliseconds(overhead))
}

/// A duration in milliseconds with three decimals (`0.155`, `12.000`), rounded to the
/// microsecond; integer arithmetic, not float formatting, on every reply.
fn milliseconds(d: Duration) -> HeaderValue {
    let us = (d.as_nanos() + 500) / 1000;
    let text = crate::decimal::thousandths(u64::try_from(us).unwrap_or(u64::MAX));
    // Digits and a dot are always a valid header value.
    HeaderValue::try_from(text).unwrap_or(HeaderValue::from_static("0.000"))
}

fn shutting_down() -> ProxyError {
    ProxyError::new(
        ErrorCode::Unavailable,
        "the server is shutting down; retry on another instance",
    )
    .with_retry_after(Duration::from_secs(1))
}

fn stream_response<D: Dialect>(
    req: &ChatRequest,
    opts: D::Options,
    open: OpenStream,
    mut log: RequestLog,
    permit: OwnedSemaphorePermit,
    ticket: Option<Ticket>,
    state: &AppState,
) -> Response {
    let overhead_ms = overhead(&log, &state.metrics);
    let closing = state.closing.clone();
    // Time to first token is measured to the first chunk's arrival, not to when the body
    // is first polled.
    if open
        .first
        .as_ref()
        .is_some_and(|c| c.events.iter().any(ChatEvent::is_content))
    {
        log.stats.ttft = Some(open.first_at.saturating_duration_since(log.started));
    }
    let mut headers = HeaderMap::new();
    routing_headers(&mut headers, &req.model, &log.outcome);
    let enc = D::stream_start(
        req,
        opts,
        &Exchange {
            model: &req.model,
            request_id: &log.request_id,
            outcome: &log.outcome,
            started: log.started,
        },
    );
    let content_type = D::stream_content_type(&enc);
    let st = SseState::<D> {
        first: open.first,
        closing,
        ticket,
        rest: open.rest,
        enc,
        log,
        _permit: permit,
        finished: false,
    };
    let mut resp = (
        StatusCode::OK,
        [
            (http::header::CONTENT_TYPE, content_type),
            (http::header::CACHE_CONTROL, "no-cache"),
        ],
        Body::from_stream(sse_body(st)),
    )
        .into_response();
    resp.headers_mut().extend(headers);
    if let Some(v) = overhead_ms {
        resp.headers_mut().insert(OVERHEAD_HEADER, v);
    }
    // Tell nginx-style front proxies not to buffer the stream.
    resp.headers_mut()
        .insert("x-accel-buffering", HeaderValue::from_static("no"));
    resp
}

struct SseState<D: Dialect> {
    first: Option<StreamChunk>,
    rest: EventStream,
    closing: Closing,
    /// Rate limits to settle with the stream's real usage when it ends.
    ticket: Option<Ticket>,
    enc: D::Stream,
    log: RequestLog,
    _permit: OwnedSemaphorePermit,
    finished: bool,
}

/// However a stream ends (error, shutdown, the client gone), its limits are settled with
/// the usage seen: the upstream's report when it came, else the reserve plus the output.
impl<D: Dialect> Drop for SseState<D> {
    fn drop(&mut self) {
        if let Some(t) = self.ticket.take() {
            match self.log.stats.usage {
                Some(u) => t.finish(Some(u.total_tokens)),
                None => t.finish_partial(self.log.stats.output_events),
            }
        }
    }
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
                None => tokio::select! {
                    n = st.rest.next() => n,
                    // Grace period over: end with an error event, not a cut connection.
                    _ = st.closing.fired() => {
                        st.finished = true;
                        let err = shutting_down();
                        st.log.fail(&err);
                        st.log.emit("shutdown");
                        let frame = D::stream_error(&mut st.enc, &err, &st.log.request_id);
                        return Some((Ok(frame), st));
                    }
                },
            };
            match next {
                Some(Ok(chunk)) => {
                    let started = st.log.started;
                    for ev in &chunk.events {
                        st.log.stats.observe(started, ev);
                        if let Some(c) = &mut st.log.content {
                            c.observe(ev);
                        }
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
                    if let Some(t) = st.ticket.take() {
                        t.finish(st.log.stats.usage.map(|u| u.total_tokens));
                    }
                    let latency = st.log.started.elapsed();
                    let summary = StreamSummary {
                        latency,
                        ttft: st.log.stats.ttft,
                        tokens_per_sec: st.log.stats.tokens_per_sec(latency),
                    };
                    st.log.emit("ok");
                    return Some((Ok(D::stream_end(&mut st.enc, &summary)), st));
                }
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The overhead header reads as `{:.3}` of the milliseconds did (ties aside: those
    /// round up here, to even there).
    #[test]
    fn milliseconds_match_float_formatting() {
        for ns in (0..5_000_000u64)
            .step_by(7919)
            .chain([999_999_999, 61_000_000_000])
        {
            if ns % 1000 == 500 {
                continue;
            }
            let d = Duration::from_nanos(ns);
            let old = format!("{:.3}", d.as_secs_f64() * 1000.0);
            assert_eq!(milliseconds(d).to_str().unwrap(), old, "{ns}");
        }
    }
}
