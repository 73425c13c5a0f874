//! Golden tests of every translation against recorded transcripts in each provider's real
//! wire format (`tests/fixtures/<provider>/…`, sources in `tests/fixtures/README.md`):
//! OpenAI-dialect request → provider request body, provider reply / stream → canonical
//! events → OpenAI chunks and Anthropic events.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::Path;

use serde_json::{Value, json};

use llm_proxy::types::{ChatEvent, ChatRequest, FinishReason, Usage};
use llm_proxy::wire::sse::{SseDecoder, SseEvent};
use llm_proxy::wire::{anthropic, gemini, openai};

fn fixture(path: &str) -> Vec<u8> {
    let p = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(path);
    std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

fn fixture_json(path: &str) -> Value {
    serde_json::from_slice(&fixture(path)).unwrap()
}

fn sse(path: &str) -> Vec<SseEvent> {
    let mut d = SseDecoder::new(1 << 20);
    let mut out = Vec::new();
    d.feed(&fixture(path), &mut out).unwrap();
    d.finish(&mut out).unwrap();
    out
}

fn openai_request(v: Value) -> ChatRequest {
    serde_json::from_value(v).unwrap()
}

/// Concatenated text, reasoning and per-index tool call (id, name, arguments) of events.
#[derive(Debug, Default, PartialEq)]
struct Folded {
    text: String,
    reasoning: String,
    signatures: Vec<String>,
    tools: Vec<(String, String, String)>,
    finish: Option<FinishReason>,
    usage: Option<Usage>,
}

fn fold(events: &[ChatEvent]) -> Folded {
    let mut f = Folded::default();
    for e in events {
        match e {
            ChatEvent::TextDelta(t) => f.text.push_str(t),
            ChatEvent::ReasoningDelta(t) => f.reasoning.push_str(t),
            ChatEvent::ReasoningSignature(s) => f.signatures.push(s.clone()),
            ChatEvent::RedactedReasoning(_) => f.signatures.push("<redacted>".into()),
            ChatEvent::ToolCallStart { index, id, name } => {
                assert_eq!(*index as usize, f.tools.len(), "tool indexes count from 0");
                f.tools.push((id.clone(), name.clone(), String::new()));
            }
            ChatEvent::ToolCallArgs { index, fragment } => {
                f.tools[*index as usize].2.push_str(fragment)
            }
            ChatEvent::Finish(r) => f.finish = Some(*r),
            ChatEvent::Usage(u) => f.usage = Some(*u),
        }
    }
    f
}

fn anthropic_events(path: &str) -> Result<Vec<ChatEvent>, anthropic::StreamError> {
    let mut d = anthropic::StreamDecoder::new();
    let mut out = Vec::new();
    for ev in sse(path) {
        out.extend(d.decode(&ev.data).unwrap()?);
    }
    assert!(d.finished(), "{path}: message_stop not seen");
    Ok(out)
}

// ------------------------------------------------------------------------- Anthropic

#[test]
fn openai_request_becomes_the_documented_anthropic_request() {
    let req = openai_request(json!({
        "model": "claude",
        "max_tokens": 1024, "temperature": 0.7, "stop": ["END"],
        "tool_choice": "auto",
        "tools": [{"type": "function", "function": {
            "name": "get_weather",
            "description": "Get the current weather in a given location",
            "parameters": fixture_json("anthropic/request_tools.json")["tools"][0]["input_schema"]}}],
        "messages": [
            {"role": "system", "content": "You are a helpful assistant that answers questions about the weather."},
            {"role": "user", "content": "What's the weather like in San Francisco?"},
            {"role": "assistant", "content": "I'll check the current weather in San Francisco for you.",
             "tool_calls": [{"id": "toolu_01A09q90qw90lq917835lq9", "type": "function",
                "function": {"name": "get_weather", "arguments": "{\"location\": \"San Francisco, CA\", \"unit\": \"celsius\"}"}}]},
            {"role": "tool", "tool_call_id": "toolu_01A09q90qw90lq917835lq9", "content": "15 degrees"}
        ]
    }));
    let body = anthropic::encode_request(&req, "claude-sonnet-4-5", false).unwrap();
    assert_eq!(
        serde_json::to_value(&body).unwrap(),
        fixture_json("anthropic/request_tools.json")
    );
}

#[test]
fn anthropic_request_round_trips_through_canonical() {
    let original = fixture_json("anthropic/request_tools.json");
    let parsed: anthropic::MessagesRequest = serde_json::from_value(original.clone()).unwrap();
    let canonical = anthropic::decode_request(parsed);
    assert_eq!(canonical.messages[0].text(), original["system"]);
    let back = anthropic::encode_request(&canonical, "claude-sonnet-4-5", false).unwrap();
    assert_eq!(serde_json::to_value(&back).unwrap(), original);
}

#[test]
fn anthropic_non_json_tool_arguments_are_a_client_error() {
    let req = openai_request(json!({"model": "m", "messages": [
        {"role": "user", "content": "hi"},
        {"role": "assistant", "tool_calls": [{"id": "t1", "type": "function",
            "function": {"name": "f", "arguments": "not json"}}]},
        {"role": "tool", "tool_call_id": "t1", "content": "x"}]}));
    let err = anthropic::encode_request(&req, "m", false).unwrap_err();
    assert_eq!(
        err.param.as_deref(),
        Some("messages[1].tool_calls[0].function.arguments")
    );
}

#[test]
fn anthropic_openai_images_become_image_blocks() {
    let req = openai_request(
        json!({"model": "m", "messages": [{"role": "user", "content": [
        {"type": "text", "text": "What is this?"},
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}},
        {"type": "image_url", "image_url": {"url": "https://example.com/cat.jpg"}}]}]}),
    );
    let body = serde_json::to_value(anthropic::encode_request(&req, "m", true).unwrap()).unwrap();
    assert_eq!(body["stream"], true);
    assert_eq!(body["max_tokens"], anthropic::DEFAULT_MAX_TOKENS);
    let content = &body["messages"][0]["content"];
    assert_eq!(
        content[1]["source"],
        json!({"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="})
    );
    assert_eq!(
        content[2]["source"],
        json!({"type": "url", "url": "https://example.com/cat.jpg"})
    );
}

