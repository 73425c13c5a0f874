//! Any client dialect to any provider, end to end over real sockets: OpenAI-shaped requests
//! to Anthropic-, Gemini- and Azure-backed models, Anthropic-shaped requests (`/v1/messages`)
//! to OpenAI-backed and mock models, streaming and not, with tools. The upstreams are fakes
//! that answer with recorded transcripts in each provider's real format.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::fake_providers::{FakeProviders, fake_providers};
use common::*;
use serde_json::{Value, json};

const ANTHROPIC_KEY: &str = "sk-ant-test-secret-0123456789";
const GEMINI_KEY: &str = "gm-test-secret-0123456789";
const AZURE_KEY: &str = "az-test-secret-0123456789";

fn config(fp: &FakeProviders, up: &FakeUpstream) -> String {
    let root = fp.root();
    format!(
        r#"
providers:
  claude: {{ kind: anthropic, base_url: "{root}", api_key: {ANTHROPIC_KEY} }}
  gem:    {{ kind: gemini, base_url: "{root}/v1beta", api_key: {GEMINI_KEY} }}
  az:     {{ kind: azure, base_url: "{root}", api_key: {AZURE_KEY} }}
  az2:    {{ kind: azure, base_url: "{root}/", api_key: {AZURE_KEY}, api_version: 2025-04-01-preview }}
  up:     {{ kind: openai, base_url: "{openai}" }}
  mock:   {{ kind: mock }}
models:
  - {{ name: claude, provider: claude, model: text }}
  - {{ name: claude-tools, provider: claude, model: tools }}
  - {{ name: claude-thinking, provider: claude, model: thinking }}
  - {{ name: claude-error, provider: claude, model: error }}
  - {{ name: claude-overloaded, provider: claude, model: overloaded-once }}
  - {{ name: claude-bad, provider: claude, model: bad }}
  - {{ name: claude-echo, provider: claude, model: echo-key }}
  - {{ name: gem, provider: gem, model: text }}
  - {{ name: gem-tools, provider: gem, model: tools }}
  - {{ name: gem-safety, provider: gem, model: safety }}
  - {{ name: gem-bad, provider: gem, model: bad }}
  - {{ name: az, provider: az, model: text }}
  - {{ name: az-preview, provider: az2, model: text }}
  - {{ name: az-filtered, provider: az, model: filtered }}
  - {{ name: oa-tools, provider: up, model: tools }}
  - {{ name: oa-chat, provider: up, model: ok }}
  - {{ name: mock-small, provider: mock }}
routing: {{ num_retries: 1, timeout: 5s, retry_backoff: 10ms }}
"#,
        openai = up.base_url()
    )
}

struct Env {
    fp: FakeProviders,
    up: FakeUpstream,
    url: String,
    _px: llm_proxy::server::RunningServer,
}

async fn env() -> Env {
    let fp = fake_providers().await;
    let up = fake_upstream().await;
    let px = proxy(&config(&fp, &up)).await;
    Env {
        url: px.url(),
        fp,
        up,
        _px: px,
    }
}

async fn openai_post(url: &str, body: &Value) -> reqwest::Response {
    client()
        .post(format!("{url}/v1/chat/completions"))
        .json(body)
        .send()
        .await
        .unwrap()
}

async fn anthropic_post(url: &str, body: &Value) -> reqwest::Response {
    client()
        .post(format!("{url}/v1/messages"))
        .header("anthropic-version", "2023-06-01")
        .json(body)
        .send()
        .await
        .unwrap()
}

fn weather_tool() -> Value {
    json!([{"type": "function", "function": {"name": "get_weather", "description": "Weather",
        "parameters": {"type": "object", "properties": {"location": {"type": "string"}}, "required": ["location"]}}}])
}

