//! OpenTelemetry trace export over OTLP/HTTP with the JSON encoding: a server span per
//! request and a client span per upstream attempt, with the GenAI semantic conventions'
//! attributes, sent in batches to a collector's `/v1/traces`.
//!
//! Why not the `opentelemetry-otlp` crate: it brings its own SDK, runtime glue and protobuf
//! stack (dozens of crates) to encode one message, while OTLP's JSON encoding is a stable,
//! documented part of the protocol that serde and the upstream HTTP client we already have
//! write directly. Export is best-effort by design: a bounded queue that never blocks a
//! request (overflow is counted and logged), batches of up to 512 spans or whatever came
//! in a second, one try per batch (a collector that is down loses spans, never requests),
//! and a flush at graceful shutdown.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};
use tokio::sync::mpsc;

use crate::providers::UpstreamError;
use crate::providers::http::{ClientSettings, HttpClient, build_client, send};
use crate::secret::Secret;

/// Where and how spans go (`tracing:` in the config, or the standard `OTEL_*` variables).
#[derive(Debug, Clone)]
pub struct OtlpSettings {
    /// The collector's traces URL, e.g. `http://collector:4318/v1/traces`.
    pub endpoint: String,
    pub service_name: String,
    /// Extra request headers (API keys of hosted collectors: secrets).
    pub headers: Vec<(String, Secret)>,
}

const QUEUE: usize = 8192;
const BATCH: usize = 512;
const FLUSH_EVERY: Duration = Duration::from_secs(1);
const SEND_TIMEOUT: Duration = Duration::from_secs(5);

/// OTLP span kinds.
#[derive(Debug, Clone, Copy)]
pub enum SpanKind {
    Server = 2,
    Client = 3,
}

/// One attribute value (OTLP `AnyValue`).
#[derive(Debug, Clone)]
pub enum AttrValue {
    Str(String),
    Int(i64),
    Double(f64),
    Bool(bool),
    StrList(Vec<String>),
}

/// A finished span.
#[derive(Debug, Clone)]
pub struct Span {
    pub trace_id: String,
    pub span_id: String,
    pub parent_span_id: Option<String>,
    pub name: String,
    pub kind: SpanKind,
    pub start: SystemTime,
    pub end: SystemTime,
    pub attributes: Vec<(&'static str, AttrValue)>,
    /// The error, if the span failed (OTLP status ERROR with this message).
    pub error: Option<String>,
}

fn nanos(t: SystemTime) -> String {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0)
        .to_string()
}

fn any_value(v: &AttrValue) -> Value {
    match v {
        AttrValue::Str(s) => json!({ "stringValue": s }),
        // OTLP's JSON mapping writes 64-bit integers as strings.
        AttrValue::Int(n) => json!({ "intValue": n.to_string() }),
        AttrValue::Double(d) => json!({ "doubleValue": d }),
        AttrValue::Bool(b) => json!({ "boolValue": b }),
        AttrValue::StrList(l) => json!({ "arrayValue": { "values":
            l.iter().map(|s| json!({ "stringValue": s })).collect::<Vec<_>>() } }),
    }
}

impl Span {
    fn to_json(&self) -> Value {
        let mut v = json!({
            "traceId": self.trace_id,
            "spanId": self.span_id,
            "name": self.name,
            "kind": self.kind as i32,
            "startTimeUnixNano": nanos(self.start),
            "endTimeUnixNano": nanos(self.end),
            "attributes": self.attributes.iter()
                .map(|(k, v)| json!({ "key": k, "value": any_value(v) }))
                .collect::<Vec<_>>(),
            "status": match &self.error {
                Some(m) => json!({ "code": 2, "message": m }),
                None => json!({ "code": 0 }),
            },
        });
        if let (Some(p), Some(obj)) = (&self.parent_span_id, v.as_object_mut()) {
            obj.insert("parentSpanId".into(), json!(p));
        }
        v
    }
}

/// The request body for a batch: one resource (this service), one scope (llm-proxy).
fn export_body(service: &str, spans: &[Span]) -> Value {
    json!({ "resourceSpans": [{
        "resource": { "attributes": [
            { "key": "service.name", "value": { "stringValue": service } },
            { "key": "service.version", "value": { "stringValue": env!("CARGO_PKG_VERSION") } },
        ]},
        "scopeSpans": [{
            "scope": { "name": "llm-proxy", "version": env!("CARGO_PKG_VERSION") },
            "spans": spans.iter().map(Span::to_json).collect::<Vec<_>>(),
        }],
    }]})
}

/// The handle requests give their spans to.
pub struct Exporter {
    tx: std::sync::Mutex<Option<mpsc::Sender<Span>>>,
    task: std::sync::Mutex<Option<tokio::task::JoinHandle<()>>>,
    dropped: AtomicU64,
    last_drop_warning: std::sync::Mutex<Option<Instant>>,
}