#[test]
fn anthropic_text_reply_with_cache_usage() {
    let r = anthropic::decode_response(&fixture("anthropic/response_text.json")).unwrap();
    assert_eq!(r.message.content.as_deref(), Some("Hi! My name is Claude."));
    assert_eq!(r.finish_reason, Some(FinishReason::Stop));
    let u = r.usage.unwrap();
    // OpenAI counts cached prompt tokens inside prompt_tokens; Anthropic does not.
    assert_eq!(u.prompt_tokens, 2095 + 2051 + 2051);
    assert_eq!(u.cached_tokens, Some(2051));
    assert_eq!(u.cache_creation_tokens, Some(2051));
    assert_eq!(u.completion_tokens, 503);
    assert_eq!(u.total_tokens, u.prompt_tokens + 503);
}

#[test]
fn anthropic_tool_use_reply() {
    let r = anthropic::decode_response(&fixture("anthropic/response_tool_use.json")).unwrap();
    assert_eq!(r.finish_reason, Some(FinishReason::ToolCalls));
    assert_eq!(
        r.message.content.as_deref(),
        Some("I'll check the current weather in San Francisco for you.")
    );
    let call = &r.message.tool_calls[0];
    assert_eq!(call.id, "toolu_01A09q90qw90lq917835lq9");
    assert_eq!(call.function.name, "get_weather");
    let args: Value = serde_json::from_str(&call.function.arguments).unwrap();
    assert_eq!(
        args,
        json!({"location": "San Francisco, CA", "unit": "celsius"})
    );
    // And to an OpenAI client it is a chat.completion with tool_calls.
    let out: Value = serde_json::from_slice(&openai::encode_response(&r, "claude")).unwrap();
    assert_eq!(out["choices"][0]["finish_reason"], "tool_calls");
    assert_eq!(
        out["choices"][0]["message"]["tool_calls"][0]["function"]["name"],
        "get_weather"
    );
    assert_eq!(out["usage"]["prompt_tokens"], 472);
}

