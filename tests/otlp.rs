//! OpenTelemetry traces over OTLP/HTTP (JSON) to a fake collector on a real socket: a
//! server span per request that continues the caller's `traceparent`, a client span per
//! upstream attempt (a retried request has two, the failed one marked as an error), the
//! GenAI attributes, the upstream told the request's span as its parent, unsampled
//! requests not exported, a flush at graceful shutdown, and no key anywhere in what the
//! collector receives.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::sync::{Arc, Mutex};

use axum::Json;
use axum::extract::State;
use axum::routing::post;
use common::*;
use http::HeaderMap;
use serde_json::{Value, json};

const TEAM: &str = "otlp-team-key-0123456789";
const COLLECTOR_TOKEN: &str = "collector-token-0123456789";
const CALLER_TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const CALLER_SPAN: &str = "00f067aa0ba902b7";
const UNSAMPLED_TRACE: &str = "5cf92f3577b34da6a3ce929d0e0e4737";

type Received = Arc<Mutex<Vec<(HeaderMap, Value)>>>;

async fn collect(
    State(got): State<Received>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> Json<Value> {
    got.lock().unwrap().push((headers, body));
    Json(json!({}))
}

async fn collector() -> (String, Received) {
    let got: Received = Arc::default();
    let app = axum::Router::new()
        .route("/v1/traces", post(collect))
        .with_state(got.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (format!("http://{addr}"), got)
}

fn attr<'a>(span: &'a Value, key: &str) -> Option<&'a Value> {
    span["attributes"]
        .as_array()?
        .iter()
        .find(|a| a["key"] == key)
        .map(|a| &a["value"])
}

fn str_attr(span: &Value, key: &str) -> Option<String> {
    attr(span, key)?["stringValue"].as_str().map(str::to_owned)
}

