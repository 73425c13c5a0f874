//! The spec's normalized API over real sockets: `/llm/stream` yields one event vocabulary
//! whatever the provider (OpenAI, Azure, Anthropic, Gemini, mock), for text, tool calls,
//! reasoning and a mid-stream upstream error; `/llm/chat` and `/llm/completions` answer
//! with one normalized object.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::fake_providers::{FakeProviders, fake_providers};
use common::*;
use serde_json::{Value, json};

fn config(fp: &FakeProviders, up: &FakeUpstream) -> String {
    let root = fp.root();
    format!(
        r#"
providers:
  openai:    {{ kind: openai, base_url: "{openai}" }}
  azure:     {{ kind: azure, base_url: "{root}", api_key: az-key-0123456789 }}
  anthropic: {{ kind: anthropic, base_url: "{root}", api_key: ant-key-0123456789 }}
  gemini:    {{ kind: gemini, base_url: "{root}/v1beta", api_key: gm-key-0123456789 }}
  mock:      {{ kind: mock }}
  mock-think: {{ kind: mock, reasoning: true }}
  mock-drop: {{ kind: mock, fault: drop }}
models:
  - {{ name: openai-text, provider: openai, model: ok }}
  - {{ name: openai-tools, provider: openai, model: tools }}
  - {{ name: openai-reasoning, provider: openai, model: reasoning }}
  - {{ name: openai-error, provider: openai, model: midstream-error }}
  - {{ name: azure-text, provider: azure, model: text }}
  - {{ name: azure-tools, provider: azure, model: tools }}
  - {{ name: azure-reasoning, provider: azure, model: reasoning }}
  - {{ name: azure-error, provider: azure, model: error }}
  - {{ name: anthropic-text, provider: anthropic, model: text }}
  - {{ name: anthropic-tools, provider: anthropic, model: tools }}
  - {{ name: anthropic-reasoning, provider: anthropic, model: thinking }}
  - {{ name: anthropic-error, provider: anthropic, model: error }}
  - {{ name: gemini-text, provider: gemini, model: text }}
  - {{ name: gemini-tools, provider: gemini, model: tools }}
  - {{ name: gemini-reasoning, provider: gemini, model: tools }}
  - {{ name: gemini-error, provider: gemini, model: error }}
  - {{ name: mock-text, provider: mock, model: mock-small-n8 }}
  - {{ name: mock-tools, provider: mock, model: mock-tools-n8 }}
  - {{ name: mock-reasoning, provider: mock-think, model: mock-small-n8 }}
  - {{ name: mock-error, provider: mock-drop, model: mock-small-n8 }}
routing: {{ num_retries: 0, timeout: 5s }}
"#,
        openai = up.base_url()
    )
}

async fn setup() -> (
    FakeProviders,
    FakeUpstream,
    llm_proxy::server::RunningServer,
) {
    let fp = fake_providers().await;
    let up = fake_upstream().await;
    let px = proxy(&config(&fp, &up)).await;
    (fp, up, px)
}