#[test]
fn anthropic_text_stream() {
    let f = fold(&anthropic_events("anthropic/stream_text.sse").unwrap());
    assert_eq!(f.text, "Hello there!");
    assert_eq!(f.finish, Some(FinishReason::Stop));
    let u = f.usage.unwrap();
    assert_eq!((u.prompt_tokens, u.completion_tokens), (11, 6));
}

#[test]
fn anthropic_tool_stream_concatenates_input_json_without_the_initial_braces() {
    let events = anthropic_events("anthropic/stream_tool_use.sse").unwrap();
    let f = fold(&events);
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
    let args: Value = serde_json::from_str(args).unwrap();
    assert_eq!(
        args,
        json!({"location": "San Francisco, CA", "unit": "fahrenheit"})
    );
    assert_eq!(f.finish, Some(FinishReason::ToolCalls));
    // Every argument fragment is forwarded as it arrives (8 non-empty pieces), none invented.
    let pieces = events
        .iter()
        .filter(|e| matches!(e, ChatEvent::ToolCallArgs { .. }))
        .count();
    assert_eq!(pieces, 8);
}

#[test]
fn anthropic_thinking_stream_is_reasoning_for_openai_clients() {
    let events = anthropic_events("anthropic/stream_thinking.sse").unwrap();
    let f = fold(&events);
    assert!(f.reasoning.starts_with("Let me solve this step by step"));
    assert!(f.reasoning.ends_with("10,800 + 1,350 + 81 = 12,231"));
    assert_eq!(f.text, "27 * 453 = 12,231");
    let mut enc = openai::ChunkEncoder::new("chatcmpl-x".into(), "claude".into(), 1);
    let chunks: Vec<Value> = events
        .iter()
        .map(|e| serde_json::from_slice(&enc.encode(e)).unwrap())
        .collect();
    let reasoning: String = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["reasoning_content"].as_str())
        .collect();
    assert_eq!(reasoning, f.reasoning);
    // The signature reaches OpenAI clients as LiteLLM sends it, so they can send it back.
    let signed: Vec<&Value> = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["thinking_blocks"].get(0))
        .collect();
    assert_eq!(signed.len(), 1);
    assert_eq!(
        signed[0]["signature"].as_str(),
        Some(f.signatures[0].as_str())
    );
    assert!(f.signatures[0].starts_with("EqQBCgIYAhIM1gbcDa9GJwZA2b3hGgxBdjrkzLoky3dl1pkiMOYds"));
}

#[test]
fn signed_thinking_returns_to_anthropic_unchanged_and_nowhere_else() {
    // Turn 1 (non-streaming): Claude thinks, signs, calls a tool.
    let mut turn1 = fixture_json("anthropic/response_tool_use.json");
    turn1["content"].as_array_mut().unwrap().insert(
        0,
        json!({"type": "thinking", "thinking": "Need the weather.", "signature": "sig-abc"}),
    );
    let r = anthropic::decode_response(turn1.to_string().as_bytes()).unwrap();
    let out: Value = serde_json::from_slice(&openai::encode_response(&r, "claude")).unwrap();
    let message = &out["choices"][0]["message"];
    assert_eq!(message["reasoning_content"], "Need the weather.");
    assert_eq!(
        message["thinking_blocks"],
        json!([{"type": "thinking", "thinking": "Need the weather.", "signature": "sig-abc"}])
    );
    // Turn 2: the OpenAI client sends the assistant message back as it got it.
    let mut assistant = message.clone();
    assistant["content"] = json!(null);
    let req = openai_request(json!({"model": "claude", "messages": [
        {"role": "user", "content": "Weather in SF?"},
        assistant,
        {"role": "tool", "tool_call_id": "toolu_01A09q90qw90lq917835lq9", "content": "15 degrees"},
        // Reasoning another provider made has no signature: it must not be sent.
        {"role": "assistant", "content": "ok", "thinking_blocks": [{"type": "thinking", "thinking": "x"}]},
        {"role": "user", "content": "thanks"}]}));
    let body =
        serde_json::to_value(anthropic::encode_request(&req, "claude", false).unwrap()).unwrap();
    let blocks = &body["messages"][1]["content"];
    assert_eq!(
        blocks[0],
        json!({"type": "thinking", "thinking": "Need the weather.", "signature": "sig-abc"}),
        "thinking first, unchanged"
    );
    assert_eq!(blocks[1]["type"], "tool_use");
    assert_eq!(body["messages"][3]["content"], "ok");
    // OpenAI-compatible upstreams never see the field.
    let openai_body = serde_json::to_value(&req).unwrap();
    assert!(openai_body["messages"][1].get("thinking_blocks").is_none());
}

