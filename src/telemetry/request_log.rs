//! The per-request log record. It is emitted exactly once: when the handler finishes, or,
//! for a stream, when the stream ends — including when the client goes away mid-stream,
//! which `Drop` records as `client_closed` so no request ever goes unlogged.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use super::otlp::{AttrValue, Span, SpanKind};
use super::request_line::RequestLine;
use crate::error::ProxyError;
use crate::router::Outcome;
use crate::types::{ChatEvent, FinishReason, Usage};

/// What a stream delivered, accumulated chunk by chunk.
#[derive(Debug, Default, Clone)]
pub struct StreamStats {
    pub ttft: Option<Duration>,
    pub usage: Option<Usage>,
    pub finish: Option<FinishReason>,
    pub chunks: u64,
    /// Pieces of output seen (about one token each): what a stream cut short is charged
    /// when the upstream never reported usage.
    pub output_events: u64,
}

impl StreamStats {
    pub fn observe(&mut self, started: Instant, event: &ChatEvent) {
        if event.is_content() {
            self.output_events += 1;
            if self.ttft.is_none() {
                self.ttft = Some(started.elapsed());
            }
        }
        match event {
            ChatEvent::Usage(u) => self.usage = Some(*u),
            ChatEvent::Finish(f) => self.finish = Some(*f),
            _ => {}
        }
    }

    /// Output tokens per second of generation (after the first token), when known.
    pub fn tokens_per_sec(&self, latency: Duration) -> Option<f64> {
        let n = self.usage.map(|u| u.completion_tokens)?;
        let ttft = self.ttft?;
        (n > 0 && latency > ttft)
            .then(|| ((n as f64) / (latency - ttft).as_secs_f64() * 10.0).round() / 10.0)
    }
}

pub struct RequestLog {
    pub request_id: Arc<str>,
    pub endpoint: &'static str,
    pub model: Option<Arc<str>>,
    /// The virtual key's name (never the key).
    pub key: Option<Arc<str>>,
    /// The W3C trace id (the caller's, or a new one).
    pub trace_id: Option<Arc<str>>,
    /// The client's address (after trusted proxies).
    pub client_ip: Option<std::net::IpAddr>,
    pub stream: bool,
    pub started: Instant,
    pub outcome: Outcome,
    pub status: u16,
    pub error: Option<ProxyError>,
    pub stats: StreamStats,
    /// Where the line's numbers also go.
    pub metrics: Option<Arc<super::Metrics>>,
    /// A stream is open to the client (the open-streams gauge counts it until the line).
    pub streaming: bool,
    /// Which rate-limit scope refused the request (`key`, `ip`), for the metric.
    pub limited_by: Option<&'static str>,
    /// Where the usage record goes.
    pub ledger: Option<Arc<crate::ledger::Sink>>,
    /// The key's budget, which this request's cost counts towards.
    pub budget: Option<crate::keys::Budget>,
    /// Where the request's spans go, and its place in the trace (set only when traces
    /// are exported).
    pub tracer: Option<Arc<super::otlp::Exporter>>,
    pub trace: Option<super::TraceContext>,
    /// The prompt and completion, for keys that opted in to content logging.
    pub content: Option<ContentLog>,
    emitted: bool,
}

/// What a content-logging key sent and received. The completion is capped, so a long
/// stream cannot grow it without bound.
#[derive(Debug, Default)]
pub struct ContentLog {
    pub prompt: String,
    pub completion: String,
    pub truncated: bool,
}

/// The most completion text a content log keeps.
const CONTENT_CAP: usize = 256 * 1024;

