//! Hand-written `Deserialize` for what clients send on every request: [`ChatRequest`],
//! [`Message`] and [`Content`].
//!
//! Why not derived: keeping unknown fields in `extra` takes `#[serde(flatten)]`, and a
//! string-or-parts `content` takes `#[serde(untagged)]`; with either, serde first buffers
//! every value of the object into an intermediate tree (copying each string) and then
//! decodes that tree again. Measured with `cargo bench --bench hot_path`: a 4 KiB chat
//! took 5.0 µs to decode that way. Here each key is visited once: a known field decodes
//! straight into its type, any other into `extra` as JSON.
//!
//! They accept and refuse what the derived ones did: a missing `messages` or `role` is an
//! error, `null` leaves an optional field unset, a known field given twice is an error,
//! and a wrongly typed field names the field (the error path of `api::body::decode`).

use std::fmt;

use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::{Deserialize, de::value::SeqAccessDeserializer};
use serde_json::{Map, Value};

use super::{ChatRequest, Content, ContentPart, Message};

/// A key of an object being decoded: one of the type's own fields, or another.
enum Key {
    Known(&'static str),
    Other(String),
}

/// Reads a key, matching it against the type's field names without allocating for them.
struct KeySeed(&'static [&'static str]);

impl<'de> DeserializeSeed<'de> for KeySeed {
    type Value = Key;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Key, D::Error> {
        d.deserialize_identifier(self)
    }
}

impl Visitor<'_> for KeySeed {
    type Value = Key;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a field name")
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Key, E> {
        Ok(match self.0.iter().find(|k| **k == v) {
            Some(k) => Key::Known(k),
            None => Key::Other(v.to_owned()),
        })
    }
}

/// Stores a field's value, refusing a second one as the derived decoder did.
fn once<T, E: de::Error>(slot: &mut Option<T>, name: &'static str, value: T) -> Result<(), E> {
    if slot.is_some() {
        return Err(E::duplicate_field(name));
    }
    *slot = Some(value);
    Ok(())
}

/// Keeps a field the type does not model in `extra`, as JSON.
fn keep<'de, A: MapAccess<'de>>(
    map: &mut A,
    extra: &mut Map<String, Value>,
    key: Key,
) -> Result<(), A::Error> {
    let name = match key {
        Key::Known(k) => k.to_owned(),
        Key::Other(k) => k,
    };
    extra.insert(name, map.next_value()?);
    Ok(())
}

const CHAT_FIELDS: &[&str] = &[
    "model",
    "messages",
    "stream",
    "temperature",
    "top_p",
    "max_tokens",
    "max_completion_tokens",
    "n",
    "stop",
    "tools",
    "tool_choice",
    "stream_options",
];

impl<'de> Deserialize<'de> for ChatRequest {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_map(ChatRequestVisitor)
    }
}

struct ChatRequestVisitor;