#[test]
fn signatures_and_redacted_thinking_reach_anthropic_clients() {
    let mut events = anthropic_events("anthropic/stream_thinking.sse").unwrap();
    events.insert(
        0,
        ChatEvent::RedactedReasoning("EmwKAhgBEgy3va3pzix".into()),
    );
    let out = anthropic_client_events(&events);
    let kinds: Vec<String> = out
        .iter()
        .map(|(k, v)| match k.as_str() {
            "content_block_start" => {
                format!("start:{}", v["content_block"]["type"].as_str().unwrap())
            }
            "content_block_delta" => format!("delta:{}", v["delta"]["type"].as_str().unwrap()),
            other => other.to_owned(),
        })
        .collect();
    let mut dedup = kinds.clone();
    dedup.dedup();
    assert_eq!(
        dedup,
        [
            "message_start",
            "start:redacted_thinking",
            "content_block_stop",
            "start:thinking",
            "delta:thinking_delta",
            "delta:signature_delta",
            "content_block_stop",
            "start:text",
            "delta:text_delta",
            "content_block_stop",
            "message_delta",
            "message_stop"
        ]
    );
}

#[test]
fn anthropic_error_event_mid_stream() {
    let mut d = anthropic::StreamDecoder::new();
    let mut text = String::new();
    let mut error = None;
    for ev in sse("anthropic/stream_error.sse") {
        match d.decode(&ev.data).unwrap() {
            Ok(events) => text.push_str(&fold(&events).text),
            Err(e) => error = Some(e),
        }
    }
    assert_eq!(text, "Hello");
    let e = error.unwrap();
    assert_eq!(
        (e.kind.as_str(), e.message.as_str()),
        ("overloaded_error", "Overloaded")
    );
    assert!(!d.finished());
}

// ------------------------------------------------- canonical → Anthropic client events

fn anthropic_client_events(events: &[ChatEvent]) -> Vec<(String, Value)> {
    let mut enc = anthropic::EventEncoder::new("chatcmpl-abc".into(), "gpt".into());
    let mut frames = Vec::new();
    for e in events {
        enc.encode(e, &mut frames);
    }
    enc.finish(&mut frames);
    let joined: Vec<u8> = frames.concat();
    let mut d = SseDecoder::new(1 << 20);
    let mut out = Vec::new();
    d.feed(&joined, &mut out).unwrap();
    out.into_iter()
        .map(|e| {
            let v: Value = serde_json::from_slice(&e.data).unwrap();
            assert_eq!(Some(v["type"].as_str().unwrap()), e.event.as_deref());
            (e.event.unwrap(), v)
        })
        .collect()
}

fn openai_events(path: &str) -> Vec<ChatEvent> {
    let mut d = openai::StreamDecoder::default();
    let mut out = Vec::new();
    for ev in sse(path) {
        if &ev.data[..] == b"[DONE]" {
            break;
        }
        match d.decode(&ev.data).unwrap() {
            openai::DecodedChunk::Events(e) => out.extend(e),
            openai::DecodedChunk::Error(e) => panic!("{e}"),
        }
    }
    out
}

