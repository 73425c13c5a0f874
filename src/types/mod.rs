//! Canonical types: the only language the router, limits and telemetry speak.
//!
//! Their serde shape is the OpenAI Chat Completions shape, because that is the dialect most
//! clients and most upstreams speak; other dialects convert to and from these types in
//! [`crate::wire`]. Fields a dialect does not model (e.g. OpenAI `seed`, `logprobs`,
//! `response_format`) are kept verbatim in `extra` and passed through untouched.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

mod decode;

/// An Anthropic-dialect client's request as it arrived, for Anthropic upstreams.
#[derive(Debug, Clone, PartialEq)]
pub struct AnthropicRequest {
    pub body: Map<String, Value>,
    /// The client's `anthropic-beta` header (feature flags such as extended cache TTLs).
    pub beta: Option<String>,
}

/// A chat request after decoding, before routing. (`Deserialize` is hand-written, in
/// `types/decode.rs`, for speed; the serde attributes here describe the same shape for
/// serializing and for the OpenAPI schema.)
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct ChatRequest {
    #[serde(default)]
    pub model: String,
    pub messages: Vec<Message>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stream: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub temperature: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub top_p: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_tokens: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_completion_tokens: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub n: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stop: Option<Stop>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tools: Option<Vec<Tool>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_choice: Option<ToolChoice>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stream_options: Option<StreamOptions>,
    /// Every other field, passed through verbatim to upstreams that understand it.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
    /// An Anthropic-dialect client's request exactly as sent. An Anthropic upstream gets it
    /// as it is (with its own model id): cache_control, server tools, documents, citations
    /// and whatever Anthropic adds next survive. Other upstreams get the translation.
    #[serde(skip)]
    pub anthropic_raw: Option<std::sync::Arc<AnthropicRequest>>,
    /// The W3C `traceparent` upstreams get (the caller's trace, continued by the proxy).
    #[serde(skip)]
    pub traceparent: Option<String>,
    /// The client gets an OpenAI upstream's reply verbatim and nothing reads its message
    /// (an OpenAI-dialect client, no content logging): an OpenAI upstream's reply is then
    /// read only for usage and finish reason, and the response's `message`, `id` and
    /// `model` stay empty. Other upstreams' replies are decoded whole, as ever.
    #[serde(skip)]
    pub openai_reply_verbatim: bool,
}

impl ChatRequest {
    pub fn is_stream(&self) -> bool {
        self.stream.unwrap_or(false)
    }

    /// Whether the client asked for the final usage chunk of a stream.
    pub fn wants_stream_usage(&self) -> bool {
        self.stream_options
            .as_ref()
            .and_then(|o| o.include_usage)
            .unwrap_or(false)
    }

    /// The completion budget the client gave, under either of OpenAI's two names.
    pub fn max_output_tokens(&self) -> Option<u64> {
        self.max_completion_tokens.or(self.max_tokens)
    }

    pub fn has_tools(&self) -> bool {
        self.tools.as_ref().is_some_and(|t| !t.is_empty())
            && !matches!(&self.tool_choice, Some(ToolChoice::Mode(m)) if m == "none")
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(untagged)]
pub enum Stop {
    One(String),
    Many(Vec<String>),
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, utoipa::ToSchema)]
pub struct StreamOptions {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub include_usage: Option<bool>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    System,
    Developer,
    User,
    Assistant,
    Tool,
    Function,
}

/// One message of a chat (`Deserialize` is hand-written, in `types/decode.rs`).
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Message {
    pub role: Role,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content: Option<Content>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_calls: Option<Vec<ToolCall>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_call_id: Option<String>,
    /// An assistant turn's reasoning blocks, to replay unchanged to the provider that made
    /// them (Anthropic refuses a tool-use turn whose signed thinking is missing). OpenAI
    /// clients send them back as LiteLLM does; never sent to OpenAI-compatible upstreams.
    #[serde(default, skip_serializing)]
    pub thinking_blocks: Option<Vec<ThinkingBlock>>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// A reasoning block as Anthropic returns it, kept whole so it can be sent back: its
/// text with its signature, or a redacted (encrypted) block. The shape is Anthropic's and
/// LiteLLM's `thinking_blocks`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ThinkingBlock {
    Thinking {
        thinking: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        signature: Option<String>,
    },
    RedactedThinking {
        data: String,
    },
}

impl ThinkingBlock {
    /// Whether the provider that made it can verify it (Anthropic drops nothing it
    /// signed, and refuses unsigned thinking).
    pub fn is_signed(&self) -> bool {
        match self {
            ThinkingBlock::Thinking { signature, .. } => {
                signature.as_deref().is_some_and(|s| !s.is_empty())
            }
            ThinkingBlock::RedactedThinking { .. } => true,
        }
    }
}

