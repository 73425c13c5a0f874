//! Our own normalized dialect, the spec's uniform API (`/llm/chat`, `/llm/stream`,
//! `/llm/completions`): one reply shape and one stream vocabulary whatever the provider.
//!
//! Stream events, in SSE (`event: <type>` + `data: <json>`) or as JSON lines:
//! - `token`      `{"type":"token","token":"…","index":N}`: N counts text tokens (deltas)
//!   from 1, one by one, with no gaps;
//! - `reasoning`  `{"type":"reasoning","text":"…"}`: reasoning / thinking, where exposed;
//! - `tool_call_delta` (only when the request asked for `tool_call_deltas`)
//!   `{"type":"tool_call_delta","index":i,"id"?,"name"?,"arguments":"…"}`;
//! - `tool_call`  `{"type":"tool_call","index":i,"tool_call":{"id","name","arguments"}}`,
//!   once the call is complete (the next call starts, or the reply finishes);
//! - `end`        `{"type":"end","finish_reason","usage","trace_id","model","provider",
//!   "latency_ms","ttft_ms","tokens_per_sec"}`, last;
//! - `error`      `{"type":"error","error":{…our error object…}}`, last, instead of `end`.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use crate::error::ProxyError;
use crate::types::{ChatEvent, ChatResponse, FinishReason, Usage};
use crate::wire::sse::named_frame;

/// How a stream is framed for the client.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum StreamFormat {
    /// Server-Sent Events with named events (the default).
    #[default]
    Sse,
    /// One JSON object per line (`application/x-ndjson`).
    Ndjson,
}

impl StreamFormat {
    pub fn content_type(self) -> &'static str {
        match self {
            StreamFormat::Sse => "text/event-stream",
            StreamFormat::Ndjson => "application/x-ndjson",
        }
    }
}

/// Who answered and when: what every normalized reply and stream end reports.
#[derive(Debug, Clone, Copy)]
pub struct Meta<'a> {
    pub trace_id: &'a str,
    /// The model name the client asked for.
    pub model: &'a str,
    pub provider: Option<&'a str>,
}

/// Token counts of a reply.
#[derive(Serialize, Debug, utoipa::ToSchema)]
pub struct WireUsage {
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    pub total_tokens: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cached_tokens: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cache_creation_tokens: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reasoning_tokens: Option<u64>,
}

impl From<Usage> for WireUsage {
    fn from(u: Usage) -> Self {
        Self {
            prompt_tokens: u.prompt_tokens,
            completion_tokens: u.completion_tokens,
            total_tokens: u.total_tokens,
            cached_tokens: u.cached_tokens,
            cache_creation_tokens: u.cache_creation_tokens,
            reasoning_tokens: u.reasoning_tokens,
        }
    }
}

/// A tool call as the normalized API reports it: arguments are the model's JSON text,
/// exactly as produced (not re-parsed, so nothing is lost if it is not valid JSON).
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, utoipa::ToSchema)]
pub struct WireToolCall {
    pub id: String,
    pub name: String,
    pub arguments: String,
}

fn ms(d: Duration) -> f64 {
    (d.as_secs_f64() * 1_000_000.0).round() / 1000.0
}

fn finish_str(f: Option<FinishReason>) -> Option<&'static str> {
    f.map(FinishReason::as_str)
}

fn reply_id(resp: &ChatResponse) -> String {
    if resp.id.is_empty() {
        format!("llm-{}", crate::ids::uuid_v4().simple())
    } else {
        resp.id.clone()
    }
}

/// The assistant's message in a `/llm/chat` reply.
#[derive(Serialize, Debug, utoipa::ToSchema)]
pub struct LlmMessage<'a> {
    /// Always `assistant`.
    pub role: &'static str,
    pub content: Option<&'a str>,
    pub tool_calls: Vec<WireToolCall>,
    /// Reasoning / thinking text, where the provider exposes it.
    pub reasoning: Option<&'a str>,
}

/// `POST /llm/chat`: one normalized reply, whatever the provider.
#[derive(Serialize, Debug, utoipa::ToSchema)]
pub struct LlmChatResponse<'a> {
    pub id: String,
    /// The request id (also the `x-request-id` header), for tracing across services.
    pub trace_id: &'a str,
    /// The model name that was asked for.
    pub model: &'a str,
    /// The configured provider that served the reply.
    pub provider: Option<&'a str>,
    pub message: LlmMessage<'a>,
    /// `stop`, `length`, `tool_calls` or `content_filter`.
    pub finish_reason: Option<&'static str>,
    pub usage: Option<WireUsage>,
    pub latency_ms: f64,
}

