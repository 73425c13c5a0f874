//! The Gemini API (Google AI Studio) dialect, as an upstream: the `generateContent` request
//! we send, and the replies and `streamGenerateContent?alt=sse` events we decode.
//!
//! Facts this codec relies on (Gemini API reference, generate-content and function calling):
//! roles are `user` and `model`; the system prompt is `systemInstruction`; tool results are
//! `functionResponse` parts in a `user` turn and name the function, not a call id; a
//! `functionCall` arrives whole (its `args` an object), never in fragments, and has no id;
//! every SSE event is a complete `GenerateContentResponse` and there is no `[DONE]`;
//! `usageMetadata` is cumulative; output tokens are candidates plus thoughts; parts with
//! `thought: true` are reasoning; a `thoughtSignature` on a `functionCall` part must be sent
//! back with that call in the next turn, or Gemini refuses the request.
//!
//! Gemini gives calls no ids, so we make them, and we carry the thought signature inside
//! the id (`call_<n>_ts_<base64url(signature)>`). Clients echo tool call ids verbatim, so
//! the signature comes back with the conversation without any state in the proxy: replicas
//! stay stateless and a restart loses nothing.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::Deserialize;
use serde_json::{Map, Value, json};

use crate::types::{
    ChatEvent, ChatRequest, ChatResponse, Collected, Content, ContentPart, FinishReason, Raw, Role,
    Stop, ToolChoice, Usage,
};

/// Marks the signature part of a tool call id we made.
const SIGNATURE_MARK: &str = "_ts_";

// ------------------------------------------------------------ canonical → Gemini request

/// A tool call id for the `n`-th call of a reply, carrying Gemini's thought signature.
pub fn tool_call_id(n: usize, signature: Option<&str>) -> String {
    let nonce = crate::ids::uuid_v4().simple().to_string();
    let short = &nonce[..12];
    match signature {
        Some(sig) if !sig.is_empty() => format!(
            "call_{short}{n}{SIGNATURE_MARK}{}",
            URL_SAFE_NO_PAD.encode(sig.as_bytes())
        ),
        _ => format!("call_{short}{n}"),
    }
}

/// The thought signature a tool call id carries, if it is one of ours.
pub fn signature_from_id(id: &str) -> Option<String> {
    let (_, encoded) = id.split_once(SIGNATURE_MARK)?;
    let bytes = URL_SAFE_NO_PAD.decode(encoded).ok()?;
    String::from_utf8(bytes).ok()
}

/// A guess at an image URL's media type from its extension; Gemini requires one.
fn mime_from_url(url: &str) -> &'static str {
    let path = url
        .split(['?', '#'])
        .next()
        .unwrap_or(url)
        .to_ascii_lowercase();
    match path.rsplit('.').next() {
        Some("png") => "image/png",
        Some("gif") => "image/gif",
        Some("webp") => "image/webp",
        Some("heic") => "image/heic",
        Some("pdf") => "application/pdf",
        _ => "image/jpeg",
    }
}

/// A user turn's parts. Empty text is left out: Gemini refuses an empty text part.
fn user_parts(content: &Option<Content>) -> Vec<Value> {
    match content {
        None => Vec::new(),
        Some(Content::Text(t)) if t.is_empty() => Vec::new(),
        Some(Content::Text(t)) => vec![json!({ "text": t })],
        Some(Content::Parts(parts)) => parts
            .iter()
            .filter_map(|p| match p {
                ContentPart::Text { text } if text.is_empty() => None,
                ContentPart::Text { text } => Some(json!({ "text": text })),
                ContentPart::ImageUrl { image_url } => {
                    let url = &image_url.url;
                    match url.strip_prefix("data:").and_then(|r| r.split_once(',')) {
                        Some((meta, data)) => Some(json!({"inlineData": {
                            "mimeType": meta.trim_end_matches(";base64"), "data": data}})),
                        None => Some(json!({"fileData": {
                            "mimeType": mime_from_url(url), "fileUri": url}})),
                    }
                }
                // Audio and files in OpenAI's shape have no direct Gemini part here.
                ContentPart::Other(_) => None,
            })
            .collect(),
    }
}