impl<'de> Visitor<'de> for ChatRequestVisitor {
    type Value = ChatRequest;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a chat request object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<ChatRequest, A::Error> {
        let (mut model, mut messages, mut stream, mut temperature, mut top_p) =
            (None, None, None, None, None);
        let (mut max_tokens, mut max_completion_tokens, mut n, mut stop, mut tools) =
            (None, None, None, None, None);
        let (mut tool_choice, mut stream_options) = (None, None);
        let mut extra = Map::new();
        while let Some(key) = map.next_key_seed(KeySeed(CHAT_FIELDS))? {
            match key {
                Key::Known(k @ "model") => once(&mut model, k, map.next_value()?)?,
                Key::Known(k @ "messages") => once(&mut messages, k, map.next_value()?)?,
                Key::Known(k @ "stream") => once(&mut stream, k, map.next_value()?)?,
                Key::Known(k @ "temperature") => once(&mut temperature, k, map.next_value()?)?,
                Key::Known(k @ "top_p") => once(&mut top_p, k, map.next_value()?)?,
                Key::Known(k @ "max_tokens") => once(&mut max_tokens, k, map.next_value()?)?,
                Key::Known(k @ "max_completion_tokens") => {
                    once(&mut max_completion_tokens, k, map.next_value()?)?
                }
                Key::Known(k @ "n") => once(&mut n, k, map.next_value()?)?,
                Key::Known(k @ "stop") => once(&mut stop, k, map.next_value()?)?,
                Key::Known(k @ "tools") => once(&mut tools, k, map.next_value()?)?,
                Key::Known(k @ "tool_choice") => once(&mut tool_choice, k, map.next_value()?)?,
                Key::Known(k @ "stream_options") => {
                    once(&mut stream_options, k, map.next_value()?)?
                }
                other => keep(&mut map, &mut extra, other)?,
            }
        }
        Ok(ChatRequest {
            model: model.unwrap_or_default(),
            messages: messages.ok_or_else(|| de::Error::missing_field("messages"))?,
            stream: stream.flatten(),
            temperature: temperature.flatten(),
            top_p: top_p.flatten(),
            max_tokens: max_tokens.flatten(),
            max_completion_tokens: max_completion_tokens.flatten(),
            n: n.flatten(),
            stop: stop.flatten(),
            tools: tools.flatten(),
            tool_choice: tool_choice.flatten(),
            stream_options: stream_options.flatten(),
            extra,
            anthropic_raw: None,
            traceparent: None,
            openai_reply_verbatim: false,
        })
    }
}

const MESSAGE_FIELDS: &[&str] = &[
    "role",
    "content",
    "name",
    "tool_calls",
    "tool_call_id",
    "thinking_blocks",
];

impl<'de> Deserialize<'de> for Message {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_map(MessageVisitor)
    }
}

struct MessageVisitor;

impl<'de> Visitor<'de> for MessageVisitor {
    type Value = Message;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a message object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Message, A::Error> {
        let (mut role, mut content, mut name) = (None, None, None);
        let (mut tool_calls, mut tool_call_id, mut thinking_blocks) = (None, None, None);
        let mut extra = Map::new();
        while let Some(key) = map.next_key_seed(KeySeed(MESSAGE_FIELDS))? {
            match key {
                Key::Known(k @ "role") => once(&mut role, k, map.next_value()?)?,
                Key::Known(k @ "content") => once(&mut content, k, map.next_value()?)?,
                Key::Known(k @ "name") => once(&mut name, k, map.next_value()?)?,
                Key::Known(k @ "tool_calls") => once(&mut tool_calls, k, map.next_value()?)?,
                Key::Known(k @ "tool_call_id") => once(&mut tool_call_id, k, map.next_value()?)?,
                Key::Known(k @ "thinking_blocks") => {
                    once(&mut thinking_blocks, k, map.next_value()?)?
                }
                other => keep(&mut map, &mut extra, other)?,
            }
        }
        Ok(Message {
            role: role.ok_or_else(|| de::Error::missing_field("role"))?,
            content: content.flatten(),
            name: name.flatten(),
            tool_calls: tool_calls.flatten(),
            tool_call_id: tool_call_id.flatten(),
            thinking_blocks: thinking_blocks.flatten(),
            extra,
        })
    }
}

impl<'de> Deserialize<'de> for Content {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(ContentVisitor)
    }
}

struct ContentVisitor;

impl<'de> Visitor<'de> for ContentVisitor {
    type Value = Content;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a string or an array of content parts")
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Content, E> {
        Ok(Content::Text(v.to_owned()))
    }

