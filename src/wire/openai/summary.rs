//! The summary of an OpenAI reply the proxy passes on verbatim: it needs only the usage
//! and the first choice's finish reason, and reads them while checking that the body is
//! JSON, skipping everything else.
//!
//! Why by hand and not `#[derive(Deserialize)]`: derived field names are matched as `str`,
//! so serde_json checks every key's UTF-8 (a `from_utf8` call per key), and the choices are
//! collected into a `Vec`. Here keys are matched as bytes and only the first choice is
//! looked into: about a third of the summary's instructions per request. What is not
//! read is checked exactly as before: it must be JSON (serde_json's skip).

use std::fmt;

use bytes::Bytes;
use serde::Deserialize;
use serde::de::{self, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};

use super::WireUsage;
use crate::types::{AssistantMessage, ChatResponse, FinishReason, Raw};

/// A reply for a client that gets it verbatim (see `ChatRequest::openai_reply_verbatim`):
/// usage, finish reason and the body; `message`, `id` and `model` are left empty.
///
/// It checks what the proxy reads (the body is JSON, `choices` and `usage` have their
/// shapes) and not the fields it passes on unread: the client gets what the upstream
/// sent, as through any pass-through proxy. The full decode, which translating dialects
/// and content logging use, still refuses e.g. a null `id` as a provider error.
pub fn decode_response_summary(body: Bytes) -> Result<ChatResponse, serde_json::Error> {
    let wire: Summary = serde_json::from_slice(&body)?;
    Ok(ChatResponse {
        id: String::new(),
        model: String::new(),
        created: 0,
        message: AssistantMessage::default(),
        finish_reason: wire.finish_reason,
        usage: wire.usage.map(Into::into),
        raw: Raw::OpenAi(body),
    })
}

/// The keys the summary looks for; every other key is `Other` and its value skipped.
enum Key {
    Choices,
    Usage,
    FinishReason,
    Other,
}

impl<'de> Deserialize<'de> for Key {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct KeyVisitor;
        impl Visitor<'_> for KeyVisitor {
            type Value = Key;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("an object key")
            }
            fn visit_bytes<E: de::Error>(self, v: &[u8]) -> Result<Key, E> {
                Ok(match v {
                    b"choices" => Key::Choices,
                    b"usage" => Key::Usage,
                    b"finish_reason" => Key::FinishReason,
                    _ => Key::Other,
                })
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Key, E> {
                self.visit_bytes(v.as_bytes())
            }
        }
        // serde_json hands a string asked for as bytes over unchecked for UTF-8 (an
        // escaped key arrives unescaped, so `us\u0061ge` is still `usage`).
        d.deserialize_bytes(KeyVisitor)
    }
}

/// The top-level object: `choices` (its first element's `finish_reason`) and `usage`.
struct Summary {
    finish_reason: Option<FinishReason>,
    usage: Option<WireUsage>,
}

impl<'de> Deserialize<'de> for Summary {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct SummaryVisitor;
        impl<'de> Visitor<'de> for SummaryVisitor {
            type Value = Summary;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a chat completion object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Summary, A::Error> {
                let mut choices: Option<Option<FinishReason>> = None;
                let mut usage: Option<Option<WireUsage>> = None;
                while let Some(key) = map.next_key::<Key>()? {
                    match key {
                        Key::Choices if choices.is_some() => {
                            return Err(de::Error::duplicate_field("choices"));
                        }
                        Key::Choices => choices = Some(map.next_value::<FirstFinish>()?.0),
                        Key::Usage if usage.is_some() => {
                            return Err(de::Error::duplicate_field("usage"));
                        }
                        Key::Usage => usage = Some(map.next_value()?),
                        Key::FinishReason | Key::Other => {
                            map.next_value::<IgnoredAny>()?;
                        }
                    }
                }
                Ok(Summary {
                    finish_reason: choices.flatten(),
                    usage: usage.flatten(),
                })
            }
        }
        d.deserialize_map(SummaryVisitor)
    }
}

/// `choices`: the first element's finish reason; the other elements are skipped.
struct FirstFinish(Option<FinishReason>);