#[tokio::test]
async fn spans_per_request_and_attempt_with_genai_attributes() {
    let up = fake_upstream().await;
    // `fail500-once` fails the first request its fake sees: it gets a fake of its own.
    let flaky = fake_upstream().await;
    let (collector_url, got) = collector().await;
    let yaml = format!(
        "providers:\n  up: {{ kind: openai, base_url: '{}', api_key: sk-upstream-secret-0123456789 }}\n  \
         flaky: {{ kind: openai, base_url: '{}', api_key: sk-upstream-secret-0123456789 }}\n\
         models: [ {{ name: chat, provider: up, model: ok }}, {{ name: retried, provider: flaky, model: fail500-once }} ]\n\
         auth: {{ keys: [ {{ name: team, key: {TEAM} }} ] }}\n\
         routing: {{ retry_backoff: 1ms }}\n\
         tracing: {{ otlp_endpoint: '{collector_url}', service_name: proxy-under-test, headers: {{ x-collector-token: {COLLECTOR_TOKEN} }} }}\n",
        up.base_url(),
        flaky.base_url()
    );
    let px = proxy(&yaml).await;
    let send = |model: &str, traceparent: Option<String>| {
        let mut r = client()
            .post(format!("{}/v1/chat/completions", px.url()))
            .bearer_auth(TEAM)
            .json(&json!({"model": model, "messages": [{"role": "user", "content": "hi"}]}));
        if let Some(tp) = traceparent {
            r = r.header("traceparent", tp);
        }
        r.send()
    };
    let r = send("chat", Some(format!("00-{CALLER_TRACE}-{CALLER_SPAN}-01")))
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    r.text().await.unwrap();
    let upstream_parent = up.last_headers()["traceparent"]
        .to_str()
        .unwrap()
        .to_owned();
    let r = send("retried", None).await.unwrap();
    assert_eq!(r.status(), 200);
    r.text().await.unwrap();
    let r = send(
        "chat",
        Some(format!("00-{UNSAMPLED_TRACE}-{CALLER_SPAN}-00")),
    )
    .await
    .unwrap();
    assert_eq!(r.status(), 200);
    r.text().await.unwrap();

    // Graceful shutdown flushes the exporter.
    stop(px).await;

    let got = got.lock().unwrap().clone();
    assert!(!got.is_empty(), "the collector received nothing");
    let dump = serde_json::to_string(&got.iter().map(|(_, b)| b).collect::<Vec<_>>()).unwrap();
    for secret in [TEAM, COLLECTOR_TOKEN, "sk-upstream-secret-0123456789"] {
        assert!(!dump.contains(secret), "{secret} reached the collector");
    }
    // The collector's header went along (to the collector only).
    assert!(
        got.iter()
            .all(|(h, _)| h["x-collector-token"] == COLLECTOR_TOKEN
                && h["content-type"] == "application/json")
    );
    let mut spans = Vec::new();
    for (_, body) in &got {
        for rs in body["resourceSpans"].as_array().unwrap() {
            let service = rs["resource"]["attributes"]
                .as_array()
                .unwrap()
                .iter()
                .find(|a| a["key"] == "service.name")
                .unwrap();
            assert_eq!(service["value"]["stringValue"], "proxy-under-test");
            for ss in rs["scopeSpans"].as_array().unwrap() {
                spans.extend(ss["spans"].as_array().unwrap().iter().cloned());
            }
        }
    }
    assert!(
        spans.iter().all(|s| s["traceId"] != UNSAMPLED_TRACE),
        "an unsampled request was exported"
    );
    // Two requests: two server spans and three attempts.
    let servers: Vec<&Value> = spans.iter().filter(|s| s["kind"] == 2).collect();
    let clients: Vec<&Value> = spans.iter().filter(|s| s["kind"] == 3).collect();
    assert_eq!((servers.len(), clients.len()), (2, 3), "{spans:#?}");

    // The first continues the caller's trace; the upstream was told its span.
    let first = servers
        .iter()
        .find(|s| s["traceId"] == CALLER_TRACE)
        .unwrap();
    assert_eq!(first["parentSpanId"], CALLER_SPAN);
    assert_eq!(first["name"], "chat chat");
    let span_id = first["spanId"].as_str().unwrap();
    assert_eq!(
        upstream_parent,
        format!("00-{CALLER_TRACE}-{span_id}-01"),
        "the upstream's parent is the request's span"
    );
    assert_eq!(
        str_attr(first, "gen_ai.operation.name").as_deref(),
        Some("chat")
    );
    assert_eq!(
        str_attr(first, "gen_ai.request.model").as_deref(),
        Some("chat")
    );
    assert_eq!(str_attr(first, "gen_ai.system").as_deref(), Some("openai"));
    assert_eq!(
        str_attr(first, "gen_ai.response.model").as_deref(),
        Some("ok")
    );
    assert_eq!(
        str_attr(first, "llm_proxy.key_name").as_deref(),
        Some("team")
    );
    assert_eq!(
        attr(first, "gen_ai.usage.input_tokens").unwrap()["intValue"],
        "9"
    );
    assert_eq!(
        attr(first, "gen_ai.usage.output_tokens").unwrap()["intValue"],
        "3"
    );
    assert_eq!(
        attr(first, "http.response.status_code").unwrap()["intValue"],
        "200"
    );
    let start: u128 = first["startTimeUnixNano"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    let end: u128 = first["endTimeUnixNano"].as_str().unwrap().parse().unwrap();
    assert!(start > 0 && end >= start);
    let child: Vec<&&Value> = clients
        .iter()
        .filter(|c| c["parentSpanId"] == span_id)
        .collect();
    assert_eq!(child.len(), 1);
    assert_eq!(child[0]["traceId"], CALLER_TRACE);
    assert_eq!(child[0]["status"]["code"], 0);

    // The retried request: two attempts under one server span, the first an error.
    let retried = servers
        .iter()
        .find(|s| s["traceId"] != CALLER_TRACE)
        .unwrap();
    assert!(
        retried.get("parentSpanId").is_none(),
        "a new trace has no parent"
    );
    assert_eq!(
        attr(retried, "llm_proxy.attempts").unwrap()["intValue"],
        "2"
    );
    let id = retried["spanId"].as_str().unwrap();
    let attempts: Vec<&&Value> = clients.iter().filter(|c| c["parentSpanId"] == id).collect();
    assert_eq!(attempts.len(), 2);
    let failed = attempts.iter().filter(|a| a["status"]["code"] == 2).count();
    assert_eq!(failed, 1, "{attempts:#?}");
    assert!(attempts.iter().any(|a| str_attr(a, "error.type").is_some()));
    assert!(
        attempts
            .iter()
            .all(|a| str_attr(a, "gen_ai.request.model").as_deref() == Some("fail500-once"))
    );
}

#[tokio::test]
async fn a_collector_that_is_down_costs_no_request() {
    // Nothing listens here: every export fails, every request still succeeds.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let yaml = format!(
        "providers: {{ mock: {{ kind: mock }} }}\nmodels: [ {{ name: m, provider: mock, model: mock-small }} ]\n\
         tracing: {{ otlp_endpoint: 'http://127.0.0.1:{port}/v1/traces' }}\n"
    );
    let px = proxy(&yaml).await;
    for _ in 0..20 {
        let r = client()
            .post(format!("{}/v1/chat/completions", px.url()))
            .json(&chat_body("m", false))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
    }
    stop(px).await;
}