    fn visit_string<E: de::Error>(self, v: String) -> Result<Content, E> {
        Ok(Content::Text(v))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Content, A::Error> {
        Vec::<ContentPart>::deserialize(SeqAccessDeserializer::new(seq)).map(Content::Parts)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::Role;

    fn chat(json: &str) -> Result<ChatRequest, serde_json::Error> {
        serde_json::from_str(json)
    }

    #[test]
    fn known_fields_decode_and_the_rest_is_kept_in_order() {
        let r = chat(
            r#"{"seed": 7, "model": "m", "messages": [
                {"role": "user", "content": "hi", "cache": {"x": 1}},
                {"role": "assistant", "content": null, "tool_calls": [
                    {"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}]},
                {"role": "tool", "tool_call_id": "c1", "name": "f",
                 "content": [{"type": "text", "text": "a"}, {"type": "input_audio", "data": "…"}]}
            ], "stream": true, "temperature": 0.5, "top_p": null, "max_tokens": 9,
               "max_completion_tokens": 10, "n": 1, "stop": ["x"], "tool_choice": "auto",
               "tools": [{"type": "function", "function": {"name": "f"}}],
               "stream_options": {"include_usage": true}, "user": "u"}"#,
        )
        .unwrap();
        assert_eq!(r.model, "m");
        assert_eq!(r.stream, Some(true));
        assert_eq!(r.temperature, Some(0.5));
        assert_eq!(r.top_p, None);
        assert_eq!(
            (r.max_tokens, r.max_completion_tokens, r.n),
            (Some(9), Some(10), Some(1))
        );
        assert!(matches!(r.stop, Some(crate::types::Stop::Many(ref v)) if v == &["x"]));
        assert!(
            matches!(r.tool_choice, Some(crate::types::ToolChoice::Mode(ref m)) if m == "auto")
        );
        assert_eq!(r.tools.as_ref().map(Vec::len), Some(1));
        assert_eq!(r.stream_options.and_then(|o| o.include_usage), Some(true));
        assert_eq!(r.extra.keys().collect::<Vec<_>>(), ["seed", "user"]);
        let [user, assistant, tool] = &r.messages[..] else {
            panic!("three messages")
        };
        assert_eq!(user.role, Role::User);
        assert!(matches!(&user.content, Some(Content::Text(t)) if t == "hi"));
        assert_eq!(user.extra["cache"]["x"], 1);
        assert!(assistant.content.is_none());
        assert_eq!(
            assistant.tool_calls.as_ref().map(|c| c[0].id.as_str()),
            Some("c1")
        );
        assert_eq!(tool.tool_call_id.as_deref(), Some("c1"));
        assert_eq!(tool.name.as_deref(), Some("f"));
        let Some(Content::Parts(parts)) = &tool.content else {
            panic!("parts")
        };
        assert!(matches!(&parts[0], ContentPart::Text { text } if text == "a"));
        assert!(matches!(&parts[1], ContentPart::Other(m) if m["type"] == "input_audio"));
    }

    #[test]
    fn refuses_what_the_derived_decoder_refused() {
        let err = |json: &str| chat(json).unwrap_err().to_string();
        assert!(err(r#"{"model": "m"}"#).contains("missing field `messages`"));
        assert!(err(r#"{"messages": [{"content": "x"}]}"#).contains("missing field `role`"));
        assert!(
            err(r#"{"model": "a", "model": "b", "messages": []}"#)
                .contains("duplicate field `model`")
        );
        assert!(err(r#"{"messages": [], "stream": "yes"}"#).contains("expected a boolean"));
        assert!(err(r#"{"model": null, "messages": []}"#).contains("expected a string"));
        assert!(
            err(r#"{"messages": [{"role": "user", "content": 5}]}"#)
                .contains("a string or an array of content parts")
        );
        assert!(err(r#"{"messages": [{"role": "robot"}]}"#).contains("unknown variant `robot`"));
        assert!(err(r#"[1]"#).contains("a chat request object"));
        // The error names the field, as the client sees it.
        let e = crate::api::decode_body::<ChatRequest>(
            br#"{"messages": [{"role": "user", "content": 5}]}"#,
        )
        .unwrap_err();
        assert!(e.message.contains("`messages[0].content`"), "{}", e.message);
    }

    /// What is decoded serializes back to the same JSON (fields the proxy models and the
    /// ones it keeps in `extra` alike).
    #[test]
    fn decode_then_encode_round_trips() {
        let json = serde_json::json!({
            "model": "m",
            "messages": [{"role": "user", "content": [{"type": "text", "text": "a"}], "x": [1, 2]}],
            "temperature": 1.0,
            "metadata": {"k": "v"},
        });
        let r: ChatRequest = serde_json::from_value(json.clone()).unwrap();
        assert_eq!(serde_json::to_value(&r).unwrap(), json);
    }
}
