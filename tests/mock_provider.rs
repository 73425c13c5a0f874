//! The built-in mock provider, through the proxy: determinism, tools, pacing and faults.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use common::*;
use serde_json::{Value, json};

async fn default_proxy() -> llm_proxy::server::RunningServer {
    let mut s = llm_proxy::config::load(None, &HashMap::new()).unwrap();
    s.server.port = 0;
    llm_proxy::server::spawn(&s).await.unwrap()
}

async fn post(url: &str, body: &Value) -> reqwest::Response {
    client()
        .post(format!("{url}/v1/chat/completions"))
        .json(body)
        .send()
        .await
        .unwrap()
}

fn ask(model: &str, prompt: &str) -> Value {
    json!({"model": model, "messages": [{"role": "user", "content": prompt}]})
}

fn weather_tool() -> Value {
    json!([{"type": "function", "function": {"name": "get_weather", "description": "Weather in a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}, "days": {"type": "integer"}},
        "required": ["city", "days"]}}}])
}

#[tokio::test]
async fn replies_are_deterministic_per_prompt() {
    let px = default_proxy().await;
    let a: Value = post(&px.url(), &ask("mock-small", "Explain RAG"))
        .await
        .json()
        .await
        .unwrap();
    let b: Value = post(&px.url(), &ask("mock-small", "Explain RAG"))
        .await
        .json()
        .await
        .unwrap();
    let c: Value = post(&px.url(), &ask("mock-small", "Something else entirely"))
        .await
        .json()
        .await
        .unwrap();
    let text = |v: &Value| {
        v["choices"][0]["message"]["content"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    assert_eq!(text(&a), text(&b));
    assert_ne!(text(&a), text(&c));
    assert!(text(&a).contains("Explain RAG"));
    assert_eq!(a["usage"]["completion_tokens"], 16);
    assert_eq!(a["choices"][0]["finish_reason"], "stop");
}

#[tokio::test]
async fn max_tokens_truncates_with_finish_length() {
    let px = default_proxy().await;
    let mut body = ask("mock-large", "hi");
    body["max_tokens"] = json!(5);
    let v: Value = post(&px.url(), &body).await.json().await.unwrap();
    assert_eq!(v["usage"]["completion_tokens"], 5);
    assert_eq!(v["choices"][0]["finish_reason"], "length");
}

#[tokio::test]
async fn tools_get_a_schema_shaped_call_then_a_reply_to_the_result() {
    let px = default_proxy().await;
    let mut body = ask("mock-tools", "What's the weather in Paris?");
    body["tools"] = weather_tool();
    let v: Value = post(&px.url(), &body).await.json().await.unwrap();
    let choice = &v["choices"][0];
    assert_eq!(choice["finish_reason"], "tool_calls");
    let call = &choice["message"]["tool_calls"][0];
    assert_eq!(call["function"]["name"], "get_weather");
    let args: Value =
        serde_json::from_str(call["function"]["arguments"].as_str().unwrap()).unwrap();
    assert!(
        args["city"].is_string() && args["days"].is_number(),
        "{args}"
    );

    // Streaming gives the same call in deltas.
    body["stream"] = json!(true);
    let events = sse_events(post(&px.url(), &body).await).await;
    let mut streamed = String::new();
    for e in &events[..events.len() - 1] {
        let c: Value = serde_json::from_str(e).unwrap();
        if let Some(a) = c["choices"][0]["delta"]["tool_calls"][0]["function"]["arguments"].as_str()
        {
            streamed.push_str(a);
        }
    }
    assert_eq!(streamed, call["function"]["arguments"].as_str().unwrap());

    // Answering the tool call ends the loop with text.
    let follow = json!({"model": "mock-tools", "tools": weather_tool(), "messages": [
        {"role": "user", "content": "What's the weather in Paris?"},
        {"role": "assistant", "content": null, "tool_calls": [call]},
        {"role": "tool", "tool_call_id": call["id"], "content": "sunny, 21C"}]});
    let v: Value = post(&px.url(), &follow).await.json().await.unwrap();
    assert_eq!(v["choices"][0]["finish_reason"], "stop");
    assert!(
        v["choices"][0]["message"]["content"]
            .as_str()
            .unwrap()
            .contains("sunny")
    );
}

#[tokio::test]
async fn pacing_from_the_model_name_is_honoured() {
    let px = default_proxy().await;
    let mut body = ask("mock-n5-d80", "pace me");
    body["stream"] = json!(true);
    let resp = post(&px.url(), &body).await;
    let mut r = SseReader::new(resp);
    let first = r.next().await.unwrap();
    let t = Instant::now();
    let mut n = 1;
    while let Some(e) = r.next().await {
        if e.contains("\"content\"") {
            n += 1;
        }
    }
    assert!(first.contains("content"));
    assert_eq!(n, 5);
    assert!(
        t.elapsed() >= Duration::from_millis(300),
        "tokens were not paced: {:?}",
        t.elapsed()
    );
}

#[tokio::test]
async fn faults_drop_and_fail_first() {
    let cfg = "providers:\n  drop: { kind: mock, fault: drop, tokens: 10 }\n  flaky: { kind: mock, fail_first: 1 }\n  \
               think: { kind: mock, reasoning: true, tokens: 3 }\n\
               models: [ { name: drop, provider: drop }, { name: flaky, provider: flaky }, { name: think, provider: think } ]\n\
               routing: { retry_backoff: 1ms }\n";
    let px = proxy(cfg).await;
    let mut body = ask("drop", "x");
    body["stream"] = json!(true);
    let events = sse_events(post(&px.url(), &body).await).await;
    assert!(
        events.iter().any(|e| e.contains("\"content\"")),
        "some content before the drop"
    );
    let err: Value = serde_json::from_str(&events[events.len() - 2]).unwrap();
    assert_eq!(err["error"]["code"], "PROVIDER_ERROR");

    let resp = post(&px.url(), &ask("flaky", "x")).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["x-llm-proxy-attempts"], "2");

    let mut body = ask("think", "x");
    body["stream"] = json!(true);
    let events = sse_events(post(&px.url(), &body).await).await;
    assert!(events[0].contains("reasoning_content"), "{}", events[0]);
}
