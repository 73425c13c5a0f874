//! The built-in `mock` provider: a real provider behind the same trait, so the proxy runs
//! with no keys, demos work offline, and tests exercise the whole path.
//!
//! Its text is derived deterministically from the prompt. Length and pacing come from the
//! provider's settings and can be overridden per model through the upstream model id, in
//! the same notation as the shared benchmark upstream: `mock-n64-d20-t100` means 64 tokens,
//! 20 ms apart, the first after 100 ms; `e503` makes every request fail with HTTP 503.
//! Faults (error, hang, drop mid-stream, fail the first N requests) come from settings.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use futures_util::StreamExt;
use serde_json::{Map, Value};
use tokio::time::{Instant, sleep_until};

/// Waits until `deadline`, or not at all when it has passed: a tokio timer fires on its
/// next millisecond tick even for a deadline already reached, which would give an unpaced
/// mock (`-d0-t0`) a millisecond of latency per reply.
async fn pace(deadline: Instant) {
    if deadline > Instant::now() {
        sleep_until(deadline).await;
    }
}

use super::{ChatProvider, EventStream, UpstreamError};
use crate::types::{
    ChatEvent, ChatRequest, ChatResponse, Collected, FinishReason, Raw, Role, StreamChunk, Tool,
    ToolChoice, Usage,
};

/// A fault the mock injects, chosen by config for tests and demos.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Fault {
    /// Fail before any output with HTTP `fault_status`.
    Error,
    /// Accept the request and never answer (exercises timeouts).
    Hang,
    /// Stream half the reply, then fail as a dropped connection would.
    Drop,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MockSettings {
    pub tokens: u32,
    pub delay: Duration,
    pub ttft: Duration,
    pub fault: Option<Fault>,
    pub fault_status: u16,
    /// Fail this many requests first (with `fault_status`), then behave: for retry tests.
    pub fail_first: u64,
    /// Also emit a short reasoning trace before the answer.
    pub reasoning: bool,
}

impl Default for MockSettings {
    fn default() -> Self {
        Self {
            tokens: 16,
            delay: Duration::ZERO,
            ttft: Duration::ZERO,
            fault: None,
            fault_status: 500,
            fail_first: 0,
            reasoning: false,
        }
    }
}

#[derive(Debug)]
pub struct MockProvider {
    settings: MockSettings,
    calls: AtomicU64,
    /// Model ids listed by `models()`.
    model_ids: Vec<String>,
}

/// What one request will produce, decided up front so streaming and non-streaming agree.
struct Plan {
    events: Vec<ChatEvent>,
    delay: Duration,
    ttft: Duration,
    error_status: Option<u16>,
    hang: bool,
    drop_after: Option<usize>,
}

const WORDS: [&str; 48] = [
    "the",
    "proxy",
    "streams",
    "tokens",
    "quickly",
    "and",
    "every",
    "model",
    "answers",
    "with",
    "care",
    "while",
    "latency",
    "stays",
    "low",
    "because",
    "requests",
    "flow",
    "through",
    "one",
    "small",
    "binary",
    "that",
    "routes",
    "retries",
    "limits",
    "records",
    "usage",
    "cost",
    "for",
    "teams",
    "who",
    "ship",
    "agents",
    "tools",
    "safely",
    "today",
    "so",
    "operators",
    "see",
    "what",
    "happens",
    "in",
    "each",
    "call",
    "clearly",
    "again",
    "now",
];

impl MockProvider {
    pub fn new(settings: MockSettings, model_ids: Vec<String>) -> Self {
        Self {
            settings,
            calls: AtomicU64::new(0),
            model_ids,
        }
    }

    pub fn calls(&self) -> u64 {
        self.calls.load(Ordering::Relaxed)
    }

