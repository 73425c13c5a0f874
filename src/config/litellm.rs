//! LiteLLM's `config.yaml`, read as it is, so a team running LiteLLM (or the predecessor in
//! front of it) can point llm-proxy at the file it already has.
//!
//! URL conventions follow LiteLLM exactly: an `openai/…` `api_base` already ends in `/v1`
//! (we append `/chat/completions`); an `anthropic/…` `api_base` is the host root (we append
//! `/v1/messages`). Keys we do not act on produce a warning naming them, never silence.

use std::collections::{BTreeMap, HashMap};

use serde::Deserialize;
use serde_yaml_ng::Value;

use super::interpolate::{Layered, interpolate};
use super::native::mb_to_bytes;
use super::{
    ConfigError, ConfigFormat, EnvSource, ModelSettings, ProviderKind, ProviderSettings, Settings,
    Strategy, from_value, secret_from,
};
use crate::providers::mock::MockSettings;

#[derive(Deserialize)]
struct File {
    model_list: Vec<Entry>,
    #[serde(default)]
    router_settings: BTreeMap<String, Value>,
    #[serde(default)]
    litellm_settings: BTreeMap<String, Value>,
    #[serde(default)]
    general_settings: BTreeMap<String, Value>,
    #[serde(flatten)]
    rest: BTreeMap<String, Value>,
}

#[derive(Deserialize)]
struct Entry {
    model_name: String,
    litellm_params: Params,
    #[serde(default)]
    model_info: BTreeMap<String, Value>,
    #[serde(flatten)]
    rest: BTreeMap<String, Value>,
}

#[derive(Deserialize)]
struct Params {
    model: String,
    api_base: Option<String>,
    api_key: Option<String>,
    api_version: Option<String>,
    #[serde(flatten)]
    rest: BTreeMap<String, Value>,
}

/// Keys that exist in LiteLLM but have no meaning here, with the reason we give.
fn no_op_reason(key: &str) -> Option<&'static str> {
    Some(match key {
        "set_verbose" | "json_logs" | "detailed_debug" => {
            "logging is set with LLM_PROXY__LOG_LEVEL and is JSON off a TTY"
        }
        "drop_params" => "parameters are passed through to OpenAI-compatible upstreams as sent",
        "disable_spend_logs" | "disable_error_logs" | "telemetry" => {
            "llm-proxy has no such logs to turn off"
        }
        "id" | "mode" | "base_model" | "description" => "model metadata is not used",
        _ => return None,
    })
}

fn warn_unused(warnings: &mut Vec<String>, prefix: &str, keys: &BTreeMap<String, Value>) {
    for k in keys.keys() {
        let key = if prefix.is_empty() {
            k.clone()
        } else {
            format!("{prefix}.{k}")
        };
        match no_op_reason(k) {
            Some(why) => warnings.push(format!("`{key}` is ignored: {why}")),
            None => warnings.push(format!(
                "`{key}` is not supported by llm-proxy yet and is ignored"
            )),
        }
    }
}

