//! Durations in config files: `60s`, `500ms`, `2m`, or a bare number of seconds (LiteLLM's
//! `timeout: 600`), so both formats read naturally.

use std::time::Duration;

use serde::de::{self, Deserializer, Visitor};

/// Parses `"60s"`, `"1m 30s"`, `"1.5"` (seconds) or `"500ms"`.
pub fn parse(text: &str) -> Result<Duration, String> {
    let t = text.trim();
    if let Ok(secs) = t.parse::<f64>() {
        return from_secs(secs);
    }
    let d = humantime::parse_duration(t)
        .map_err(|e| format!("`{t}` is not a duration ({e}); write e.g. 60s, 500ms or 2m"))?;
    from_secs(d.as_secs_f64())
}

fn from_secs(secs: f64) -> Result<Duration, String> {
    if secs.is_finite() && (0.0..1e9).contains(&secs) {
        Ok(Duration::from_secs_f64(secs))
    } else {
        Err(format!("{secs} is not a usable number of seconds"))
    }
}

struct DurationVisitor;

impl<'de> Visitor<'de> for DurationVisitor {
    type Value = Duration;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a duration such as 60s, 500ms, 2m, or a number of seconds")
    }

    // Bounded like every other form: a duration added to "now" must not overflow.
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Duration, E> {
        from_secs(v as f64).map_err(E::custom)
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Duration, E> {
        from_secs(v as f64).map_err(E::custom)
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Duration, E> {
        from_secs(v).map_err(E::custom)
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Duration, E> {
        parse(v).map_err(E::custom)
    }
}

pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    d.deserialize_any(DurationVisitor)
}

pub fn deserialize_opt<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
    struct Opt;
    impl<'de> Visitor<'de> for Opt {
        type Value = Option<Duration>;
        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("a duration or null")
        }
        fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_some<D2: Deserializer<'de>>(self, d: D2) -> Result<Self::Value, D2::Error> {
            deserialize(d).map(Some)
        }
    }
    d.deserialize_option(Opt)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forms() {
        assert_eq!(parse("60s").unwrap(), Duration::from_secs(60));
        assert_eq!(parse("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse("2m").unwrap(), Duration::from_secs(120));
        assert_eq!(parse("1.5").unwrap(), Duration::from_millis(1500));
        assert!(parse("soon").is_err());
        assert!(parse("-1").is_err());
        assert!(parse("1e300").is_err());
    }
}
