//! Secrets are a type, so they cannot leak by accident through `Debug`, `Display` or serde.

use std::fmt;
use std::sync::Arc;

use subtle::ConstantTimeEq;

/// An API key or other credential. Printing it in any way shows `***`; the only way to the
/// value is [`Secret::expose`], which makes every use greppable.
#[derive(Clone)]
pub struct Secret(Arc<str>);

impl Secret {
    pub fn new(value: impl Into<Arc<str>>) -> Self {
        Self(value.into())
    }

    /// The raw value, for the one place that must send it (an upstream auth header).
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Compares with a presented key in constant time, so response timing does not reveal
    /// how many leading bytes of a guess were right.
    pub fn matches(&self, presented: &[u8]) -> bool {
        self.0.as_bytes().ct_eq(presented).into()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// SHA-256 of a key: how virtual keys are stored and looked up, so the config (and the
/// process) need not hold them in clear.
pub fn sha256(bytes: &[u8]) -> [u8; 32] {
    let d = ring::digest::digest(&ring::digest::SHA256, bytes);
    let mut out = [0u8; 32];
    out.copy_from_slice(d.as_ref());
    out
}

/// A 64-digit hex SHA-256, as `key_sha256` is written in the config.
pub fn parse_sha256_hex(hex: &str) -> Option<[u8; 32]> {
    let hex = hex.trim();
    if hex.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, pair) in hex.as_bytes().chunks(2).enumerate() {
        let digit = |c: u8| (c as char).to_digit(16);
        out[i] = (digit(pair[0])? * 16 + digit(pair[1])?) as u8;
    }
    Some(out)
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

impl serde::Serialize for Secret {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str("***")
    }
}

/// Replaces every occurrence of each secret in `text` with `***`. Upstream error messages
/// sometimes echo the key they were given ("Incorrect API key provided: sk-…"); this is the
/// last line of defence before such text reaches a client or a log.
pub fn redact(text: &str, secrets: &[&Secret]) -> String {
    let mut out = text.to_owned();
    for s in secrets {
        if s.expose().len() >= 4 && out.contains(s.expose()) {
            out = out.replace(s.expose(), "***");
        }
    }
    redact_key_like(&out)
}

/// Masks tokens that look like provider keys (`sk-…`, `sk-ant-…`) even when we do not know
/// them, keeping only the prefix so the message stays useful.
fn redact_key_like(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(pos) = rest.find("sk-") {
        let boundary_ok = pos == 0
            || !rest[..pos]
                .chars()
                .next_back()
                .is_some_and(|c| c.is_ascii_alphanumeric());
        out.push_str(&rest[..pos]);
        let tail = &rest[pos..];
        let len = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '*'))
            .unwrap_or(tail.len());
        if boundary_ok && len >= 12 {
            out.push_str("sk-***");
        } else {
            out.push_str(&tail[..len]);
        }
        rest = &tail[len..];
        if len == 0 {
            // Unreachable in practice ("sk-" itself is 3 chars), but never loop forever.
            out.push_str(rest);
            break;
        }
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_and_display_hide_the_value() {
        let s = Secret::new("sk-very-secret-value");
        assert_eq!(format!("{s:?} {s}"), "*** ***");
        assert_eq!(serde_json::to_string(&s).unwrap(), "\"***\"");
    }

    #[test]
    fn matches_is_exact() {
        let s = Secret::new("abc123");
        assert!(s.matches(b"abc123"));
        assert!(!s.matches(b"abc124"));
        assert!(!s.matches(b"abc12"));
        assert!(!s.matches(b""));
    }

    #[test]
    fn redact_removes_known_and_key_like_values() {
        let k = Secret::new("my-upstream-key-1");
        let out = redact(
            "bad key my-upstream-key-1 and sk-proj-abcdefghijklmnop, task-list ok",
            &[&k],
        );
        assert_eq!(out, "bad key *** and sk-***, task-list ok");
    }
}