impl<'de> Deserialize<'de> for FirstFinish {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct ChoicesVisitor;
        impl<'de> Visitor<'de> for ChoicesVisitor {
            type Value = FirstFinish;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a list of choices")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<FirstFinish, A::Error> {
                let first = seq.next_element::<ChoiceFinish>()?.and_then(|c| c.0);
                while seq.next_element::<IgnoredAny>()?.is_some() {}
                Ok(FirstFinish(first))
            }
        }
        d.deserialize_seq(ChoicesVisitor)
    }
}

/// One choice object: its `finish_reason` (absent or null: none).
struct ChoiceFinish(Option<FinishReason>);

impl<'de> Deserialize<'de> for ChoiceFinish {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct ChoiceVisitor;
        impl<'de> Visitor<'de> for ChoiceVisitor {
            type Value = ChoiceFinish;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a choice object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<ChoiceFinish, A::Error> {
                let mut finish: Option<Option<Reason>> = None;
                while let Some(key) = map.next_key::<Key>()? {
                    match key {
                        Key::FinishReason if finish.is_some() => {
                            return Err(de::Error::duplicate_field("finish_reason"));
                        }
                        Key::FinishReason => finish = Some(map.next_value()?),
                        Key::Choices | Key::Usage | Key::Other => {
                            map.next_value::<IgnoredAny>()?;
                        }
                    }
                }
                Ok(ChoiceFinish(finish.flatten().map(|r| r.0)))
            }
        }
        d.deserialize_map(ChoiceVisitor)
    }
}

/// A finish reason string, mapped as it is read (no copy, escaped or not).
struct Reason(FinishReason);

impl<'de> Deserialize<'de> for Reason {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct ReasonVisitor;
        impl Visitor<'_> for ReasonVisitor {
            type Value = Reason;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a finish reason string")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Reason, E> {
                Ok(Reason(FinishReason::from_openai(v)))
            }
        }
        d.deserialize_str(ReasonVisitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn summary(body: &'static str) -> Result<ChatResponse, serde_json::Error> {
        decode_response_summary(Bytes::from_static(body.as_bytes()))
    }

    #[test]
    fn reads_the_first_choice_and_the_usage_wherever_they_are() {
        let r = summary(
            r#"{"usage":{"prompt_tokens":4,"completion_tokens":2},"choices":[{"finish_reason":"length","message":{"content":"\"usage\": {}"}},{"finish_reason":"stop"},7]}"#,
        )
        .unwrap();
        assert_eq!(r.finish_reason, Some(FinishReason::Length));
        let u = r.usage.unwrap();
        assert_eq!(
            (u.prompt_tokens, u.completion_tokens, u.total_tokens),
            (4, 2, 6)
        );
        // Escaped keys and values mean what they spell.
        let r = summary(
            r#"{"ch\u006fices":[{"finish_reason":"st\u006fp"}],"us\u0061ge":{"total_tokens":9}}"#,
        )
        .unwrap();
        assert_eq!(r.finish_reason, Some(FinishReason::Stop));
        assert_eq!(r.usage.unwrap().total_tokens, 9);
        // A key that only looks like one of ours in a nested object is not ours.
        let r = summary(r#"{"x":{"usage":{"total_tokens":1}},"choices":[]}"#).unwrap();
        assert!(r.usage.is_none() && r.finish_reason.is_none());
    }

    #[test]
    fn absent_and_null_are_none() {
        for body in [
            "{}",
            r#"{"choices":[],"usage":null}"#,
            r#"{"choices":[{"finish_reason":null}]}"#,
            r#"{"choices":[{"index":0}]}"#,
        ] {
            let r = summary(body).unwrap();
            assert!(r.finish_reason.is_none() && r.usage.is_none(), "{body}");
        }
    }

    #[test]
    fn refuses_what_it_reads_when_malformed_and_bodies_that_are_not_json() {
        for bad in [
            r#"{"choices":[{"finish_reason":"stop"}],"choices":[]}"#,
            r#"{"usage":null,"usage":null}"#,
            r#"{"choices":[{"finish_reason":"stop","finish_reason":"length"}]}"#,
            r#"{"choices":[3]}"#,
            r#"{"choices":{}}"#,
            r#"{"choices":[{"finish_reason":3}]}"#,
            r#"{"usage":{"prompt_tokens":"x"}}"#,
            r#"{"id":"x","other":[1,}"#,
            r#"{"id":"x"} trailing"#,
            r#"{"id":"unterminated}"#,
            "",
        ] {
            assert!(summary(bad).is_err(), "{bad}");
        }
    }
}