impl Message {
    /// All text of the message, parts joined; images and other parts are skipped.
    pub fn text(&self) -> String {
        match &self.content {
            None => String::new(),
            Some(Content::Text(t)) => t.clone(),
            Some(Content::Parts(parts)) => parts
                .iter()
                .filter_map(|p| match p {
                    ContentPart::Text { text } => Some(text.as_str()),
                    _ => None,
                })
                .collect::<Vec<_>>()
                .join("\n"),
        }
    }
}

/// A message's content: text, or parts (`Deserialize` is hand-written, in
/// `types/decode.rs`).
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
#[serde(untagged)]
pub enum Content {
    Text(String),
    Parts(Vec<ContentPart>),
}

#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(tag = "type")]
pub enum ContentPart {
    #[serde(rename = "text")]
    Text { text: String },
    #[serde(rename = "image_url")]
    ImageUrl { image_url: ImageUrl },
    /// Audio, files, refusals and whatever OpenAI adds next: kept as sent.
    #[serde(untagged)]
    Other(Map<String, Value>),
}

#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ImageUrl {
    pub url: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Tool {
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub function: Option<FunctionDef>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct FunctionDef {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parameters: Option<Value>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(untagged)]
pub enum ToolChoice {
    /// `none`, `auto` or `required`.
    Mode(String),
    Named(Map<String, Value>),
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ToolCall {
    pub id: String,
    #[serde(rename = "type", default = "function_type")]
    pub kind: String,
    pub function: FunctionCall,
}

fn function_type() -> String {
    "function".to_owned()
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct FunctionCall {
    pub name: String,
    #[serde(default)]
    pub arguments: String,
}

/// Why generation stopped, normalized across providers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FinishReason {
    Stop,
    Length,
    ToolCalls,
    ContentFilter,
    /// A reason we do not model; reported as `stop` to clients, which is what it is.
    Other,
}

impl FinishReason {
    pub fn as_str(self) -> &'static str {
        match self {
            FinishReason::Stop | FinishReason::Other => "stop",
            FinishReason::Length => "length",
            FinishReason::ToolCalls => "tool_calls",
            FinishReason::ContentFilter => "content_filter",
        }
    }

    pub fn from_openai(s: &str) -> Self {
        match s {
            "stop" => FinishReason::Stop,
            "length" => FinishReason::Length,
            "tool_calls" | "function_call" => FinishReason::ToolCalls,
            "content_filter" => FinishReason::ContentFilter,
            _ => FinishReason::Other,
        }
    }
}

/// Token counts of one response. Optional details stay `None` when the upstream did not
/// report them, so "zero" and "unknown" are never confused.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Usage {
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    pub total_tokens: u64,
    /// Prompt tokens read from the provider's cache (included in `prompt_tokens`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cached_tokens: Option<u64>,
    /// Prompt tokens written to the provider's cache (Anthropic; included in `prompt_tokens`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache_creation_tokens: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reasoning_tokens: Option<u64>,
}

/// The assistant's reply, complete.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct AssistantMessage {
    pub content: Option<String>,
    pub reasoning: Option<String>,
    /// The reasoning as blocks with their signatures, when the provider signs them.
    pub thinking_blocks: Vec<ThinkingBlock>,
    pub tool_calls: Vec<ToolCall>,
}

impl AssistantMessage {
    /// Appends reasoning text, to the open (unsigned) thinking block or a new one.
    pub fn push_reasoning(&mut self, text: &str) {
        self.reasoning
            .get_or_insert_with(String::new)
            .push_str(text);
        match self.thinking_blocks.last_mut() {
            Some(ThinkingBlock::Thinking {
                thinking,
                signature: None,
            }) => thinking.push_str(text),
            _ => self.thinking_blocks.push(ThinkingBlock::Thinking {
                thinking: text.to_owned(),
                signature: None,
            }),
        }
    }

    /// Signs the last thinking block (the signature arrives after its text).
    pub fn sign_reasoning(&mut self, sig: &str) {
        match self.thinking_blocks.last_mut() {
            Some(ThinkingBlock::Thinking { signature, .. }) if signature.is_none() => {
                *signature = Some(sig.to_owned())
            }
            _ => self.thinking_blocks.push(ThinkingBlock::Thinking {
                thinking: String::new(),
                signature: Some(sig.to_owned()),
            }),
        }
    }
}

/// A complete reply assembled from stream events, for providers whose replies have the
/// stream's shape (the mock, Gemini) and for endpoints that fold a stream.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Collected {
    pub message: AssistantMessage,
    pub finish: Option<FinishReason>,
    pub usage: Option<Usage>,
}

