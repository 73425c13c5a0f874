//! The Anthropic Messages dialect, in both directions: as an upstream (requests we send to
//! `/v1/messages`, replies and event streams we decode) and as a client dialect (requests
//! clients send to our `/v1/messages`, replies and event streams we encode).
//!
//! Facts this codec relies on (Anthropic's Messages and streaming references):
//! `system` is top level; tool results are user-role `tool_result` blocks; `max_tokens` is
//! required; a tool block starts with `input: {}` and its input then arrives as
//! `input_json_delta` pieces (the `{}` must not be emitted); tool ids and names appear only in
//! `content_block_start`, so they are tracked per block index; usage counts in
//! `message_delta` are cumulative; `ping` and unknown events are ignored.

use std::collections::HashMap;

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use crate::error::ProxyError;
use crate::types::{
    AssistantMessage, ChatEvent, ChatRequest, ChatResponse, Content, ContentPart, FinishReason,
    FunctionCall, FunctionDef, ImageUrl, Message, Raw, Role, Stop, ThinkingBlock, Tool, ToolCall,
    ToolChoice, Usage,
};
use crate::wire::sse::named_frame;

/// Used when an OpenAI-dialect client gave no `max_tokens`: Anthropic requires one.
pub const DEFAULT_MAX_TOKENS: u64 = 4096;

/// The `anthropic-version` header value we speak.
pub const API_VERSION: &str = "2023-06-01";

