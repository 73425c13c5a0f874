//! Shared test harness: a fake OpenAI upstream that speaks the real wire format over a real
//! socket, and helpers to start llm-proxy in-process on a free port.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Json;
use axum::body::Body;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use bytes::Bytes;
use futures_util::StreamExt;
use http::{HeaderMap, StatusCode};
use serde_json::{Value, json};
use tokio::sync::Notify;

use llm_proxy::config;
use llm_proxy::server::RunningServer;

/// What the fake upstream saw and lets a test control.
#[derive(Default)]
pub struct FakeState {
    pub hits: AtomicUsize,
    pub bodies: Mutex<Vec<Value>>,
    pub headers: Mutex<Vec<HeaderMap>>,
    /// Released by the test to let a held stream continue.
    pub release: Notify,
    /// Set when a streaming body was dropped before it was fully sent (client went away).
    pub stream_dropped: AtomicBool,
    pub dropped_notify: Notify,
    pub chunks_sent: AtomicUsize,
    /// While set, every request fails with 500 (a deployment going down mid-run).
    pub fail_all: AtomicBool,
    /// Requests per upstream model name.
    pub per_model: Mutex<HashMap<String, usize>>,
}

pub struct FakeUpstream {
    pub addr: SocketAddr,
    pub state: Arc<FakeState>,
}

impl FakeUpstream {
    pub fn base_url(&self) -> String {
        format!("http://{}/v1", self.addr)
    }
    pub fn hits(&self) -> usize {
        self.state.hits.load(Ordering::SeqCst)
    }
    pub fn last_body(&self) -> Value {
        self.state.bodies.lock().unwrap().last().cloned().unwrap()
    }
    pub fn last_headers(&self) -> HeaderMap {
        self.state.headers.lock().unwrap().last().cloned().unwrap()
    }
    /// How many requests named this upstream model.
    pub fn hits_for(&self, model: &str) -> usize {
        self.state
            .per_model
            .lock()
            .unwrap()
            .get(model)
            .copied()
            .unwrap_or(0)
    }
}

pub const CHUNK_ID: &str = "chatcmpl-fake123";

fn chunk(delta: Value, finish: Option<&str>) -> Value {
    json!({
        "id": CHUNK_ID, "object": "chat.completion.chunk", "created": 1700000000,
        "model": "fake-upstream-model", "system_fingerprint": "fp_fake",
        "choices": [{"index": 0, "delta": delta, "logprobs": null, "finish_reason": finish}],
        "usage": null
    })
}

fn usage_chunk() -> Value {
    json!({
        "id": CHUNK_ID, "object": "chat.completion.chunk", "created": 1700000000,
        "model": "fake-upstream-model", "choices": [],
        "usage": {"prompt_tokens": 9, "completion_tokens": 3, "total_tokens": 12,
                  "prompt_tokens_details": {"cached_tokens": 0},
                  "completion_tokens_details": {"reasoning_tokens": 0}}
    })
}

/// A text reply as the OpenAI stream sends it: role first, content pieces, finish, usage.
pub fn text_chunks(pieces: &[&str]) -> Vec<Value> {
    let mut out = vec![chunk(json!({"role": "assistant", "content": ""}), None)];
    for p in pieces {
        out.push(chunk(json!({"content": p}), None));
    }
    out.push(chunk(json!({}), Some("stop")));
    out
}

/// Two parallel tool calls with arguments split across many deltas (true OpenAI shape:
/// first fragment carries id, type and name; later ones only index and arguments).
pub fn tool_chunks() -> Vec<Value> {
    let mut out = vec![chunk(json!({"role": "assistant", "content": null}), None)];
    for (i, (id, name)) in [("call_a", "get_weather"), ("call_b", "get_time")]
        .iter()
        .enumerate()
    {
        out.push(chunk(
            json!({"tool_calls": [{"index": i, "id": id, "type": "function",
                   "function": {"name": name, "arguments": ""}}]}),
            None,
        ));
        for piece in ["{\"ci", "ty\": \"Par", "is\"}"] {
            out.push(chunk(
                json!({"tool_calls": [{"index": i, "function": {"arguments": piece}}]}),
                None,
            ));
        }
    }
    out.push(chunk(json!({}), Some("tool_calls")));
    out
}

