//! The OpenAI Chat Completions dialect, in both directions: decoding upstream replies and
//! stream chunks into canonical types, and encoding canonical replies and events for clients.

use bytes::Bytes;
use serde::{Deserialize, Serialize};

mod summary;
pub use summary::decode_response_summary;

use crate::types::{
    AssistantMessage, ChatEvent, ChatResponse, FinishReason, Raw, ThinkingBlock, ToolCall, Usage,
};

// ---------------------------------------------------------------- decoding (upstream → us)

#[derive(Deserialize)]
struct WireUsage {
    #[serde(default)]
    prompt_tokens: u64,
    #[serde(default)]
    completion_tokens: u64,
    #[serde(default)]
    total_tokens: u64,
    #[serde(default)]
    prompt_tokens_details: Option<PromptDetails>,
    #[serde(default)]
    completion_tokens_details: Option<CompletionDetails>,
}

#[derive(Deserialize)]
struct PromptDetails {
    #[serde(default)]
    cached_tokens: Option<u64>,
}

#[derive(Deserialize)]
struct CompletionDetails {
    #[serde(default)]
    reasoning_tokens: Option<u64>,
}

impl From<WireUsage> for Usage {
    fn from(u: WireUsage) -> Self {
        let total = if u.total_tokens == 0 {
            u.prompt_tokens + u.completion_tokens
        } else {
            u.total_tokens
        };
        Usage {
            prompt_tokens: u.prompt_tokens,
            completion_tokens: u.completion_tokens,
            total_tokens: total,
            cached_tokens: u.prompt_tokens_details.and_then(|d| d.cached_tokens),
            cache_creation_tokens: None,
            reasoning_tokens: u.completion_tokens_details.and_then(|d| d.reasoning_tokens),
        }
    }
}

#[derive(Deserialize)]
struct WireCompletion {
    #[serde(default)]
    id: String,
    #[serde(default)]
    model: String,
    #[serde(default)]
    created: u64,
    #[serde(default)]
    choices: Vec<WireChoice>,
    #[serde(default)]
    usage: Option<WireUsage>,
}

#[derive(Deserialize)]
struct WireChoice {
    #[serde(default)]
    message: Option<WireMessage>,
    #[serde(default)]
    finish_reason: Option<String>,
}

#[derive(Deserialize)]
struct WireMessage {
    #[serde(default)]
    content: Option<String>,
    /// DeepSeek and older vLLM say `reasoning_content`; newer vLLM says `reasoning`.
    #[serde(default, alias = "reasoning")]
    reasoning_content: Option<String>,
    #[serde(default)]
    tool_calls: Option<Vec<ToolCall>>,
    /// LiteLLM-style signed reasoning blocks (e.g. a LiteLLM proxy in front of Claude).
    #[serde(default)]
    thinking_blocks: Option<Vec<ThinkingBlock>>,
}

/// Decodes a complete (non-streaming) reply. The bytes are kept for verbatim passthrough.
pub fn decode_response(body: Bytes) -> Result<ChatResponse, serde_json::Error> {
    let wire: WireCompletion = super::from_json(&body)?;
    let first = wire.choices.into_iter().next();
    let (message, finish_reason) = match first {
        Some(c) => {
            let m = c.message.map(|m| AssistantMessage {
                content: m.content,
                reasoning: m.reasoning_content,
                thinking_blocks: m.thinking_blocks.unwrap_or_default(),
                tool_calls: m.tool_calls.unwrap_or_default(),
            });
            (
                m.unwrap_or_default(),
                c.finish_reason.as_deref().map(FinishReason::from_openai),
            )
        }
        None => (AssistantMessage::default(), None),
    };
    Ok(ChatResponse {
        id: wire.id,
        model: wire.model,
        created: wire.created,
        message,
        finish_reason,
        usage: wire.usage.map(Usage::from),
        raw: Raw::OpenAi(body),
    })
}

#[derive(Deserialize)]
struct WireChunk<'a> {
    #[serde(default, borrow)]
    choices: Vec<WireChunkChoice<'a>>,
    #[serde(default)]
    usage: Option<WireUsage>,
    #[serde(default)]
    error: Option<serde_json::Value>,
}

#[derive(Deserialize)]
struct WireChunkChoice<'a> {
    #[serde(default)]
    index: Option<u32>,
    #[serde(default, borrow)]
    delta: Option<WireDelta<'a>>,
    #[serde(default, borrow)]
    finish_reason: Option<std::borrow::Cow<'a, str>>,
}