    fn plan(&self, req: &ChatRequest, model: &str) -> Plan {
        let call = self.calls.fetch_add(1, Ordering::Relaxed);
        let mut s = self.settings.clone();
        let mut forced_status = None;
        for seg in model.split('-') {
            let (Some(tag), Ok(n)) = (
                seg.chars().next(),
                seg.get(1..).unwrap_or("").parse::<u64>(),
            ) else {
                continue;
            };
            match tag {
                'n' => s.tokens = n.min(100_000) as u32,
                'd' => s.delay = Duration::from_millis(n.min(60_000)),
                't' => s.ttft = Duration::from_millis(n.min(600_000)),
                'e' if (400..600).contains(&n) => forced_status = Some(n as u16),
                _ => {}
            }
        }
        let error_status =
            forced_status.or(if call < s.fail_first || s.fault == Some(Fault::Error) {
                Some(s.fault_status)
            } else {
                None
            });

        let prompt_tokens = estimate_prompt_tokens(req);
        let budget = req
            .max_output_tokens()
            .map(|m| m.min(u32::MAX as u64) as u32);
        let mut events = Vec::new();
        if s.reasoning {
            events.push(ChatEvent::ReasoningDelta(
                "Thinking about the request.".into(),
            ));
        }
        let last = req.messages.last();
        let answering_tool = last.is_some_and(|m| m.role == Role::Tool);
        let finish;
        let completion_tokens;
        if req.has_tools() && !answering_tool {
            let tool = pick_tool(req);
            let (name, args) = match tool {
                Some(t) => (
                    t.function
                        .as_ref()
                        .map(|f| f.name.clone())
                        .unwrap_or_default(),
                    mock_arguments(t),
                ),
                None => (String::new(), "{}".to_owned()),
            };
            let id = format!("call_mock_{:08x}", seed_of(req) as u32);
            events.push(ChatEvent::ToolCallStart { index: 0, id, name });
            // Split the arguments into a few fragments, as real upstreams do.
            let pieces = split_utf8(&args, 3);
            completion_tokens = pieces.len() as u64 + 1;
            for p in pieces {
                events.push(ChatEvent::ToolCallArgs {
                    index: 0,
                    fragment: p,
                });
            }
            finish = FinishReason::ToolCalls;
        } else {
            let n = budget.map_or(s.tokens, |b| b.min(s.tokens)) as usize;
            let text = if answering_tool {
                let result = last.map(|m| m.text()).unwrap_or_default();
                format!("Mock result received: {}", first_words(&result, 8))
            } else {
                let prompt = req
                    .messages
                    .iter()
                    .rev()
                    .find(|m| m.role == Role::User)
                    .map(|m| m.text())
                    .unwrap_or_default();
                format!("Mock reply to \"{}\":", first_words(&prompt, 6))
            };
            let mut words: Vec<String> = text.split(' ').map(str::to_owned).collect();
            let mut rng = seed_of(req);
            while words.len() < n {
                rng = rng
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                words.push(WORDS[(rng >> 33) as usize % WORDS.len()].to_owned());
            }
            words.truncate(n);
            completion_tokens = words.len() as u64;
            for (i, w) in words.into_iter().enumerate() {
                let t = if i == 0 { w } else { format!(" {w}") };
                events.push(ChatEvent::TextDelta(t));
            }
            finish = if budget.is_some_and(|b| b < s.tokens) {
                FinishReason::Length
            } else {
                FinishReason::Stop
            };
        }
        events.push(ChatEvent::Finish(finish));
        events.push(ChatEvent::Usage(Usage {
            prompt_tokens,
            completion_tokens,
            total_tokens: prompt_tokens + completion_tokens,
            cached_tokens: None,
            cache_creation_tokens: None,
            reasoning_tokens: s.reasoning.then_some(5),
        }));
        let drop_after = (s.fault == Some(Fault::Drop)).then(|| (events.len() / 2).max(1));
        Plan {
            events,
            delay: s.delay,
            ttft: s.ttft,
            error_status,
            hang: s.fault == Some(Fault::Hang),
            drop_after,
        }
    }
}

fn estimate_prompt_tokens(req: &ChatRequest) -> u64 {
    let chars: usize = req.messages.iter().map(|m| m.text().len()).sum();
    (chars as u64).div_ceil(4).max(1)
}

fn seed_of(req: &ChatRequest) -> u64 {
    // FNV-1a over the conversation's text: same prompt, same reply.
    let mut h: u64 = 0xcbf29ce484222325;
    for m in &req.messages {
        for b in m.text().bytes() {
            h ^= b as u64;
            h = h.wrapping_mul(0x100000001b3);
        }
    }
    h
}

fn first_words(text: &str, n: usize) -> String {
    text.split_whitespace()
        .take(n)
        .collect::<Vec<_>>()
        .join(" ")
        .replace('"', "'")
}

fn pick_tool(req: &ChatRequest) -> Option<&Tool> {
    let tools = req.tools.as_deref()?;
    if let Some(ToolChoice::Named(obj)) = &req.tool_choice {
        let wanted = obj
            .get("function")
            .and_then(|f| f.get("name"))
            .and_then(Value::as_str);
        if let Some(t) = tools.iter().find(|t| {
            t.function
                .as_ref()
                .is_some_and(|f| Some(f.name.as_str()) == wanted)
        }) {
            return Some(t);
        }
    }
    tools.iter().find(|t| t.function.is_some())
}

