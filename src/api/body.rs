//! Reading and decoding request bodies: size-limited, and every failure a 400 or 413 that
//! names the offending field, never a 500.

use axum::body::Body;
use bytes::{Bytes, BytesMut};
use http::HeaderMap;
use http_body_util::BodyExt;
use serde::de::DeserializeOwned;

use crate::error::{ErrorCode, ProxyError};

fn too_large(limit: usize) -> ProxyError {
    ProxyError::new(
        ErrorCode::PayloadTooLarge,
        format!("request body is larger than the {limit}-byte limit"),
    )
}

/// Reads the whole body, refusing more than `limit` bytes (up front when the client
/// declared its length, otherwise as soon as it is exceeded).
pub async fn read(headers: &HeaderMap, body: Body, limit: usize) -> Result<Bytes, ProxyError> {
    let declared = headers
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(too_large(limit));
    }
    // Frame by frame rather than through a collecting adapter: a JSON request is almost
    // always one frame, which is returned as it is, with no buffer list in between.
    let mut body = body;
    let mut first = Bytes::new();
    let mut joined: Option<BytesMut> = None;
    let mut total = 0usize;
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| {
            ProxyError::new(
                ErrorCode::InvalidRequest,
                format!("could not read the request body: {e}"),
            )
        })?;
        let Ok(data) = frame.into_data() else {
            continue; // trailers carry nothing a JSON request needs
        };
        if data.is_empty() {
            continue;
        }
        total = total.saturating_add(data.len());
        if total > limit {
            return Err(too_large(limit));
        }
        match &mut joined {
            Some(buf) => buf.extend_from_slice(&data),
            None if first.is_empty() => first = data,
            None => {
                // The declared length, when there is one, is the whole body's size.
                let expected = declared.map_or(0, |n| usize::try_from(n).unwrap_or(limit));
                let mut buf = BytesMut::with_capacity(total.max(expected.min(limit)));
                buf.extend_from_slice(&first);
                buf.extend_from_slice(&data);
                joined = Some(buf);
            }
        }
    }
    Ok(joined.map_or(first, BytesMut::freeze))
}

/// Decodes JSON into `T`; errors name the field path (`messages[0].role`) as `param`.
pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ProxyError> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Err(ProxyError::new(
            ErrorCode::InvalidRequest,
            "request body is empty; send a JSON object",
        ));
    }
    // Tracking the field path costs on every field of every request, so only a body that
    // fails to decode is decoded again with it, for the error message.
    match crate::wire::from_json(bytes) {
        Ok(value) => Ok(value),
        Err(_) => decode_located(bytes),
    }
}

/// The slow path of [`decode`]: the same decode, with the failing field's path.
fn decode_located<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ProxyError> {
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let value = serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        let syntax = matches!(
            inner.classify(),
            serde_json::error::Category::Syntax | serde_json::error::Category::Eof
        );
        let located = !syntax && path != "." && !path.contains('?');
        let message = if syntax {
            format!("request body is not valid JSON: {inner}")
        } else if located {
            format!("invalid value for `{path}`: {inner}")
        } else {
            format!("request body must be a JSON object with `model` and `messages`: {inner}")
        };
        let mut err = ProxyError::new(ErrorCode::InvalidRequest, message);
        if located {
            err.param = Some(path);
        }
        err
    })?;
    de.end().map_err(|e| {
        ProxyError::new(
            ErrorCode::InvalidRequest,
            format!("unexpected data after the JSON object: {e}"),
        )
    })?;
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::ChatRequest;

    fn err(body: &[u8]) -> ProxyError {
        decode::<ChatRequest>(body).unwrap_err()
    }

    fn chunked(parts: &[&'static str]) -> Body {
        let frames = parts
            .iter()
            .map(|p| Ok::<_, std::io::Error>(Bytes::from_static(p.as_bytes())));
        Body::from_stream(futures_util::stream::iter(frames.collect::<Vec<_>>()))
    }

    #[tokio::test]
    async fn bodies_are_read_whole_and_held_to_the_limit() {
        let none = HeaderMap::new();
        // One frame, several, none.
        assert_eq!(read(&none, Body::from("{}"), 2).await.unwrap(), "{}");
        let joined = read(&none, chunked(&["{\"a\"", ":", "1}"]), 7)
            .await
            .unwrap();
        assert_eq!(joined, "{\"a\":1}");
        assert_eq!(read(&none, Body::empty(), 0).await.unwrap(), "");
        // Past the limit without a declared length: refused as soon as it is exceeded.
        for body in [Body::from("{\"a\":1}"), chunked(&["{\"a\"", ":", "1}"])] {
            let e = read(&none, body, 6).await.unwrap_err();
            assert_eq!(e.code, ErrorCode::PayloadTooLarge, "{}", e.message);
        }
        // A declared length past the limit is refused before reading.
        let mut declared = HeaderMap::new();
        declared.insert(http::header::CONTENT_LENGTH, "100".parse().unwrap());
        let e = read(&declared, Body::from("{}"), 10).await.unwrap_err();
        assert_eq!(e.code, ErrorCode::PayloadTooLarge);
        // A body that fails midway is a 400 naming the read.
        let failing = Body::from_stream(futures_util::stream::iter(vec![
            Ok(Bytes::from_static(b"{")),
            Err(std::io::Error::other("reset by peer")),
        ]));
        let e = read(&none, failing, 100).await.unwrap_err();
        assert_eq!(e.code, ErrorCode::InvalidRequest);
        assert!(e.message.contains("reset by peer"), "{}", e.message);
    }

    #[test]
    fn errors_name_the_field() {
        let e = err(br#"{"model":"m","messages":[{"role":"wizard","content":"x"}]}"#);
        assert_eq!(e.param.as_deref(), Some("messages[0].role"));
        let e = err(br#"{"model":"m","messages":[],"temperature":"hot"}"#);
        assert_eq!(e.param.as_deref(), Some("temperature"));
        let e = err(br#"{"model":"m"}"#);
        assert!(e.message.contains("messages"), "{}", e.message);
    }

    #[test]
    fn non_objects_and_garbage_are_400() {
        for body in [
            &b"[1,2]"[..],
            b"42",
            b"\"s\"",
            b"null",
            b"{",
            b"",
            b"   ",
            b"\xff\xfe",
            b"{} x",
        ] {
            let e = err(body);
            assert_eq!(e.code, ErrorCode::InvalidRequest, "{body:?}");
        }
        let e =
            err(b"{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":\"\xc3\x28\"}]}");
        assert_eq!(e.code, ErrorCode::InvalidRequest);
    }
}