#[derive(Deserialize)]
struct WireDelta<'a> {
    #[serde(default, borrow)]
    content: Option<std::borrow::Cow<'a, str>>,
    #[serde(default, borrow, alias = "reasoning")]
    reasoning_content: Option<std::borrow::Cow<'a, str>>,
    #[serde(default, borrow)]
    tool_calls: Option<Vec<WireToolCallDelta<'a>>>,
}

#[derive(Deserialize)]
struct WireToolCallDelta<'a> {
    #[serde(default)]
    index: Option<u32>,
    #[serde(default, borrow)]
    id: Option<std::borrow::Cow<'a, str>>,
    #[serde(default, borrow)]
    function: Option<WireFunctionDelta<'a>>,
}

#[derive(Deserialize)]
struct WireFunctionDelta<'a> {
    #[serde(default, borrow)]
    name: Option<std::borrow::Cow<'a, str>>,
    #[serde(default, borrow)]
    arguments: Option<std::borrow::Cow<'a, str>>,
}

/// What one upstream chunk means.
#[derive(Debug)]
pub enum DecodedChunk {
    Events(Vec<ChatEvent>),
    /// The upstream reported an error mid-stream (`data: {"error": …}`); the message text.
    Error(String),
}

/// How an upstream names a tool call across fragments.
#[derive(Debug, PartialEq)]
enum CallKey {
    Index(u32),
    /// Servers that omit `index` (Gemini's OpenAI-compatible endpoint) give an id instead.
    Id(String),
}

/// Decodes an OpenAI-dialect stream chunk by chunk. It keeps what fragments need from one
/// another: which tool calls were started (a start is announced once, even when a server
/// repeats the id on every fragment, and indexes count from 0 in start order whatever the
/// upstream numbers them), and whether tools were called (a server that finishes a tool
/// call with `stop` reports `tool_calls`). Only choice 0 becomes canonical events; the raw
/// chunk still carries every choice for passthrough.
#[derive(Debug, Default)]
pub struct StreamDecoder {
    /// Position = our index.
    calls: Vec<CallKey>,
}

impl StreamDecoder {
    /// Our index for a fragment, and whether it starts a call.
    fn call(&mut self, index: Option<u32>, id: Option<&str>) -> (u32, bool) {
        let key = match (index, id) {
            (Some(i), _) => CallKey::Index(i),
            (None, Some(id)) => CallKey::Id(id.to_owned()),
            // Neither: it continues the latest call.
            (None, None) => match self.calls.len().checked_sub(1) {
                Some(last) => return (last as u32, false),
                None => CallKey::Index(0),
            },
        };
        match self.calls.iter().position(|k| *k == key) {
            Some(i) => (i as u32, false),
            None => {
                self.calls.push(key);
                ((self.calls.len() - 1) as u32, true)
            }
        }
    }

    pub fn decode(&mut self, data: &[u8]) -> Result<DecodedChunk, serde_json::Error> {
        let chunk: WireChunk<'_> = super::from_json(data)?;
        if let Some(err) = chunk.error {
            return Ok(DecodedChunk::Error(error_message_from_value(&err)));
        }
        let mut events = Vec::new();
        // With `n` > 1 the choices of several replies interleave; only the first reply
        // becomes canonical events (the raw chunk still carries all of them).
        let first = chunk
            .choices
            .into_iter()
            .find(|c| c.index.unwrap_or(0) == 0);
        if let Some(choice) = first {
            if let Some(delta) = choice.delta {
                if let Some(r) = delta.reasoning_content.filter(|r| !r.is_empty()) {
                    events.push(ChatEvent::ReasoningDelta(r.into_owned()));
                }
                if let Some(c) = delta.content.filter(|c| !c.is_empty()) {
                    events.push(ChatEvent::TextDelta(c.into_owned()));
                }
                for tc in delta.tool_calls.into_iter().flatten() {
                    let (name, args) = match tc.function {
                        Some(f) => (f.name, f.arguments),
                        None => (None, None),
                    };
                    let (index, new) = self.call(tc.index, tc.id.as_deref());
                    if new {
                        events.push(ChatEvent::ToolCallStart {
                            index,
                            id: tc.id.map(|s| s.into_owned()).unwrap_or_default(),
                            name: name.map(|s| s.into_owned()).unwrap_or_default(),
                        });
                    }
                    if let Some(a) = args.filter(|a| !a.is_empty()) {
                        events.push(ChatEvent::ToolCallArgs {
                            index,
                            fragment: a.into_owned(),
                        });
                    }
                }
            }
            if let Some(fr) = choice.finish_reason {
                let mut reason = FinishReason::from_openai(&fr);
                if reason == FinishReason::Stop && !self.calls.is_empty() {
                    reason = FinishReason::ToolCalls;
                }
                events.push(ChatEvent::Finish(reason));
            }
        }
        if let Some(u) = chunk.usage {
            events.push(ChatEvent::Usage(u.into()));
        }
        Ok(DecodedChunk::Events(events))
    }
}