/// `POST /llm/completions`: the reply's text.
#[derive(Serialize, Debug, utoipa::ToSchema)]
pub struct LlmCompletionResponse<'a> {
    pub id: String,
    pub trace_id: &'a str,
    pub model: &'a str,
    pub provider: Option<&'a str>,
    pub text: &'a str,
    pub finish_reason: Option<&'static str>,
    pub usage: Option<WireUsage>,
    pub latency_ms: f64,
}

/// `/llm/chat`: the reply with its message, usage and where it came from.
pub fn encode_chat(resp: &ChatResponse, meta: Meta<'_>, latency: Duration) -> Vec<u8> {
    let body = LlmChatResponse {
        id: reply_id(resp),
        trace_id: meta.trace_id,
        model: meta.model,
        provider: meta.provider,
        message: LlmMessage {
            role: "assistant",
            content: resp.message.content.as_deref(),
            tool_calls: resp
                .message
                .tool_calls
                .iter()
                .map(|c| WireToolCall {
                    id: c.id.clone(),
                    name: c.function.name.clone(),
                    arguments: c.function.arguments.clone(),
                })
                .collect(),
            reasoning: resp.message.reasoning.as_deref(),
        },
        finish_reason: finish_str(resp.finish_reason),
        usage: resp.usage.map(WireUsage::from),
        latency_ms: ms(latency),
    };
    serde_json::to_vec(&body).unwrap_or_default()
}

/// `/llm/completions`: the reply's text.
pub fn encode_completion(resp: &ChatResponse, meta: Meta<'_>, latency: Duration) -> Vec<u8> {
    let body = LlmCompletionResponse {
        id: reply_id(resp),
        trace_id: meta.trace_id,
        model: meta.model,
        provider: meta.provider,
        text: resp.message.content.as_deref().unwrap_or(""),
        finish_reason: finish_str(resp.finish_reason),
        usage: resp.usage.map(WireUsage::from),
        latency_ms: ms(latency),
    };
    serde_json::to_vec(&body).unwrap_or_default()
}

/// One event of `/llm/stream` (the SSE event name is `type`).
#[derive(Serialize, Debug, utoipa::ToSchema)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum StreamEvent<'a> {
    /// A piece of the reply's text; `index` counts from 1 with no gaps.
    Token { token: &'a str, index: u64 },
    /// A piece of reasoning, where the provider exposes it.
    Reasoning { text: &'a str },
    /// A piece of a tool call, only when the request set `tool_call_deltas`.
    ToolCallDelta {
        index: usize,
        #[serde(skip_serializing_if = "Option::is_none")]
        id: Option<&'a str>,
        #[serde(skip_serializing_if = "Option::is_none")]
        name: Option<&'a str>,
        arguments: &'a str,
    },
    /// A complete tool call; `index` counts calls from 0.
    ToolCall {
        index: usize,
        tool_call: &'a WireToolCall,
    },
    /// The last event of a successful stream.
    End {
        finish_reason: Option<&'static str>,
        usage: Option<WireUsage>,
        trace_id: &'a str,
        model: &'a str,
        provider: Option<&'a str>,
        latency_ms: f64,
        ttft_ms: Option<f64>,
        tokens_per_sec: Option<f64>,
    },
    /// The last event of a failed stream.
    Error {
        error: crate::error::ErrorObject<'a>,
    },
}

impl StreamEvent<'_> {
    fn name(&self) -> &'static str {
        match self {
            StreamEvent::Token { .. } => "token",
            StreamEvent::Reasoning { .. } => "reasoning",
            StreamEvent::ToolCallDelta { .. } => "tool_call_delta",
            StreamEvent::ToolCall { .. } => "tool_call",
            StreamEvent::End { .. } => "end",
            StreamEvent::Error { .. } => "error",
        }
    }
}

