//! Fake Anthropic, Gemini, Azure OpenAI and Ollama upstreams on one real socket. They answer
//! with the recorded transcripts in `tests/fixtures/` (each provider's true wire format),
//! sent event by event, and record what they were sent. The scenario is picked by the
//! upstream model (or deployment) name.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Path as UrlPath, RawQuery, State};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use bytes::Bytes;
use http::{HeaderMap, StatusCode};
use serde_json::{Value, json};

/// One request as the fake saw it.
#[derive(Clone, Debug)]
pub struct Seen {
    pub path: String,
    pub query: Option<String>,
    pub headers: HeaderMap,
    pub body: Value,
}

#[derive(Default)]
pub struct ProviderState {
    pub hits: AtomicUsize,
    pub seen: Mutex<Vec<Seen>>,
}

pub struct FakeProviders {
    pub addr: SocketAddr,
    pub state: Arc<ProviderState>,
}

impl FakeProviders {
    pub fn root(&self) -> String {
        format!("http://{}", self.addr)
    }
    pub fn last(&self) -> Seen {
        self.state.seen.lock().unwrap().last().cloned().unwrap()
    }
    pub fn hits(&self) -> usize {
        self.state.hits.load(Ordering::SeqCst)
    }
}

pub fn fixture(path: &str) -> Vec<u8> {
    let p = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(path);
    std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

/// A recorded SSE file sent one event per write, a few milliseconds apart.
fn sse_fixture(path: &str) -> Response {
    let text = String::from_utf8(fixture(path)).unwrap();
    let events: Vec<Bytes> = text
        .split_inclusive("\n\n")
        .filter(|e| !e.trim().is_empty())
        .map(|e| Bytes::from(e.to_owned()))
        .collect();
    let stream = futures_util::stream::unfold(events.into_iter(), |mut it| async move {
        let next = it.next()?;
        tokio::time::sleep(Duration::from_millis(2)).await;
        Some((Ok::<_, Infallible>(next), it))
    });
    (
        StatusCode::OK,
        [(http::header::CONTENT_TYPE, "text/event-stream")],
        Body::from_stream(stream),
    )
        .into_response()
}

/// `data:` events built in the test, for scenarios no recorded transcript covers.
fn sse_frames(events: Vec<Value>) -> Response {
    let body: String = events.iter().map(|e| format!("data: {e}\n\n")).collect();
    (
        StatusCode::OK,
        [(http::header::CONTENT_TYPE, "text/event-stream")],
        body,
    )
        .into_response()
}

fn json_fixture(status: u16, path: &str) -> Response {
    (
        StatusCode::from_u16(status).unwrap(),
        [(http::header::CONTENT_TYPE, "application/json")],
        fixture(path),
    )
        .into_response()
}

fn record(
    st: &ProviderState,
    path: String,
    query: Option<String>,
    headers: &HeaderMap,
    body: &Value,
) -> usize {
    st.seen.lock().unwrap().push(Seen {
        path,
        query,
        headers: headers.clone(),
        body: body.clone(),
    });
    st.hits.fetch_add(1, Ordering::SeqCst)
}

/// `POST /v1/messages`: `text`, `tools`, `thinking`, `error` (mid-stream), `overloaded-once`,
/// `bad` (400), `echo-key` (401 quoting the key it was sent).
async fn anthropic(
    State(st): State<Arc<ProviderState>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let n = record(&st, "/v1/messages".into(), None, &headers, &body);
    let stream = body["stream"].as_bool().unwrap_or(false);
    match body["model"].as_str().unwrap_or("") {
        "overloaded-once" if n == 0 => (
            StatusCode::from_u16(529).unwrap(),
            axum::Json(json!({"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}})),
        )
            .into_response(),
        "bad" => json_fixture(400, "anthropic/error_body.json"),
        "echo-key" => {
            let key = headers
                .get("x-api-key")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .to_owned();
            (
                StatusCode::UNAUTHORIZED,
                axum::Json(json!({"type": "error", "error": {"type": "authentication_error",
                                  "message": format!("invalid x-api-key: {key}")}})),
            )
                .into_response()
        }
        "tools" if stream => sse_fixture("anthropic/stream_tool_use.sse"),
        "tools" => json_fixture(200, "anthropic/response_tool_use.json"),
        "thinking" if stream => sse_fixture("anthropic/stream_thinking.sse"),
        "error" if stream => sse_fixture("anthropic/stream_error.sse"),
        _ if stream => sse_fixture("anthropic/stream_text.sse"),
        _ => json_fixture(200, "anthropic/response_text.json"),
    }
}

/// `POST /v1beta/models/{model}:{method}`: `text`, `tools`, `safety`, `bad` (400).
async fn gemini(
    State(st): State<Arc<ProviderState>>,
    UrlPath(target): UrlPath<String>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    record(
        &st,
        format!("/v1beta/models/{target}"),
        query,
        &headers,
        &body,
    );
    let (model, method) = target.split_once(':').unwrap_or((&target, ""));
    let stream = method == "streamGenerateContent";
    match model {
        "error" if stream => sse_frames(vec![
            json!({"candidates": [{"content": {"parts": [{"text": "Part"}], "role": "model"}}]}),
            json!({"error": {"code": 503, "message": "The model is overloaded.", "status": "UNAVAILABLE"}}),
        ]),
        "bad" => (
            StatusCode::BAD_REQUEST,
            axum::Json(json!({"error": {"code": 400, "message": "Function call is missing a thought_signature in functionCall parts.", "status": "INVALID_ARGUMENT"}})),
        )
            .into_response(),
        "tools" if stream => sse_fixture("gemini/stream_function_call.sse"),
        "safety" => json_fixture(200, "gemini/response_safety.json"),
        _ if stream => sse_fixture("gemini/stream_text.sse"),
        _ => json_fixture(200, "gemini/response_text.json"),
    }
}

/// `POST /openai/deployments/{deployment}/chat/completions?api-version=…`: `text`,
/// `filtered` (400 content filter).
async fn azure(
    State(st): State<Arc<ProviderState>>,
    UrlPath(deployment): UrlPath<String>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    record(
        &st,
        format!("/openai/deployments/{deployment}/chat/completions"),
        query,
        &headers,
        &body,
    );
    match deployment.as_str() {
        "filtered" => json_fixture(400, "azure/error_content_filter.json"),
        // Azure speaks OpenAI's stream format: the OpenAI tool-call transcript applies.
        "tools" => sse_fixture("openai/stream_tool_calls.sse"),
        "reasoning" => sse_frames(vec![
            json!({"id": "c1", "object": "chat.completion.chunk", "created": 1, "model": "o",
                   "choices": [{"index": 0, "delta": {"role": "assistant", "reasoning_content": "Let me think."}, "finish_reason": null}]}),
            json!({"id": "c1", "object": "chat.completion.chunk", "created": 1, "model": "o",
                   "choices": [{"index": 0, "delta": {"content": "Four."}, "finish_reason": null}]}),
            json!({"id": "c1", "object": "chat.completion.chunk", "created": 1, "model": "o",
                   "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}),
            json!({"id": "c1", "object": "chat.completion.chunk", "created": 1, "model": "o", "choices": [],
                   "usage": {"prompt_tokens": 5, "completion_tokens": 7, "total_tokens": 12,
                             "completion_tokens_details": {"reasoning_tokens": 4}}}),
        ]),
        "error" => sse_frames(vec![
            json!({"id": "c1", "object": "chat.completion.chunk", "created": 1, "model": "o",
                   "choices": [{"index": 0, "delta": {"role": "assistant", "content": "Part"}, "finish_reason": null}]}),
            json!({"error": {"message": "The server had an error processing your request.", "type": "server_error"}}),
        ]),
        _ if body["stream"].as_bool() == Some(true) => sse_fixture("azure/stream_text.sse"),
        _ => json_fixture(200, "azure/response_content_filter.json"),
    }
}

async fn ollama_tags(State(st): State<Arc<ProviderState>>, headers: HeaderMap) -> Response {
    record(&st, "/api/tags".into(), None, &headers, &Value::Null);
    json_fixture(200, "ollama/tags.json")
}

pub async fn fake_providers() -> FakeProviders {
    let state = Arc::new(ProviderState::default());
    let app = axum::Router::new()
        .route("/v1/messages", post(anthropic))
        .route("/v1beta/models/{target}", post(gemini))
        .route(
            "/openai/deployments/{deployment}/chat/completions",
            post(azure),
        )
        .route("/api/tags", get(ollama_tags))
        .with_state(state.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    FakeProviders { addr, state }
}