/// Appends `parts` as a turn of `role`, merged into the previous turn when it has the same
/// role (parallel tool results must share one turn).
fn push_turn(contents: &mut Vec<Value>, role: &str, parts: Vec<Value>) {
    if parts.is_empty() {
        return;
    }
    if let Some(last) = contents.last_mut() {
        if last["role"] == role {
            if let Some(existing) = last["parts"].as_array_mut() {
                existing.extend(parts);
                return;
            }
        }
    }
    contents.push(json!({ "role": role, "parts": parts }));
}

/// The keywords of the OpenAPI schema subset Gemini's `parameters` accepts. A schema that
/// uses anything else (`additionalProperties`, `$ref`, `const`, a list of types, …) is
/// sent as `parametersJsonSchema`, which takes full JSON Schema; simple schemas keep the
/// documented `parameters` form.
const OPENAPI_KEYWORDS: &[&str] = &[
    "type",
    "format",
    "title",
    "description",
    "nullable",
    "enum",
    "default",
    "example",
    "items",
    "minItems",
    "maxItems",
    "properties",
    "required",
    "minProperties",
    "maxProperties",
    "propertyOrdering",
    "minLength",
    "maxLength",
    "pattern",
    "minimum",
    "maximum",
    "anyOf",
];

fn needs_json_schema(schema: &Value) -> bool {
    let Value::Object(m) = schema else {
        return false;
    };
    m.iter().any(|(k, v)| match k.as_str() {
        // Keys of `properties` are property names, not keywords.
        "properties" => v
            .as_object()
            .is_none_or(|props| props.values().any(needs_json_schema)),
        "items" => needs_json_schema(v),
        "anyOf" => v.as_array().is_none_or(|a| a.iter().any(needs_json_schema)),
        "type" => !v.is_string(),
        k => !OPENAPI_KEYWORDS.contains(&k),
    })
}

fn function_declaration(f: &crate::types::FunctionDef) -> Value {
    let mut d = Map::new();
    d.insert("name".into(), json!(f.name));
    if let Some(desc) = &f.description {
        d.insert("description".into(), json!(desc));
    }
    if let Some(params) = &f.parameters {
        let key = if needs_json_schema(params) {
            "parametersJsonSchema"
        } else {
            "parameters"
        };
        d.insert(key.into(), params.clone());
    }
    Value::Object(d)
}