/// The longest prefix of `text` that fits in `room` bytes, on a character boundary.
fn fitting(text: &str, room: usize) -> &str {
    let mut end = room.min(text.len());
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

impl ContentLog {
    /// Starts a content log with the prompt (capped like the completion).
    pub fn new(mut prompt: String) -> Self {
        let keep = fitting(&prompt, CONTENT_CAP).len();
        let truncated = keep < prompt.len();
        prompt.truncate(keep);
        Self {
            prompt,
            completion: String::new(),
            truncated,
        }
    }

    pub fn push(&mut self, text: &str) {
        let room = CONTENT_CAP.saturating_sub(self.completion.len());
        let kept = fitting(text, room);
        self.completion.push_str(kept);
        self.truncated |= kept.len() < text.len();
    }

    /// Adds a stream event's text.
    pub fn observe(&mut self, event: &ChatEvent) {
        if let ChatEvent::TextDelta(t) = event {
            self.push(t);
        }
    }
}

impl RequestLog {
    pub fn new(request_id: Arc<str>, endpoint: &'static str, started: Instant) -> Self {
        Self {
            request_id,
            endpoint,
            model: None,
            key: None,
            trace_id: None,
            client_ip: None,
            stream: false,
            started,
            outcome: Outcome::default(),
            status: 200,
            error: None,
            stats: StreamStats::default(),
            metrics: None,
            streaming: false,
            limited_by: None,
            ledger: None,
            budget: None,
            tracer: None,
            trace: None,
            content: None,
            emitted: false,
        }
    }

    /// Records this request in `metrics` too (and counts it in flight until its line).
    pub fn with_metrics(mut self, metrics: Arc<super::Metrics>) -> Self {
        metrics.in_flight(1);
        self.metrics = Some(metrics);
        self
    }

    /// The response is now a stream open to the client.
    pub fn stream_opened(&mut self) {
        if let (false, Some(m)) = (self.streaming, &self.metrics) {
            m.streams(1);
        }
        self.streaming = true;
    }

    pub fn fail(&mut self, err: &ProxyError) {
        self.status = err.code.status().as_u16();
        self.error = Some(err.clone());
    }

    /// Emits the line (once).
    pub fn emit(&mut self, result: &'static str) {
        if self.emitted {
            return;
        }
        self.emitted = true;
        let latency = self.started.elapsed();
        // One wall-clock reading for the ledger record and the log line.
        let at = SystemTime::now();
        let dep = self.outcome.deployment.as_ref();
        // Prices live with the ledger: without one, requests are not costed.
        let cost = match (&self.ledger, self.stats.usage, dep) {
            (Some(sink), Some(u), Some(d)) => sink
                .prices
                .price(&d.model, &d.upstream_model)
                .map(|p| p.cost(&u)),
            _ => None,
        };
        if let Some(m) = &self.metrics {
            m.in_flight(-1);
            if self.streaming {
                m.streams(-1);
            }
            m.request(
                &super::metrics::Finished {
                    endpoint: self.endpoint,
                    model: self.model.as_deref(),
                    provider: dep.map(|d| &d.provider.name),
                    status: self.status,
                    latency,
                    ttft: self.stats.ttft,
                    usage: self.stats.usage,
                },
                dep.map(|d| &d.state.series),
            );
            if let Some(scope) = self.limited_by {
                m.rate_limited(scope);
            }
            if let Some(c) = cost {
                m.cost(self.model.as_deref(), dep.map(|d| &d.provider.name), c);
            }
        }
        let usage = self.stats.usage;
        let tokens_out = usage.map(|u| u.completion_tokens);
        let tokens_per_sec = self.stats.tokens_per_sec(latency);
        let error_code = self.error.as_ref().map(|e| e.code.as_str());
        if let Some(sink) = &self.ledger {
            if let (Some(k), Some(b), Some(c)) = (&self.key, self.budget, cost) {
                sink.add_spend(k, c, b.period);
            }
            sink.ledger.record(crate::ledger::UsageRecord {
                at_ms: crate::ledger::unix_ms(at),
                request_id: self.request_id.clone(),
                trace_id: self.trace_id.clone(),
                key: self.key.clone(),
                endpoint: self.endpoint,
                model: self.model.clone(),
                provider: dep.map(|d| d.provider.name.clone()),
                deployment: dep.map(|d| d.id.clone()),
                status: self.status,
                result,
                error_code,
                stream: self.stream,
                attempts: self.outcome.attempts,
                tokens_in: usage.map(|u| u.prompt_tokens),
                tokens_out,
                tokens_cached: usage.and_then(|u| u.cached_tokens),
                tokens_reasoning: usage.and_then(|u| u.reasoning_tokens),
                cost_usd: cost,
                latency_ms: ms(latency),
                ttft_ms: self.stats.ttft.map(ms),
                chunks: self.stats.chunks,
                finish_reason: self.stats.finish.map(|f| f.as_str()),
            });
        }
        if let (Some(tracer), Some(tc)) = (&self.tracer, &self.trace) {
            if tc.sampled {
                tracer.export(self.spans(tc, at, latency, cost));
            }
        }
        let error_message = self.error.as_ref().map(|e| e.message.as_str());
        // The filter decides whether the line is wanted; `enabled!` needs its level at
        // compile time.
        let level = if self.status >= 500 || result == "client_closed" {
            tracing::enabled!(target: "llm_proxy::request", tracing::Level::WARN)
                .then_some(tracing::Level::WARN)
        } else {
            tracing::enabled!(target: "llm_proxy::request", tracing::Level::INFO)
                .then_some(tracing::Level::INFO)
        };
        if let Some(level) = level {
            RequestLine {
                request_id: &self.request_id,
                endpoint: self.endpoint,
                model: self.model.as_deref(),
                key: self.key.as_deref(),
                trace_id: self.trace_id.as_deref(),
                client_ip: self.client_ip,
                upstream_ms: ms(self.outcome.upstream),
                tokens_reasoning: usage.and_then(|u| u.reasoning_tokens),
                provider: dep.map(|d| &*d.provider.name),
                deployment: dep.map(|d| &*d.id),
                attempts: self.outcome.attempts,
                stream: self.stream,
                status: self.status,
                result,
                error_code,
                error_message,
                latency_ms: ms(latency),
                ttft_ms: self.stats.ttft.map(ms),
                tokens_in: usage.map(|u| u.prompt_tokens),
                tokens_out,
                tokens_cached: usage.and_then(|u| u.cached_tokens),
                tokens_per_sec,
                cost_usd: cost,
                finish_reason: self.stats.finish.map(FinishReason::as_str),
            }
            .emit(level, at);
        }
        // A line of its own (target `llm_proxy::content`), so the request line's shape
        // never changes and operators can route content elsewhere by target.
        if let Some(c) = &self.content {
            tracing::info!(
                target: "llm_proxy::content",
                request_id = %self.request_id,
                key = self.key.as_deref(),
                prompt = %c.prompt,
                completion = %c.completion,
                truncated = c.truncated,
                "content"
            );
        }
    }
}

impl RequestLog {
    /// The request's server span and a client span per upstream attempt, with the
    /// OpenTelemetry GenAI attributes (`gen_ai.*`) and llm-proxy's own (`llm_proxy.*`).
    /// Never a key: only the key's name.
    fn spans(
        &self,
        tc: &super::TraceContext,
        end: SystemTime,
        latency: Duration,
        cost: Option<f64>,
    ) -> Vec<Span> {
        let start = end.checked_sub(latency).unwrap_or(end);
        // Wall-clock time of a moment measured on the monotonic clock.
        let wall = |at: Instant| start + at.saturating_duration_since(self.started);
        let operation = match self.endpoint {
            "llm_completions" => "text_completion",
            _ => "chat",
        };
        let model = self.model.as_deref().unwrap_or("unknown");
        let dep = self.outcome.deployment.as_ref();
        let usage = self.stats.usage;
        let str = |s: &str| AttrValue::Str(s.to_owned());
        let mut attrs = vec![
            ("gen_ai.operation.name", str(operation)),
            ("gen_ai.request.model", str(model)),
            (
                "http.response.status_code",
                AttrValue::Int(i64::from(self.status)),
            ),
            ("llm_proxy.request_id", str(&self.request_id)),
            ("llm_proxy.endpoint", str(self.endpoint)),
            (
                "llm_proxy.attempts",
                AttrValue::Int(i64::from(self.outcome.attempts)),
            ),
            ("llm_proxy.stream", AttrValue::Bool(self.stream)),
        ];
        if let Some(d) = dep {
            attrs.push(("gen_ai.system", str(d.provider.kind.as_str())));
            attrs.push(("gen_ai.response.model", str(&d.upstream_model)));
            attrs.push(("llm_proxy.deployment", str(&d.id)));
        }
        if let Some(u) = usage {
            attrs.push((
                "gen_ai.usage.input_tokens",
                AttrValue::Int(u.prompt_tokens as i64),
            ));
            attrs.push((
                "gen_ai.usage.output_tokens",
                AttrValue::Int(u.completion_tokens as i64),
            ));
        }
        if let Some(f) = self.stats.finish {
            attrs.push((
                "gen_ai.response.finish_reasons",
                AttrValue::StrList(vec![f.as_str().to_owned()]),
            ));
        }
        if let Some(k) = &self.key {
            attrs.push(("llm_proxy.key_name", str(k)));
        }
        if let Some(t) = self.stats.ttft {
            attrs.push((
                "llm_proxy.ttft_ms",
                AttrValue::Double(t.as_secs_f64() * 1000.0),
            ));
        }
        if let Some(c) = cost {
            attrs.push(("llm_proxy.cost_usd", AttrValue::Double(c)));
        }
        if let Some(e) = &self.error {
            attrs.push(("error.type", str(e.code.as_str())));
        }
        let attempts = self.outcome.attempt_log.as_deref().unwrap_or_default();
        let mut spans = Vec::with_capacity(1 + attempts.len());
        spans.push(Span {
            trace_id: tc.trace_id.to_string(),
            span_id: tc.span_id.as_str().to_owned(),
            parent_span_id: tc.parent_span_id.clone(),
            name: format!("{operation} {model}"),
            kind: SpanKind::Server,
            start,
            end,
            attributes: attrs,
            error: self
                .error
                .as_ref()
                .filter(|_| self.status >= 500)
                .map(|e| e.message.clone()),
        });
        for a in attempts {
            let d = &a.deployment;
            let mut attrs = vec![
                ("gen_ai.operation.name", str(operation)),
                ("gen_ai.system", str(d.provider.kind.as_str())),
                ("gen_ai.request.model", str(&d.upstream_model)),
                ("llm_proxy.deployment", str(&d.id)),
                ("llm_proxy.provider", str(&d.provider.name)),
            ];
            if let Some(class) = a.error {
                attrs.push(("error.type", str(class)));
            }
            let begun = wall(a.started);
            spans.push(Span {
                trace_id: tc.trace_id.to_string(),
                span_id: crate::ids::SpanId::random().as_str().to_owned(),
                parent_span_id: Some(tc.span_id.as_str().to_owned()),
                name: format!("{operation} {}", d.upstream_model),
                kind: SpanKind::Client,
                start: begun,
                end: begun + a.elapsed,
                attributes: attrs,
                error: a.error.map(|c| format!("upstream {c}")),
            });
        }
        spans
    }
}

impl Drop for RequestLog {
    fn drop(&mut self) {
        if !self.emitted {
            self.emit("client_closed");
        }
    }
}

fn ms(d: Duration) -> f64 {
    (d.as_secs_f64() * 1_000_000.0).round() / 1000.0
}