#[test]
fn openai_parallel_tool_stream_becomes_anthropic_tool_use_blocks() {
    let events = openai_events("openai/stream_tool_calls.sse");
    let f = fold(&events);
    assert_eq!(f.tools.len(), 2);
    for (_, _, args) in &f.tools {
        serde_json::from_str::<Value>(args).unwrap();
    }
    let out = anthropic_client_events(&events);
    let kinds: Vec<&str> = out.iter().map(|(k, _)| k.as_str()).collect();
    let mut expected = vec!["message_start", "content_block_start"];
    expected.extend(std::iter::repeat_n("content_block_delta", 3));
    expected.extend(["content_block_stop", "content_block_start"]);
    expected.extend(std::iter::repeat_n("content_block_delta", 3));
    expected.extend(["content_block_stop", "message_delta", "message_stop"]);
    assert_eq!(kinds, expected);
    // Blocks are numbered from 0; each tool block starts with empty input and gets its
    // arguments only as input_json_delta, which concatenate to the original JSON.
    for (block, (id, name, args)) in f.tools.iter().enumerate() {
        let start = out
            .iter()
            .find(|(k, v)| k == "content_block_start" && v["index"] == block)
            .unwrap();
        assert_eq!(
            start.1["content_block"],
            json!({"type": "tool_use", "id": id, "name": name, "input": {}})
        );
        let joined: String = out
            .iter()
            .filter(|(k, v)| k == "content_block_delta" && v["index"] == block)
            .map(|(_, v)| v["delta"]["partial_json"].as_str().unwrap())
            .collect();
        assert_eq!(&joined, args);
    }
    let delta = &out[out.len() - 2].1;
    assert_eq!(delta["delta"]["stop_reason"], "tool_use");
    assert!(delta["usage"]["output_tokens"].as_u64().unwrap() > 0);
}

#[test]
fn anthropic_client_text_and_thinking_sequence() {
    let events = anthropic_events("anthropic/stream_thinking.sse").unwrap();
    let out = anthropic_client_events(&events);
    let starts: Vec<&Value> = out
        .iter()
        .filter(|(k, _)| k == "content_block_start")
        .map(|(_, v)| &v["content_block"]["type"])
        .collect();
    assert_eq!(starts, [&json!("thinking"), &json!("text")]);
    assert_eq!(out.last().unwrap().0, "message_stop");
    assert_eq!(out[out.len() - 2].1["delta"]["stop_reason"], "end_turn");
}

#[test]
fn openai_tool_only_reply_is_an_anthropic_tool_use_message() {
    let r = openai::decode_response(fixture("openai/response_tool_calls.json").into()).unwrap();
    assert!(r.message.content.is_none());
    let msg: Value = serde_json::from_slice(&anthropic::encode_response(&r, "gpt")).unwrap();
    assert_eq!(msg["type"], "message");
    assert_eq!(msg["stop_reason"], "tool_use");
    let content = msg["content"].as_array().unwrap();
    assert_eq!(content.len(), 1, "no empty text block: {content:?}");
    assert_eq!(content[0]["type"], "tool_use");
    assert!(content[0]["input"].is_object());
    assert!(msg["id"].as_str().unwrap().starts_with("msg_"));
}

// ---------------------------------------------------------------------------- Gemini

#[test]
fn openai_request_becomes_the_documented_gemini_request() {
    let expected = fixture_json("gemini/request_tools.json");
    let decl = &expected["tools"][0]["functionDeclarations"][0];
    let req = openai_request(json!({
        "model": "gemini",
        "stop": ["Title"], "temperature": 1.0, "max_tokens": 800, "top_p": 0.8, "top_k": 10,
        "tool_choice": "auto",
        "tools": [{"type": "function", "function": {
            "name": decl["name"], "description": decl["description"], "parameters": decl["parameters"]}}],
        "messages": [
            {"role": "system", "content": "You are a helpful weather assistant. Answer briefly."},
            {"role": "user", "content": "What's the temperature in London?"},
            {"role": "assistant", "content": null, "tool_calls": [{"id": "call_1", "type": "function",
                "function": {"name": "get_current_temperature", "arguments": "{\"location\":\"London\"}"}}]},
            {"role": "tool", "tool_call_id": "call_1",
             "content": "{\"location\":\"London\",\"temperature\":15,\"unit\":\"celsius\"}"}
        ]
    }));
    assert_eq!(gemini::encode_request(&req), expected);
}

#[test]
fn gemini_text_reply() {
    let r = gemini::decode_response(&fixture("gemini/response_text.json")).unwrap();
    assert!(
        r.message
            .content
            .as_deref()
            .unwrap()
            .contains("Mountain View, California")
    );
    assert_eq!(r.finish_reason, Some(FinishReason::Stop));
    let u = r.usage.unwrap();
    assert_eq!(
        (u.prompt_tokens, u.completion_tokens, u.total_tokens),
        (7, 22, 29)
    );
    assert_eq!(r.model, "gemini-2.0-flash");
}

