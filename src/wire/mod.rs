//! Every wire format, once. Each module holds a format's serde types and its conversions to
//! and from the canonical types in [`crate::types`], in both directions where the format is
//! spoken by clients and by upstreams alike.

pub mod anthropic;
pub mod gemini;
pub mod llm;
pub mod openai;
pub mod sse;

/// Decodes JSON from bytes, checking their UTF-8 once for the whole text.
///
/// Why not `serde_json::from_slice`: from bytes, serde_json checks the UTF-8 of every
/// string it reads (keys included), one `from_utf8` call each, about a hundred
/// instructions apiece on short strings; a request body or stream chunk holds a dozen.
/// One check of the whole text costs less than two of them, and then serde_json reads it
/// as `str` without checking again. Text that is not UTF-8 is decoded from bytes as
/// before, so what is accepted and every error message stay exactly what `from_slice`
/// gives (it lets invalid UTF-8 pass inside values it skips).
pub fn from_json<'a, T: serde::Deserialize<'a>>(bytes: &'a [u8]) -> serde_json::Result<T> {
    match std::str::from_utf8(bytes) {
        Ok(text) => serde_json::from_str(text),
        Err(_) => serde_json::from_slice(bytes),
    }
}

#[cfg(test)]
mod tests {
    use super::from_json;

    #[test]
    fn from_json_accepts_and_refuses_what_from_slice_does() {
        let cases: [&[u8]; 8] = [
            br#"{"a":"b","c":[1,2,{"d":null}]}"#,
            br#"{"a":"\u00e9\ud83d\ude00"}"#,
            "{\"a\":\"caf\u{e9}\"}".as_bytes(),
            b"{\"a\":\"\xff\"}",
            b"{\"skipped\":\"\xff\",\"a\":1}",
            br#"{"a":"\ud800"}"#,
            br#"{"a":1,}"#,
            b"",
        ];
        for bytes in cases {
            let ours = from_json::<serde_json::Value>(bytes).map_err(|e| e.to_string());
            let theirs =
                serde_json::from_slice::<serde_json::Value>(bytes).map_err(|e| e.to_string());
            assert_eq!(ours, theirs, "{}", String::from_utf8_lossy(bytes));
        }
        // A value skipped by the target type may hold invalid UTF-8, as from bytes.
        #[derive(serde::Deserialize, Debug, PartialEq)]
        struct OnlyA {
            a: u32,
        }
        assert_eq!(
            from_json::<OnlyA>(b"{\"skipped\":\"\xff\",\"a\":1}").map_err(|e| e.to_string()),
            serde_json::from_slice::<OnlyA>(b"{\"skipped\":\"\xff\",\"a\":1}")
                .map_err(|e| e.to_string())
        );
    }
}
