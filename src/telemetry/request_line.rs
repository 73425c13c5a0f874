//! The request log line written straight to the log sink as JSON, byte for byte the shape
//! tracing-subscriber's JSON formatter gives every other line (`timestamp`, `level`,
//! `message`, the fields in order, absent ones left out, `target` last).
//!
//! Why not through `tracing` like every other line: this is the one line per request, and
//! the formatter's visitor (each field through `dyn Debug`/`Display` into an intermediate
//! map, then copied into the sink) cost about a tenth of the proxy's CPU per request in a
//! profile. serde writes the same object directly. Whether the line is wanted is still
//! decided by the log filter (`tracing::enabled!` at the call site); in a terminal the
//! line goes through `tracing`'s readable formatter as `request key=value …`.

use std::io::Write as _;

use serde::Serialize;

use crate::telemetry::log_sink;

const TARGET: &str = "llm_proxy::request";

/// `,"key":`, the separator and key of a member after the first.
macro_rules! member {
    ($key:literal) => {
        concat!(",\"", $key, "\":")
    };
}

/// The fields of one request line; `None` fields are left out, as tracing does.
#[derive(Serialize)]
pub struct RequestLine<'a> {
    pub request_id: &'a str,
    pub endpoint: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub model: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub trace_id: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_ip: Option<std::net::IpAddr>,
    pub upstream_ms: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tokens_reasoning: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub provider: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub deployment: Option<&'a str>,
    pub attempts: u32,
    pub stream: bool,
    pub status: u16,
    pub result: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error_code: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error_message: Option<&'a str>,
    pub latency_ms: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ttft_ms: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tokens_in: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tokens_out: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tokens_cached: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tokens_per_sec: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cost_usd: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub finish_reason: Option<&'a str>,
}

impl RequestLine<'_> {
    /// Appends the line's bytes to `out`, newline-terminated; `level` is `INFO` or `WARN`.
    ///
    /// Written field by field rather than through serde: keys are constants that need
    /// no escaping, and values are escaped only when they hold a character JSON must
    /// escape (serde_json escapes every string byte by byte; with a flattened envelope
    /// the line cost about 8,000 instructions, this about a third of that).
    pub fn write_json(&self, out: &mut Vec<u8>, level: tracing::Level, at: std::time::SystemTime) {
        let mut w = LineWriter(out);
        w.0.extend_from_slice(b"{\"timestamp\":\"");
        timestamp(w.0, at);
        w.0.extend_from_slice(b"\",\"level\":\"");
        w.0.extend_from_slice(level.as_str().as_bytes());
        w.0.extend_from_slice(b"\",\"message\":\"request\"");
        w.str(member!("request_id"), Some(self.request_id));
        w.str(member!("endpoint"), Some(self.endpoint));
        w.str(member!("model"), self.model);
        w.str(member!("key"), self.key);
        w.str(member!("trace_id"), self.trace_id);
        if let Some(ip) = self.client_ip {
            w.key(member!("client_ip"));
            w.ip(ip);
        }
        w.float(member!("upstream_ms"), Some(self.upstream_ms));
        w.int(member!("tokens_reasoning"), self.tokens_reasoning);
        w.str(member!("provider"), self.provider);
        w.str(member!("deployment"), self.deployment);
        w.int(member!("attempts"), Some(u64::from(self.attempts)));
        w.key(member!("stream"));
        w.0.extend_from_slice(if self.stream { b"true" } else { b"false" });
        w.int(member!("status"), Some(u64::from(self.status)));
        w.str(member!("result"), Some(self.result));
        w.str(member!("error_code"), self.error_code);
        w.str(member!("error_message"), self.error_message);
        w.float(member!("latency_ms"), Some(self.latency_ms));
        w.float(member!("ttft_ms"), self.ttft_ms);
        w.int(member!("tokens_in"), self.tokens_in);
        w.int(member!("tokens_out"), self.tokens_out);
        w.int(member!("tokens_cached"), self.tokens_cached);
        w.float(member!("tokens_per_sec"), self.tokens_per_sec);
        w.float(member!("cost_usd"), self.cost_usd);
        w.str(member!("finish_reason"), self.finish_reason);
        w.str(member!("target"), Some(TARGET));
        w.0.extend_from_slice(b"}\n");
    }

    /// Writes the line, stamped `at`: as JSON when the log is JSON, else through
    /// `tracing` (which stamps it itself).
    pub fn emit(&self, level: tracing::Level, at: std::time::SystemTime) {
        if let Some(out) = log_sink::json_out() {
            out.send_with(|buf| self.write_json(buf, level, at));
            return;
        }
        let fields = self.key_values();
        if level == tracing::Level::WARN {
            tracing::warn!(target: "llm_proxy::request", "request {fields}");
        } else {
            tracing::info!(target: "llm_proxy::request", "request {fields}");
        }
    }

    /// `key=value` pairs for a human reader; strings quoted and escaped when they hold
    /// anything but plain word characters (an error message's newline stays one line).
    fn key_values(&self) -> String {
        let Ok(serde_json::Value::Object(map)) = serde_json::to_value(self) else {
            return String::new();
        };
        let mut out = String::new();
        for (k, v) in map {
            if !out.is_empty() {
                out.push(' ');
            }
            out.push_str(&k);
            out.push('=');
            match v {
                serde_json::Value::String(s)
                    if s.chars()
                        .all(|c| c.is_alphanumeric() || "-_./:".contains(c)) =>
                {
                    out.push_str(&s)
                }
                serde_json::Value::String(s) => out.push_str(&format!("{s:?}")),
                other => out.push_str(&other.to_string()),
            }
        }
        out
    }
}