/// A prompt-style request: `prompt` (one string), an optional `system`, and any chat
/// parameter. It becomes a chat request with one user message, so chat-only providers
/// serve it.
pub fn completion_to_chat(mut body: Map<String, Value>) -> Result<Value, ProxyError> {
    if body.contains_key("messages") {
        return Err(ProxyError::invalid(
            "messages",
            "/llm/completions takes `prompt`; send `messages` to /llm/chat",
        ));
    }
    // Legacy completion options a chat model cannot honour: refused, not silently dropped.
    for key in ["echo", "suffix", "best_of"] {
        if body.get(key).is_some_and(|v| !v.is_null()) {
            return Err(ProxyError::invalid(
                key,
                format!("`{key}` is not supported: completions are served by chat models"),
            ));
        }
    }
    if body.get("logprobs").is_some_and(Value::is_number) {
        return Err(ProxyError::invalid(
            "logprobs",
            "a number of `logprobs` is the legacy completions API; send `logprobs: true`",
        ));
    }
    let prompt = match body.remove("prompt") {
        Some(Value::String(p)) => p,
        Some(Value::Array(a)) if a.len() == 1 && a[0].is_string() => {
            a[0].as_str().unwrap_or_default().to_owned()
        }
        Some(_) => {
            return Err(ProxyError::invalid(
                "prompt",
                "`prompt` must be a string (or a list of exactly one string)",
            ));
        }
        None => return Err(ProxyError::invalid("prompt", "`prompt` is required")),
    };
    let mut messages = Vec::new();
    match body.remove("system") {
        Some(Value::String(s)) => messages.push(json!({"role": "system", "content": s})),
        Some(Value::Null) | None => {}
        Some(_) => {
            return Err(ProxyError::invalid("system", "`system` must be a string"));
        }
    }
    messages.push(json!({"role": "user", "content": prompt}));
    body.insert("messages".into(), Value::Array(messages));
    Ok(Value::Object(body))
}

/// What the stream's `end` event reports beyond usage and finish.
#[derive(Debug, Clone, Copy)]
pub struct StreamTiming {
    pub latency: Duration,
    pub ttft: Option<Duration>,
    pub tokens_per_sec: Option<f64>,
}

/// Turns canonical events into the normalized stream for one request.
#[derive(Debug)]
pub struct EventEncoder {
    format: StreamFormat,
    deltas: bool,
    trace_id: String,
    model: String,
    provider: Option<String>,
    /// The number of the last `token` event.
    index: u64,
    tools: Vec<WireToolCall>,
    /// Tool calls below this index were already sent as `tool_call`.
    tools_sent: usize,
    finish: Option<FinishReason>,
    usage: Option<Usage>,
}

impl EventEncoder {
    pub fn new(format: StreamFormat, deltas: bool, meta: Meta<'_>) -> Self {
        Self {
            format,
            deltas,
            trace_id: meta.trace_id.to_owned(),
            model: meta.model.to_owned(),
            provider: meta.provider.map(str::to_owned),
            index: 0,
            tools: Vec::new(),
            tools_sent: 0,
            finish: None,
            usage: None,
        }
    }

    pub fn format(&self) -> StreamFormat {
        self.format
    }

    fn frame(format: StreamFormat, ev: &StreamEvent<'_>, out: &mut Vec<u8>) {
        let json = serde_json::to_string(ev).unwrap_or_default();
        match format {
            StreamFormat::Sse => out.extend_from_slice(&named_frame(ev.name(), json.as_bytes())),
            StreamFormat::Ndjson => {
                out.extend_from_slice(json.as_bytes());
                out.push(b'\n');
            }
        }
    }

    /// Sends every finished tool call not sent yet (those before `upto`).
    fn flush_tools(&mut self, upto: usize, out: &mut Vec<u8>) {
        while self.tools_sent < upto.min(self.tools.len()) {
            let i = self.tools_sent;
            let ev = StreamEvent::ToolCall {
                index: i,
                tool_call: &self.tools[i],
            };
            Self::frame(self.format, &ev, out);
            self.tools_sent += 1;
        }
    }