#[derive(Deserialize)]
struct ModelList {
    data: Vec<ModelEntry>,
}

#[derive(Deserialize)]
struct ModelEntry {
    id: String,
}

/// The ids of an OpenAI `GET /models` list.
pub fn decode_model_list(body: &[u8]) -> Result<Vec<String>, serde_json::Error> {
    let list: ModelList = serde_json::from_slice(body)?;
    Ok(list.data.into_iter().map(|e| e.id).collect())
}

#[derive(Deserialize)]
struct OllamaTags {
    models: Vec<OllamaModel>,
}

#[derive(Deserialize)]
struct OllamaModel {
    name: String,
}

/// The model names of Ollama's native `GET /api/tags` (e.g. `llama3:latest`), which its
/// OpenAI-compatible endpoint accepts as `model`.
pub fn decode_ollama_tags(body: &[u8]) -> Result<Vec<String>, serde_json::Error> {
    let tags: OllamaTags = serde_json::from_slice(body)?;
    Ok(tags.models.into_iter().map(|m| m.name).collect())
}

/// Whether a raw chunk is the usage-only chunk (`choices: []` + `usage`), which a client
/// that did not ask for `include_usage` must not see.
pub fn is_usage_only_chunk(events: &[ChatEvent]) -> bool {
    !events.is_empty() && events.iter().all(|e| matches!(e, ChatEvent::Usage(_)))
}

fn error_message_from_value(v: &serde_json::Value) -> String {
    v.get("message")
        .and_then(|m| m.as_str())
        .map(str::to_owned)
        .or_else(|| v.as_str().map(str::to_owned))
        .unwrap_or_else(|| v.to_string())
}

/// Whether an error body is a content-filter refusal: Azure OpenAI's `content_filter` code
/// (with `innererror.code: ResponsibleAIPolicyViolation`), or OpenAI's
/// `content_policy_violation`.
pub fn is_content_filter_error(body: &[u8]) -> bool {
    let Ok(v) = serde_json::from_slice::<serde_json::Value>(body) else {
        return false;
    };
    let err = &v["error"];
    matches!(
        err["code"].as_str(),
        Some("content_filter" | "content_policy_violation")
    ) || err["innererror"]["code"] == "ResponsibleAIPolicyViolation"
}

/// Pulls a human message out of an upstream error body (`{"error":{"message":…}}`, or
/// `{"message":…}`, or plain text), cut to a sane length.
pub fn error_message_from_body(body: &[u8]) -> String {
    let msg = match serde_json::from_slice::<serde_json::Value>(body) {
        Ok(v) => match v.get("error") {
            Some(e) => error_message_from_value(e),
            None => v
                .get("message")
                .and_then(|m| m.as_str())
                .map(str::to_owned)
                .unwrap_or_else(|| v.to_string()),
        },
        Err(_) => String::from_utf8_lossy(body).into_owned(),
    };
    let msg = msg.trim();
    match msg.char_indices().nth(500) {
        Some((i, _)) => format!("{}…", &msg[..i]),
        None => msg.to_owned(),
    }
}

// ---------------------------------------------------------------- encoding (us → client)

#[derive(Serialize)]
struct OutUsage {
    prompt_tokens: u64,
    completion_tokens: u64,
    total_tokens: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    prompt_tokens_details: Option<OutPromptDetails>,
    #[serde(skip_serializing_if = "Option::is_none")]
    completion_tokens_details: Option<OutCompletionDetails>,
}

#[derive(Serialize)]
struct OutPromptDetails {
    cached_tokens: u64,
}

#[derive(Serialize)]
struct OutCompletionDetails {
    reasoning_tokens: u64,
}

