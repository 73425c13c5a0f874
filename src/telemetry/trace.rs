//! W3C trace context: a caller's `traceparent` is continued (same trace id, our own span
//! id) and forwarded to the upstream, so a request can be followed from the calling
//! service through the proxy to the provider; without one, a new trace starts here.

use std::sync::Arc;

use crate::ids::SpanId;

/// This request's place in a trace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TraceContext {
    /// 32 lowercase hex digits, never all zeros; shared with the request's log and record.
    pub trace_id: Arc<str>,
    /// Our span (the parent of what goes upstream).
    pub span_id: SpanId,
    /// The caller's span, when it sent a valid `traceparent`.
    pub parent_span_id: Option<String>,
    pub sampled: bool,
}

fn is_hex(s: &str, len: usize) -> bool {
    s.len() == len && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

impl TraceContext {
    /// Continues the caller's trace from a valid `traceparent` header, else starts one.
    pub fn from_headers(headers: &http::HeaderMap) -> Self {
        const TRACEPARENT: http::HeaderName = http::HeaderName::from_static("traceparent");
        let parent = headers
            .get(TRACEPARENT)
            .and_then(|v| v.to_str().ok())
            .and_then(parse);
        let (trace_id, parent_span_id, sampled) = match parent {
            Some((t, p, s)) => (Arc::from(t), Some(p.to_owned()), s),
            None => {
                let digits = crate::ids::nonzero_hex_digits::<32>();
                // Hex digits only, so the plain check never fails (and, unlike the lossy
                // conversion, checks ASCII a word at a time).
                let id = std::str::from_utf8(&digits).unwrap_or("00000000000000000000000000000001");
                (Arc::from(id), None, true)
            }
        };
        Self {
            trace_id,
            span_id: SpanId::random(),
            parent_span_id,
            sampled,
        }
    }

    /// The `traceparent` the upstream gets: the same trace, our span as its parent.
    pub fn traceparent(&self) -> String {
        let mut tp = String::with_capacity(55);
        tp.push_str("00-");
        tp.push_str(&self.trace_id);
        tp.push('-');
        tp.push_str(self.span_id.as_str());
        tp.push_str(if self.sampled { "-01" } else { "-00" });
        tp
    }
}

/// `00-<trace-id>-<parent-id>-<flags>` (version 00; later versions are read as 00, as the
/// spec asks); invalid or all-zero ids are refused.
fn parse(v: &str) -> Option<(&str, &str, bool)> {
    let mut parts = v.trim().split('-');
    let version = parts.next()?;
    let trace = parts.next()?;
    let parent = parts.next()?;
    let flags = parts.next()?;
    if !is_hex(version, 2) || version == "ff" || (version == "00" && parts.next().is_some()) {
        return None;
    }
    if !is_hex(trace, 32) || !is_hex(parent, 16) || !is_hex(flags, 2) {
        return None;
    }
    if trace.bytes().all(|b| b == b'0') || parent.bytes().all(|b| b == b'0') {
        return None;
    }
    let sampled = u8::from_str_radix(flags, 16).ok()? & 1 == 1;
    Some((trace, parent, sampled))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn continues_a_valid_parent_and_refuses_bad_ones() {
        let mut h = http::HeaderMap::new();
        h.insert(
            "traceparent",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
                .parse()
                .unwrap(),
        );
        let t = TraceContext::from_headers(&h);
        assert_eq!(&*t.trace_id, "4bf92f3577b34da6a3ce929d0e0e4736");
        assert!(t.sampled);
        assert_ne!(t.span_id.as_str(), "00f067aa0ba902b7");
        assert_eq!(t.parent_span_id.as_deref(), Some("00f067aa0ba902b7"));
        let tp = t.traceparent();
        assert_eq!(
            tp,
            format!(
                "00-4bf92f3577b34da6a3ce929d0e0e4736-{}-01",
                t.span_id.as_str()
            )
        );
        for bad in [
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            "garbage",
        ] {
            assert_eq!(parse(bad), None, "{bad}");
        }
        let fresh = TraceContext::from_headers(&http::HeaderMap::new());
        assert!(is_hex(&fresh.trace_id, 32) && is_hex(fresh.span_id.as_str(), 16));
        assert!(parse(&fresh.traceparent()).is_some());
    }
}
