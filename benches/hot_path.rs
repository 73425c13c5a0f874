//! What each piece of the request path costs, in isolation: request decode and upstream
//! encode, reply decode and re-encode, one SSE chunk through the decoder (and the encoder a
//! translated stream uses), an in-process limiter admission, and a routed request to the
//! built-in mock provider (resolve, pick, breaker, provider call).
//!
//! `cargo bench --bench hot_path` runs it (divan); a test run only builds it. Results and
//! the machine they came from: `bench/RESULTS.md`. Numbers here are per operation on one
//! thread; the end-to-end cost per request (sockets, HTTP, logging) is in the load
//! benchmarks.

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use divan::{Bencher, black_box};
use llm_proxy::config::{LimitsSettings, RateLimits};
use llm_proxy::limits::{Limiter, Scope, Who};
use llm_proxy::router::{Outcome, RouteCtx, Router};
use llm_proxy::types::{ChatEvent, ChatRequest};
use llm_proxy::wire::openai::{ChunkEncoder, StreamDecoder, decode_response, encode_response};
use llm_proxy::wire::sse::{SseDecoder, SseEvent, data_frame};

fn main() {
    divan::main();
}

/// The request the shared load harness sends.
const SMALL_REQUEST: &str = r#"{"model":"mock","max_tokens":16,"messages":[{"role":"user","content":"Hello, how are you?"}]}"#;