/// `at` in RFC 3339 with microseconds, UTC (`2026-11-25T06:17:58.351866Z`), as
/// tracing's JSON formatter writes it. The date and time of day change once a second, so
/// each thread formats them once a second and reuses them for every line in between.
fn timestamp(out: &mut Vec<u8>, at: std::time::SystemTime) {
    use std::cell::RefCell;
    use std::time::{Duration, UNIX_EPOCH};
    thread_local! {
        /// The second last formatted and its `YYYY-MM-DDTHH:MM:SS`.
        static SECOND: RefCell<Option<(u64, [u8; 19])>> = const { RefCell::new(None) };
    }
    // Before 1970, or past year 9999 (a longer prefix): formatted the slow way.
    let cached = at.duration_since(UNIX_EPOCH).ok().and_then(|since| {
        let secs = since.as_secs();
        SECOND.with_borrow_mut(|cached| match *cached {
            Some((s, prefix)) if s == secs => Some((since, prefix)),
            _ => {
                let whole = UNIX_EPOCH + Duration::from_secs(secs);
                // `YYYY-MM-DDTHH:MM:SSZ`
                let text = humantime::format_rfc3339_seconds(whole).to_string();
                let prefix: [u8; 19] = text.as_bytes().get(..19)?.try_into().ok()?;
                (text.len() == 20).then(|| {
                    *cached = Some((secs, prefix));
                    (since, prefix)
                })
            }
        })
    });
    let Some((since, prefix)) = cached else {
        let _ = write!(out, "{}", humantime::format_rfc3339_micros(at));
        return;
    };
    out.extend_from_slice(&prefix);
    out.push(b'.');
    let micros = since.subsec_micros();
    let mut buffer = itoa::Buffer::new();
    let digits = buffer.format(micros);
    for _ in digits.len()..6 {
        out.push(b'0');
    }
    out.extend_from_slice(digits.as_bytes());
    out.push(b'Z');
}

/// Whether `text` has a character JSON requires escaped (a control character, `"` or `\\`,
/// exactly those serde_json escapes). Eight bytes per step: every string of every line
/// goes through this, and a byte-by-byte test was a third of writing the line.
fn needs_escape(text: &[u8]) -> bool {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    let mut words = text.chunks_exact(8);
    for chunk in &mut words {
        let mut word = [0u8; 8];
        word.copy_from_slice(chunk);
        let v = u64::from_le_bytes(word);
        // A byte's high bit ends up set where the byte, xor-ed with the one looked for,
        // is zero, or where it is below 0x20 (and was below 0x80).
        let quote = v ^ (ONES * u64::from(b'"'));
        let backslash = v ^ (ONES * u64::from(b'\\'));
        let hits = (quote.wrapping_sub(ONES) & !quote)
            | (backslash.wrapping_sub(ONES) & !backslash)
            | (v.wrapping_sub(ONES * 0x20) & !v);
        if hits & HIGH != 0 {
            return true;
        }
    }
    words
        .remainder()
        .iter()
        .any(|&b| b < 0x20 || b == b'"' || b == b'\\')
}

/// A JSON object being written after its first member: each call adds `,"key":value`,
/// or nothing for an absent value (as tracing leaves out empty fields).
struct LineWriter<'a>(&'a mut Vec<u8>);