pub(super) fn load(
    mut value: Value,
    file: &str,
    env: &dyn EnvSource,
) -> Result<Settings, ConfigError> {
    // LiteLLM's `environment_variables` feed interpolation (the real environment wins).
    let extra: HashMap<String, String> = match value.get("environment_variables") {
        Some(Value::Mapping(m)) => m
            .iter()
            .filter_map(|(k, v)| {
                let k = k.as_str()?.to_owned();
                let v = match v {
                    Value::String(s) => s.clone(),
                    Value::Number(n) => n.to_string(),
                    Value::Bool(b) => b.to_string(),
                    _ => return None,
                };
                Some((k, v))
            })
            .collect(),
        _ => HashMap::new(),
    };
    if let Value::Mapping(m) = &mut value {
        m.remove("environment_variables");
    }
    interpolate(
        &mut value,
        "",
        &Layered {
            extra: &extra,
            base: env,
        },
    )?;
    let mut f: File = from_value(value, file)?;
    let mut s = Settings {
        format: ConfigFormat::LiteLlm,
        ..Settings::default()
    };
    let w = &mut s.warnings;
    warn_unused(w, "", &f.rest);

    // general_settings
    if let Some(v) = f.general_settings.remove("master_key") {
        s.auth.master_key = secret_from(scalar_string(&v, "general_settings.master_key")?);
    }
    if let Some(v) = f.general_settings.remove("max_request_size_mb") {
        let mb = number(&v, "general_settings.max_request_size_mb")?;
        s.server.max_request_bytes = mb_to_bytes(mb, "general_settings.max_request_size_mb")?;
    }
    // LiteLLM keeps spend in PostgreSQL at `database_url`; the ledger writes its own
    // `llm_proxy_*` tables there, beside (never into) LiteLLM's. Any other URL belongs to
    // some other program's database (e.g. a Python proxy's SQLite file, whose tables the
    // ledger must not share), so it is left alone, with a warning.
    if let Some(v) = f.general_settings.remove("database_url") {
        let key = "general_settings.database_url";
        match scalar_string(&v, key)? {
            Some(url) if url.trim_start().starts_with("postgres") => {
                s.ledger.store = super::ledger_store(&url, key)?;
            }
            Some(_) => s.warnings.push(format!(
                "`{key}` is ignored: only a PostgreSQL URL is used (as the shared usage \
                 ledger); set LLM_PROXY__LEDGER_DATABASE_URL for a SQLite file"
            )),
            None => {}
        }
    }
    warn_unused(&mut s.warnings, "general_settings", &f.general_settings);

    // litellm_settings, then router_settings (which wins, as in LiteLLM's router)
    for (section, map) in [
        ("litellm_settings", &mut f.litellm_settings),
        ("router_settings", &mut f.router_settings),
    ] {
        if let Some(v) = map.remove("num_retries") {
            let n = number(&v, &format!("{section}.num_retries"))?;
            s.routing.num_retries = n.clamp(0.0, 100.0) as u32;
        }
        for key in ["request_timeout", "timeout"] {
            if let Some(v) = map.remove(key) {
                let k = format!("{section}.{key}");
                s.routing.timeout = duration(&v, &k)?;
            }
        }
        if let Some(v) = map.remove("stream_timeout") {
            s.routing.stream_idle_timeout = duration(&v, &format!("{section}.stream_timeout"))?;
        }
        if let Some(v) = map.remove("routing_strategy") {
            let key = format!("{section}.routing_strategy");
            let name = scalar_string(&v, &key)?.unwrap_or_default();
            match Strategy::parse(&name) {
                Some(st) => s.routing.strategy = st,
                // cost-based and custom strategies: keep serving, say so.
                None => s.warnings.push(format!(
                    "`{key}: {name}` is not supported; using simple-shuffle"
                )),
            }
        }
        if let Some(v) = map.remove("allowed_fails") {
            let n = number(&v, &format!("{section}.allowed_fails"))?;
            s.routing.allowed_fails = n.clamp(0.0, 1e6) as u32;
        }
        if let Some(v) = map.remove("cooldown_time") {
            s.routing.cooldown_time = duration(&v, &format!("{section}.cooldown_time"))?;
        }
        if let Some(v) = map.remove("retry_after") {
            s.routing.retry_backoff = duration(&v, &format!("{section}.retry_after"))?;
        }
        for (name, target) in [
            ("fallbacks", &mut s.routing.fallbacks),
            (
                "context_window_fallbacks",
                &mut s.routing.context_window_fallbacks,
            ),
        ] {
            if let Some(v) = map.remove(name) {
                *target = fallback_list(&v, &format!("{section}.{name}"))?;
            }
        }
        if let Some(v) = map.remove("default_fallbacks") {
            let key = format!("{section}.default_fallbacks");
            s.routing.default_fallbacks = string_list(&v, &key)?;
        }
        warn_unused(&mut s.warnings, section, map);
    }

    // model_list → providers (one per distinct kind + base + key) and models
    // (kind, api_base, api_key, api_version): entries sharing all four share a provider.
    type Ident = (ProviderKind, Option<String>, Option<String>, Option<String>);
    let mut seen: Vec<Ident> = Vec::new();
    for (i, e) in f.model_list.into_iter().enumerate() {
        let key = format!("model_list[{i}]");
        warn_unused(&mut s.warnings, &key, &e.rest);
        let mut info = e.model_info;
        // `model_info.max_tokens` is the model's capacity, as `/llm/models` reports it.
        let max_tokens = match info.remove("max_tokens") {
            Some(v) => Some(number(&v, &format!("{key}.model_info.max_tokens"))? as u64),
            None => None,
        };
        warn_unused(&mut s.warnings, &format!("{key}.model_info"), &info);
        let p = e.litellm_params;
        let (kind, upstream) = split_model(&p.model).ok_or_else(|| ConfigError::Invalid {
            key: format!("{key}.litellm_params.model"),
            message: format!(
                "cannot tell the provider of `{}`: write it as provider/model, e.g. openai/{}",
                p.model, p.model
            ),
        })?;
        if kind == ProviderKind::Azure && p.api_version.is_none() {
            s.warnings.push(format!(
                "`{key}.litellm_params.api_version` is not set; using {}",
                crate::providers::openai::AZURE_DEFAULT_API_VERSION
            ));
        }
        if kind != ProviderKind::Azure && p.api_version.is_some() {
            s.warnings.push(format!(
                "`{key}.litellm_params.api_version` is ignored for {} models",
                kind.as_str()
            ));
        }
        let base = p.api_base.filter(|b| !b.trim().is_empty());
        let ident = (kind, base.clone(), p.api_key.clone(), p.api_version.clone());
        let idx = match seen.iter().position(|x| *x == ident) {
            Some(i) => i,
            None => {
                seen.push(ident);
                seen.len() - 1
            }
        };
        let same_kind_before = seen[..idx].iter().filter(|x| x.0 == kind).count();
        let name = if same_kind_before == 0 {
            kind.as_str().to_owned()
        } else {
            format!("{}-{}", kind.as_str(), same_kind_before + 1)
        };
        if s.provider(&name).is_none() {
            s.providers.push(ProviderSettings {
                name: name.clone(),
                kind,
                base_url: base.or_else(|| kind.default_base_url().map(str::to_owned)),
                api_key: secret_from(p.api_key),
                headers: Vec::new(),
                api_version: p
                    .api_version
                    .clone()
                    .filter(|_| kind == ProviderKind::Azure),
                discover_models: false,
                mock: MockSettings::default(),
            });
        }
        let mut ms = ModelSettings::new(e.model_name, name, upstream);
        ms.max_tokens = max_tokens;
        let mut rest = p.rest;
        let pkey = |k: &str| format!("{key}.litellm_params.{k}");
        if let Some(v) = rest.remove("weight") {
            ms.weight = number(&v, &pkey("weight"))?.clamp(0.0, 1e6) as u32;
        }
        if let Some(v) = rest.remove("rpm") {
            ms.rpm = Some(number(&v, &pkey("rpm"))?.max(0.0) as u64);
        }
        if let Some(v) = rest.remove("tpm") {
            ms.tpm = Some(number(&v, &pkey("tpm"))?.max(0.0) as u64);
        }
        if let Some(v) = rest.remove("max_parallel_requests") {
            ms.max_parallel_requests =
                Some(number(&v, &pkey("max_parallel_requests"))?.clamp(1.0, 1e9) as u32);
        }
        if let Some(v) = rest.remove("timeout") {
            ms.timeouts.timeout = Some(duration(&v, &pkey("timeout"))?);
        }
        if let Some(v) = rest.remove("stream_timeout") {
            ms.timeouts.stream_idle_timeout = Some(duration(&v, &pkey("stream_timeout"))?);
        }
        let input = rest.remove("input_cost_per_token");
        let output = rest.remove("output_cost_per_token");
        if input.is_some() || output.is_some() {
            let cost = |v: Option<Value>, k: &str| -> Result<f64, ConfigError> {
                v.map_or(Ok(0.0), |v| number(&v, &pkey(k)))
            };
            ms.price = Some(crate::ledger::prices::Price {
                input: cost(input, "input_cost_per_token")?,
                output: cost(output, "output_cost_per_token")?,
                cached_input: None,
            });
        }
        warn_unused(&mut s.warnings, &format!("{key}.litellm_params"), &rest);
        s.models.push(ms);
    }
    Ok(s)
}

