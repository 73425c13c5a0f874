//! Property tests over every stream decoder: arbitrary bytes in arbitrary chunkings never
//! panic and never make a decoder buffer more than its limit; recorded provider streams
//! decode to the same events however the network splits them; arbitrary event sequences
//! encode to well-formed client streams.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::Path;

use proptest::prelude::*;
use serde_json::{Value, json};

use llm_proxy::types::{ChatEvent, FinishReason, Usage};
use llm_proxy::wire::sse::{SseDecoder, SseEvent};
use llm_proxy::wire::{anthropic, gemini, openai};

const LIMIT: usize = 512;

/// Feeds `input` cut at `cuts` (positions, any order, out of range ignored).
fn feed_chunked(d: &mut SseDecoder, input: &[u8], cuts: &[usize]) -> Vec<SseEvent> {
    let mut points: Vec<usize> = cuts.iter().map(|c| c % (input.len() + 1)).collect();
    points.push(0);
    points.push(input.len());
    points.sort_unstable();
    points.dedup();
    let mut out = Vec::new();
    for w in points.windows(2) {
        let _ = d.feed(&input[w[0]..w[1]], &mut out);
        assert!(
            d.buffered() <= LIMIT,
            "decoder holds {} bytes, limit {LIMIT}",
            d.buffered()
        );
    }
    let _ = d.finish(&mut out);
    out
}

/// Runs one event payload through every provider decoder: errors are fine, panics are not.
fn decode_everywhere(data: &[u8]) {
    let _ = anthropic::StreamDecoder::new().decode(data);
    let _ = gemini::StreamDecoder::new().decode(data);
    let _ = openai::StreamDecoder::default().decode(data);
}

/// Bytes that look enough like SSE to reach deep into the decoders.
fn sse_ish() -> impl Strategy<Value = Vec<u8>> {
    let piece = prop_oneof![
        Just(b"data: ".to_vec()),
        Just(b"event: ".to_vec()),
        Just(b"\n".to_vec()),
        Just(b"\r".to_vec()),
        Just(b"\r\n".to_vec()),
        Just(b"\n\n".to_vec()),
        Just(b": keep-alive".to_vec()),
        Just(b"[DONE]".to_vec()),
        Just(
            br#"{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"h"}}"#
                .to_vec()
        ),
        Just(
            br#"{"choices":[{"delta":{"tool_calls":[{"index":3,"function":{"arguments":"{"}}]}}]}"#
                .to_vec()
        ),
        Just(
            br#"{"candidates":[{"content":{"parts":[{"functionCall":{"name":"f","args":{}}}]}}]}"#
                .to_vec()
        ),
        Just("é🙂".as_bytes().to_vec()),
        proptest::collection::vec(any::<u8>(), 0..64),
    ];
    proptest::collection::vec(piece, 0..64).prop_map(|v| v.concat())
}

fn fixture(path: &str) -> Vec<u8> {
    std::fs::read(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures")
            .join(path),
    )
    .unwrap()
}

#[derive(Clone, Copy, Debug)]
enum Dialect {
    OpenAi,
    Anthropic,
    Gemini,
}

const STREAMS: &[(&str, Dialect)] = &[
    ("openai/stream_tool_calls.sse", Dialect::OpenAi),
    ("azure/stream_text.sse", Dialect::OpenAi),
    ("anthropic/stream_text.sse", Dialect::Anthropic),
    ("anthropic/stream_tool_use.sse", Dialect::Anthropic),
    ("anthropic/stream_thinking.sse", Dialect::Anthropic),
    ("anthropic/stream_error.sse", Dialect::Anthropic),
    ("gemini/stream_text.sse", Dialect::Gemini),
    ("gemini/stream_function_call.sse", Dialect::Gemini),
];