fn request(model: &str) -> Value {
    json!({"model": model, "temperature": 0.5, "messages": [{"role": "user", "content": "Explain RAG"}],
           "tools": [{"type": "function", "function": {"name": "get_weather",
               "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}]})
}

/// `(event name, payload)` pairs of an SSE body, checking that each payload's `type` is
/// its event name.
fn parse_sse(text: &str) -> Vec<(String, Value)> {
    text.split("\n\n")
        .filter(|e| !e.trim().is_empty())
        .map(|e| {
            let mut lines = e.lines();
            let name = lines
                .next()
                .unwrap()
                .strip_prefix("event: ")
                .unwrap()
                .to_owned();
            let data: Value =
                serde_json::from_str(lines.next().unwrap().strip_prefix("data: ").unwrap())
                    .unwrap();
            assert_eq!(data["type"], name.as_str(), "{e}");
            (name, data)
        })
        .collect()
}

/// Consecutive events of one type collapsed: `token token end` → `token end`.
fn shape(events: &[(String, Value)]) -> Vec<&str> {
    let mut out: Vec<&str> = Vec::new();
    for (k, _) in events {
        if out.last() != Some(&k.as_str()) {
            out.push(k);
        }
    }
    out
}

const VOCABULARY: &[&str] = &[
    "token",
    "reasoning",
    "tool_call",
    "tool_call_delta",
    "end",
    "error",
];

#[tokio::test]
async fn one_event_vocabulary_for_every_provider_kind() {
    let (_fp, _up, px) = setup().await;
    for provider in ["openai", "azure", "anthropic", "gemini", "mock"] {
        for scenario in ["text", "tools", "reasoning", "error"] {
            let model = format!("{provider}-{scenario}");
            let mut body = request(&model);
            if scenario != "tools" {
                // The same request for every provider; tools only where calls are wanted
                // (the mock calls a tool whenever it is offered one).
                body.as_object_mut().unwrap().remove("tools");
            }
            let resp = client()
                .post(format!("{}/llm/stream", px.url()))
                .json(&body)
                .send()
                .await
                .unwrap();
            assert_eq!(resp.status(), 200, "{model}");
            assert_eq!(resp.headers()["content-type"], "text/event-stream");
            let trace_id = resp.headers()["x-request-id"].to_str().unwrap().to_owned();
            let events = parse_sse(&resp.text().await.unwrap());
            let kinds = shape(&events);
            assert!(
                kinds.iter().all(|k| VOCABULARY.contains(k)),
                "{model}: {kinds:?}"
            );
            // Tokens are numbered from 1, one by one.
            let indexes: Vec<u64> = events
                .iter()
                .filter(|(k, _)| k == "token")
                .map(|(_, v)| v["index"].as_u64().unwrap())
                .collect();
            assert_eq!(
                indexes,
                (1..=indexes.len() as u64).collect::<Vec<_>>(),
                "{model}"
            );
            let (last_kind, last) = events.last().unwrap();
            match scenario {
                "text" => {
                    assert_eq!(kinds, ["token", "end"], "{model}");
                    assert_eq!(last["finish_reason"], "stop", "{model}");
                }
                "tools" => {
                    // Text or reasoning may come before the calls (Anthropic, Gemini).
                    let body: Vec<&str> = kinds
                        .iter()
                        .copied()
                        .skip_while(|k| *k == "token" || *k == "reasoning")
                        .collect();
                    assert_eq!(body, ["tool_call", "end"], "{model}: {kinds:?}");
                    assert_eq!(last["finish_reason"], "tool_calls", "{model}");
                    for (i, (_, call)) in
                        events.iter().filter(|(k, _)| k == "tool_call").enumerate()
                    {
                        assert_eq!(call["index"], i, "{model}");
                        let c = &call["tool_call"];
                        assert!(!c["id"].as_str().unwrap().is_empty(), "{model}");
                        assert!(!c["name"].as_str().unwrap().is_empty(), "{model}");
                        let args: Value =
                            serde_json::from_str(c["arguments"].as_str().unwrap()).unwrap();
                        assert!(args.is_object(), "{model}");
                    }
                }
                "reasoning" => {
                    assert_eq!(kinds.first(), Some(&"reasoning"), "{model}: {kinds:?}");
                    assert_eq!(kinds.last(), Some(&"end"), "{model}");
                    assert!(
                        kinds[1..kinds.len() - 1]
                            .iter()
                            .all(|k| *k == "token" || *k == "tool_call"),
                        "{model}: {kinds:?}"
                    );
                    let text: String = events
                        .iter()
                        .filter_map(|(_, v)| v["text"].as_str())
                        .collect();
                    assert!(!text.is_empty(), "{model}");
                }
                "error" => {
                    assert_eq!(kinds, ["token", "error"], "{model}");
                    assert_eq!(last["error"]["code"], "PROVIDER_ERROR", "{model}");
                    assert_eq!(last["error"]["request_id"], trace_id.as_str(), "{model}");
                }
                _ => unreachable!(),
            }
            if last_kind == "end" {
                assert_eq!(last["trace_id"], trace_id.as_str(), "{model}");
                assert_eq!(last["model"], model.as_str());
                let served_by = last["provider"].as_str().unwrap();
                assert!(served_by.starts_with(provider), "{model}: {served_by}");
                assert!(last["latency_ms"].as_f64().unwrap() > 0.0, "{model}");
                assert!(last["ttft_ms"].as_f64().is_some(), "{model}");
                // The recorded Azure stream has no usage chunk; every other upstream reports it.
                if model != "azure-text" {
                    assert!(
                        last["usage"]["completion_tokens"].as_u64().is_some(),
                        "{model}: {last}"
                    );
                }
            }
        }
    }
}

#[tokio::test]
async fn ndjson_and_tool_call_deltas() {
    let (_fp, up, px) = setup().await;
    let mut body = request("openai-tools");
    body["tool_call_deltas"] = json!(true);
    let resp = client()
        .post(format!("{}/llm/stream", px.url()))
        .header("accept", "application/x-ndjson")
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.headers()["content-type"], "application/x-ndjson");
    let text = resp.text().await.unwrap();
    let lines: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let deltas: Vec<&Value> = lines
        .iter()
        .filter(|v| v["type"] == "tool_call_delta")
        .collect();
    assert_eq!(deltas.len(), 2 * 4, "a start and three fragments per call");
    let joined: String = deltas
        .iter()
        .filter(|d| d["index"] == 0)
        .filter_map(|d| d["arguments"].as_str())
        .collect();
    let whole = lines.iter().find(|v| v["type"] == "tool_call").unwrap();
    assert_eq!(whole["tool_call"]["arguments"], joined.as_str());
    assert_eq!(lines.last().unwrap()["type"], "end");
    assert!(
        up.last_body().get("tool_call_deltas").is_none(),
        "our own options never reach the upstream"
    );
    // ?format=ndjson does the same without the header.
    let resp = client()
        .post(format!("{}/llm/stream?format=ndjson", px.url()))
        .json(&request("mock-text"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.headers()["content-type"], "application/x-ndjson");
    let resp = client()
        .post(format!("{}/llm/stream?format=xml", px.url()))
        .json(&request("mock-text"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
}

#[tokio::test]
async fn llm_chat_answers_with_one_normalized_object() {
    let (_fp, _up, px) = setup().await;
    for (model, provider) in [
        ("openai-tools", "openai"),
        ("anthropic-tools", "anthropic"),
        ("gemini-text", "gemini"),
        ("azure-text", "azure"),
        ("mock-tools", "mock"),
    ] {
        let resp = client()
            .post(format!("{}/llm/chat", px.url()))
            .json(&request(model))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200, "{model}");
        let trace = resp.headers()["x-request-id"].to_str().unwrap().to_owned();
        let got: Value = resp.json().await.unwrap();
        assert_eq!(got["trace_id"], trace.as_str());
        assert_eq!(got["model"], model);
        assert_eq!(got["provider"], provider);
        assert_eq!(got["message"]["role"], "assistant");
        assert!(
            got["usage"]["total_tokens"].as_u64().unwrap() > 0,
            "{model}: {got}"
        );
        assert!(got["latency_ms"].as_f64().unwrap() > 0.0);
        if model.ends_with("tools") {
            assert_eq!(got["finish_reason"], "tool_calls", "{model}: {got}");
            let call = &got["message"]["tool_calls"][0];
            assert!(
                call["id"].is_string() && call["name"].is_string(),
                "{model}: {got}"
            );
            serde_json::from_str::<Value>(call["arguments"].as_str().unwrap()).unwrap();
        } else {
            assert!(
                !got["message"]["content"].as_str().unwrap().is_empty(),
                "{model}"
            );
            assert_eq!(got["finish_reason"], "stop");
        }
    }
    let resp = client()
        .post(format!("{}/llm/chat", px.url()))
        .json(&json!({"model": "mock-text", "stream": true, "messages": [{"role": "user", "content": "x"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    let got: Value = resp.json().await.unwrap();
    assert_eq!(got["error"]["param"], "stream");
}

#[tokio::test]
async fn llm_completions_take_a_prompt_and_work_with_chat_only_providers() {
    let (fp, _up, px) = setup().await;
    let resp = client()
        .post(format!("{}/llm/completions", px.url()))
        .json(&json!({"model": "anthropic-text", "prompt": "Say hi", "system": "Be brief.", "max_tokens": 50}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let got: Value = resp.json().await.unwrap();
    assert_eq!(got["text"], "Hi! My name is Claude.");
    assert_eq!(got["finish_reason"], "stop");
    assert_eq!(got["provider"], "anthropic");
    let sent = fp.last().body;
    assert_eq!(sent["system"], "Be brief.");
    assert_eq!(
        sent["messages"],
        json!([{"role": "user", "content": "Say hi"}])
    );
    assert_eq!(sent["max_tokens"], 50);

    // Streamed, it is the same event stream as /llm/stream.
    let resp = client()
        .post(format!("{}/llm/completions", px.url()))
        .json(&json!({"model": "gemini-text", "prompt": "Capital of Wyoming?", "stream": true}))
        .send()
        .await
        .unwrap();
    let events = parse_sse(&resp.text().await.unwrap());
    let text: String = events
        .iter()
        .filter_map(|(_, v)| v["token"].as_str())
        .collect();
    assert_eq!(text, "The capital of Wyoming is **Cheyenne**.\n");

    for (body, param) in [
        (json!({"model": "mock-text"}), "prompt"),
        (json!({"model": "mock-text", "prompt": 5}), "prompt"),
        (
            json!({"model": "mock-text", "prompt": "x", "messages": []}),
            "messages",
        ),
    ] {
        let resp = client()
            .post(format!("{}/llm/completions", px.url()))
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 400, "{body}");
        let got: Value = resp.json().await.unwrap();
        assert_eq!(got["error"]["param"], param, "{body}");
        assert_eq!(got["error"]["code"], "INVALID_REQUEST");
    }
}

/// Every `$ref` in `v`.
fn refs(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::Object(m) => {
            for (k, x) in m {
                match (k.as_str(), x) {
                    ("$ref", Value::String(r)) => out.push(r.clone()),
                    _ => refs(x, out),
                }
            }
        }
        Value::Array(a) => a.iter().for_each(|x| refs(x, out)),
        _ => {}
    }
}

#[tokio::test]
async fn openapi_describes_every_endpoint_and_docs_render_it() {
    let px =
        proxy("providers: { mock: { kind: mock } }\nauth: { master_key: mk-0123456789 }\n").await;
    // Both are public, like /health: the description holds no secret.
    let spec: Value = client()
        .get(format!("{}/openapi.json", px.url()))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(spec["openapi"], "3.1.0");
    for (path, method) in [
        ("/llm/chat", "post"),
        ("/llm/stream", "post"),
        ("/llm/completions", "post"),
        ("/llm/models", "get"),
        ("/v1/chat/completions", "post"),
        ("/v1/messages", "post"),
        ("/v1/messages/count_tokens", "post"),
        ("/v1/models", "get"),
        ("/health", "get"),
    ] {
        assert!(
            spec["paths"][path][method].is_object(),
            "{path} {method} missing"
        );
    }
    let stream = &spec["paths"]["/llm/stream"]["post"]["responses"]["200"]["content"];
    assert!(stream["text/event-stream"].is_object() && stream["application/x-ndjson"].is_object());
    let mut all = Vec::new();
    refs(&spec, &mut all);
    assert!(all.len() > 20);
    for r in all {
        let name = r.strip_prefix("#/components/schemas/").unwrap();
        assert!(
            spec["components"]["schemas"][name].is_object(),
            "dangling {r}"
        );
    }
    let events = &spec["components"]["schemas"]["StreamEvent"]["oneOf"];
    let kinds: Vec<&str> = events
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["properties"]["type"]["enum"][0].as_str().unwrap())
        .collect();
    assert_eq!(
        kinds,
        [
            "token",
            "reasoning",
            "tool_call_delta",
            "tool_call",
            "end",
            "error"
        ]
    );

    let page = client()
        .get(format!("{}/docs", px.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), 200);
    assert!(
        page.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/html")
    );
    assert!(page.text().await.unwrap().contains("/openapi.json"));
}

#[tokio::test]
async fn completions_name_bad_fields_and_refuse_legacy_options() {
    let (_fp, _up, px) = setup().await;
    for (body, param) in [
        (
            json!({"model": "mock-text", "prompt": "x", "temperature": "hot"}),
            "temperature",
        ),
        (
            json!({"model": "mock-text", "prompt": "x", "echo": true}),
            "echo",
        ),
        (
            json!({"model": "mock-text", "prompt": "x", "logprobs": 5}),
            "logprobs",
        ),
    ] {
        let resp = client()
            .post(format!("{}/llm/completions", px.url()))
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 400, "{body}");
        let got: Value = resp.json().await.unwrap();
        assert_eq!(got["error"]["param"], param, "{body}: {got}");
    }
    // A stream format only matters to a stream.
    let resp = client()
        .post(format!("{}/llm/completions?format=xml", px.url()))
        .json(&json!({"model": "mock-text", "prompt": "x"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
}