/// Builds the `generateContent` body for a canonical request. OpenAI parameters Gemini has
/// no equivalent for (`logit_bias`, `logprobs`, `user`, …) are not sent.
pub fn encode_request(req: &ChatRequest) -> Value {
    let mut system = Vec::new();
    let mut contents: Vec<Value> = Vec::new();
    // Tool results name the function; OpenAI's tool messages only name the call.
    let mut call_names: Vec<(&str, &str)> = Vec::new();
    for m in &req.messages {
        match m.role {
            Role::System | Role::Developer => {
                let text = m.text();
                if !text.trim().is_empty() {
                    system.push(json!({ "text": text }));
                }
            }
            Role::User => push_turn(&mut contents, "user", user_parts(&m.content)),
            Role::Assistant => {
                let mut parts = Vec::new();
                let text = m.text();
                if !text.is_empty() {
                    parts.push(json!({ "text": text }));
                }
                for tc in m.tool_calls.iter().flatten() {
                    call_names.push((&tc.id, &tc.function.name));
                    let args: Value = serde_json::from_str(&tc.function.arguments)
                        .ok()
                        .filter(Value::is_object)
                        .unwrap_or_else(|| json!({}));
                    let mut part =
                        json!({"functionCall": {"name": tc.function.name, "args": args}});
                    if let Some(sig) = signature_from_id(&tc.id) {
                        part["thoughtSignature"] = json!(sig);
                    }
                    parts.push(part);
                }
                push_turn(&mut contents, "model", parts);
            }
            Role::Tool | Role::Function => {
                let name = m
                    .tool_call_id
                    .as_deref()
                    .and_then(|id| call_names.iter().find(|(c, _)| *c == id))
                    .map(|(_, n)| (*n).to_owned())
                    .or_else(|| m.name.clone())
                    .unwrap_or_default();
                let text = m.text();
                let result = serde_json::from_str::<Value>(&text).unwrap_or(Value::String(text));
                let part =
                    json!({"functionResponse": {"name": name, "response": {"result": result}}});
                push_turn(&mut contents, "user", vec![part]);
            }
        }
    }
    let mut body = Map::new();
    if !system.is_empty() {
        body.insert("systemInstruction".into(), json!({ "parts": system }));
    }
    body.insert("contents".into(), Value::Array(contents));
    let declarations: Vec<Value> = req
        .tools
        .iter()
        .flatten()
        .filter_map(|t| t.function.as_ref())
        .map(function_declaration)
        .collect();
    if !declarations.is_empty() {
        body.insert(
            "tools".into(),
            json!([{ "functionDeclarations": declarations }]),
        );
        if let Some(choice) = &req.tool_choice {
            let config = match choice {
                ToolChoice::Mode(m) => match m.as_str() {
                    "none" => json!({"mode": "NONE"}),
                    "required" => json!({"mode": "ANY"}),
                    _ => json!({"mode": "AUTO"}),
                },
                ToolChoice::Named(obj) => {
                    let name = obj
                        .get("function")
                        .and_then(|f| f.get("name"))
                        .cloned()
                        .unwrap_or(Value::Null);
                    json!({"mode": "ANY", "allowedFunctionNames": [name]})
                }
            };
            body.insert(
                "toolConfig".into(),
                json!({ "functionCallingConfig": config }),
            );
        }
    }
    let mut gen_config = Map::new();
    if let Some(stop) = &req.stop {
        let list = match stop {
            Stop::One(s) => vec![s.clone()],
            Stop::Many(v) => v.clone(),
        };
        gen_config.insert("stopSequences".into(), json!(list));
    }
    if let Some(t) = req.temperature {
        gen_config.insert("temperature".into(), json!(t));
    }
    if let Some(n) = req.max_output_tokens() {
        gen_config.insert("maxOutputTokens".into(), json!(n));
    }
    if let Some(p) = req.top_p {
        gen_config.insert("topP".into(), json!(p));
    }
    // `n` is not sent: only the first candidate is decoded, so more would be paid for and
    // dropped (and interleave in a stream).
    for (ours, theirs) in [
        ("top_k", "topK"),
        ("seed", "seed"),
        ("presence_penalty", "presencePenalty"),
        ("frequency_penalty", "frequencyPenalty"),
    ] {
        if let Some(v) = req.extra.get(ours) {
            gen_config.insert(theirs.into(), v.clone());
        }
    }
    if let Some(fmt) = req.extra.get("response_format") {
        match fmt.get("type").and_then(Value::as_str) {
            Some("json_object") => {
                gen_config.insert("responseMimeType".into(), json!("application/json"));
            }
            Some("json_schema") => {
                gen_config.insert("responseMimeType".into(), json!("application/json"));
                if let Some(schema) = fmt.get("json_schema").and_then(|s| s.get("schema")) {
                    gen_config.insert("responseJsonSchema".into(), schema.clone());
                }
            }
            _ => {}
        }
    }
    if !gen_config.is_empty() {
        body.insert("generationConfig".into(), Value::Object(gen_config));
    }
    Value::Object(body)
}