impl LineWriter<'_> {
    /// `member` is `,"key":` for one of this file's keys (see `member!`): plain ASCII
    /// that needs no escaping, written in one copy.
    fn key(&mut self, member: &'static str) {
        self.0.extend_from_slice(member.as_bytes());
    }

    fn str(&mut self, key: &'static str, value: Option<&str>) {
        let Some(value) = value else { return };
        self.key(key);
        if needs_escape(value.as_bytes()) {
            let _ = serde_json::to_writer(&mut self.0, value);
        } else {
            self.0.push(b'"');
            self.0.extend_from_slice(value.as_bytes());
            self.0.push(b'"');
        }
    }

    fn int(&mut self, key: &'static str, value: Option<u64>) {
        let Some(value) = value else { return };
        self.key(key);
        self.0
            .extend_from_slice(itoa::Buffer::new().format(value).as_bytes());
    }

    /// An address in quotes, as `Display` writes it. IPv4 is written octet by octet:
    /// `Display` for an address goes through the formatting machinery (padding, width),
    /// about a sixth of the whole line's cost.
    fn ip(&mut self, ip: std::net::IpAddr) {
        self.0.push(b'"');
        match ip {
            std::net::IpAddr::V4(v4) => {
                let mut buffer = itoa::Buffer::new();
                for (i, octet) in v4.octets().into_iter().enumerate() {
                    if i > 0 {
                        self.0.push(b'.');
                    }
                    self.0.extend_from_slice(buffer.format(octet).as_bytes());
                }
            }
            std::net::IpAddr::V6(v6) => {
                let _ = write!(self.0, "{v6}");
            }
        }
        self.0.push(b'"');
    }

    /// Floats as serde_json writes them (shortest round-trip form; `null` when not
    /// finite), so the line reads the same as before.
    fn float(&mut self, key: &'static str, value: Option<f64>) {
        let Some(value) = value else { return };
        self.key(key);
        let _ = serde_json::to_writer(&mut self.0, &value);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    fn to_json(line: &RequestLine<'_>, level: tracing::Level) -> Vec<u8> {
        // Something already in the buffer stays, and the line goes after it.
        let mut out = b"before\n".to_vec();
        line.write_json(&mut out, level, std::time::SystemTime::now());
        assert!(out.starts_with(b"before\n"));
        out.split_off(b"before\n".len())
    }

    #[derive(Clone, Default)]
    struct Buffer(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Buffer {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    /// The line as tracing-subscriber's JSON formatter (configured as `telemetry::init`
    /// does) writes the same fields.
    fn through_tracing(l: &RequestLine<'_>) -> serde_json::Value {
        let buf = Buffer::default();
        let sink = buf.clone();
        let subscriber = tracing_subscriber::fmt()
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .with_span_list(false)
            .with_writer(move || sink.clone())
            .finish();
        tracing::subscriber::with_default(subscriber, || {
            tracing::event!(
                target: "llm_proxy::request",
                tracing::Level::WARN,
                request_id = l.request_id,
                endpoint = l.endpoint,
                model = l.model,
                key = l.key,
                trace_id = l.trace_id,
                client_ip = l.client_ip.map(tracing::field::display),
                upstream_ms = l.upstream_ms,
                tokens_reasoning = l.tokens_reasoning,
                provider = l.provider,
                deployment = l.deployment,
                attempts = l.attempts,
                stream = l.stream,
                status = l.status,
                result = l.result,
                error_code = l.error_code,
                error_message = l.error_message,
                latency_ms = l.latency_ms,
                ttft_ms = l.ttft_ms,
                tokens_in = l.tokens_in,
                tokens_out = l.tokens_out,
                tokens_cached = l.tokens_cached,
                tokens_per_sec = l.tokens_per_sec,
                cost_usd = l.cost_usd,
                finish_reason = l.finish_reason,
                "request"
            )
        });
        let bytes = buf.0.lock().unwrap().clone();
        serde_json::from_slice(&bytes).unwrap()
    }

    fn sample(full: bool) -> RequestLine<'static> {
        RequestLine {
            request_id: "5a0c6f4e-3f7b-4c1e-9d2a-0b1c2d3e4f50",
            endpoint: "chat_completions",
            model: Some("gpt-4o"),
            key: full.then_some("team-a"),
            trace_id: Some("4bf92f3577b34da6a3ce929d0e0e4736"),
            client_ip: full.then(|| "::1".parse().unwrap()),
            upstream_ms: 12.345,
            tokens_reasoning: full.then_some(7),
            provider: Some("openai"),
            deployment: Some("openai/gpt-4o"),
            attempts: 2,
            stream: full,
            status: 502,
            result: "error",
            error_code: full.then_some("PROVIDER_ERROR"),
            error_message: full.then_some("the upstream said \"no\"\n\tand ünïcode"),
            latency_ms: 13.0,
            ttft_ms: full.then_some(0.5),
            tokens_in: Some(10),
            tokens_out: full.then_some(20),
            tokens_cached: None,
            tokens_per_sec: full.then_some(1540.2),
            cost_usd: full.then_some(0.000_125),
            finish_reason: full.then_some("stop"),
        }
    }

    #[test]
    fn the_readable_form_keeps_one_line_and_quotes_what_needs_it() {
        let text = sample(true).key_values();
        assert!(!text.contains('\n'), "{text}");
        assert!(text.starts_with("request_id=5a0c6f4e-"), "{text}");
        assert!(text.contains(" deployment=openai/gpt-4o "), "{text}");
        assert!(
            text.contains(r#"error_message="the upstream said \"no\"\n\tand ünïcode""#),
            "{text}"
        );
        assert!(text.contains(" status=502 "), "{text}");
    }

    /// The cached timestamp reads as humantime's, within a second and across seconds.
    #[test]
    fn timestamps_match_humantime() {
        use std::time::{Duration, UNIX_EPOCH};
        let base = UNIX_EPOCH + Duration::from_secs(1_795_595_229);
        for offset_us in [
            0,
            1,
            999_999,
            1_000_000,
            1_000_001,
            61_250_000,
            86_400_000_007,
        ] {
            let at = base + Duration::from_micros(offset_us);
            let mut out = Vec::new();
            timestamp(&mut out, at);
            let expected = humantime::format_rfc3339_micros(at).to_string();
            assert_eq!(String::from_utf8(out).unwrap(), expected);
        }
    }

    #[test]
    fn escaping_is_needed_exactly_where_json_requires_it() {
        let plain = b"abcdefghijklmnopqrstuvwxyz-0123456789/ABCDEFGHIJ_.:";
        assert!(!needs_escape(plain));
        assert!(!needs_escape(b""));
        for len in [1, 7, 8, 9, 16, 23, plain.len()] {
            for at in 0..len {
                for byte in 0u8..=255 {
                    let mut t = plain[..len].to_vec();
                    t[at] = byte;
                    let expected = byte < 0x20 || byte == b'"' || byte == b'\\';
                    assert_eq!(needs_escape(&t), expected, "{byte} at {at} of {len}");
                }
            }
        }
    }

    #[test]
    fn addresses_read_as_display_writes_them() {
        for ip in [
            "127.0.0.1",
            "0.0.0.0",
            "255.255.255.255",
            "10.0.200.7",
            "::1",
            "::ffff:192.0.2.1",
            "2001:db8::8a2e:370:7334",
        ] {
            let ip: std::net::IpAddr = ip.parse().unwrap();
            let mut out = Vec::new();
            LineWriter(&mut out).ip(ip);
            assert_eq!(String::from_utf8(out).unwrap(), format!("\"{ip}\""));
        }
    }

    #[test]
    fn strings_that_need_escaping_survive_the_line() {
        let mut line = sample(true);
        let odd = "a\\b\"c\u{1}d\u{7f}é\r";
        line.model = Some(odd);
        line.key = Some("k\"");
        line.tokens_per_sec = Some(f64::NAN);
        let bytes = to_json(&line, tracing::Level::INFO);
        let v: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(v["model"], odd);
        assert_eq!(v["key"], "k\"");
        assert_eq!(v["level"], "INFO");
        assert!(v["tokens_per_sec"].is_null());
        assert_eq!(v["client_ip"], "::1");
        assert_eq!(v["target"], "llm_proxy::request");
    }

    #[test]
    fn the_line_is_what_tracing_would_have_written() {
        for full in [true, false] {
            let line = sample(full);
            let bytes = to_json(&line, tracing::Level::WARN);
            assert_eq!(bytes.last(), Some(&b'\n'));
            assert_eq!(bytes.iter().filter(|&&b| b == b'\n').count(), 1);
            let mut ours: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
            let mut theirs = through_tracing(&line);
            // Same timestamp format; the instants differ.
            for v in [&mut ours, &mut theirs] {
                let ts = v["timestamp"].take();
                let ts = ts.as_str().unwrap();
                assert!(humantime::parse_rfc3339(ts).is_ok(), "{ts}");
                assert_eq!(ts.len(), "2026-11-25T06:17:58.351866Z".len(), "{ts}");
            }
            // Same keys in the same order, same values.
            assert_eq!(ours.to_string(), theirs.to_string());
        }
    }
}