/// OpenAI stream chunks folded the way the OpenAI SDK does: text, per-index tool calls,
/// finish reason, usage.
struct OpenAiFold {
    text: String,
    reasoning: String,
    tools: Vec<(String, String, String)>,
    finish: Option<String>,
    usage: Option<Value>,
    error: Option<Value>,
}

fn fold_openai(events: &[String]) -> OpenAiFold {
    let mut f = OpenAiFold {
        text: String::new(),
        reasoning: String::new(),
        tools: Vec::new(),
        finish: None,
        usage: None,
        error: None,
    };
    assert_eq!(
        events.last().map(String::as_str),
        Some("[DONE]"),
        "{events:?}"
    );
    for e in &events[..events.len() - 1] {
        let c: Value = serde_json::from_str(e).unwrap();
        if c.get("error").is_some() {
            f.error = Some(c["error"].clone());
            continue;
        }
        if !c["usage"].is_null() {
            assert_eq!(c["choices"], json!([]), "usage chunk has no choices");
            f.usage = Some(c["usage"].clone());
        }
        let Some(choice) = c["choices"].get(0) else {
            continue;
        };
        let d = &choice["delta"];
        f.text.push_str(d["content"].as_str().unwrap_or(""));
        f.reasoning
            .push_str(d["reasoning_content"].as_str().unwrap_or(""));
        for tc in d["tool_calls"].as_array().into_iter().flatten() {
            let i = tc["index"].as_u64().unwrap() as usize;
            if let Some(id) = tc["id"].as_str() {
                assert_eq!(i, f.tools.len());
                f.tools.push((
                    id.to_owned(),
                    tc["function"]["name"].as_str().unwrap().to_owned(),
                    String::new(),
                ));
            }
            f.tools[i]
                .2
                .push_str(tc["function"]["arguments"].as_str().unwrap_or(""));
        }
        if let Some(r) = choice["finish_reason"].as_str() {
            f.finish = Some(r.to_owned());
        }
    }
    f
}

// ------------------------------------------------------------ OpenAI client → Anthropic

#[tokio::test]
async fn openai_client_to_anthropic_model() {
    let e = env().await;
    let mut body = chat_body("claude", false);
    body["messages"] = json!([{"role": "system", "content": "Be brief."},
                              {"role": "user", "content": "Who are you?"}]);
    body["seed"] = json!(7);
    let resp = openai_post(&e.url, &body).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["x-llm-proxy-deployment"], "claude/text");
    let got: Value = resp.json().await.unwrap();
    assert_eq!(got["object"], "chat.completion");
    assert_eq!(got["model"], "claude");
    assert_eq!(
        got["choices"][0]["message"]["content"],
        "Hi! My name is Claude."
    );
    assert_eq!(got["choices"][0]["finish_reason"], "stop");
    assert_eq!(got["usage"]["prompt_tokens"], 2095 + 2051 + 2051);
    assert_eq!(got["usage"]["prompt_tokens_details"]["cached_tokens"], 2051);
    assert_eq!(got["usage"]["completion_tokens"], 503);

    let seen = e.fp.last();
    assert_eq!(seen.headers["x-api-key"], ANTHROPIC_KEY);
    assert_eq!(seen.headers["anthropic-version"], "2023-06-01");
    assert!(seen.headers.get("authorization").is_none());
    assert_eq!(seen.body["model"], "text");
    assert_eq!(seen.body["system"], "Be brief.");
    assert_eq!(
        seen.body["messages"],
        json!([{"role": "user", "content": "Who are you?"}])
    );
    assert_eq!(seen.body["max_tokens"], 4096, "Anthropic needs max_tokens");
    assert!(
        seen.body.get("seed").is_none(),
        "OpenAI-only parameters are not sent"
    );
}