// ------------------------------------------------------------------ shared serde types

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MessagesRequest {
    pub model: String,
    #[serde(default)]
    pub max_tokens: Option<u64>,
    pub messages: Vec<AMessage>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub system: Option<ASystem>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stop_sequences: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stream: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub temperature: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub top_p: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tools: Option<Vec<ATool>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_choice: Option<AToolChoice>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<Value>,
    /// `top_k`, `thinking`, `service_tier`, …: kept for Anthropic upstreams.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(untagged)]
pub enum ASystem {
    Text(String),
    Blocks(Vec<ABlock>),
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AMessage {
    pub role: ARole,
    pub content: AContent,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ARole {
    User,
    Assistant,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(untagged)]
pub enum AContent {
    Text(String),
    Blocks(Vec<ABlock>),
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ABlock {
    Text {
        text: String,
        #[serde(flatten)]
        extra: Map<String, Value>,
    },
    Image {
        source: Value,
        #[serde(flatten)]
        extra: Map<String, Value>,
    },
    ToolUse {
        id: String,
        name: String,
        #[serde(default)]
        input: Value,
        #[serde(flatten)]
        extra: Map<String, Value>,
    },
    ToolResult {
        tool_use_id: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        content: Option<AContent>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        is_error: Option<bool>,
        #[serde(flatten)]
        extra: Map<String, Value>,
    },
    Thinking {
        thinking: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        signature: Option<String>,
    },
    RedactedThinking {
        data: String,
    },
    /// Documents, search results, server tool blocks…: kept as sent.
    #[serde(untagged)]
    Other(Map<String, Value>),
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ATool {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub input_schema: Option<Value>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AToolChoice {
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disable_parallel_tool_use: Option<bool>,
}

#[derive(Debug, Default, Clone, Copy, Deserialize)]
pub struct AUsage {
    #[serde(default)]
    pub input_tokens: Option<u64>,
    #[serde(default)]
    pub output_tokens: Option<u64>,
    #[serde(default)]
    pub cache_creation_input_tokens: Option<u64>,
    #[serde(default)]
    pub cache_read_input_tokens: Option<u64>,
}

impl AUsage {
    /// OpenAI's `prompt_tokens` includes cached tokens; Anthropic's `input_tokens` does not.
    fn to_canonical(self) -> Usage {
        let cached = self.cache_read_input_tokens;
        let created = self.cache_creation_input_tokens;
        let prompt = self.input_tokens.unwrap_or(0) + cached.unwrap_or(0) + created.unwrap_or(0);
        let completion = self.output_tokens.unwrap_or(0);
        Usage {
            prompt_tokens: prompt,
            completion_tokens: completion,
            total_tokens: prompt + completion,
            cached_tokens: cached,
            cache_creation_tokens: created,
            reasoning_tokens: None,
        }
    }

    fn merge(&mut self, other: AUsage) {
        macro_rules! take {
            ($($f:ident),*) => {$( if other.$f.is_some() { self.$f = other.$f; } )*};
        }
        take!(
            input_tokens,
            output_tokens,
            cache_creation_input_tokens,
            cache_read_input_tokens
        );
    }
}

pub fn stop_reason_to_canonical(s: &str) -> FinishReason {
    match s {
        "end_turn" | "stop_sequence" | "pause_turn" => FinishReason::Stop,
        "max_tokens" | "model_context_window_exceeded" => FinishReason::Length,
        "tool_use" => FinishReason::ToolCalls,
        "refusal" => FinishReason::ContentFilter,
        _ => FinishReason::Other,
    }
}

pub fn stop_reason_from_canonical(f: FinishReason) -> &'static str {
    match f {
        FinishReason::Stop | FinishReason::Other => "end_turn",
        FinishReason::Length => "max_tokens",
        FinishReason::ToolCalls => "tool_use",
        FinishReason::ContentFilter => "refusal",
    }
}

// ------------------------------------------------------ canonical → Anthropic (upstream)

/// An OpenAI `image_url` (a URL or a `data:` URL) as an Anthropic image source.
fn image_source(url: &str) -> Value {
    if let Some(rest) = url.strip_prefix("data:") {
        if let Some((meta, data)) = rest.split_once(',') {
            let media_type = meta.trim_end_matches(";base64");
            return json!({"type": "base64", "media_type": media_type, "data": data});
        }
    }
    json!({"type": "url", "url": url})
}

/// A user turn's blocks. Empty text is left out: Anthropic refuses empty text blocks.
fn user_blocks(content: &Option<Content>) -> Vec<ABlock> {
    match content {
        None => Vec::new(),
        Some(Content::Text(t)) if t.is_empty() => Vec::new(),
        Some(Content::Text(t)) => vec![ABlock::Text {
            text: t.clone(),
            extra: Map::new(),
        }],
        Some(Content::Parts(parts)) => parts
            .iter()
            .filter_map(|p| match p {
                ContentPart::Text { text } if text.is_empty() => None,
                ContentPart::Text { text } => Some(ABlock::Text {
                    text: text.clone(),
                    extra: Map::new(),
                }),
                ContentPart::ImageUrl { image_url } => Some(ABlock::Image {
                    source: image_source(&image_url.url),
                    extra: Map::new(),
                }),
                // Audio and files have no Anthropic equivalent here.
                ContentPart::Other(_) => None,
            })
            .collect(),
    }
}

fn push_merged(out: &mut Vec<AMessage>, role: ARole, blocks: Vec<ABlock>) {
    if blocks.is_empty() {
        return;
    }
    // Anthropic needs alternating roles: consecutive turns of one role are merged.
    if let Some(last) = out.last_mut() {
        if last.role == role {
            if let AContent::Blocks(b) = &mut last.content {
                b.extend(blocks);
                return;
            }
        }
    }
    out.push(AMessage {
        role,
        content: AContent::Blocks(blocks),
    });
}

/// Builds the Messages request for an upstream Anthropic model. Parameters Anthropic does not
/// understand (`seed`, `response_format`, `logprobs`, …) are not sent.
pub fn encode_request(
    req: &ChatRequest,
    model: &str,
    stream: bool,
) -> Result<MessagesRequest, ProxyError> {
    let mut system = Vec::new();
    let mut messages: Vec<AMessage> = Vec::new();
    for (i, m) in req.messages.iter().enumerate() {
        match m.role {
            Role::System | Role::Developer => {
                let text = m.text();
                if !text.trim().is_empty() {
                    system.push(text);
                }
            }
            Role::User => push_merged(&mut messages, ARole::User, user_blocks(&m.content)),
            Role::Tool | Role::Function => {
                let id = m
                    .tool_call_id
                    .clone()
                    .or_else(|| m.name.clone())
                    .unwrap_or_default();
                let block = ABlock::ToolResult {
                    tool_use_id: id,
                    content: Some(AContent::Text(m.text())),
                    is_error: None,
                    extra: Map::new(),
                };
                push_merged(&mut messages, ARole::User, vec![block]);
            }
            Role::Assistant => {
                let mut blocks = Vec::new();
                // Thinking blocks are replayed unchanged, signatures and all. Unsigned
                // reasoning (from another provider) cannot be verified and is refused by
                // Anthropic, so it is left out.
                for b in m.thinking_blocks.iter().flatten().filter(|b| b.is_signed()) {
                    blocks.push(match b.clone() {
                        ThinkingBlock::Thinking {
                            thinking,
                            signature,
                        } => ABlock::Thinking {
                            thinking,
                            signature,
                        },
                        ThinkingBlock::RedactedThinking { data } => {
                            ABlock::RedactedThinking { data }
                        }
                    });
                }
                let text = m.text();
                if !text.is_empty() {
                    blocks.push(ABlock::Text {
                        text,
                        extra: Map::new(),
                    });
                }
                for (j, tc) in m.tool_calls.iter().flatten().enumerate() {
                    let input: Value = if tc.function.arguments.trim().is_empty() {
                        json!({})
                    } else {
                        serde_json::from_str(&tc.function.arguments).map_err(|_| {
                            ProxyError::invalid(
                                format!("messages[{i}].tool_calls[{j}].function.arguments"),
                                "tool call arguments must be a JSON object for this model",
                            )
                        })?
                    };
                    blocks.push(ABlock::ToolUse {
                        id: tc.id.clone(),
                        name: tc.function.name.clone(),
                        input,
                        extra: Map::new(),
                    });
                }
                push_merged(&mut messages, ARole::Assistant, blocks);
            }
        }
    }
    let tools = req.tools.as_ref().map(|tools| {
        tools
            .iter()
            .filter_map(|t| t.function.as_ref())
            .map(|f| ATool {
                name: f.name.clone(),
                description: f.description.clone(),
                input_schema: Some(
                    f.parameters
                        .clone()
                        .unwrap_or_else(|| json!({"type": "object", "properties": {}})),
                ),
                extra: Map::new(),
            })
            .collect::<Vec<_>>()
    });
    let parallel = req
        .extra
        .get("parallel_tool_calls")
        .and_then(Value::as_bool);
    let tool_choice = match &req.tool_choice {
        None => None,
        Some(ToolChoice::Mode(m)) => Some(match m.as_str() {
            "required" => "any",
            "none" => "none",
            _ => "auto",
        })
        .map(|kind| AToolChoice {
            kind: kind.to_owned(),
            name: None,
            disable_parallel_tool_use: None,
        }),
        Some(ToolChoice::Named(obj)) => Some(AToolChoice {
            kind: "tool".into(),
            name: obj
                .get("function")
                .and_then(|f| f.get("name"))
                .and_then(Value::as_str)
                .map(str::to_owned),
            disable_parallel_tool_use: None,
        }),
    };
    let tool_choice = match (tool_choice, parallel) {
        (Some(mut c), Some(false)) => {
            c.disable_parallel_tool_use = Some(true);
            Some(c)
        }
        (None, Some(false)) if tools.is_some() => Some(AToolChoice {
            kind: "auto".into(),
            name: None,
            disable_parallel_tool_use: Some(true),
        }),
        (c, _) => c,
    };
    // The Anthropic parameters some OpenAI clients send anyway. (Anthropic clients' own
    // requests reach Anthropic upstreams as they are: see `ChatRequest::anthropic_raw`.)
    let mut extra = Map::new();
    for key in ["top_k", "thinking", "service_tier"] {
        if let Some(v) = req.extra.get(key) {
            extra.insert(key.into(), v.clone());
        }
    }
    // A turn that is one plain text block is sent in the short string form.
    for m in &mut messages {
        if let AContent::Blocks(b) = &m.content {
            if let [ABlock::Text { text, extra }] = b.as_slice() {
                if extra.is_empty() {
                    m.content = AContent::Text(text.clone());
                }
            }
        }
    }
    Ok(MessagesRequest {
        model: model.to_owned(),
        max_tokens: Some(req.max_output_tokens().unwrap_or(DEFAULT_MAX_TOKENS)),
        messages,
        system: (!system.is_empty()).then(|| ASystem::Text(system.join("\n\n"))),
        stop_sequences: req.stop.as_ref().map(|s| match s {
            Stop::One(s) => vec![s.clone()],
            Stop::Many(v) => v.clone(),
        }),
        // Anthropic's default is a complete reply; say `stream` only when streaming.
        stream: stream.then_some(true),
        // Anthropic's range is 0–1; OpenAI's is 0–2.
        temperature: req.temperature.map(|t| t.min(1.0)),
        // Current Claude models refuse `temperature` and `top_p` together, and many
        // OpenAI clients send both: temperature wins.
        top_p: req.top_p.filter(|_| req.temperature.is_none()),
        tools: tools.filter(|t| !t.is_empty()),
        tool_choice,
        metadata: req
            .extra
            .get("user")
            .and_then(Value::as_str)
            .map(|u| json!({"user_id": u})),
        extra,
    })
}

// --------------------------------------------------------- Anthropic → canonical (upstream)

#[derive(Deserialize)]
struct AResponse {
    #[serde(default)]
    id: String,
    #[serde(default)]
    model: String,
    #[serde(default)]
    content: Vec<ABlock>,
    #[serde(default)]
    stop_reason: Option<String>,
    #[serde(default)]
    usage: AUsage,
}

/// Decodes a complete Messages reply.
pub fn decode_response(body: &[u8]) -> Result<ChatResponse, serde_json::Error> {
    let r: AResponse = super::from_json(body)?;
    let mut msg = AssistantMessage::default();
    for block in r.content {
        match block {
            ABlock::Text { text, .. } => {
                msg.content.get_or_insert_with(String::new).push_str(&text)
            }
            ABlock::Thinking {
                thinking,
                signature,
            } => {
                msg.push_reasoning(&thinking);
                if let Some(sig) = signature.filter(|s| !s.is_empty()) {
                    msg.sign_reasoning(&sig);
                }
            }
            ABlock::RedactedThinking { data } => msg
                .thinking_blocks
                .push(ThinkingBlock::RedactedThinking { data }),
            ABlock::ToolUse {
                id, name, input, ..
            } => msg.tool_calls.push(ToolCall {
                id,
                kind: "function".into(),
                function: FunctionCall {
                    name,
                    arguments: input.to_string(),
                },
            }),
            _ => {}
        }
    }
    Ok(ChatResponse {
        id: r.id,
        model: r.model,
        created: crate::providers::mock::unix_now(),
        message: msg,
        finish_reason: r.stop_reason.as_deref().map(stop_reason_to_canonical),
        usage: Some(r.usage.to_canonical()),
        raw: Raw::None,
    })
}

#[derive(Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum AStreamEvent {
    MessageStart {
        message: AStartMessage,
    },
    ContentBlockStart {
        index: u32,
        content_block: Value,
    },
    ContentBlockDelta {
        index: u32,
        delta: Value,
    },
    ContentBlockStop {},
    MessageDelta {
        #[serde(default)]
        delta: Value,
        #[serde(default)]
        usage: AUsage,
    },
    MessageStop {},
    Ping {},
    Error {
        error: Value,
    },
    #[serde(other)]
    Unknown,
}

#[derive(Deserialize)]
struct AStartMessage {
    #[serde(default)]
    usage: AUsage,
}

/// An error event's type and message, e.g. (`overloaded_error`, `Overloaded`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamError {
    pub kind: String,
    pub message: String,
}

/// Decodes an Anthropic event stream, one event at a time, into canonical events.
#[derive(Debug, Default)]
pub struct StreamDecoder {
    /// Block index → our tool-call index, for tool_use blocks.
    tools: HashMap<u32, u32>,
    next_tool: u32,
    usage: AUsage,
    finished: bool,
}

impl StreamDecoder {
    pub fn new() -> Self {
        Self::default()
    }

    /// Whether `message_stop` was seen.
    pub fn finished(&self) -> bool {
        self.finished
    }

    pub fn decode(
        &mut self,
        data: &[u8],
    ) -> Result<Result<Vec<ChatEvent>, StreamError>, serde_json::Error> {
        let ev: AStreamEvent = super::from_json(data)?;
        let mut out = Vec::new();
        match ev {
            AStreamEvent::MessageStart { message } => self.usage.merge(message.usage),
            AStreamEvent::ContentBlockStart {
                index,
                content_block,
            } => match content_block.get("type").and_then(Value::as_str) {
                Some("tool_use") | Some("server_tool_use") => {
                    let tool = self.next_tool;
                    self.next_tool += 1;
                    self.tools.insert(index, tool);
                    let s = |k: &str| {
                        content_block
                            .get(k)
                            .and_then(Value::as_str)
                            .unwrap_or_default()
                            .to_owned()
                    };
                    out.push(ChatEvent::ToolCallStart {
                        index: tool,
                        id: s("id"),
                        name: s("name"),
                    });
                    // The block starts with `input: {}`; the real input follows as deltas.
                    // Only a non-empty initial input is real content.
                    if let Some(input) = content_block
                        .get("input")
                        .filter(|i| i.as_object().is_some_and(|o| !o.is_empty()))
                    {
                        out.push(ChatEvent::ToolCallArgs {
                            index: tool,
                            fragment: input.to_string(),
                        });
                    }
                }
                Some("text") => {
                    if let Some(t) = content_block.get("text").and_then(Value::as_str) {
                        if !t.is_empty() {
                            out.push(ChatEvent::TextDelta(t.to_owned()));
                        }
                    }
                }
                Some("thinking") => {
                    if let Some(t) = content_block.get("thinking").and_then(Value::as_str) {
                        if !t.is_empty() {
                            out.push(ChatEvent::ReasoningDelta(t.to_owned()));
                        }
                    }
                }
                Some("redacted_thinking") => {
                    if let Some(d) = content_block.get("data").and_then(Value::as_str) {
                        out.push(ChatEvent::RedactedReasoning(d.to_owned()));
                    }
                }
                _ => {}
            },
            AStreamEvent::ContentBlockDelta { index, delta } => {
                let s = |k: &str| delta.get(k).and_then(Value::as_str).unwrap_or_default();
                match delta.get("type").and_then(Value::as_str) {
                    Some("text_delta") if !s("text").is_empty() => {
                        out.push(ChatEvent::TextDelta(s("text").to_owned()))
                    }
                    Some("input_json_delta") if !s("partial_json").is_empty() => {
                        if let Some(tool) = self.tools.get(&index) {
                            out.push(ChatEvent::ToolCallArgs {
                                index: *tool,
                                fragment: s("partial_json").to_owned(),
                            });
                        }
                    }
                    Some("thinking_delta") if !s("thinking").is_empty() => {
                        out.push(ChatEvent::ReasoningDelta(s("thinking").to_owned()))
                    }
                    Some("signature_delta") if !s("signature").is_empty() => {
                        out.push(ChatEvent::ReasoningSignature(s("signature").to_owned()))
                    }
                    _ => {} // citations, unknown deltas
                }
            }
            AStreamEvent::MessageDelta { delta, usage } => {
                self.usage.merge(usage);
                if let Some(r) = delta.get("stop_reason").and_then(Value::as_str) {
                    out.push(ChatEvent::Finish(stop_reason_to_canonical(r)));
                }
            }
            AStreamEvent::MessageStop {} => {
                self.finished = true;
                out.push(ChatEvent::Usage(self.usage.to_canonical()));
            }
            AStreamEvent::Error { error } => {
                let s = |k: &str| {
                    error
                        .get(k)
                        .and_then(Value::as_str)
                        .unwrap_or_default()
                        .to_owned()
                };
                return Ok(Err(StreamError {
                    kind: s("type"),
                    message: s("message"),
                }));
            }
            AStreamEvent::ContentBlockStop {} | AStreamEvent::Ping {} | AStreamEvent::Unknown => {}
        }
        Ok(Ok(out))
    }
}

// ------------------------------------------------------ Anthropic → canonical (client side)

fn blocks_text(content: &Option<AContent>) -> String {
    match content {
        None => String::new(),
        Some(AContent::Text(t)) => t.clone(),
        Some(AContent::Blocks(b)) => b
            .iter()
            .filter_map(|b| match b {
                ABlock::Text { text, .. } => Some(text.as_str()),
                _ => None,
            })
            .collect::<Vec<_>>()
            .join("\n"),
    }
}

fn image_part(source: &Value) -> Option<ContentPart> {
    let url = match source.get("type").and_then(Value::as_str) {
        Some("base64") => format!(
            "data:{};base64,{}",
            source
                .get("media_type")
                .and_then(Value::as_str)
                .unwrap_or("image/png"),
            source
                .get("data")
                .and_then(Value::as_str)
                .unwrap_or_default()
        ),
        Some("url") => source.get("url").and_then(Value::as_str)?.to_owned(),
        _ => return None,
    };
    Some(ContentPart::ImageUrl {
        image_url: ImageUrl { url, detail: None },
    })
}

/// Turns a client's Messages request into the canonical request.
pub fn decode_request(r: MessagesRequest) -> ChatRequest {
    let mut messages = Vec::new();
    let msg = |role: Role, content: Option<Content>| Message {
        role,
        content,
        name: None,
        tool_calls: None,
        tool_call_id: None,
        thinking_blocks: None,
        extra: Map::new(),
    };
    match r.system {
        Some(ASystem::Text(t)) => messages.push(msg(Role::System, Some(Content::Text(t)))),
        Some(ASystem::Blocks(b)) => {
            let text = blocks_text(&Some(AContent::Blocks(b)));
            messages.push(msg(Role::System, Some(Content::Text(text))));
        }
        None => {}
    }
    for m in r.messages {
        let blocks = match m.content {
            AContent::Text(t) => {
                let role = if m.role == ARole::User {
                    Role::User
                } else {
                    Role::Assistant
                };
                messages.push(msg(role, Some(Content::Text(t))));
                continue;
            }
            AContent::Blocks(b) => b,
        };
        match m.role {
            ARole::User => {
                let mut parts = Vec::new();
                for b in blocks {
                    match b {
                        // Tool results become tool messages, ahead of the user's own text.
                        ABlock::ToolResult {
                            tool_use_id,
                            content,
                            is_error,
                            ..
                        } => {
                            let mut text = blocks_text(&content);
                            if is_error == Some(true) {
                                text = format!("Error: {text}");
                            }
                            let mut tm = msg(Role::Tool, Some(Content::Text(text)));
                            tm.tool_call_id = Some(tool_use_id);
                            messages.push(tm);
                        }
                        ABlock::Text { text, .. } => parts.push(ContentPart::Text { text }),
                        ABlock::Image { source, .. } => parts.extend(image_part(&source)),
                        _ => {}
                    }
                }
                if !parts.is_empty() {
                    messages.push(msg(Role::User, Some(Content::Parts(parts))));
                }
            }
            ARole::Assistant => {
                let mut text = String::new();
                let mut calls = Vec::new();
                let mut thinking = Vec::new();
                for b in blocks {
                    match b {
                        ABlock::Text { text: t, .. } => text.push_str(&t),
                        ABlock::ToolUse {
                            id, name, input, ..
                        } => calls.push(ToolCall {
                            id,
                            kind: "function".into(),
                            function: FunctionCall {
                                name,
                                arguments: input.to_string(),
                            },
                        }),
                        ABlock::Thinking {
                            thinking: t,
                            signature,
                        } => thinking.push(ThinkingBlock::Thinking {
                            thinking: t,
                            signature,
                        }),
                        ABlock::RedactedThinking { data } => {
                            thinking.push(ThinkingBlock::RedactedThinking { data })
                        }
                        _ => {}
                    }
                }
                let mut am = msg(
                    Role::Assistant,
                    (!text.is_empty() || calls.is_empty()).then_some(Content::Text(text)),
                );
                if !calls.is_empty() {
                    am.tool_calls = Some(calls);
                }
                if !thinking.is_empty() {
                    am.thinking_blocks = Some(thinking);
                }
                messages.push(am);
            }
        }
    }
    let tools = r.tools.map(|tools| {
        tools
            .into_iter()
            .map(|t| Tool {
                kind: "function".into(),
                function: Some(FunctionDef {
                    name: t.name,
                    description: t.description,
                    parameters: t.input_schema,
                    extra: Map::new(),
                }),
                extra: Map::new(),
            })
            .collect()
    });
    let mut extra = Map::new();
    let tool_choice = r.tool_choice.map(|c| {
        if c.disable_parallel_tool_use == Some(true) {
            extra.insert("parallel_tool_calls".into(), Value::Bool(false));
        }
        match c.kind.as_str() {
            "any" => ToolChoice::Mode("required".into()),
            "none" => ToolChoice::Mode("none".into()),
            "tool" => {
                let mut obj = Map::new();
                obj.insert("type".into(), json!("function"));
                obj.insert(
                    "function".into(),
                    json!({"name": c.name.unwrap_or_default()}),
                );
                ToolChoice::Named(obj)
            }
            _ => ToolChoice::Mode("auto".into()),
        }
    });
    if let Some(user) = r
        .metadata
        .as_ref()
        .and_then(|m| m.get("user_id"))
        .and_then(Value::as_str)
    {
        extra.insert("user".into(), json!(user));
    }
    ChatRequest {
        model: r.model,
        messages,
        stream: r.stream,
        temperature: r.temperature,
        top_p: r.top_p,
        max_tokens: r.max_tokens,
        max_completion_tokens: None,
        n: None,
        stop: r.stop_sequences.map(Stop::Many),
        tools,
        tool_choice,
        stream_options: None,
        extra,
        anthropic_raw: None,
        traceparent: None,
        openai_reply_verbatim: false,
    }
}

// ------------------------------------------------------ canonical → Anthropic (client side)

fn usage_json(u: &Usage) -> Value {
    let cached = u.cached_tokens.unwrap_or(0);
    let created = u.cache_creation_tokens.unwrap_or(0);
    json!({
        "input_tokens": u.prompt_tokens.saturating_sub(cached + created),
        "output_tokens": u.completion_tokens,
        "cache_read_input_tokens": cached,
        "cache_creation_input_tokens": created,
    })
}

/// Encodes a canonical reply as an Anthropic `message` body.
pub fn encode_response(resp: &ChatResponse, model: &str) -> Vec<u8> {
    let mut content = Vec::new();
    if resp.message.thinking_blocks.is_empty() {
        if let Some(r) = resp.message.reasoning.as_deref().filter(|r| !r.is_empty()) {
            content.push(json!({"type": "thinking", "thinking": r, "signature": ""}));
        }
    }
    for b in &resp.message.thinking_blocks {
        content.push(match b {
            ThinkingBlock::Thinking {
                thinking,
                signature,
            } => json!({"type": "thinking", "thinking": thinking,
                        "signature": signature.as_deref().unwrap_or("")}),
            ThinkingBlock::RedactedThinking { data } => {
                json!({"type": "redacted_thinking", "data": data})
            }
        });
    }
    if let Some(t) = resp.message.content.as_deref().filter(|t| !t.is_empty()) {
        content.push(json!({"type": "text", "text": t}));
    }
    for tc in &resp.message.tool_calls {
        let input: Value =
            serde_json::from_str(&tc.function.arguments).unwrap_or_else(|_| json!({}));
        content.push(
            json!({"type": "tool_use", "id": tc.id, "name": tc.function.name, "input": input}),
        );
    }
    let body = json!({
        "id": anthropic_id(&resp.id),
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": content,
        "stop_reason": stop_reason_from_canonical(resp.finish_reason.unwrap_or(FinishReason::Stop)),
        "stop_sequence": null,
        "usage": usage_json(&resp.usage.unwrap_or_default()),
    });
    serde_json::to_vec(&body).unwrap_or_default()
}

fn anthropic_id(id: &str) -> String {
    if id.starts_with("msg_") {
        id.to_owned()
    } else {
        format!("msg_{}", id.trim_start_matches("chatcmpl-"))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum OpenBlock {
    Text,
    Thinking,
    Tool(u32),
}

/// Turns canonical events into Anthropic's exact event sequence for one stream:
/// `message_start`, then per block `content_block_start` / `content_block_delta`* /
/// `content_block_stop`, then `message_delta` with the stop reason and usage, `message_stop`.
#[derive(Debug)]
pub struct EventEncoder {
    id: String,
    model: String,
    started: bool,
    open: Option<(OpenBlock, u32)>,
    next_block: u32,
    /// Tool-call index → block index, for arguments that arrive after their block moved on.
    tool_blocks: HashMap<u32, u32>,
    finish: Option<FinishReason>,
    usage: Option<Usage>,
    /// The upstream's own events are being forwarded: nothing to open or close here.
    passthrough: bool,
}

impl EventEncoder {
    /// The stream forwards an Anthropic upstream's events verbatim from now on.
    pub fn pass_through(&mut self) {
        self.passthrough = true;
    }

    pub fn new(id: String, model: String) -> Self {
        Self {
            passthrough: false,
            id: anthropic_id(&id),
            model,
            started: false,
            open: None,
            next_block: 0,
            tool_blocks: HashMap::new(),
            finish: None,
            usage: None,
        }
    }

    fn start(&mut self, out: &mut Vec<Bytes>) {
        if self.started {
            return;
        }
        self.started = true;
        let msg = json!({"type": "message_start", "message": {
            "id": self.id, "type": "message", "role": "assistant", "model": self.model,
            "content": [], "stop_reason": null, "stop_sequence": null,
            "usage": {"input_tokens": 0, "output_tokens": 0}}});
        out.push(frame("message_start", &msg));
    }

    fn close(&mut self, out: &mut Vec<Bytes>) {
        if let Some((_, index)) = self.open.take() {
            out.push(frame(
                "content_block_stop",
                &json!({"type": "content_block_stop", "index": index}),
            ));
        }
    }

    fn ensure(&mut self, kind: OpenBlock, block: Value, out: &mut Vec<Bytes>) -> u32 {
        if let Some((k, i)) = self.open {
            if k == kind {
                return i;
            }
        }
        self.close(out);
        let index = self.next_block;
        self.next_block += 1;
        self.open = Some((kind, index));
        out.push(frame(
            "content_block_start",
            &json!({"type": "content_block_start", "index": index, "content_block": block}),
        ));
        index
    }

    fn delta(out: &mut Vec<Bytes>, index: u32, delta: Value) {
        out.push(frame(
            "content_block_delta",
            &json!({"type": "content_block_delta", "index": index, "delta": delta}),
        ));
    }

    /// Frames for one event (none for usage and finish, which close the stream).
    pub fn encode(&mut self, event: &ChatEvent, out: &mut Vec<Bytes>) {
        self.start(out);
        match event {
            ChatEvent::TextDelta(t) => {
                let i = self.ensure(OpenBlock::Text, json!({"type": "text", "text": ""}), out);
                Self::delta(out, i, json!({"type": "text_delta", "text": t}));
            }
            ChatEvent::ReasoningDelta(t) => {
                let i = self.ensure(
                    OpenBlock::Thinking,
                    json!({"type": "thinking", "thinking": ""}),
                    out,
                );
                Self::delta(out, i, json!({"type": "thinking_delta", "thinking": t}));
            }
            ChatEvent::ToolCallStart { index, id, name } => {
                self.close(out);
                let block = json!({"type": "tool_use", "id": id, "name": name, "input": {}});
                let i = self.ensure(OpenBlock::Tool(*index), block, out);
                self.tool_blocks.insert(*index, i);
            }
            ChatEvent::ToolCallArgs { index, fragment } => {
                let i = match self.tool_blocks.get(index) {
                    Some(i) => *i,
                    None => {
                        // Arguments without a start: open the block with what we know.
                        let block = json!({"type": "tool_use", "id": format!("toolu_{index}"),
                                           "name": "", "input": {}});
                        let i = self.ensure(OpenBlock::Tool(*index), block, out);
                        self.tool_blocks.insert(*index, i);
                        i
                    }
                };
                Self::delta(
                    out,
                    i,
                    json!({"type": "input_json_delta", "partial_json": fragment}),
                );
            }
            ChatEvent::ReasoningSignature(sig) => {
                // It closes the thinking block it belongs to (or one made for it).
                let i = self.ensure(
                    OpenBlock::Thinking,
                    json!({"type": "thinking", "thinking": ""}),
                    out,
                );
                Self::delta(out, i, json!({"type": "signature_delta", "signature": sig}));
                self.close(out);
            }
            ChatEvent::RedactedReasoning(data) => {
                self.close(out);
                let index = self.next_block;
                self.next_block += 1;
                out.push(frame(
                    "content_block_start",
                    &json!({"type": "content_block_start", "index": index,
                            "content_block": {"type": "redacted_thinking", "data": data}}),
                ));
                out.push(frame(
                    "content_block_stop",
                    &json!({"type": "content_block_stop", "index": index}),
                ));
            }
            ChatEvent::Finish(f) => self.finish = Some(*f),
            ChatEvent::Usage(u) => self.usage = Some(*u),
        }
    }

    /// The closing frames after the last event (none when the upstream's were forwarded).
    pub fn finish(&mut self, out: &mut Vec<Bytes>) {
        if self.passthrough {
            return;
        }
        self.start(out);
        self.close(out);
        let usage = self.usage.unwrap_or_default();
        let stop = stop_reason_from_canonical(self.finish.unwrap_or(FinishReason::Stop));
        out.push(frame(
            "message_delta",
            &json!({"type": "message_delta",
                    "delta": {"stop_reason": stop, "stop_sequence": null},
                    "usage": usage_json(&usage)}),
        ));
        out.push(frame("message_stop", &json!({"type": "message_stop"})));
    }

    /// An `error` event, for failures after the stream started.
    pub fn error(&mut self, err: &ProxyError, request_id: &str) -> Bytes {
        // An upstream overload keeps Anthropic's own name, so clients back off as usual.
        let kind = match (err.code, err.upstream_status) {
            (_, Some(529)) => "overloaded_error",
            (code, _) => error_type(code),
        };
        frame(
            "error",
            &json!({"type": "error", "error": {"type": kind, "message": err.message,
                     "code": err.code.as_str(), "request_id": request_id}}),
        )
    }
}

fn frame(event: &str, v: &Value) -> Bytes {
    named_frame(event, v.to_string().as_bytes())
}

/// Anthropic's error `type` for one of our codes.
pub fn error_type(code: crate::error::ErrorCode) -> &'static str {
    use crate::error::ErrorCode as C;
    match code {
        C::InvalidRequest => "invalid_request_error",
        C::Unauthorized => "authentication_error",
        C::Forbidden => "permission_error",
        C::NotFound => "not_found_error",
        C::PayloadTooLarge => "request_too_large",
        C::RateLimit | C::BudgetExceeded => "rate_limit_error",
        C::ProviderError => "api_error",
        C::Unavailable => "overloaded_error",
        C::Timeout => "timeout_error",
    }
}
