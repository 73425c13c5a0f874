//! `${VAR}`, `${VAR:-default}` and LiteLLM's `os.environ/VAR` in config values.
//!
//! Interpolation runs on the parsed YAML tree, so a value containing YAML syntax can never
//! change the file's structure, and a missing variable is reported with the key it was for.

use serde_yaml_ng::Value;

use super::ConfigError;

/// Where variable values come from: the process environment in production, a map in tests.
pub trait EnvSource {
    fn var(&self, name: &str) -> Option<String>;
}

/// The real process environment.
pub struct ProcessEnv;

impl EnvSource for ProcessEnv {
    fn var(&self, name: &str) -> Option<String> {
        std::env::var(name).ok()
    }
}

impl EnvSource for std::collections::HashMap<String, String> {
    fn var(&self, name: &str) -> Option<String> {
        self.get(name).cloned()
    }
}

/// An environment with extra variables layered on top (LiteLLM's `environment_variables`).
pub struct Layered<'a> {
    pub extra: &'a std::collections::HashMap<String, String>,
    pub base: &'a dyn EnvSource,
}

impl EnvSource for Layered<'_> {
    fn var(&self, name: &str) -> Option<String> {
        self.base
            .var(name)
            .or_else(|| self.extra.get(name).cloned())
    }
}

const PLACEHOLDER: &str = "__llm_proxy_env_ref_";

/// Replaces each `${…}` in raw config text with a placeholder made only of letters, digits
/// and underscores. Plain YAML does not allow `{`/`}` inside flow mappings, yet configs
/// commonly write `{ api_key: ${OPENAI_API_KEY} }`; protecting the references first lets
/// such files parse. [`restore`] puts them back in the parsed tree, before interpolation,
/// so a variable's value can never change the YAML structure.
pub fn protect(text: &str) -> (String, Vec<String>) {
    let mut out = String::with_capacity(text.len());
    let mut refs = Vec::new();
    let mut rest = text;
    while let Some(start) = rest.find("${") {
        let Some(len) = rest[start..].find('}') else {
            break;
        };
        out.push_str(&rest[..start]);
        let reference = &rest[start..start + len + 1];
        if reference.contains('\n') {
            out.push_str("${");
            rest = &rest[start + 2..];
            continue;
        }
        out.push_str(&format!("{PLACEHOLDER}{}__", refs.len()));
        refs.push(reference.to_owned());
        rest = &rest[start + len + 1..];
    }
    out.push_str(rest);
    (out, refs)
}

/// Puts protected references back into every string of the tree.
pub fn restore(value: &mut Value, refs: &[String]) {
    if refs.is_empty() {
        return;
    }
    match value {
        Value::String(s) if s.contains(PLACEHOLDER) => {
            // Highest index first, so `…_1__` never matches inside `…_11__`.
            for (i, r) in refs.iter().enumerate().rev() {
                *s = s.replace(&format!("{PLACEHOLDER}{i}__"), r);
            }
        }
        Value::Sequence(items) => items.iter_mut().for_each(|v| restore(v, refs)),
        Value::Mapping(map) => map.iter_mut().for_each(|(_, v)| restore(v, refs)),
        Value::Tagged(t) => restore(&mut t.value, refs),
        _ => {}
    }
}

/// Interpolates every string in `value`, in place. `path` names the key for errors.
pub fn interpolate(value: &mut Value, path: &str, env: &dyn EnvSource) -> Result<(), ConfigError> {
    match value {
        Value::String(s) => {
            if let Some(out) = interpolate_str(s, path, env)? {
                *s = out;
            }
        }
        Value::Sequence(items) => {
            for (i, item) in items.iter_mut().enumerate() {
                interpolate(item, &format!("{path}[{i}]"), env)?;
            }
        }
        Value::Mapping(map) => {
            for (k, v) in map.iter_mut() {
                let key = match k {
                    Value::String(s) => s.clone(),
                    other => serde_yaml_ng::to_string(other)
                        .unwrap_or_default()
                        .trim()
                        .to_owned(),
                };
                let child = if path.is_empty() {
                    key
                } else {
                    format!("{path}.{key}")
                };
                interpolate(v, &child, env)?;
            }
        }
        Value::Tagged(t) => interpolate(&mut t.value, path, env)?,
        Value::Null | Value::Bool(_) | Value::Number(_) => {}
    }
    Ok(())
}