/// Arguments that satisfy the tool's JSON schema well enough for a demo: every required
/// property (or the first one) with a value of its declared type.
fn mock_arguments(tool: &Tool) -> String {
    let params = tool.function.as_ref().and_then(|f| f.parameters.as_ref());
    let props = params
        .and_then(|p| p.get("properties"))
        .and_then(Value::as_object);
    let mut out = Map::new();
    if let Some(props) = props {
        let required: Vec<&str> = params
            .and_then(|p| p.get("required"))
            .and_then(Value::as_array)
            .map(|a| a.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        let names: Vec<&str> = if required.is_empty() {
            props.keys().take(1).map(String::as_str).collect()
        } else {
            required
        };
        for name in names {
            let schema = props.get(name);
            let value = match schema.and_then(|s| s.get("enum")).and_then(Value::as_array) {
                Some(e) if !e.is_empty() => e[0].clone(),
                _ => match schema.and_then(|s| s.get("type")).and_then(Value::as_str) {
                    Some("integer") | Some("number") => Value::from(1),
                    Some("boolean") => Value::Bool(true),
                    Some("array") => Value::Array(vec![]),
                    Some("object") => Value::Object(Map::new()),
                    _ => Value::String(format!("mock {name}")),
                },
            };
            out.insert(name.to_owned(), value);
        }
    }
    Value::Object(out).to_string()
}

/// Splits `s` into up to `n` pieces on character boundaries.
fn split_utf8(s: &str, n: usize) -> Vec<String> {
    let chars: Vec<char> = s.chars().collect();
    let size = chars.len().div_ceil(n.max(1)).max(1);
    chars.chunks(size).map(|c| c.iter().collect()).collect()
}

impl ChatProvider for MockProvider {
    async fn chat(&self, req: &ChatRequest, model: &str) -> Result<ChatResponse, UpstreamError> {
        let plan = self.plan(req, model);
        if let Some(status) = plan.error_status {
            return Err(mock_status_error(status));
        }
        if plan.hang {
            std::future::pending::<()>().await;
        }
        let start = Instant::now();
        let n = plan.events.iter().filter(|e| e.is_content()).count() as u32;
        pace(start + plan.ttft + plan.delay * n.saturating_sub(1)).await;
        if plan.drop_after.is_some() {
            return Err(UpstreamError::Stream(
                "mock fault: connection dropped".into(),
            ));
        }
        let mut reply = Collected::default();
        for ev in plan.events {
            reply.push(ev);
        }
        Ok(ChatResponse {
            id: format!("chatcmpl-mock-{}", crate::ids::uuid_v4().simple()),
            model: model.to_owned(),
            created: unix_now(),
            message: reply.message,
            finish_reason: reply.finish,
            usage: reply.usage,
            raw: Raw::None,
        })
    }

    async fn chat_stream(
        &self,
        req: &ChatRequest,
        model: &str,
    ) -> Result<EventStream, UpstreamError> {
        let plan = self.plan(req, model);
        if let Some(status) = plan.error_status {
            return Err(mock_status_error(status));
        }
        if plan.hang {
            std::future::pending::<()>().await;
        }
        let start = Instant::now();
        let Plan {
            events,
            delay,
            ttft,
            drop_after,
            ..
        } = plan;
        struct St {
            events: std::vec::IntoIter<ChatEvent>,
            sent: usize,
            content_sent: u32,
            stopped: bool,
        }
        let st = St {
            events: events.into_iter(),
            sent: 0,
            content_sent: 0,
            stopped: false,
        };
        let stream = futures_util::stream::unfold(st, move |mut st| async move {
            if st.stopped {
                return None;
            }
            if drop_after == Some(st.sent) {
                st.stopped = true;
                let err = UpstreamError::Stream("mock fault: connection dropped".into());
                return Some((Err(err), st));
            }
            let ev = st.events.next()?;
            if ev.is_content() {
                pace(start + ttft + delay * st.content_sent).await;
                st.content_sent += 1;
            }
            st.sent += 1;
            let chunk = StreamChunk {
                events: vec![ev],
                raw: Raw::None,
            };
            Some((Ok(chunk), st))
        });
        Ok(stream.boxed())
    }

    async fn models(&self) -> Result<Vec<String>, UpstreamError> {
        Ok(self.model_ids.clone())
    }
}

fn mock_status_error(status: u16) -> UpstreamError {
    UpstreamError::Status {
        status,
        message: format!("mock fault: injected HTTP {status}"),
        retry_after: None,
    }
}

pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}