impl From<&Usage> for OutUsage {
    fn from(u: &Usage) -> Self {
        OutUsage {
            prompt_tokens: u.prompt_tokens,
            completion_tokens: u.completion_tokens,
            total_tokens: u.total_tokens,
            prompt_tokens_details: u
                .cached_tokens
                .map(|c| OutPromptDetails { cached_tokens: c }),
            completion_tokens_details: u.reasoning_tokens.map(|r| OutCompletionDetails {
                reasoning_tokens: r,
            }),
        }
    }
}

#[derive(Serialize)]
struct OutMessage<'a> {
    role: &'static str,
    content: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    reasoning_content: Option<&'a str>,
    #[serde(skip_serializing_if = "<[ToolCall]>::is_empty")]
    tool_calls: &'a [ToolCall],
    /// Signed reasoning to send back with this turn (LiteLLM's field name), so a client can
    /// continue a Claude tool-use conversation with thinking on.
    #[serde(skip_serializing_if = "<[ThinkingBlock]>::is_empty")]
    thinking_blocks: &'a [ThinkingBlock],
}

#[derive(Serialize)]
struct OutChoice<'a> {
    index: u32,
    message: OutMessage<'a>,
    finish_reason: Option<&'static str>,
    logprobs: Option<()>,
}

#[derive(Serialize)]
struct OutCompletion<'a> {
    id: &'a str,
    object: &'static str,
    created: u64,
    model: &'a str,
    choices: [OutChoice<'a>; 1],
    #[serde(skip_serializing_if = "Option::is_none")]
    usage: Option<OutUsage>,
}

/// The blocks worth sending back: none unless the provider signed them (unsigned reasoning
/// is already in `reasoning_content`).
fn signed_blocks(blocks: &[ThinkingBlock]) -> &[ThinkingBlock] {
    if blocks.iter().any(ThinkingBlock::is_signed) {
        blocks
    } else {
        &[]
    }
}

/// Encodes a canonical reply as an OpenAI `chat.completion` body. `model` is the name the
/// client asked for.
pub fn encode_response(resp: &ChatResponse, model: &str) -> Vec<u8> {
    let out = OutCompletion {
        id: &resp.id,
        object: "chat.completion",
        created: resp.created,
        model,
        choices: [OutChoice {
            index: 0,
            message: OutMessage {
                role: "assistant",
                content: resp.message.content.as_deref(),
                reasoning_content: resp.message.reasoning.as_deref(),
                tool_calls: &resp.message.tool_calls,
                thinking_blocks: signed_blocks(&resp.message.thinking_blocks),
            },
            finish_reason: resp.finish_reason.map(FinishReason::as_str),
            logprobs: None,
        }],
        usage: resp.usage.as_ref().map(OutUsage::from),
    };
    serde_json::to_vec(&out).unwrap_or_default()
}

#[derive(Serialize)]
struct OutChunk<'a> {
    id: &'a str,
    object: &'static str,
    created: u64,
    model: &'a str,
    choices: &'a [OutChunkChoice<'a>],
    #[serde(skip_serializing_if = "Option::is_none")]
    usage: Option<OutUsage>,
}

#[derive(Serialize)]
struct OutChunkChoice<'a> {
    index: u32,
    delta: OutDelta<'a>,
    finish_reason: Option<&'static str>,
    logprobs: Option<()>,
}

#[derive(Serialize, Default)]
struct OutDelta<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    role: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    content: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    reasoning_content: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tool_calls: Option<[OutToolCallDelta<'a>; 1]>,
    #[serde(skip_serializing_if = "Option::is_none")]
    thinking_blocks: Option<[ThinkingBlock; 1]>,
}

#[derive(Serialize)]
struct OutToolCallDelta<'a> {
    index: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    id: Option<&'a str>,
    #[serde(rename = "type", skip_serializing_if = "Option::is_none")]
    kind: Option<&'static str>,
    function: OutFunctionDelta<'a>,
}

#[derive(Serialize)]
struct OutFunctionDelta<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    name: Option<&'a str>,
    arguments: &'a str,
}

/// Turns canonical events into OpenAI `chat.completion.chunk` payloads for one stream.
#[derive(Debug)]
pub struct ChunkEncoder {
    id: String,
    model: String,
    created: u64,
    role_sent: bool,
}

impl ChunkEncoder {
    pub fn new(id: String, model: String, created: u64) -> Self {
        Self {
            id,
            model,
            created,
            role_sent: false,
        }
    }