#[test]
fn gemini_safety_block_is_a_content_filter_finish() {
    let r = gemini::decode_response(&fixture("gemini/response_safety.json")).unwrap();
    assert_eq!(r.finish_reason, Some(FinishReason::ContentFilter));
    assert!(r.message.content.is_none());
    let out: Value = serde_json::from_slice(&openai::encode_response(&r, "gemini")).unwrap();
    assert_eq!(out["choices"][0]["finish_reason"], "content_filter");
}

fn gemini_events(path: &str) -> Vec<ChatEvent> {
    let mut d = gemini::StreamDecoder::new();
    let mut out = Vec::new();
    for ev in sse(path) {
        out.extend(d.decode(&ev.data).unwrap().unwrap());
    }
    assert!(d.finished());
    out
}

#[test]
fn gemini_text_stream() {
    let f = fold(&gemini_events("gemini/stream_text.sse"));
    assert_eq!(f.text, "The capital of Wyoming is **Cheyenne**.\n");
    assert_eq!(f.finish, Some(FinishReason::Stop));
    let u = f.usage.unwrap();
    assert_eq!(
        (u.prompt_tokens, u.completion_tokens, u.total_tokens),
        (7, 10, 17)
    );
}

#[test]
fn gemini_function_call_stream_keeps_the_thought_signature_for_the_next_turn() {
    let f = fold(&gemini_events("gemini/stream_function_call.sse"));
    assert!(f.reasoning.starts_with("**Checking the Temperature**"));
    assert_eq!(f.finish, Some(FinishReason::ToolCalls));
    let u = f.usage.unwrap();
    assert_eq!(
        u.completion_tokens,
        6 + 68,
        "output = candidates + thoughts"
    );
    assert_eq!(u.reasoning_tokens, Some(68));
    let (id, name, args) = &f.tools[0];
    assert_eq!(name, "get_current_temperature");
    assert_eq!(
        serde_json::from_str::<Value>(args).unwrap(),
        json!({"location": "London"})
    );

    // The client sends the call back with its result: the signature goes with it.
    let req = openai_request(json!({"model": "g", "messages": [
        {"role": "user", "content": "What's the temperature in London?"},
        {"role": "assistant", "tool_calls": [{"id": id, "type": "function",
            "function": {"name": name, "arguments": args}}]},
        {"role": "tool", "tool_call_id": id, "content": "15"}]}));
    let body = gemini::encode_request(&req);
    let recorded = sse("gemini/stream_function_call.sse");
    let original: Value = serde_json::from_slice(&recorded[1].data).unwrap();
    let part = &body["contents"][1]["parts"][0];
    assert_eq!(
        part["thoughtSignature"],
        original["candidates"][0]["content"]["parts"][0]["thoughtSignature"]
    );
    assert_eq!(
        body["contents"][2]["parts"][0]["functionResponse"],
        json!({"name": "get_current_temperature", "response": {"result": 15}})
    );
}