pub fn completion_body() -> Value {
    json!({
        "id": "chatcmpl-fake-full", "object": "chat.completion", "created": 1700000000,
        "model": "fake-upstream-model", "system_fingerprint": "fp_fake",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "Hello from upstream", "refusal": null},
                     "logprobs": null, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 9, "completion_tokens": 3, "total_tokens": 12},
        "service_tier": "default"
    })
}

fn sse_frame(v: &Value) -> Bytes {
    Bytes::from(format!("data: {v}\n\n"))
}

/// Sets `stream_dropped` if the body is dropped before it finished.
struct DropGuard {
    state: Arc<FakeState>,
    finished: bool,
}
impl DropGuard {
    fn disarm(&mut self) {
        self.finished = true;
    }
}
impl Drop for DropGuard {
    fn drop(&mut self) {
        if !self.finished {
            self.state.stream_dropped.store(true, Ordering::SeqCst);
            self.state.dropped_notify.notify_waiters();
        }
    }
}

/// A streaming body: frames sent with `gap` between them; optionally hold after the first
/// frame until the test calls `release.notify_one()`.
fn stream_body(
    state: Arc<FakeState>,
    frames: Vec<Bytes>,
    gap: Duration,
    hold_after_first: bool,
) -> Body {
    let guard = DropGuard {
        state: state.clone(),
        finished: false,
    };
    let s = futures_util::stream::unfold(
        (frames.into_iter().enumerate(), guard),
        move |(mut it, mut guard)| {
            let state = state.clone();
            async move {
                let Some((i, f)) = it.next() else {
                    guard.disarm();
                    return None;
                };
                if i == 1 && hold_after_first {
                    state.release.notified().await;
                } else if i > 0 && !gap.is_zero() {
                    tokio::time::sleep(gap).await;
                }
                state.chunks_sent.fetch_add(1, Ordering::SeqCst);
                Some((Ok::<_, Infallible>(f), (it, guard)))
            }
        },
    );
    Body::from_stream(s)
}

fn sse_response(body: Body) -> Response {
    (
        StatusCode::OK,
        [(http::header::CONTENT_TYPE, "text/event-stream")],
        body,
    )
        .into_response()
}

fn error_response(status: u16, message: &str) -> Response {
    (
        StatusCode::from_u16(status).unwrap(),
        Json(json!({"error": {"message": message, "type": "server_error", "param": null, "code": null}})),
    )
        .into_response()
}