/// A chat with history, a system prompt, tools and sampling options (about 4 KiB).
fn large_request() -> String {
    let mut messages = vec![
        serde_json::json!({"role": "system", "content": "You are a careful assistant. ".repeat(8)}),
    ];
    for i in 0..12 {
        messages.push(serde_json::json!({"role": "user", "content": format!("Question {i}: {}", "what about this? ".repeat(6))}));
        messages.push(serde_json::json!({"role": "assistant", "content": format!("Answer {i}: {}", "it depends. ".repeat(8))}));
    }
    serde_json::json!({
        "model": "gpt-4o-mini",
        "messages": messages,
        "temperature": 0.2,
        "max_tokens": 512,
        "user": "bench",
        "tools": [{"type": "function", "function": {"name": "get_weather", "description": "Weather for a city",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}],
    })
    .to_string()
}

/// The request for a bench argument: `small` or `large`.
fn request_body(size: &str) -> String {
    if size == "small" {
        SMALL_REQUEST.to_owned()
    } else {
        large_request()
    }
}

const REPLY: &str = r#"{"id":"chatcmpl-1","object":"chat.completion","created":1700000000,"model":"gpt-4o-mini","choices":[{"index":0,"message":{"role":"assistant","content":"Hello! I am doing well, thank you for asking. How can I help you today?"},"finish_reason":"stop"}],"usage":{"prompt_tokens":13,"completion_tokens":18,"total_tokens":31}}"#;

const CHUNK: &str = r#"{"id":"chatcmpl-1","object":"chat.completion.chunk","created":1700000000,"model":"gpt-4o-mini","choices":[{"index":0,"delta":{"content":" token"},"finish_reason":null}]}"#;

#[divan::bench(args = ["small", "large"])]
fn request_decode(bencher: Bencher, size: &str) {
    let body = request_body(size);
    bencher.bench(|| llm_proxy::api::decode_body::<ChatRequest>(black_box(body.as_bytes())));
}

#[divan::bench(args = ["small", "large"])]
fn request_encode_for_openai(bencher: Bencher, size: &str) {
    let body = request_body(size);
    let req: ChatRequest = serde_json::from_str(&body).unwrap_or_else(|e| unreachable(e));
    bencher.bench(|| {
        llm_proxy::providers::openai::encode_request(black_box(&req), "upstream-model", false)
    });
}

#[divan::bench]
fn reply_decode(bencher: Bencher) {
    let body = Bytes::from_static(REPLY.as_bytes());
    bencher.bench(|| decode_response(black_box(body.clone())));
}

#[divan::bench]
fn reply_encode(bencher: Bencher) {
    let resp =
        decode_response(Bytes::from_static(REPLY.as_bytes())).unwrap_or_else(|e| unreachable(e));
    bencher.bench(|| encode_response(black_box(&resp), "gpt-4o-mini"));
}

/// One upstream SSE chunk: frame split, JSON decode into canonical events.
#[divan::bench]
fn sse_chunk_decode(bencher: Bencher) {
    let frame = format!("data: {CHUNK}\n\n");
    let mut sse = SseDecoder::new(1 << 20);
    let mut decoder = StreamDecoder::default();
    let mut events: Vec<SseEvent> = Vec::with_capacity(4);
    bencher.bench_local(|| {
        events.clear();
        let _ = sse.feed(black_box(frame.as_bytes()), &mut events);
        for ev in &events {
            let _ = black_box(decoder.decode(&ev.data));
        }
    });
}

/// One canonical event out as an OpenAI chunk with its SSE framing (translated streams).
#[divan::bench]
fn sse_chunk_encode(bencher: Bencher) {
    let mut encoder = ChunkEncoder::new("chatcmpl-1".into(), "gpt-4o-mini".into(), 1_700_000_000);
    let event = ChatEvent::TextDelta(" token".into());
    bencher.bench_local(|| data_frame(&encoder.encode(black_box(&event))));
}

/// One in-process admission and its settlement (GCRA per minute, parallel slot).
#[divan::bench]
fn limiter_admission(bencher: Bencher) {
    let Ok(rt) = tokio::runtime::Builder::new_current_thread().build() else {
        return;
    };
    let Ok(limiter) = Limiter::new(&LimitsSettings::default()) else {
        return;
    };
    let limiter = Arc::new(limiter);
    let scope = Scope {
        who: Who::Key("bench".into()),
        limits: RateLimits {
            rpm: Some(u64::MAX / 4),
            tpm: Some(u64::MAX / 4),
            max_parallel_requests: Some(1_000_000),
        },
    };
    bencher.bench_local(|| {
        rt.block_on(async {
            if let Ok(ticket) = limiter.admit(scope.clone(), 100, "bench").await {
                ticket.finish(Some(120));
            }
        })
    });
}

/// A routed request end to end inside the router: resolve the model, pick one of four
/// deployments by the configured strategy, pass the breaker, call the built-in mock
/// provider, record the outcome.
#[divan::bench(args = ["simple-shuffle", "least-busy", "latency-based"])]
fn route_to_mock(bencher: Bencher, strategy: &str) {
    let yaml = format!(
        "providers: {{ mock: {{ kind: mock }} }}\nmodels:\n{}routing: {{ strategy: {strategy} }}\n",
        (0..4)
            .map(|_| "  - { name: pool, provider: mock, model: mock-n16-d0-t0 }\n")
            .collect::<String>()
    );
    let env = std::collections::HashMap::<String, String>::new();
    let Ok(settings) = llm_proxy::config::load_str(&yaml, "bench.yaml", &env) else {
        return;
    };
    let Ok(router) = Router::new(&settings) else {
        return;
    };
    let Ok(rt) = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    else {
        return;
    };
    let req: ChatRequest = serde_json::from_str(SMALL_REQUEST).unwrap_or_else(|e| unreachable(e));
    let may_use = |_: &str| true;
    bencher.bench_local(|| {
        rt.block_on(async {
            let Ok(route) = router.resolve("pool") else {
                return;
            };
            let rc = RouteCtx {
                started: Instant::now(),
                may_use: &may_use,
            };
            let mut outcome = Outcome::default();
            let _ = black_box(router.chat(&req, &route, &rc, &mut outcome).await);
        })
    });
}

/// Fixed inputs above are valid; a bench has no error to report but this.
fn unreachable<E: std::fmt::Display>(e: E) -> ! {
    eprintln!("bench input does not decode: {e}");
    std::process::exit(1)
}