impl Collected {
    pub fn push(&mut self, event: ChatEvent) {
        let m = &mut self.message;
        match event {
            ChatEvent::TextDelta(t) => m.content.get_or_insert_with(String::new).push_str(&t),
            ChatEvent::ReasoningDelta(t) => m.push_reasoning(&t),
            ChatEvent::ReasoningSignature(sig) => m.sign_reasoning(&sig),
            ChatEvent::RedactedReasoning(data) => m
                .thinking_blocks
                .push(ThinkingBlock::RedactedThinking { data }),
            ChatEvent::ToolCallStart { id, name, .. } => m.tool_calls.push(ToolCall {
                id,
                kind: "function".into(),
                function: FunctionCall {
                    name,
                    arguments: String::new(),
                },
            }),
            // Indexes count from 0 in start order, so the index is the position.
            ChatEvent::ToolCallArgs { index, fragment } => {
                if let Some(tc) = m.tool_calls.get_mut(index as usize) {
                    tc.function.arguments.push_str(&fragment);
                }
            }
            ChatEvent::Finish(f) => self.finish = Some(f),
            ChatEvent::Usage(u) => self.usage = Some(u),
        }
    }
}

/// A complete (non-streaming) response in canonical form.
#[derive(Debug, Clone)]
pub struct ChatResponse {
    pub id: String,
    pub model: String,
    pub created: u64,
    pub message: AssistantMessage,
    pub finish_reason: Option<FinishReason>,
    pub usage: Option<Usage>,
    /// The upstream's own body, for a client of the same dialect to get verbatim.
    pub raw: Raw,
}

/// The streaming normalizer's vocabulary: everything any provider can say mid-stream.
#[derive(Debug, Clone, PartialEq)]
pub enum ChatEvent {
    TextDelta(String),
    ReasoningDelta(String),
    /// The signature that closes the current reasoning block (Anthropic `signature_delta`).
    ReasoningSignature(String),
    /// A redacted (encrypted) reasoning block, to pass back unchanged.
    RedactedReasoning(String),
    /// First fragment of a tool call: its id and name. `index` counts from 0 per response.
    ToolCallStart {
        index: u32,
        id: String,
        name: String,
    },
    /// A piece of a tool call's JSON arguments, to be concatenated per `index`.
    ToolCallArgs {
        index: u32,
        fragment: String,
    },
    Usage(Usage),
    Finish(FinishReason),
}

impl ChatEvent {
    /// Whether this event carries model output (what time-to-first-token measures).
    pub fn is_content(&self) -> bool {
        matches!(
            self,
            ChatEvent::TextDelta(_)
                | ChatEvent::ReasoningDelta(_)
                | ChatEvent::ToolCallStart { .. }
                | ChatEvent::ToolCallArgs { .. }
        )
    }
}

/// One decoded upstream stream element: canonical events, plus the upstream's own bytes
/// for a client of the same dialect to get verbatim.
#[derive(Debug, Clone, Default)]
pub struct StreamChunk {
    pub events: Vec<ChatEvent>,
    pub raw: Raw,
}

/// An upstream's reply (or stream event) exactly as received, tagged with its dialect. A
/// client that speaks that dialect gets these bytes instead of a re-encoding: nothing the
/// codecs do not model (extra choices, citations, cache details, new fields) is lost, and
/// nothing is re-serialized on the hot path.
#[derive(Debug, Clone, Default)]
pub enum Raw {
    #[default]
    None,
    /// An OpenAI chat completion body, or one chunk's JSON (`data:` payload).
    OpenAi(bytes::Bytes),
    /// An Anthropic message body, or one whole SSE event (`event:` + `data:` lines).
    Anthropic(bytes::Bytes),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_fields_round_trip() {
        let body = r#"{"model":"m","messages":[{"role":"user","content":"hi","x_custom":1}],
            "seed":7,"response_format":{"type":"json_object"},"stream_options":{"include_usage":true}}"#;
        let req: ChatRequest = serde_json::from_str(body).unwrap();
        assert_eq!(req.extra["seed"], 7);
        assert!(req.wants_stream_usage());
        let back = serde_json::to_value(&req).unwrap();
        assert_eq!(back["response_format"]["type"], "json_object");
        assert_eq!(back["messages"][0]["x_custom"], 1);
    }

    #[test]
    fn content_parts_keep_unknown_types() {
        let m: Message = serde_json::from_str(
            r#"{"role":"user","content":[{"type":"text","text":"a"},
                {"type":"image_url","image_url":{"url":"data:x"}},
                {"type":"input_audio","input_audio":{"data":"..","format":"wav"}}]}"#,
        )
        .unwrap();
        let Some(Content::Parts(parts)) = &m.content else {
            panic!("parts expected")
        };
        assert!(matches!(parts[2], ContentPart::Other(_)));
        let v = serde_json::to_value(&m).unwrap();
        assert_eq!(v["content"][2]["type"], "input_audio");
        assert_eq!(m.text(), "a");
    }
}
