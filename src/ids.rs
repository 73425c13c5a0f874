//! Identifiers the proxy mints per request: request ids, W3C trace and span ids, response
//! ids, limiter slots.
//!
//! They must be unique, not secret: nothing authorizes anything with them. So they come
//! from `fastrand`'s per-thread generator (seeded from the OS once per thread) instead of
//! `getrandom`, which is a system call per id — three per request, about 2 µs of CPU that a
//! profile of the request path showed.

use uuid::Uuid;

/// A random (version 4) UUID.
pub fn uuid_v4() -> Uuid {
    uuid::Builder::from_random_bytes(fastrand::u128(..).to_le_bytes()).into_uuid()
}

/// `N` random lowercase hex digits (`N` ≤ 32), never all zeros (W3C trace context forbids
/// an all-zero trace or span id), on the stack: a trace id and a span id are made on every
/// request, and `format!` of a `u128` was a measurable part of that.
pub fn nonzero_hex_digits<const N: usize>() -> [u8; N] {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let bits = 4 * N.min(32) as u32;
    let value = fastrand::u128(..)
        .checked_shr(128 - bits)
        .unwrap_or(0)
        .max(1);
    let mut out = [b'0'; N];
    for (i, digit) in out.iter_mut().rev().take(32).enumerate() {
        *digit = HEX[((value >> (4 * i)) & 0xf) as usize];
    }
    out
}

/// A W3C span id: 16 lowercase hex digits, never all zeros. A value, not a `String`:
/// every request makes one.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct SpanId([u8; 16]);

impl SpanId {
    pub fn random() -> Self {
        Self(nonzero_hex_digits())
    }

    pub fn as_str(&self) -> &str {
        // Only hex digits are ever stored.
        std::str::from_utf8(&self.0).unwrap_or("0000000000000001")
    }
}

impl std::fmt::Debug for SpanId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_ids_have_their_width_and_differ() {
        // The two ids the proxy makes: span ids (8 bytes) and trace ids (16).
        let nonzero_hex = |n: usize| match n {
            8 => SpanId::random().as_str().to_owned(),
            _ => String::from_utf8(nonzero_hex_digits::<32>().to_vec()).unwrap(),
        };
        for n in [8, 16] {
            let a = nonzero_hex(n);
            let b = nonzero_hex(n);
            assert_eq!(a.len(), n * 2);
            assert!(
                a.bytes()
                    .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase())
            );
            assert_ne!(a, b);
            assert_ne!(a, "0".repeat(n * 2));
        }
    }

    #[test]
    fn hex_digits_are_lowercase_and_fill_their_width() {
        let a = nonzero_hex_digits::<32>();
        let b = nonzero_hex_digits::<32>();
        assert_ne!(a, b);
        assert!(a.iter().all(|c| matches!(c, b'0'..=b'9' | b'a'..=b'f')));
        // Over many draws every digit position takes more than one value (no stuck
        // zeros from a wrong shift).
        let mut seen = [[false; 16]; 32];
        for _ in 0..2000 {
            for (i, c) in nonzero_hex_digits::<32>().iter().enumerate() {
                let v = (*c as char).to_digit(16).unwrap() as usize;
                seen[i][v] = true;
            }
        }
        assert!(seen.iter().all(|s| s.iter().filter(|x| **x).count() > 8));
        let s = SpanId::random();
        assert_eq!(s.as_str().len(), 16);
        assert_ne!(s, SpanId::random());
    }

    #[test]
    fn uuids_are_version_4_and_distinct() {
        let a = uuid_v4();
        assert_eq!(a.get_version_num(), 4);
        assert_ne!(a, uuid_v4());
    }
}