fn missing(var: &str, path: &str) -> ConfigError {
    ConfigError::MissingEnv {
        var: var.to_owned(),
        key: path.to_owned(),
    }
}

/// Returns the interpolated string, or `None` when there was nothing to replace.
fn interpolate_str(
    s: &str,
    path: &str,
    env: &dyn EnvSource,
) -> Result<Option<String>, ConfigError> {
    if let Some(var) = s.strip_prefix("os.environ/") {
        let var = var.trim();
        return env.var(var).map(Some).ok_or_else(|| missing(var, path));
    }
    if !s.contains("${") {
        return Ok(None);
    }
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let Some(end) = after.find('}') else {
            return Err(ConfigError::Invalid {
                key: path.to_owned(),
                message: "unterminated `${` in value".into(),
            });
        };
        let expr = &after[..end];
        let (name, default) = match expr.split_once(":-") {
            Some((n, d)) => (n.trim(), Some(d)),
            None => (expr.trim(), None),
        };
        if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            return Err(ConfigError::Invalid {
                key: path.to_owned(),
                message: format!("`${{{expr}}}` is not a valid variable reference"),
            });
        }
        match (env.var(name), default) {
            (Some(v), _) => out.push_str(&v),
            (None, Some(d)) => out.push_str(d),
            (None, None) => return Err(missing(name, path)),
        }
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    Ok(Some(out))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn env() -> HashMap<String, String> {
        HashMap::from([("KEY".to_owned(), "v1".to_owned())])
    }

    #[test]
    fn forms() {
        let e = env();
        assert_eq!(interpolate_str("${KEY}", "k", &e).unwrap().unwrap(), "v1");
        assert_eq!(
            interpolate_str("a-${KEY}-b", "k", &e).unwrap().unwrap(),
            "a-v1-b"
        );
        assert_eq!(
            interpolate_str("os.environ/KEY", "k", &e).unwrap().unwrap(),
            "v1"
        );
        assert_eq!(
            interpolate_str("${NOPE:-dflt}", "k", &e).unwrap().unwrap(),
            "dflt"
        );
        assert_eq!(interpolate_str("${NOPE:-}", "k", &e).unwrap().unwrap(), "");
        assert!(interpolate_str("plain", "k", &e).unwrap().is_none());
    }

    #[test]
    fn missing_variable_names_variable_and_key() {
        let mut v: Value =
            serde_yaml_ng::from_str("providers:\n  openai:\n    api_key: ${OPENAI_KEY_X}\n")
                .unwrap();
        let err = interpolate(&mut v, "", &env()).unwrap_err().to_string();
        assert!(err.contains("OPENAI_KEY_X"), "{err}");
        assert!(err.contains("providers.openai.api_key"), "{err}");
    }

    #[test]
    fn references_in_flow_mappings_survive_parsing() {
        let text = "p: { a: ${KEY}, b: x${KEY}y, c: \"${KEY:-d}\" }\n";
        let (safe, refs) = protect(text);
        let mut v: Value = serde_yaml_ng::from_str(&safe).unwrap();
        restore(&mut v, &refs);
        interpolate(&mut v, "", &env()).unwrap();
        assert_eq!(v["p"]["a"].as_str(), Some("v1"));
        assert_eq!(v["p"]["b"].as_str(), Some("xv1y"));
        assert_eq!(v["p"]["c"].as_str(), Some("v1"));
    }

    #[test]
    fn bad_reference_is_an_error() {
        assert!(interpolate_str("${A B}", "k", &env()).is_err());
        assert!(interpolate_str("${KEY", "k", &env()).is_err());
    }
}