    /// The JSON payload (without SSE framing) for one event.
    pub fn encode(&mut self, event: &ChatEvent) -> Vec<u8> {
        let mut delta = OutDelta::default();
        let mut finish = None;
        let mut usage = None;
        match event {
            ChatEvent::TextDelta(t) => delta.content = Some(t),
            ChatEvent::ReasoningDelta(t) => delta.reasoning_content = Some(t),
            // As LiteLLM streams them: the signature in a thinking block of its own.
            ChatEvent::ReasoningSignature(sig) => {
                delta.thinking_blocks = Some([ThinkingBlock::Thinking {
                    thinking: String::new(),
                    signature: Some(sig.clone()),
                }])
            }
            ChatEvent::RedactedReasoning(data) => {
                delta.thinking_blocks =
                    Some([ThinkingBlock::RedactedThinking { data: data.clone() }])
            }
            ChatEvent::ToolCallStart { index, id, name } => {
                delta.tool_calls = Some([OutToolCallDelta {
                    index: *index,
                    id: Some(id),
                    kind: Some("function"),
                    function: OutFunctionDelta {
                        name: Some(name),
                        arguments: "",
                    },
                }])
            }
            ChatEvent::ToolCallArgs { index, fragment } => {
                delta.tool_calls = Some([OutToolCallDelta {
                    index: *index,
                    id: None,
                    kind: None,
                    function: OutFunctionDelta {
                        name: None,
                        arguments: fragment,
                    },
                }])
            }
            ChatEvent::Finish(f) => finish = Some(f.as_str()),
            ChatEvent::Usage(u) => usage = Some(OutUsage::from(u)),
        }
        let choices: &[OutChunkChoice<'_>] = if usage.is_some() {
            &[]
        } else {
            if !self.role_sent {
                delta.role = Some("assistant");
                self.role_sent = true;
            }
            &[OutChunkChoice {
                index: 0,
                delta,
                finish_reason: finish,
                logprobs: None,
            }][..]
        };
        let chunk = OutChunk {
            id: &self.id,
            object: "chat.completion.chunk",
            created: self.created,
            model: &self.model,
            choices,
            usage,
        };
        serde_json::to_vec(&chunk).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The summary a verbatim reply gets has the usage and finish reason the full decode
    /// finds, keeps the body byte for byte, and refuses what the full decode refuses as
    /// JSON.
    #[test]
    fn summary_agrees_with_the_full_decode() {
        let body = include_str!("../../tests/fixtures/openai/response_tool_calls.json");
        let full = decode_response(Bytes::from_static(body.as_bytes())).unwrap();
        let summary = decode_response_summary(Bytes::from_static(body.as_bytes())).unwrap();
        assert!(full.usage.is_some() && full.finish_reason.is_some());
        assert_eq!(summary.usage, full.usage);
        assert_eq!(summary.finish_reason, full.finish_reason);
        assert!(matches!(&summary.raw, Raw::OpenAi(b) if b == body.as_bytes()));
        let text = br#"{"id":"x","choices":[{"index":0,"message":{"role":"assistant","content":"hi \"there\""},"finish_reason":"length"}],"usage":{"prompt_tokens":3,"completion_tokens":2,"total_tokens":5,"prompt_tokens_details":{"cached_tokens":1}}}"#;
        let full = decode_response(Bytes::from_static(text)).unwrap();
        let summary = decode_response_summary(Bytes::from_static(text)).unwrap();
        assert_eq!(summary.usage, full.usage);
        assert_eq!(summary.finish_reason, Some(FinishReason::Length));
        // Fields passed on unread are not checked (see decode_response_summary).
        let odd = br#"{"id":null,"created":1.5,"choices":[{"message":{"content":7},"finish_reason":"stop"}]}"#;
        assert!(decode_response(Bytes::from_static(odd)).is_err());
        let summary = decode_response_summary(Bytes::from_static(odd)).unwrap();
        assert_eq!(summary.finish_reason, Some(FinishReason::Stop));
        for bad in [
            &b"{"[..],
            b"[1,2]",
            b"{\"choices\": 3}",
            b"{\"usage\": \"many\"}",
        ] {
            assert!(decode_response(Bytes::from_static(bad)).is_err());
            assert!(decode_response_summary(Bytes::from_static(bad)).is_err());
        }
    }

    #[test]
    fn decodes_text_tool_and_usage_chunks() {
        // One decoder for the stream: fragments refer to calls started before.
        let mut d = StreamDecoder::default();
        let mut events = |data: &str| match d.decode(data.as_bytes()).unwrap() {
            DecodedChunk::Events(e) => e,
            DecodedChunk::Error(m) => panic!("unexpected error {m}"),
        };
        assert_eq!(
            events(
                r#"{"id":"c","object":"chat.completion.chunk","created":1,"model":"m","choices":[{"index":0,"delta":{"role":"assistant","content":"Hi"},"logprobs":null,"finish_reason":null}],"usage":null}"#
            ),
            vec![ChatEvent::TextDelta("Hi".into())]
        );
        assert_eq!(
            events(
                r#"{"choices":[{"index":0,"delta":{"tool_calls":[{"index":1,"id":"call_1","type":"function","function":{"name":"f","arguments":""}}]},"finish_reason":null}]}"#
            ),
            // Our indexes count calls from 0 in start order, whatever the upstream's are.
            vec![ChatEvent::ToolCallStart {
                index: 0,
                id: "call_1".into(),
                name: "f".into()
            }]
        );
        assert_eq!(
            events(
                r#"{"choices":[{"index":0,"delta":{"tool_calls":[{"index":1,"function":{"arguments":"{\"a\":"}}]}}]}"#
            ),
            vec![ChatEvent::ToolCallArgs {
                index: 0,
                fragment: "{\"a\":".into()
            }]
        );
        let u = events(
            r#"{"choices":[],"usage":{"prompt_tokens":3,"completion_tokens":5,"total_tokens":8,"prompt_tokens_details":{"cached_tokens":1}}}"#,
        );
        assert!(is_usage_only_chunk(&u));
        assert_eq!(
            u,
            vec![ChatEvent::Usage(Usage {
                prompt_tokens: 3,
                completion_tokens: 5,
                total_tokens: 8,
                cached_tokens: Some(1),
                cache_creation_tokens: None,
                reasoning_tokens: None
            })]
        );
        // This stream called a tool, so its `stop` is reported as `tool_calls`.
        assert_eq!(
            events(r#"{"choices":[{"delta":{"reasoning":"think"},"finish_reason":"stop"}]}"#),
            vec![
                ChatEvent::ReasoningDelta("think".into()),
                ChatEvent::Finish(FinishReason::ToolCalls)
            ]
        );
    }

    #[test]
    fn only_the_first_choice_becomes_events() {
        let mut d = StreamDecoder::default();
        let DecodedChunk::Events(e) = d
            .decode(br#"{"choices":[{"index":1,"delta":{"content":"B"}},{"index":0,"delta":{"content":"A"}}]}"#)
            .unwrap()
        else {
            panic!("events expected")
        };
        assert_eq!(e, vec![ChatEvent::TextDelta("A".into())]);
    }

    #[test]
    fn decodes_mid_stream_error() {
        let d = StreamDecoder::default()
            .decode(br#"{"error":{"message":"overloaded","type":"server_error"}}"#)
            .unwrap();
        assert!(matches!(d, DecodedChunk::Error(m) if m == "overloaded"));
    }

    #[test]
    fn encoder_round_trips_through_decoder() {
        let mut enc = ChunkEncoder::new("id".into(), "m".into(), 5);
        let evs = [
            ChatEvent::TextDelta("a\"b".into()),
            ChatEvent::ToolCallStart {
                index: 0,
                id: "call_x".into(),
                name: "get".into(),
            },
            ChatEvent::ToolCallArgs {
                index: 0,
                fragment: "{}".into(),
            },
            ChatEvent::Finish(FinishReason::ToolCalls),
            ChatEvent::Usage(Usage {
                prompt_tokens: 1,
                completion_tokens: 2,
                total_tokens: 3,
                ..Usage::default()
            }),
        ];
        let mut dec = StreamDecoder::default();
        for (i, ev) in evs.iter().enumerate() {
            let bytes = enc.encode(ev);
            let v: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
            assert_eq!(v["object"], "chat.completion.chunk");
            if i == 0 {
                assert_eq!(v["choices"][0]["delta"]["role"], "assistant");
            }
            let decoded = match dec.decode(&bytes).unwrap() {
                DecodedChunk::Events(e) => e,
                DecodedChunk::Error(m) => panic!("unexpected error {m}"),
            };
            assert_eq!(decoded, vec![ev.clone()]);
        }
    }

    #[test]
    fn error_messages_are_extracted_and_bounded() {
        assert_eq!(
            error_message_from_body(br#"{"error":{"message":"bad model"}}"#),
            "bad model"
        );
        assert_eq!(error_message_from_body(b"plain failure\n"), "plain failure");
        let long = "x".repeat(2000);
        assert!(error_message_from_body(long.as_bytes()).chars().count() <= 501);
    }
}