#[test]
fn gemini_error_event_mid_stream() {
    let mut d = gemini::StreamDecoder::new();
    let e = d
        .decode(br#"{"error":{"code":503,"message":"The model is overloaded.","status":"UNAVAILABLE"}}"#)
        .unwrap()
        .unwrap_err();
    assert_eq!(e.status, Some(503));
    assert!(e.message.contains("overloaded"));
}

// ----------------------------------------------------------------- Azure, Ollama, OpenAI

#[test]
fn azure_reply_with_content_filter_results_decodes() {
    let r = openai::decode_response(fixture("azure/response_content_filter.json").into()).unwrap();
    assert!(
        r.message
            .content
            .unwrap()
            .starts_with("Writing your first Python API")
    );
    assert_eq!(r.usage.unwrap().reasoning_tokens, Some(448));
    assert!(
        matches!(r.raw, llm_proxy::types::Raw::OpenAi(_)),
        "OpenAI clients get Azure's body verbatim"
    );
}

#[test]
fn azure_stream_with_prompt_filter_and_annotation_chunks() {
    let f = fold(&openai_events("azure/stream_text.sse"));
    assert_eq!(f.text, "Color is a visual perception.");
    assert_eq!(f.finish, Some(FinishReason::Stop));
    assert!(f.tools.is_empty());
}

#[test]
fn azure_content_filter_error_is_recognized() {
    assert!(openai::is_content_filter_error(&fixture(
        "azure/error_content_filter.json"
    )));
    assert!(!openai::is_content_filter_error(&fixture(
        "anthropic/error_body.json"
    )));
}

#[test]
fn ollama_tags_list_model_names() {
    assert_eq!(
        openai::decode_ollama_tags(&fixture("ollama/tags.json")).unwrap(),
        ["codellama:13b", "llama3:latest"]
    );
}

#[test]
fn unicode_split_at_every_byte_decodes_the_same() {
    let text = String::from_utf8(fixture("anthropic/stream_text.sse"))
        .unwrap()
        .replace("\"Hello\"", "\"Héllo 🙂 漢字\"");
    let bytes = text.as_bytes();
    let cuts = bytes.iter().position(|b| *b == 0xF0).unwrap();
    for at in cuts.saturating_sub(8)..(cuts + 8).min(bytes.len()) {
        let mut d = SseDecoder::new(1 << 20);
        let mut events = Vec::new();
        d.feed(&bytes[..at], &mut events).unwrap();
        d.feed(&bytes[at..], &mut events).unwrap();
        d.finish(&mut events).unwrap();
        let mut a = anthropic::StreamDecoder::new();
        let decoded: Vec<ChatEvent> = events
            .iter()
            .flat_map(|e| a.decode(&e.data).unwrap().unwrap())
            .collect();
        assert_eq!(fold(&decoded).text, "Héllo 🙂 漢字 there!", "split at {at}");
    }
}

#[test]
fn empty_text_is_never_sent_to_anthropic_or_gemini() {
    let req = openai_request(json!({"model": "m", "messages": [
        {"role": "system", "content": ""},
        {"role": "user", "content": [{"type": "text", "text": ""}, {"type": "text", "text": "hi"}]},
        {"role": "assistant", "content": ""},
        {"role": "user", "content": ""},
        {"role": "user", "content": "again"}]}));
    let a = serde_json::to_value(anthropic::encode_request(&req, "m", false).unwrap()).unwrap();
    assert!(a.get("system").is_none());
    assert_eq!(
        a["messages"],
        json!([{"role": "user", "content": [{"type": "text", "text": "hi"}, {"type": "text", "text": "again"}]}])
    );
    let g = gemini::encode_request(&req);
    assert!(g.get("systemInstruction").is_none());
    assert_eq!(
        g["contents"],
        json!([{"role": "user", "parts": [{"text": "hi"}, {"text": "again"}]}])
    );
}

#[test]
fn openai_compatible_streams_without_index_or_with_repeated_ids() {
    // Gemini's OpenAI-compatible endpoint: no `index`, each call in its own chunk, and the
    // calls finished with `stop`.
    let chunks = [
        json!({"choices": [{"delta": {"tool_calls": [{"id": "a", "type": "function",
            "function": {"name": "f", "arguments": "{\"x\":1}"}}]}}]}),
        json!({"choices": [{"delta": {"tool_calls": [{"id": "b", "type": "function",
            "function": {"name": "g", "arguments": "{}"}}]}}]}),
        // A server that repeats the id on a later fragment of the same call.
        json!({"choices": [{"delta": {"tool_calls": [{"id": "b", "function": {"arguments": ""}}]}}]}),
        json!({"choices": [{"delta": {}, "finish_reason": "stop"}]}),
    ];
    let mut d = openai::StreamDecoder::default();
    let mut events = Vec::new();
    for c in chunks {
        match d.decode(c.to_string().as_bytes()).unwrap() {
            openai::DecodedChunk::Events(e) => events.extend(e),
            openai::DecodedChunk::Error(e) => panic!("{e}"),
        }
    }
    let f = fold(&events);
    assert_eq!(
        f.tools,
        [
            ("a".to_owned(), "f".to_owned(), "{\"x\":1}".to_owned()),
            ("b".to_owned(), "g".to_owned(), "{}".to_owned())
        ]
    );
    assert_eq!(f.finish, Some(FinishReason::ToolCalls));
}