// ------------------------------------------------------------- Gemini reply → canonical

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct GResponse {
    #[serde(default)]
    candidates: Vec<GCandidate>,
    #[serde(default)]
    usage_metadata: Option<GUsage>,
    #[serde(default)]
    prompt_feedback: Option<GPromptFeedback>,
    #[serde(default)]
    model_version: Option<String>,
    #[serde(default)]
    response_id: Option<String>,
    #[serde(default)]
    error: Option<Value>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct GCandidate {
    #[serde(default)]
    content: Option<GContent>,
    #[serde(default)]
    finish_reason: Option<String>,
}

#[derive(Debug, Deserialize)]
struct GContent {
    #[serde(default)]
    parts: Vec<GPart>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct GPart {
    #[serde(default)]
    text: Option<String>,
    #[serde(default)]
    thought: Option<bool>,
    #[serde(default)]
    function_call: Option<GFunctionCall>,
    #[serde(default)]
    thought_signature: Option<String>,
}

#[derive(Debug, Deserialize)]
struct GFunctionCall {
    #[serde(default)]
    name: String,
    #[serde(default)]
    args: Option<Value>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct GPromptFeedback {
    #[serde(default)]
    block_reason: Option<String>,
}

#[derive(Debug, Default, Clone, Copy, Deserialize)]
#[serde(rename_all = "camelCase")]
struct GUsage {
    #[serde(default)]
    prompt_token_count: u64,
    #[serde(default)]
    candidates_token_count: u64,
    #[serde(default)]
    thoughts_token_count: Option<u64>,
    #[serde(default)]
    cached_content_token_count: Option<u64>,
    #[serde(default)]
    total_token_count: Option<u64>,
}

impl GUsage {
    fn to_canonical(self) -> Usage {
        let completion = self.candidates_token_count + self.thoughts_token_count.unwrap_or(0);
        Usage {
            prompt_tokens: self.prompt_token_count,
            completion_tokens: completion,
            total_tokens: self
                .total_token_count
                .unwrap_or(self.prompt_token_count + completion),
            cached_tokens: self.cached_content_token_count,
            cache_creation_tokens: None,
            reasoning_tokens: self.thoughts_token_count,
        }
    }
}

/// Gemini's `finishReason` in canonical terms. Every safety-style block is a content filter.
pub fn finish_reason(s: &str) -> FinishReason {
    match s {
        "STOP" => FinishReason::Stop,
        "MAX_TOKENS" => FinishReason::Length,
        "SAFETY" | "RECITATION" | "BLOCKLIST" | "PROHIBITED_CONTENT" | "SPII" | "IMAGE_SAFETY" => {
            FinishReason::ContentFilter
        }
        _ => FinishReason::Other,
    }
}

fn error_text(v: &Value) -> String {
    let status = v.get("status").and_then(Value::as_str).unwrap_or("error");
    let message = v.get("message").and_then(Value::as_str).unwrap_or_default();
    format!("{status}: {message}")
}

/// Decodes a complete `generateContent` reply. A prompt blocked before generation (no
/// candidates, `promptFeedback.blockReason`) is a `content_filter` finish with no content.
pub fn decode_response(body: &[u8]) -> Result<ChatResponse, serde_json::Error> {
    let mut r: GResponse = super::from_json(body)?;
    let usage = r.usage_metadata.take().map(GUsage::to_canonical);
    let id = r.response_id.take();
    let model = r.model_version.take();
    let mut reply = Collected::default();
    for ev in StreamDecoder::new().events(r) {
        reply.push(ev);
    }
    Ok(ChatResponse {
        id: id
            .map(|id| format!("chatcmpl-{id}"))
            .unwrap_or_else(|| format!("chatcmpl-{}", crate::ids::uuid_v4().simple())),
        model: model.unwrap_or_default(),
        created: crate::providers::mock::unix_now(),
        message: reply.message,
        finish_reason: reply.finish,
        usage,
        raw: Raw::None,
    })
}

/// An error Gemini reported inside a stream (`data: {"error": {…}}`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamError {
    /// The HTTP status Gemini would have answered with (`error.code`), when given.
    pub status: Option<u16>,
    pub message: String,
}

/// Decodes `streamGenerateContent?alt=sse` events into canonical events. Each event is a
/// whole response; tool calls arrive whole, so each becomes a start plus one arguments event.
#[derive(Debug, Default)]
pub struct StreamDecoder {
    next_tool: u32,
    usage: Option<GUsage>,
    saw_tool_call: bool,
    finished: bool,
}

impl StreamDecoder {
    pub fn new() -> Self {
        Self::default()
    }

    /// Whether a `finishReason` (or a blocked prompt) ended the reply.
    pub fn finished(&self) -> bool {
        self.finished
    }

    pub fn decode(
        &mut self,
        data: &[u8],
    ) -> Result<Result<Vec<ChatEvent>, StreamError>, serde_json::Error> {
        let mut r: GResponse = super::from_json(data)?;
        if let Some(err) = r.error.take() {
            return Ok(Err(StreamError {
                status: err
                    .get("code")
                    .and_then(Value::as_u64)
                    .and_then(|c| u16::try_from(c).ok()),
                message: error_text(&err),
            }));
        }
        if let Some(u) = r.usage_metadata.take() {
            self.usage = Some(u);
        }
        let was_finished = self.finished;
        let mut out = self.events(r);
        if self.finished && !was_finished {
            if let Some(u) = self.usage {
                out.push(ChatEvent::Usage(u.to_canonical()));
            }
        }
        Ok(Ok(out))
    }

    /// Text, reasoning, tool calls and the finish of one response (usage aside). Gemini
    /// says STOP after a function call; OpenAI clients expect `tool_calls`, so it becomes
    /// that. A prompt blocked before generation (no candidates,
    /// `promptFeedback.blockReason`) is a `content_filter` finish with no content.
    fn events(&mut self, r: GResponse) -> Vec<ChatEvent> {
        let mut out = Vec::new();
        let mut finish = None;
        if let Some(c) = r.candidates.into_iter().next() {
            for part in c.content.map(|c| c.parts).unwrap_or_default() {
                if let Some(call) = part.function_call {
                    let index = self.next_tool;
                    self.next_tool += 1;
                    self.saw_tool_call = true;
                    out.push(ChatEvent::ToolCallStart {
                        index,
                        id: tool_call_id(index as usize, part.thought_signature.as_deref()),
                        name: call.name,
                    });
                    out.push(ChatEvent::ToolCallArgs {
                        index,
                        fragment: call.args.unwrap_or_else(|| json!({})).to_string(),
                    });
                } else if let Some(text) = part.text.filter(|t| !t.is_empty()) {
                    out.push(if part.thought == Some(true) {
                        ChatEvent::ReasoningDelta(text)
                    } else {
                        ChatEvent::TextDelta(text)
                    });
                }
            }
            finish = c.finish_reason.as_deref().map(finish_reason);
        } else if r
            .prompt_feedback
            .as_ref()
            .is_some_and(|f| f.block_reason.is_some())
        {
            finish = Some(FinishReason::ContentFilter);
        }
        if let Some(mut f) = finish {
            if self.saw_tool_call && f == FinishReason::Stop {
                f = FinishReason::ToolCalls;
            }
            self.finished = true;
            out.push(ChatEvent::Finish(f));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures_round_trip_through_tool_call_ids() {
        let sig = "CiIBVKhc7vB+vaaq6rA/KC79Ts7iXagIOA4EBOyBFDpl+pxPCmcB==";
        let id = tool_call_id(0, Some(sig));
        assert!(id.starts_with("call_"));
        assert!(
            id.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-'),
            "ids must stay within Anthropic's tool id alphabet: {id}"
        );
        assert_eq!(signature_from_id(&id).as_deref(), Some(sig));
        assert_eq!(signature_from_id(&tool_call_id(1, None)), None);
        assert_eq!(signature_from_id("call_abc_ts_%%%"), None);
    }

    #[test]
    fn complex_schemas_go_as_json_schema() {
        let simple = json!({"type": "object", "properties": {
            "const": {"type": "string", "enum": ["a"]},
            "n": {"type": "array", "items": {"type": "integer", "minimum": 0}}},
            "required": ["const"]});
        assert!(
            !needs_json_schema(&simple),
            "a property named like a keyword is fine"
        );
        for complex in [
            json!({"type": "object", "properties": {"a": {"type": "string"}}, "additionalProperties": false}),
            json!({"type": "object", "properties": {"a": {"type": ["string", "null"]}}}),
            json!({"type": "object", "properties": {"a": {"type": "number", "exclusiveMinimum": 0}}}),
            json!({"type": "array", "items": {"$ref": "#/$defs/x"}}),
        ] {
            assert!(needs_json_schema(&complex), "{complex}");
        }
    }
}