/// LiteLLM's `fallbacks: [{model: [fallback, …]}, …]` (a mapping is accepted too).
fn fallback_list(v: &Value, key: &str) -> Result<Vec<(String, Vec<String>)>, ConfigError> {
    let bad = || ConfigError::Invalid {
        key: key.into(),
        message: "write a list of {model: [fallback, …]} entries".into(),
    };
    let mut out = Vec::new();
    let mut add = |m: &serde_yaml_ng::Mapping| -> Result<(), ConfigError> {
        for (k, v) in m {
            let model = k.as_str().ok_or_else(bad)?.to_owned();
            out.push((model, string_list(v, key)?));
        }
        Ok(())
    };
    match v {
        Value::Sequence(items) => {
            for item in items {
                add(item.as_mapping().ok_or_else(bad)?)?;
            }
        }
        Value::Mapping(m) => add(m)?,
        _ => return Err(bad()),
    }
    Ok(out)
}

/// A list of names (one name alone is a list of one).
fn string_list(v: &Value, key: &str) -> Result<Vec<String>, ConfigError> {
    let bad = || ConfigError::Invalid {
        key: key.into(),
        message: "must be a list of model names".into(),
    };
    match v {
        Value::String(s) => Ok(vec![s.clone()]),
        Value::Sequence(items) => items
            .iter()
            .map(|x| x.as_str().map(str::to_owned).ok_or_else(bad))
            .collect(),
        _ => Err(bad()),
    }
}