/// The fake's behaviour is chosen by the upstream model name, so one fake serves many
/// scenarios: `ok`, `tools`, `hold`, `slow`, `midstream-error`, `stall`, `fail500`,
/// `fail500-once`, `fail429-once`, `fail400`, `hang`, `echo-key`, `garbage`.
async fn chat(
    State(st): State<Arc<FakeState>>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> Response {
    let n = st.hits.fetch_add(1, Ordering::SeqCst);
    st.bodies.lock().unwrap().push(body.clone());
    st.headers.lock().unwrap().push(headers.clone());
    let model = body["model"].as_str().unwrap_or("").to_owned();
    *st.per_model
        .lock()
        .unwrap()
        .entry(model.clone())
        .or_default() += 1;
    let stream = body["stream"].as_bool().unwrap_or(false);
    if st.fail_all.load(Ordering::SeqCst) {
        return error_response(500, "deployment down");
    }
    if model == "late" {
        // A slow first token; otherwise an ordinary reply.
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
    let usage = body["stream_options"]["include_usage"]
        .as_bool()
        .unwrap_or(false);
    let frames = |chunks: Vec<Value>| -> Vec<Bytes> {
        let mut f: Vec<Bytes> = chunks.iter().map(sse_frame).collect();
        if usage {
            f.push(sse_frame(&usage_chunk()));
        }
        f.push(Bytes::from_static(b"data: [DONE]\n\n"));
        f
    };
    match model.as_str() {
        "fail500" => error_response(500, "upstream exploded"),
        "fail500-once" if n == 0 => error_response(500, "transient failure"),
        "fail429-once" if n == 0 => {
            let mut r = error_response(429, "slow down");
            r.headers_mut()
                .insert("retry-after-ms", "50".parse().unwrap());
            r
        }
        "fail400" => error_response(400, "Invalid parameter: messages[0].content is bad"),
        "context-too-long" => error_response(
            400,
            "This model's maximum context length is 8192 tokens. However, your messages resulted in 9000 tokens.",
        ),
        "malformed" if !stream => (
            StatusCode::OK,
            [(http::header::CONTENT_TYPE, "application/json")],
            "{\"id\": \"chatcmpl-x\", \"choices\": [",
        )
            .into_response(),
        "reset" if stream => {
            // Two chunks, then the connection is torn down mid-body.
            let frames = frames(text_chunks(&["one", " two", " three"]));
            let s =
                futures_util::stream::iter(frames.into_iter().take(2).map(Ok::<_, std::io::Error>))
                    .then(|f| async {
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        f
                    })
                    .chain(futures_util::stream::once(async {
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        Err(std::io::Error::new(
                            std::io::ErrorKind::ConnectionReset,
                            "reset",
                        ))
                    }));
            sse_response(Body::from_stream(s))
        }
        "drip" if stream => {
            let pieces: Vec<String> = (0..10).map(|i| format!(" d{i}")).collect();
            let refs: Vec<&str> = pieces.iter().map(String::as_str).collect();
            sse_response(stream_body(
                st.clone(),
                frames(text_chunks(&refs)),
                Duration::from_millis(30),
                false,
            ))
        }
        "fail429" => {
            let mut r = error_response(429, "Rate limit reached for requests");
            r.headers_mut().insert("retry-after", "2".parse().unwrap());
            r
        }
        "hang" => {
            tokio::time::sleep(Duration::from_secs(3600)).await;
            error_response(500, "unreachable")
        }
        "echo-key" => {
            let auth = headers
                .get("authorization")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .trim_start_matches("Bearer ")
                .to_owned();
            error_response(401, &format!("Incorrect API key provided: {auth}"))
        }
        "tools" if !stream => (
            StatusCode::OK,
            [(http::header::CONTENT_TYPE, "application/json")],
            fake_providers::fixture("openai/response_tool_calls.json"),
        )
            .into_response(),
        _ if !stream => Json(completion_body()).into_response(),
        "tools" => sse_response(stream_body(
            st.clone(),
            frames(tool_chunks()),
            Duration::ZERO,
            false,
        )),
        "hold" => sse_response(stream_body(
            st.clone(),
            frames(text_chunks(&["first", " second"])),
            Duration::ZERO,
            true,
        )),
        "slow" => {
            let pieces: Vec<String> = (0..200).map(|i| format!(" t{i}")).collect();
            let refs: Vec<&str> = pieces.iter().map(String::as_str).collect();
            sse_response(stream_body(
                st.clone(),
                frames(text_chunks(&refs)),
                Duration::from_millis(20),
                false,
            ))
        }
        "midstream-error" => {
            let f = vec![
                sse_frame(&text_chunks(&["partial"])[1]),
                sse_frame(
                    &json!({"error": {"message": "The server had an error while processing your request.", "type": "server_error"}}),
                ),
            ];
            sse_response(stream_body(st.clone(), f, Duration::ZERO, false))
        }
        "stall" => {
            // First chunk, then silence well past any idle timeout a test sets.
            let f = vec![
                sse_frame(&text_chunks(&["only"])[0]),
                sse_frame(&text_chunks(&["only"])[1]),
            ];
            let body = stream_body(st.clone(), f, Duration::from_secs(3600), false);
            sse_response(body)
        }
        "garbage" => sse_response(Body::from("data: {not json\n\n")),
        "reasoning" => {
            // DeepSeek / vLLM style: reasoning deltas before the answer.
            let mut chunks = vec![chunk(json!({"role": "assistant", "content": null}), None)];
            for piece in ["Let me", " think."] {
                chunks.push(chunk(json!({"reasoning_content": piece}), None));
            }
            chunks.extend(text_chunks(&["Four", "."]).into_iter().skip(1));
            sse_response(stream_body(
                st.clone(),
                frames(chunks),
                Duration::ZERO,
                false,
            ))
        }
        "unicode" => {
            // One multi-byte character split across two network writes.
            let full = format!("data: {}\n\n", chunk(json!({"content": "héllo 🙂"}), None));
            let bytes = full.into_bytes();
            let cut = bytes.iter().position(|b| *b == 0xF0).unwrap() + 2;
            let mut f = vec![
                Bytes::copy_from_slice(&bytes[..cut]),
                Bytes::copy_from_slice(&bytes[cut..]),
            ];
            f.push(sse_frame(&chunk(json!({}), Some("stop"))));
            f.push(Bytes::from_static(b"data: [DONE]\n\n"));
            sse_response(stream_body(st.clone(), f, Duration::from_millis(5), false))
        }
        _ => sse_response(stream_body(
            st.clone(),
            frames(text_chunks(&["Hello", " world"])),
            Duration::ZERO,
            false,
        )),
    }
}

async fn models(State(st): State<Arc<FakeState>>) -> Response {
    if st.fail_all.load(Ordering::SeqCst) {
        return error_response(503, "deployment down");
    }
    Json(
        json!({"object": "list", "data": [{"id": "fake-upstream-model", "object": "model", "created": 0, "owned_by": "fake"}]}),
    )
    .into_response()
}

pub async fn fake_upstream() -> FakeUpstream {
    let state = Arc::new(FakeState::default());
    let app = axum::Router::new()
        .route("/v1/chat/completions", post(chat))
        .route("/v1/models", get(models))
        .with_state(state.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    FakeUpstream { addr, state }
}

/// Starts llm-proxy in-process from config text, on a free loopback port.
pub async fn proxy_with_env(yaml: &str, env: HashMap<String, String>) -> RunningServer {
    let mut s = config::load_str(yaml, "test.yaml", &env).unwrap();
    config::apply_env_overrides(&mut s, &env).unwrap();
    s.server.host = "127.0.0.1".into();
    s.server.port = 0;
    // Tests that are not about the ledger do not write one.
    if !yaml.contains("ledger:") {
        s.ledger.enabled = false;
    }
    llm_proxy::server::spawn(&s).await.unwrap()
}

/// Shuts a server down gracefully and waits (at most 10 s) until it has stopped, its
/// ledger and trace exporter flushed.
pub async fn stop(mut px: RunningServer) {
    px.shutdown();
    tokio::time::timeout(Duration::from_secs(10), px.handle)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
}

pub async fn proxy(yaml: &str) -> RunningServer {
    proxy_with_env(yaml, HashMap::new()).await
}

/// The usual config: models on the fake upstream, with a short timeout and fast retries.
pub fn upstream_config(up: &FakeUpstream, extra: &str) -> String {
    format!(
        r#"
providers:
  up: {{ kind: openai, base_url: "{base}", api_key: sk-upstream-secret-0123456789 }}
  mock: {{ kind: mock }}
models:
  - {{ name: chat, provider: up, model: ok }}
  - {{ name: tools, provider: up, model: tools }}
  - {{ name: hold, provider: up, model: hold }}
  - {{ name: slow, provider: up, model: slow }}
  - {{ name: midstream-error, provider: up, model: midstream-error }}
  - {{ name: stall, provider: up, model: stall }}
  - {{ name: fail500, provider: up, model: fail500 }}
  - {{ name: fail500-once, provider: up, model: fail500-once }}
  - {{ name: fail429-once, provider: up, model: fail429-once }}
  - {{ name: fail400, provider: up, model: fail400 }}
  - {{ name: fail429, provider: up, model: fail429 }}
  - {{ name: hang, provider: up, model: hang }}
  - {{ name: echo-key, provider: up, model: echo-key }}
  - {{ name: garbage, provider: up, model: garbage }}
  - {{ name: unicode, provider: up, model: unicode }}
  - {{ name: mock-small, provider: mock }}
routing: {{ num_retries: 1, timeout: 5s, attempt_timeout: 1s, retry_backoff: 10ms, stream_idle_timeout: 500ms }}
{extra}
"#,
        base = up.base_url()
    )
}

/// The test client: plain HTTP, no proxies from the environment.
pub fn client() -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder().no_proxy().build().unwrap()
}

pub fn chat_body(model: &str, stream: bool) -> Value {
    json!({"model": model, "stream": stream, "messages": [{"role": "user", "content": "Say hello"}]})
}

/// Collects the `data:` payloads of an SSE body.
pub async fn sse_events(resp: reqwest::Response) -> Vec<String> {
    let text = resp.text().await.unwrap();
    text.split("\n\n")
        .filter_map(|e| e.strip_prefix("data: ").map(str::to_owned))
        .collect()
}

/// Reads an SSE response incrementally, yielding each `data:` payload as it arrives.
pub struct SseReader {
    stream: futures_util::stream::BoxStream<'static, reqwest::Result<Bytes>>,
    buf: Vec<u8>,
}

impl SseReader {
    pub fn new(resp: reqwest::Response) -> Self {
        Self {
            stream: resp.bytes_stream().boxed(),
            buf: Vec::new(),
        }
    }
    pub async fn next(&mut self) -> Option<String> {
        loop {
            if let Some(i) = self.buf.windows(2).position(|w| w == b"\n\n") {
                let raw: Vec<u8> = self.buf.drain(..i + 2).collect();
                let ev = String::from_utf8(raw).unwrap();
                if let Some(d) = ev.trim_end().strip_prefix("data: ") {
                    return Some(d.to_owned());
                }
                continue;
            }
            match self.stream.next().await {
                Some(Ok(b)) => self.buf.extend_from_slice(&b),
                _ => return None,
            }
        }
    }
}
/// Sends SIGTERM to a proxy started as a child process and waits (at most `limit`) for it
/// to exit: the graceful-shutdown path a deployment's stop takes.
pub async fn sigterm_and_wait(
    child: &mut tokio::process::Child,
    limit: std::time::Duration,
) -> std::process::ExitStatus {
    let pid = child.id().unwrap();
    std::process::Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .unwrap();
    tokio::time::timeout(limit, child.wait())
        .await
        .unwrap()
        .unwrap()
}

pub mod fake_providers;
pub mod ledger_burst;

/// A file in the temporary directory, removed with its SQLite companions (`-wal`, `-shm`)
/// when dropped, so a test leaves nothing behind even when it fails.
pub struct TempFile(std::path::PathBuf);

impl TempFile {
    /// `llm-proxy-{prefix}-{uuid}{suffix}` in the temporary directory (not created).
    pub fn new(prefix: &str, suffix: &str) -> Self {
        Self(std::env::temp_dir().join(format!(
            "llm-proxy-{prefix}-{}{suffix}",
            llm_proxy::ids::uuid_v4()
        )))
    }
}

impl std::ops::Deref for TempFile {
    type Target = std::path::Path;
    fn deref(&self) -> &std::path::Path {
        &self.0
    }
}

impl AsRef<std::path::Path> for TempFile {
    fn as_ref(&self) -> &std::path::Path {
        &self.0
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        for ext in ["", "-wal", "-shm"] {
            let mut p = self.0.clone().into_os_string();
            p.push(ext);
            let _ = std::fs::remove_file(p);
        }
    }
}

/// The lines of a proxy subprocess's stdout.
pub type ChildLines = tokio::io::Lines<tokio::io::BufReader<tokio::process::ChildStdout>>;

/// Reads a proxy subprocess's log until its startup line (at most 10 s); returns the URL
/// it listens on and every line read, the startup line last.
pub async fn wait_listening(lines: &mut ChildLines) -> (String, Vec<String>) {
    let mut read = Vec::new();
    loop {
        let line = tokio::time::timeout(Duration::from_secs(10), lines.next_line())
            .await
            .expect("no startup line within 10 s")
            .unwrap()
            .expect("proxy exited before listening");
        read.push(line.clone());
        if let Some(i) = line.find("listening on http://") {
            let rest = &line[i + "listening on ".len()..];
            let url = rest.split('"').next().unwrap().to_owned();
            return (url, read);
        }
    }
}
