//! The spec's Request Validator: shape, roles, content types and parameter ranges checked
//! before any upstream is called. Never stricter than the upstreams we serve: anything a
//! major provider accepts passes here.

use serde_json::Value;

use crate::error::ProxyError;
use crate::types::{ChatRequest, Content, ContentPart, Role, ToolChoice};

fn range(param: &str, v: Option<f64>, lo: f64, hi: f64) -> Result<(), ProxyError> {
    match v {
        Some(x) if !(lo..=hi).contains(&x) || x.is_nan() => Err(ProxyError::invalid(
            param,
            format!("`{param}` must be between {lo} and {hi}, got {x}"),
        )),
        _ => Ok(()),
    }
}

fn positive(param: &str, v: Option<u64>) -> Result<(), ProxyError> {
    match v {
        Some(0) => Err(ProxyError::invalid(
            param,
            format!("`{param}` must be at least 1"),
        )),
        _ => Ok(()),
    }
}

pub fn chat_request(req: &ChatRequest) -> Result<(), ProxyError> {
    if req.messages.is_empty() {
        return Err(ProxyError::invalid(
            "messages",
            "`messages` must contain at least one message",
        ));
    }
    range("temperature", req.temperature, 0.0, 2.0)?;
    range("top_p", req.top_p, 0.0, 1.0)?;
    for p in ["presence_penalty", "frequency_penalty"] {
        match req.extra.get(p) {
            None | Some(Value::Null) => {}
            Some(Value::Number(n)) => range(p, n.as_f64(), -2.0, 2.0)?,
            Some(_) => return Err(ProxyError::invalid(p, format!("`{p}` must be a number"))),
        }
    }
    positive("max_tokens", req.max_tokens)?;
    positive("max_completion_tokens", req.max_completion_tokens)?;
    positive("n", req.n)?;
    for (i, m) in req.messages.iter().enumerate() {
        let at = |f: &str| format!("messages[{i}].{f}");
        match m.role {
            Role::Tool if m.tool_call_id.as_deref().is_none_or(str::is_empty) => {
                return Err(ProxyError::invalid(
                    at("tool_call_id"),
                    "a `tool` message needs the `tool_call_id` it answers",
                ));
            }
            // An assistant turn with neither content nor tool calls (nor a refusal or
            // audio) is a client bug that most upstreams reject.
            Role::Assistant
                if m.content.is_none()
                    && m.tool_calls.as_ref().is_none_or(Vec::is_empty)
                    && !m.extra.contains_key("refusal")
                    && !m.extra.contains_key("audio") =>
            {
                return Err(ProxyError::invalid(
                    at("content"),
                    "an assistant message needs `content` or `tool_calls`",
                ));
            }
            Role::System | Role::Developer | Role::User if m.content.is_none() => {
                return Err(ProxyError::invalid(at("content"), "`content` is required"));
            }
            _ => {}
        }
        if let Some(Content::Parts(parts)) = &m.content {
            for (j, p) in parts.iter().enumerate() {
                match p {
                    ContentPart::ImageUrl { image_url } if image_url.url.is_empty() => {
                        return Err(ProxyError::invalid(
                            format!("messages[{i}].content[{j}].image_url.url"),
                            "image url must not be empty",
                        ));
                    }
                    ContentPart::Other(obj) if !obj.get("type").is_some_and(Value::is_string) => {
                        return Err(ProxyError::invalid(
                            format!("messages[{i}].content[{j}].type"),
                            "each content part needs a string `type` (text, image_url, input_audio, file, …)",
                        ));
                    }
                    _ => {}
                }
            }
        }
    }
    for (i, t) in req.tools.iter().flatten().enumerate() {
        if t.kind != "function" {
            continue; // hosted tools (web_search, custom, …) pass through to those who know them
        }
        let Some(f) = &t.function else {
            return Err(ProxyError::invalid(
                format!("tools[{i}].function"),
                "a function tool needs `function` with a `name`",
            ));
        };
        if f.name.is_empty() || f.name.len() > 256 || f.name.chars().any(char::is_whitespace) {
            return Err(ProxyError::invalid(
                format!("tools[{i}].function.name"),
                "tool names must be 1-256 characters without spaces",
            ));
        }
        if let Some(p) = &f.parameters {
            if !p.is_object() {
                return Err(ProxyError::invalid(
                    format!("tools[{i}].function.parameters"),
                    "`parameters` must be a JSON Schema object",
                ));
            }
        }
    }
    match &req.tool_choice {
        Some(ToolChoice::Mode(m)) if !["none", "auto", "required"].contains(&m.as_str()) => {
            return Err(ProxyError::invalid(
                "tool_choice",
                format!("`tool_choice` must be none, auto, required or an object, got `{m}`"),
            ));
        }
        Some(ToolChoice::Named(obj)) => {
            if let Some(f) = obj.get("function") {
                if !f.get("name").is_some_and(Value::is_string) {
                    return Err(ProxyError::invalid(
                        "tool_choice.function.name",
                        "a named tool_choice needs `function.name`",
                    ));
                }
            }
        }
        _ => {}
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(json: &str) -> Result<(), ProxyError> {
        chat_request(&serde_json::from_str(json).unwrap())
    }

    const OK: &str = r#"{"model":"m","messages":[{"role":"user","content":"hi"}]}"#;

    #[test]
    fn accepts_ordinary_requests() {
        check(OK).unwrap();
        check(r#"{"model":"m","temperature":2,"top_p":0,"messages":[
            {"role":"system","content":"s"},
            {"role":"user","content":[{"type":"text","text":"a"},{"type":"image_url","image_url":{"url":"http://x"}}]},
            {"role":"assistant","content":null,"tool_calls":[{"id":"c","type":"function","function":{"name":"f","arguments":"{}"}}]},
            {"role":"tool","tool_call_id":"c","content":"r"}],
            "tools":[{"type":"function","function":{"name":"f","parameters":{"type":"object"}}},{"type":"web_search"}],
            "tool_choice":{"type":"function","function":{"name":"f"}}}"#)
        .unwrap();
    }

    #[test]
    fn rejects_with_param() {
        let cases = [
            (r#"{"model":"m","messages":[]}"#, "messages"),
            (
                r#"{"model":"m","temperature":2.5,"messages":[{"role":"user","content":"x"}]}"#,
                "temperature",
            ),
            (
                r#"{"model":"m","top_p":-0.1,"messages":[{"role":"user","content":"x"}]}"#,
                "top_p",
            ),
            (
                r#"{"model":"m","max_tokens":0,"messages":[{"role":"user","content":"x"}]}"#,
                "max_tokens",
            ),
            (
                r#"{"model":"m","n":0,"messages":[{"role":"user","content":"x"}]}"#,
                "n",
            ),
            (
                r#"{"model":"m","presence_penalty":3,"messages":[{"role":"user","content":"x"}]}"#,
                "presence_penalty",
            ),
            (
                r#"{"model":"m","messages":[{"role":"tool","content":"x"}]}"#,
                "messages[0].tool_call_id",
            ),
            (
                r#"{"model":"m","messages":[{"role":"user"}]}"#,
                "messages[0].content",
            ),
            (
                r#"{"model":"m","messages":[{"role":"user","content":[{"text":"x"}]}]}"#,
                "messages[0].content[0].type",
            ),
            (
                r#"{"model":"m","messages":[{"role":"user","content":"x"}],"tools":[{"type":"function","function":{"name":"a b"}}]}"#,
                "tools[0].function.name",
            ),
            (
                r#"{"model":"m","messages":[{"role":"user","content":"x"}],"tools":[{"type":"function","function":{"name":"f","parameters":[]}}]}"#,
                "tools[0].function.parameters",
            ),
            (
                r#"{"model":"m","messages":[{"role":"user","content":"x"}],"tool_choice":"sometimes"}"#,
                "tool_choice",
            ),
        ];
        for (json, param) in cases {
            let e = check(json).unwrap_err();
            assert_eq!(e.param.as_deref(), Some(param), "{json}");
        }
    }
}