#[tokio::test]
async fn openai_client_streams_anthropic_tool_calls() {
    let e = env().await;
    let mut body = chat_body("claude-tools", true);
    body["tools"] = weather_tool();
    body["tool_choice"] = json!("required");
    body["stream_options"] = json!({"include_usage": true});
    let resp = openai_post(&e.url, &body).await;
    assert_eq!(resp.status(), 200);
    let f = fold_openai(&sse_events(resp).await);
    assert_eq!(
        f.text,
        "Okay, let's check the weather for San Francisco, CA:"
    );
    assert_eq!(f.tools.len(), 1);
    let (id, name, args) = &f.tools[0];
    assert_eq!(
        (id.as_str(), name.as_str()),
        ("toolu_01T1x1fJ34qAmk2tNTrN7Up6", "get_weather")
    );
    assert_eq!(
        serde_json::from_str::<Value>(args).unwrap(),
        json!({"location": "San Francisco, CA", "unit": "fahrenheit"})
    );
    assert_eq!(f.finish.as_deref(), Some("tool_calls"));
    assert_eq!(f.usage.unwrap()["completion_tokens"], 89);
    let sent = e.fp.last().body;
    assert_eq!(sent["stream"], true);
    assert_eq!(sent["tool_choice"], json!({"type": "any"}));
    assert_eq!(
        sent["tools"][0]["input_schema"]["required"],
        json!(["location"])
    );
}

#[tokio::test]
async fn openai_client_gets_anthropic_thinking_as_reasoning_content() {
    let e = env().await;
    let resp = openai_post(&e.url, &chat_body("claude-thinking", true)).await;
    let f = fold_openai(&sse_events(resp).await);
    assert!(f.reasoning.contains("27 * 400 = 10,800"));
    assert_eq!(f.text, "27 * 453 = 12,231");
}

#[tokio::test]
async fn anthropic_error_event_mid_stream_reaches_the_openai_client_as_an_error_event() {
    let e = env().await;
    let resp = openai_post(&e.url, &chat_body("claude-error", true)).await;
    assert_eq!(resp.status(), 200);
    let f = fold_openai(&sse_events(resp).await);
    assert_eq!(f.text, "Hello");
    let err = f.error.unwrap();
    assert_eq!(err["code"], "PROVIDER_ERROR");
    assert_eq!(err["upstream_status"], 529);
    assert!(err["message"].as_str().unwrap().contains("Overloaded"));
}

#[tokio::test]
async fn anthropic_overload_before_the_first_chunk_is_retried() {
    let e = env().await;
    let resp = openai_post(&e.url, &chat_body("claude-overloaded", true)).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["x-llm-proxy-attempts"], "2");
    assert_eq!(fold_openai(&sse_events(resp).await).text, "Hello there!");
    assert_eq!(e.fp.hits(), 2);
}

#[tokio::test]
async fn anthropic_errors_map_to_our_codes_without_the_key() {
    let e = env().await;
    let resp = openai_post(&e.url, &chat_body("claude-bad", false)).await;
    assert_eq!(resp.status(), 400);
    let got: Value = resp.json().await.unwrap();
    assert_eq!(got["error"]["code"], "INVALID_REQUEST");
    assert_eq!(got["error"]["upstream_status"], 400);
    assert!(
        got["error"]["message"]
            .as_str()
            .unwrap()
            .contains("roles must alternate")
    );
    assert_eq!(e.fp.hits(), 1, "a 400 is not retried");

    let resp = openai_post(&e.url, &chat_body("claude-echo", false)).await;
    let text = resp.text().await.unwrap();
    assert!(!text.contains(ANTHROPIC_KEY), "{text}");
    assert!(text.contains("***"), "{text}");
}

// -------------------------------------------------------- Anthropic client → anything

/// `(event name, payload)` of an Anthropic SSE body.
async fn anthropic_events(resp: reqwest::Response) -> Vec<(String, Value)> {
    let text = resp.text().await.unwrap();
    text.split("\n\n")
        .filter(|e| !e.trim().is_empty())
        .map(|e| {
            let mut name = None;
            let mut data = None;
            for line in e.lines() {
                if let Some(n) = line.strip_prefix("event: ") {
                    name = Some(n.to_owned());
                }
                if let Some(d) = line.strip_prefix("data: ") {
                    data = Some(serde_json::from_str::<Value>(d).unwrap());
                }
            }
            let (name, data) = (name.unwrap(), data.unwrap());
            assert_eq!(data["type"], name.as_str());
            (name, data)
        })
        .collect()
}