impl Exporter {
    /// Starts the background sender (on the current runtime).
    pub fn start(settings: OtlpSettings) -> Result<Arc<Self>, String> {
        let mut headers = http::HeaderMap::new();
        for (k, v) in &settings.headers {
            let name = http::HeaderName::from_bytes(k.as_bytes())
                .map_err(|_| format!("`{k}` is not a header name"))?;
            let mut value = http::HeaderValue::from_str(v.expose())
                .map_err(|_| format!("the value of header `{k}` is not valid"))?;
            value.set_sensitive(true);
            headers.insert(name, value);
        }
        let client = build_client(&ClientSettings::default()).map_err(|e| e.to_string())?;
        let (tx, rx) = mpsc::channel(QUEUE);
        let task = tokio::spawn(send_loop(client, headers, settings, rx));
        Ok(Arc::new(Self {
            tx: std::sync::Mutex::new(Some(tx)),
            task: std::sync::Mutex::new(Some(task)),
            dropped: AtomicU64::new(0),
            last_drop_warning: std::sync::Mutex::new(None),
        }))
    }

    /// Queues spans (never waits); a full queue drops them, counts them and says so.
    pub fn export(&self, spans: Vec<Span>) {
        let Ok(guard) = self.tx.lock() else { return };
        let Some(tx) = guard.as_ref() else { return };
        for span in spans {
            if tx.try_send(span).is_err() {
                let n = self.dropped.fetch_add(1, Ordering::Relaxed) + 1;
                if let Ok(mut last) = self.last_drop_warning.lock() {
                    if last.is_none_or(|t| t.elapsed() > Duration::from_secs(10)) {
                        *last = Some(Instant::now());
                        tracing::warn!(dropped_total = n, "trace export queue full: spans dropped");
                    }
                }
            }
        }
    }

    /// Spans dropped because the queue was full.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// Sends what is queued, then stops (at most `SEND_TIMEOUT` per remaining batch).
    pub async fn close(&self) {
        if let Ok(mut tx) = self.tx.lock() {
            tx.take();
        }
        let task = self.task.lock().ok().and_then(|mut t| t.take());
        if let Some(t) = task {
            let _ = t.await;
        }
    }
}

async fn send_loop(
    client: HttpClient,
    headers: http::HeaderMap,
    settings: OtlpSettings,
    mut rx: mpsc::Receiver<Span>,
) {
    let mut batch: Vec<Span> = Vec::with_capacity(BATCH);
    // A batch is sent when full or a second after its first span.
    let mut due: Option<Instant> = None;
    let mut last_failure: Option<Instant> = None;
    loop {
        let wait = due.map_or(FLUSH_EVERY, |d| d.saturating_duration_since(Instant::now()));
        let closed = match tokio::time::timeout(wait, rx.recv()).await {
            Ok(Some(span)) => {
                if batch.is_empty() {
                    due = Some(Instant::now() + FLUSH_EVERY);
                }
                batch.push(span);
                false
            }
            Ok(None) => true,
            Err(_) => false,
        };
        let due_now = closed || batch.len() >= BATCH || due.is_some_and(|d| Instant::now() >= d);
        if due_now && !batch.is_empty() {
            let body = export_body(&settings.service_name, &batch);
            let request = client
                .post(&settings.endpoint)
                .headers(&headers)
                .header(http::header::CONTENT_TYPE, "application/json")
                .body(body.to_string());
            let failure = match tokio::time::timeout(SEND_TIMEOUT, send(request, None)).await {
                Ok(Ok(_)) => None,
                Ok(Err(UpstreamError::Status { status, .. })) => {
                    Some(format!("collector answered {status}"))
                }
                // A 400 whose body reads like a provider's content filter is still just a
                // 400 from a collector.
                Ok(Err(UpstreamError::ContentFilter(_))) => {
                    Some("collector answered 400".to_owned())
                }
                Ok(Err(UpstreamError::Timeout(..))) => Some(format!(
                    "no connection to the collector within {SEND_TIMEOUT:?}"
                )),
                Ok(Err(e)) => Some(e.to_string()),
                Err(_) => Some(format!("no answer within {SEND_TIMEOUT:?}")),
            };
            if let Some(why) = failure {
                // One warning per minute at most: a collector that is down must not flood
                // the log it is there to complement.
                if last_failure.is_none_or(|t| t.elapsed() > Duration::from_secs(60)) {
                    last_failure = Some(Instant::now());
                    tracing::warn!(spans = batch.len(), "trace export failed: {why}");
                }
            }
            batch.clear();
            due = None;
        }
        if closed {
            return;
        }
    }
}