/// The canonical events of a recorded stream (ids Gemini makes up are blanked: they are
/// random by design), or the error text it ends with.
fn canonical(events: &[SseEvent], dialect: Dialect) -> Vec<String> {
    let mut a = anthropic::StreamDecoder::new();
    let mut g = gemini::StreamDecoder::new();
    let mut o = openai::StreamDecoder::default();
    let mut out = Vec::new();
    for ev in events {
        let decoded: Vec<ChatEvent> = match dialect {
            Dialect::OpenAi if &ev.data[..] == b"[DONE]" => break,
            Dialect::OpenAi => match o.decode(&ev.data).unwrap() {
                openai::DecodedChunk::Events(e) => e,
                openai::DecodedChunk::Error(e) => vec![ChatEvent::TextDelta(e)],
            },
            Dialect::Anthropic => match a.decode(&ev.data).unwrap() {
                Ok(e) => e,
                Err(e) => vec![ChatEvent::TextDelta(e.message)],
            },
            Dialect::Gemini => g.decode(&ev.data).unwrap().unwrap(),
        };
        out.extend(decoded.into_iter().map(|e| match e {
            ChatEvent::ToolCallStart { index, name, .. } if matches!(dialect, Dialect::Gemini) => {
                format!("start {index} {name}")
            }
            other => format!("{other:?}"),
        }));
    }
    out
}

fn arb_event() -> impl Strategy<Value = ChatEvent> {
    let text = "[a-zé🙂 ]{0,8}";
    prop_oneof![
        text.prop_map(ChatEvent::TextDelta),
        text.prop_map(ChatEvent::ReasoningDelta),
        "[a-zA-Z0-9]{1,8}".prop_map(ChatEvent::ReasoningSignature),
        "[a-zA-Z0-9]{1,8}".prop_map(ChatEvent::RedactedReasoning),
        (0u32..4, "[a-z]{1,4}").prop_map(|(index, name)| ChatEvent::ToolCallStart {
            index,
            id: format!("call_{index}"),
            name,
        }),
        (0u32..4, "[{}\":a-z0-9]{0,6}")
            .prop_map(|(index, fragment)| ChatEvent::ToolCallArgs { index, fragment }),
        prop_oneof![
            Just(FinishReason::Stop),
            Just(FinishReason::Length),
            Just(FinishReason::ToolCalls),
            Just(FinishReason::ContentFilter)
        ]
        .prop_map(ChatEvent::Finish),
        (0u64..100, 0u64..100).prop_map(|(p, c)| ChatEvent::Usage(Usage {
            prompt_tokens: p,
            completion_tokens: c,
            total_tokens: p + c,
            ..Usage::default()
        })),
    ]
}

/// Anthropic stream events with random (often wrong) shapes.
fn arb_anthropic_json() -> impl Strategy<Value = Value> {
    let kind = prop_oneof![
        Just("message_start"),
        Just("content_block_start"),
        Just("content_block_delta"),
        Just("content_block_stop"),
        Just("message_delta"),
        Just("message_stop"),
        Just("ping"),
        Just("error"),
        Just("brand_new_event"),
    ];
    let delta = prop_oneof![
        Just("text_delta"),
        Just("input_json_delta"),
        Just("thinking_delta"),
        Just("signature_delta"),
        Just("citations_delta"),
    ];
    let block = prop_oneof![
        Just("text"),
        Just("tool_use"),
        Just("thinking"),
        Just("redacted_thinking"),
        Just("server_tool_use")
    ];
    (kind, delta, block, any::<u32>(), "[a-z{}\"]{0,6}").prop_map(
        |(kind, delta, block, index, text)| {
            json!({"type": kind, "index": index,
                   "delta": {"type": delta, "text": text, "partial_json": text, "thinking": text,
                             "stop_reason": "tool_use"},
                   "content_block": {"type": block, "id": text, "name": text, "input": {}},
                   "message": {"usage": {"input_tokens": index}},
                   "usage": {"output_tokens": index},
                   "error": {"type": text, "message": text}})
        },
    )
}