#[tokio::test]
async fn anthropic_client_streams_tool_use_from_an_openai_backed_model() {
    let e = env().await;
    let body = json!({"model": "oa-tools", "max_tokens": 256, "stream": true,
        "system": "You are terse.",
        "tools": [{"name": "get_weather", "input_schema": {"type": "object"}}],
        "messages": [{"role": "user", "content": "Weather in Paris and the time?"}]});
    let resp = anthropic_post(&e.url, &body).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], "text/event-stream");
    let events = anthropic_events(resp).await;
    let kinds: Vec<&str> = events.iter().map(|(k, _)| k.as_str()).collect();
    let mut expected = vec!["message_start", "content_block_start"];
    expected.extend(std::iter::repeat_n("content_block_delta", 3));
    expected.extend(["content_block_stop", "content_block_start"]);
    expected.extend(std::iter::repeat_n("content_block_delta", 3));
    expected.extend(["content_block_stop", "message_delta", "message_stop"]);
    assert_eq!(kinds, expected);
    assert_eq!(events[0].1["message"]["role"], "assistant");
    assert_eq!(events[0].1["message"]["model"], "oa-tools");
    assert_eq!(
        events[1].1["content_block"],
        json!({"type": "tool_use", "id": "call_a", "name": "get_weather", "input": {}})
    );
    let args: String = events
        .iter()
        .filter(|(k, v)| k == "content_block_delta" && v["index"] == 0)
        .map(|(_, v)| v["delta"]["partial_json"].as_str().unwrap())
        .collect();
    assert_eq!(args, "{\"city\": \"Paris\"}");
    let delta = &events[events.len() - 2].1;
    assert_eq!(delta["delta"]["stop_reason"], "tool_use");
    assert_eq!(
        delta["usage"]["output_tokens"], 3,
        "usage the upstream reported"
    );

    // The OpenAI upstream was asked in its own dialect.
    let sent = e.up.last_body();
    assert_eq!(
        sent["messages"][0],
        json!({"role": "system", "content": "You are terse."})
    );
    assert_eq!(sent["max_tokens"], 256);
    assert_eq!(sent["tools"][0]["function"]["name"], "get_weather");
}

#[tokio::test]
async fn anthropic_client_gets_a_message_from_an_openai_backed_model() {
    let e = env().await;
    let body = json!({"model": "oa-chat", "max_tokens": 64,
        "messages": [{"role": "user", "content": [{"type": "text", "text": "Hi"}]}]});
    let resp = anthropic_post(&e.url, &body).await;
    assert_eq!(resp.status(), 200);
    let msg: Value = resp.json().await.unwrap();
    assert_eq!(msg["type"], "message");
    assert_eq!(msg["role"], "assistant");
    assert_eq!(
        msg["content"],
        json!([{"type": "text", "text": "Hello from upstream"}])
    );
    assert_eq!(msg["stop_reason"], "end_turn");
    assert_eq!(msg["usage"]["input_tokens"], 9);
    assert_eq!(msg["usage"]["output_tokens"], 3);
}