/// `openai/gpt-4o` → (openai, `gpt-4o`); a bare name is inferred as LiteLLM does for the
/// common families.
fn split_model(model: &str) -> Option<(ProviderKind, String)> {
    if let Some((prefix, rest)) = model.split_once('/') {
        if let Some(kind) = ProviderKind::parse(prefix) {
            return Some((kind, rest.to_owned()));
        }
    }
    let m = model.to_ascii_lowercase();
    let kind = if m.starts_with("gpt-")
        || m.starts_with("o1")
        || m.starts_with("o3")
        || m.starts_with("o4")
        || m.starts_with("chatgpt-")
        || m.starts_with("text-embedding")
    {
        ProviderKind::OpenAi
    } else if m.starts_with("claude") {
        ProviderKind::Anthropic
    } else if m.starts_with("gemini") {
        ProviderKind::Gemini
    } else {
        return None;
    };
    Some((kind, model.to_owned()))
}

fn scalar_string(v: &Value, key: &str) -> Result<Option<String>, ConfigError> {
    match v {
        Value::Null => Ok(None),
        Value::String(s) => Ok(Some(s.clone())),
        Value::Number(n) => Ok(Some(n.to_string())),
        _ => Err(ConfigError::Invalid {
            key: key.into(),
            message: "must be a string".into(),
        }),
    }
}

fn number(v: &Value, key: &str) -> Result<f64, ConfigError> {
    match v {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
    .ok_or_else(|| ConfigError::Invalid {
        key: key.into(),
        message: "must be a number".into(),
    })
}

fn duration(v: &Value, key: &str) -> Result<std::time::Duration, ConfigError> {
    let text = match v {
        Value::Number(n) => n.to_string(),
        Value::String(s) => s.clone(),
        _ => String::new(),
    };
    super::duration::parse(&text).map_err(|message| ConfigError::Invalid {
        key: key.into(),
        message,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn model_prefixes() {
        assert_eq!(
            split_model("openai/gpt-4o-mini"),
            Some((ProviderKind::OpenAi, "gpt-4o-mini".into()))
        );
        assert_eq!(
            split_model("openrouter/anthropic/claude-3"),
            Some((ProviderKind::OpenRouter, "anthropic/claude-3".into()))
        );
        assert_eq!(
            split_model("claude-3-haiku-20240307"),
            Some((ProviderKind::Anthropic, "claude-3-haiku-20240307".into()))
        );
        assert_eq!(
            split_model("gpt-4").map(|x| x.0),
            Some(ProviderKind::OpenAi)
        );
        assert_eq!(split_model("llama2"), None);
    }
}