proptest! {
    // Fixed case count, no failure files: CI runs are repeatable and leave the tree clean.
    #![proptest_config(ProptestConfig { cases: 256, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_bytes_never_panic_and_stay_bounded(
        input in sse_ish(),
        cuts in proptest::collection::vec(any::<usize>(), 0..16),
    ) {
        let mut d = SseDecoder::new(LIMIT);
        for ev in feed_chunked(&mut d, &input, &cuts) {
            prop_assert!(ev.data.len() <= LIMIT);
            decode_everywhere(&ev.data);
        }
    }

    #[test]
    fn recorded_streams_decode_the_same_under_any_chunking(
        which in 0..STREAMS.len(),
        cuts in proptest::collection::vec(any::<usize>(), 0..24),
    ) {
        let (path, dialect) = STREAMS[which];
        let bytes = fixture(path);
        let mut whole = SseDecoder::new(1 << 20);
        let mut expected = Vec::new();
        whole.feed(&bytes, &mut expected).unwrap();
        whole.finish(&mut expected).unwrap();
        let mut split = SseDecoder::new(1 << 20);
        let mut got = Vec::new();
        let mut points: Vec<usize> = cuts.iter().map(|c| c % (bytes.len() + 1)).collect();
        points.extend([0, bytes.len()]);
        points.sort_unstable();
        points.dedup();
        for w in points.windows(2) {
            split.feed(&bytes[w[0]..w[1]], &mut got).unwrap();
        }
        split.finish(&mut got).unwrap();
        prop_assert_eq!(&got, &expected);
        prop_assert_eq!(canonical(&got, dialect), canonical(&expected, dialect));
    }

    #[test]
    fn arbitrary_anthropic_events_never_panic(events in proptest::collection::vec(arb_anthropic_json(), 0..32)) {
        let mut d = anthropic::StreamDecoder::new();
        let mut enc = openai::ChunkEncoder::new("c".into(), "m".into(), 0);
        for e in events {
            if let Ok(Ok(decoded)) = d.decode(e.to_string().as_bytes()) {
                for ev in &decoded {
                    let chunk: Value = serde_json::from_slice(&enc.encode(ev)).unwrap();
                    prop_assert_eq!(&chunk["object"], "chat.completion.chunk");
                }
            }
        }
    }

    #[test]
    fn anthropic_client_streams_are_well_formed(events in proptest::collection::vec(arb_event(), 0..40)) {
        let mut enc = anthropic::EventEncoder::new("chatcmpl-1".into(), "m".into());
        let mut frames = Vec::new();
        for e in &events {
            enc.encode(e, &mut frames);
        }
        enc.finish(&mut frames);
        let mut d = SseDecoder::new(1 << 20);
        let mut out = Vec::new();
        d.feed(&frames.concat(), &mut out).unwrap();
        let types: Vec<String> = out.iter().map(|e| e.event.clone().unwrap()).collect();
        prop_assert_eq!(types.first().map(String::as_str), Some("message_start"));
        prop_assert_eq!(types.last().map(String::as_str), Some("message_stop"));
        prop_assert_eq!(types[types.len() - 2].as_str(), "message_delta");
        let mut started = std::collections::BTreeSet::new();
        let mut stopped = std::collections::BTreeSet::new();
        for ev in &out {
            let v: Value = serde_json::from_slice(&ev.data).unwrap();
            let index = v["index"].as_u64();
            match v["type"].as_str().unwrap() {
                "content_block_start" => {
                    prop_assert!(started.insert(index.unwrap()), "block started twice");
                    prop_assert_eq!(index.unwrap() as usize, started.len() - 1, "blocks count from 0");
                }
                "content_block_delta" => prop_assert!(started.contains(&index.unwrap())),
                "content_block_stop" => prop_assert!(stopped.insert(index.unwrap()), "block stopped twice"),
                _ => {}
            }
        }
        prop_assert_eq!(started, stopped, "every block is closed");
    }
}