    /// Appends the frames for one event.
    pub fn encode(&mut self, event: &ChatEvent, out: &mut Vec<u8>) {
        match event {
            ChatEvent::TextDelta(t) => {
                self.index += 1;
                let ev = StreamEvent::Token {
                    token: t,
                    index: self.index,
                };
                Self::frame(self.format, &ev, out);
            }
            ChatEvent::ReasoningDelta(t) => {
                Self::frame(self.format, &StreamEvent::Reasoning { text: t }, out);
            }
            ChatEvent::ToolCallStart { id, name, .. } => {
                // A new call means the ones before it are complete.
                self.flush_tools(self.tools.len(), out);
                self.tools.push(WireToolCall {
                    id: id.clone(),
                    name: name.clone(),
                    arguments: String::new(),
                });
                if self.deltas {
                    let ev = StreamEvent::ToolCallDelta {
                        index: self.tools.len() - 1,
                        id: Some(id),
                        name: Some(name),
                        arguments: "",
                    };
                    Self::frame(self.format, &ev, out);
                }
            }
            ChatEvent::ToolCallArgs { index, fragment } => {
                // Indexes count from 0 in start order; arguments for a call we never saw
                // start get one with what we know.
                let i = *index as usize;
                while self.tools.len() <= i {
                    self.tools.push(WireToolCall {
                        id: String::new(),
                        name: String::new(),
                        arguments: String::new(),
                    });
                }
                if let Some(call) = self.tools.get_mut(i) {
                    call.arguments.push_str(fragment);
                }
                if self.deltas {
                    let ev = StreamEvent::ToolCallDelta {
                        index: i,
                        id: None,
                        name: None,
                        arguments: fragment,
                    };
                    Self::frame(self.format, &ev, out);
                }
            }
            ChatEvent::Finish(f) => {
                // The reply is complete, and so is every call in it.
                self.flush_tools(self.tools.len(), out);
                self.finish = Some(*f);
            }
            ChatEvent::Usage(u) => self.usage = Some(*u),
            // Signatures only matter to the provider that made them.
            ChatEvent::ReasoningSignature(_) | ChatEvent::RedactedReasoning(_) => {}
        }
    }

    /// The closing frames: pending tool calls, then `end`.
    pub fn finish(&mut self, timing: StreamTiming, out: &mut Vec<u8>) {
        self.flush_tools(self.tools.len(), out);
        let ev = StreamEvent::End {
            finish_reason: finish_str(self.finish),
            usage: self.usage.map(WireUsage::from),
            trace_id: &self.trace_id,
            model: &self.model,
            provider: self.provider.as_deref(),
            latency_ms: ms(timing.latency),
            ttft_ms: timing.ttft.map(ms),
            tokens_per_sec: timing.tokens_per_sec,
        };
        Self::frame(self.format, &ev, out);
    }

    /// The `error` event that ends a failed stream.
    pub fn error(&mut self, err: &ProxyError, request_id: &str) -> Vec<u8> {
        let mut out = Vec::new();
        let ev = StreamEvent::Error {
            error: err.object(request_id),
        };
        Self::frame(self.format, &ev, &mut out);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta() -> Meta<'static> {
        Meta {
            trace_id: "t-1",
            model: "m",
            provider: Some("p"),
        }
    }

    #[test]
    fn tokens_count_from_one_and_tool_calls_come_whole() {
        let mut enc = EventEncoder::new(StreamFormat::Ndjson, false, meta());
        let mut out = Vec::new();
        for ev in [
            ChatEvent::TextDelta("a".into()),
            ChatEvent::TextDelta("b".into()),
            ChatEvent::ToolCallStart {
                index: 0,
                id: "c1".into(),
                name: "f".into(),
            },
            ChatEvent::ToolCallArgs {
                index: 0,
                fragment: "{\"x\":".into(),
            },
            ChatEvent::ToolCallArgs {
                index: 0,
                fragment: "1}".into(),
            },
            ChatEvent::Finish(FinishReason::ToolCalls),
        ] {
            enc.encode(&ev, &mut out);
        }
        enc.finish(
            StreamTiming {
                latency: Duration::from_millis(5),
                ttft: None,
                tokens_per_sec: None,
            },
            &mut out,
        );
        let lines: Vec<Value> = String::from_utf8(out)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines[0], json!({"type": "token", "token": "a", "index": 1}));
        assert_eq!(lines[1]["index"], 2);
        assert_eq!(
            lines[2],
            json!({"type": "tool_call", "index": 0,
                   "tool_call": {"id": "c1", "name": "f", "arguments": "{\"x\":1}"}})
        );
        assert_eq!(lines[3]["type"], "end");
        assert_eq!(lines[3]["finish_reason"], "tool_calls");
        assert_eq!(lines.len(), 4);
    }

    #[test]
    fn completions_become_one_user_message() {
        let body = json!({"model": "m", "prompt": "hi", "system": "s", "temperature": 0.1});
        let Value::Object(map) = body else {
            unreachable!()
        };
        let chat = completion_to_chat(map).unwrap();
        assert_eq!(
            chat["messages"],
            json!([{"role": "system", "content": "s"}, {"role": "user", "content": "hi"}])
        );
        assert_eq!(chat["temperature"], 0.1);
        let Value::Object(bad) = json!({"prompt": ["a", "b"]}) else {
            unreachable!()
        };
        assert_eq!(
            completion_to_chat(bad).unwrap_err().param.as_deref(),
            Some("prompt")
        );
    }
}