#[tokio::test]
async fn anthropic_client_to_the_mock_and_to_anthropic_itself() {
    let e = env().await;
    let body = json!({"model": "mock-small", "max_tokens": 64, "stream": true,
        "messages": [{"role": "user", "content": "Explain RAG"}]});
    let events = anthropic_events(anthropic_post(&e.url, &body).await).await;
    let text: String = events
        .iter()
        .filter_map(|(_, v)| v["delta"]["text"].as_str())
        .collect();
    assert!(!text.is_empty());
    assert_eq!(events.last().unwrap().0, "message_stop");

    // Anthropic in, Anthropic out: thinking stays thinking.
    let body = json!({"model": "claude-thinking", "max_tokens": 2048, "stream": true,
        "thinking": {"type": "enabled", "budget_tokens": 1024},
        "messages": [{"role": "user", "content": "27 * 453?"}]});
    let events = anthropic_events(anthropic_post(&e.url, &body).await).await;
    assert_eq!(events[1].1["content_block"]["type"], "thinking");
    let sent = e.fp.last().body;
    assert_eq!(
        sent["thinking"],
        json!({"type": "enabled", "budget_tokens": 1024})
    );
}

#[tokio::test]
async fn anthropic_client_errors_use_anthropic_shape_and_our_codes() {
    let e = env().await;
    let resp = anthropic_post(
        &e.url,
        &json!({"model": "mock-small", "messages": [{"role": "user", "content": "hi"}]}),
    )
    .await;
    assert_eq!(resp.status(), 400);
    assert!(resp.headers().contains_key("x-request-id"));
    let got: Value = resp.json().await.unwrap();
    assert_eq!(got["type"], "error");
    assert_eq!(got["error"]["type"], "invalid_request_error");
    assert_eq!(got["error"]["code"], "INVALID_REQUEST");
    assert_eq!(got["error"]["param"], "max_tokens");

    let resp = anthropic_post(
        &e.url,
        &json!({"model": "nope", "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]}),
    )
    .await;
    assert_eq!(resp.status(), 404);
    let got: Value = resp.json().await.unwrap();
    assert_eq!(got["error"]["type"], "not_found_error");

    let resp = client()
        .post(format!("{}/v1/messages/count_tokens", e.url))
        .json(
            &json!({"model": "claude", "messages": [{"role": "user", "content": "Hello, world"}]}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let got: Value = resp.json().await.unwrap();
    assert!(got["input_tokens"].as_u64().unwrap() >= 1);
}

// ---------------------------------------------------------------------------- Gemini

#[tokio::test]
async fn openai_client_to_gemini_with_tools_keeps_the_thought_signature() {
    let e = env().await;
    let mut body = chat_body("gem-tools", true);
    body["tools"] = weather_tool();
    let resp = openai_post(&e.url, &body).await;
    assert_eq!(resp.status(), 200);
    let f = fold_openai(&sse_events(resp).await);
    assert!(f.reasoning.starts_with("**Checking the Temperature**"));
    assert_eq!(f.finish.as_deref(), Some("tool_calls"));
    let (id, name, args) = f.tools[0].clone();
    assert_eq!(name, "get_current_temperature");
    let seen = e.fp.last();
    assert_eq!(seen.path, "/v1beta/models/tools:streamGenerateContent");
    assert_eq!(seen.query.as_deref(), Some("alt=sse"));
    assert_eq!(seen.headers["x-goog-api-key"], GEMINI_KEY);
    assert_eq!(
        seen.body["tools"][0]["functionDeclarations"][0]["name"],
        "get_weather"
    );

    // Second turn: the call and its result go back; Gemini gets its signature back.
    let body = json!({"model": "gem", "messages": [
        {"role": "user", "content": "Temperature in London?"},
        {"role": "assistant", "content": null, "tool_calls": [{"id": id, "type": "function",
            "function": {"name": name, "arguments": args}}]},
        {"role": "tool", "tool_call_id": id, "content": "{\"temperature\": 15}"}]});
    let resp = openai_post(&e.url, &body).await;
    assert_eq!(resp.status(), 200);
    let got: Value = resp.json().await.unwrap();
    assert!(
        got["choices"][0]["message"]["content"]
            .as_str()
            .unwrap()
            .contains("Mountain View")
    );
    let seen = e.fp.last();
    assert_eq!(seen.path, "/v1beta/models/text:generateContent");
    let parts = &seen.body["contents"][1]["parts"][0];
    assert!(
        parts["thoughtSignature"]
            .as_str()
            .unwrap()
            .starts_with("CiIBVKhc7vB")
    );
    assert_eq!(
        seen.body["contents"][2]["parts"][0]["functionResponse"],
        json!({"name": "get_current_temperature", "response": {"result": {"temperature": 15}}})
    );
}

#[tokio::test]
async fn gemini_safety_block_and_errors() {
    let e = env().await;
    let got: Value = openai_post(&e.url, &chat_body("gem-safety", false))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(got["choices"][0]["finish_reason"], "content_filter");
    let resp = openai_post(&e.url, &chat_body("gem-bad", false)).await;
    assert_eq!(resp.status(), 400);
    let got: Value = resp.json().await.unwrap();
    assert_eq!(got["error"]["upstream_status"], 400);
    assert!(
        got["error"]["message"]
            .as_str()
            .unwrap()
            .contains("thought_signature")
    );
    // Anthropic clients reach Gemini too.
    let body = json!({"model": "gem", "max_tokens": 100, "stream": true,
        "messages": [{"role": "user", "content": "Capital of Wyoming?"}]});
    let events = anthropic_events(anthropic_post(&e.url, &body).await).await;
    let text: String = events
        .iter()
        .filter_map(|(_, v)| v["delta"]["text"].as_str())
        .collect();
    assert_eq!(text, "The capital of Wyoming is **Cheyenne**.\n");
    assert_eq!(events[events.len() - 2].1["usage"]["output_tokens"], 10);
}

// ----------------------------------------------------------------------------- Azure

#[tokio::test]
async fn azure_deployment_urls_api_version_and_api_key() {
    let e = env().await;
    let resp = openai_post(&e.url, &chat_body("az", false)).await;
    assert_eq!(resp.status(), 200);
    let got: Value = resp.json().await.unwrap();
    assert!(
        got["prompt_filter_results"].is_array(),
        "Azure's body passes through"
    );
    let seen = e.fp.last();
    assert_eq!(seen.path, "/openai/deployments/text/chat/completions");
    assert_eq!(seen.query.as_deref(), Some("api-version=2024-10-21"));
    assert_eq!(seen.headers["api-key"], AZURE_KEY);
    assert!(seen.headers.get("authorization").is_none());

    let resp = openai_post(&e.url, &chat_body("az-preview", true)).await;
    assert_eq!(
        e.fp.last().query.as_deref(),
        Some("api-version=2025-04-01-preview")
    );
    let f = fold_openai(&sse_events(resp).await);
    assert_eq!(f.text, "Color is a visual perception.");
    assert_eq!(f.finish.as_deref(), Some("stop"));
}

#[tokio::test]
async fn azure_content_filter_is_a_client_error() {
    let e = env().await;
    let resp = openai_post(&e.url, &chat_body("az-filtered", false)).await;
    assert_eq!(resp.status(), 400);
    let got: Value = resp.json().await.unwrap();
    assert_eq!(got["error"]["code"], "INVALID_REQUEST");
    assert_eq!(got["error"]["upstream_status"], 400);
    assert!(
        got["error"]["message"]
            .as_str()
            .unwrap()
            .contains("content filter")
    );
    assert_eq!(e.fp.hits(), 1, "never retried");
}

// ------------------------------------------------------------------- model discovery

#[tokio::test]
async fn discovered_models_are_listed_and_routable() {
    let fp = fake_providers().await;
    let up = fake_upstream().await;
    let yaml = format!(
        r#"
providers:
  local:  {{ kind: ollama, base_url: "{root}/v1", discover_models: true }}
  up:     {{ kind: openai, base_url: "{openai}", discover_models: true }}
  claude: {{ kind: anthropic, base_url: "{root}", discover_models: true }}
  mock:   {{ kind: mock }}
models:
  - {{ name: mock-small, provider: mock }}
"#,
        root = fp.root(),
        openai = up.base_url()
    );
    let px = proxy(&yaml).await;
    let url = px.url();
    // Discovery runs in the background; the listing fills in without a restart.
    let mut listed = Value::Null;
    for _ in 0..100 {
        listed = client()
            .get(format!("{url}/v1/models"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if listed["data"].as_array().unwrap().len() >= 4 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let ids: Vec<(&str, &str)> = listed["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| (m["id"].as_str().unwrap(), m["owned_by"].as_str().unwrap()))
        .collect();
    assert_eq!(
        ids,
        [
            ("mock-small", "mock"),
            ("codellama:13b", "local"),
            ("llama3:latest", "local"),
            ("fake-upstream-model", "up"),
        ],
        "configured first, then what each provider reported; a provider whose listing \
         fails (claude here) is left out"
    );
    assert_eq!(
        fp.last().path,
        "/api/tags",
        "Ollama is asked through its native API"
    );
    let llm: Value = client()
        .get(format!("{url}/llm/models"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(llm[2], json!({"id": "llama3:latest", "provider": "local"}));

    // A reported model can be asked for by its id, with no default_provider.
    let resp = openai_post(&url, &chat_body("fake-upstream-model", false)).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(
        resp.headers()["x-llm-proxy-deployment"],
        "up/fake-upstream-model"
    );
    let resp = openai_post(&url, &chat_body("never-reported", false)).await;
    assert_eq!(resp.status(), 404);
}

// ------------------------------------------------------ Anthropic in, Anthropic out

#[tokio::test]
async fn anthropic_clients_reach_anthropic_upstreams_verbatim() {
    let e = env().await;
    // Fields the canonical types do not model must survive: cache_control, a server tool,
    // a document block, top_k, a beta header.
    let body = json!({
        "model": "claude", "max_tokens": 1024, "top_k": 5,
        "system": [{"type": "text", "text": "You are terse.", "cache_control": {"type": "ephemeral"}}],
        "tools": [{"type": "web_search_20250305", "name": "web_search", "max_uses": 2}],
        "messages": [{"role": "user", "content": [
            {"type": "document", "source": {"type": "text", "media_type": "text/plain", "data": "Doc."}},
            {"type": "text", "text": "Summarize.", "cache_control": {"type": "ephemeral"}}]}]});
    let resp = client()
        .post(format!("{}/v1/messages", e.url))
        .header("anthropic-beta", "extended-cache-ttl-2025-04-11")
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let got: Value = resp.json().await.unwrap();
    assert_eq!(
        got,
        serde_json::from_slice::<Value>(&common::fake_providers::fixture(
            "anthropic/response_text.json"
        ))
        .unwrap(),
        "the upstream's reply, verbatim"
    );
    let seen = e.fp.last();
    let mut expected = body.clone();
    expected["model"] = json!("text");
    assert_eq!(
        seen.body, expected,
        "the client's request, verbatim but for the model id"
    );
    assert_eq!(
        seen.headers["anthropic-beta"],
        "extended-cache-ttl-2025-04-11"
    );

    // Streaming: every upstream event (pings too) reaches the client as it was.
    let mut body = body;
    body["model"] = json!("claude-tools");
    body["stream"] = json!(true);
    let resp = anthropic_post(&e.url, &body).await;
    let text = resp.text().await.unwrap();
    let recorded = String::from_utf8(common::fake_providers::fixture(
        "anthropic/stream_tool_use.sse",
    ))
    .unwrap();
    let norm = |s: &str| -> Vec<Value> {
        s.split("\n\n")
            .filter_map(|ev| ev.lines().find_map(|l| l.strip_prefix("data: ")))
            .map(|d| serde_json::from_str(d).unwrap())
            .collect()
    };
    assert_eq!(norm(&text), norm(&recorded));
    assert_eq!(e.fp.last().body["stream"], true);
}
