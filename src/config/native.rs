//! The native YAML format: the spec's section 6, extended. Unknown keys are errors, so a
//! typo fails at start instead of being silently ignored.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Deserialize;
use serde_yaml_ng::Value;

use super::interpolate::interpolate;
use super::{
    ConfigError, ConfigFormat, EnvSource, ModelSettings, ModelTimeouts, OnRedisError, ProviderKind,
    ProviderSettings, RateLimits, Settings, Strategy, VirtualKeySettings, from_value, secret_from,
};
use crate::providers::mock::{Fault, MockSettings};
use crate::secret::Secret;

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct File {
    #[serde(default)]
    server: Server,
    #[serde(default)]
    auth: Auth,
    #[serde(default)]
    log_level: Option<String>,
    #[serde(default)]
    default_provider: Option<String>,
    #[serde(default)]
    default_model: Option<String>,
    /// Kept as a YAML mapping so providers stay in file order (listings follow it).
    #[serde(default)]
    providers: serde_yaml_ng::Mapping,
    #[serde(default)]
    models: Vec<Model>,
    #[serde(default)]
    routing: Routing,
    #[serde(default)]
    limits: Limits,
    #[serde(default)]
    ledger: Ledger,
    #[serde(default)]
    tracing: Tracing,
}

/// `tracing:` OpenTelemetry export over OTLP/HTTP (JSON).
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct Tracing {
    /// The collector's base URL (`http://collector:4318`) or its full traces URL.
    otlp_endpoint: Option<String>,
    service_name: Option<String>,
    #[serde(default)]
    headers: std::collections::BTreeMap<String, String>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct Ledger {
    enabled: Option<bool>,
    database_url: Option<String>,
    queue_size: Option<usize>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct Server {
    host: Option<String>,
    port: Option<u16>,
    max_request_size_mb: Option<f64>,
    max_concurrent_requests: Option<usize>,
    max_queue: Option<usize>,
    #[serde(default, deserialize_with = "super::duration::deserialize_opt")]
    queue_timeout: Option<Duration>,
    #[serde(default, deserialize_with = "super::duration::deserialize_opt")]
    shutdown_grace: Option<Duration>,
    metrics_port: Option<u16>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct Auth {
    master_key: Option<String>,
    #[serde(default)]
    keys: Vec<Key>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Key {
    name: String,
    key: Option<String>,
    key_sha256: Option<String>,
    #[serde(default)]
    models: Vec<String>,
    rpm: Option<u64>,
    tpm: Option<u64>,
    max_parallel_requests: Option<u32>,
    max_budget_usd: Option<f64>,
    #[serde(default, deserialize_with = "super::duration::deserialize_opt")]
    budget_period: Option<Duration>,
    #[serde(default)]
    metadata: serde_json::Map<String, serde_json::Value>,
    #[serde(default)]
    log_content: bool,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct Limits {
    #[serde(default)]
    per_ip: Option<Rates>,
    #[serde(default)]
    trusted_proxies: Vec<String>,
    redis_url: Option<String>,
    on_redis_error: Option<String>,
    #[serde(default, deserialize_with = "super::duration::deserialize_opt")]
    redis_timeout: Option<Duration>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct Rates {
    rpm: Option<u64>,
    tpm: Option<u64>,
    max_parallel_requests: Option<u32>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Provider {
    kind: Option<String>,
    base_url: Option<String>,
    api_key: Option<String>,
    #[serde(default)]
    headers: BTreeMap<String, String>,
    /// Azure only.
    api_version: Option<String>,
    #[serde(default)]
    discover_models: bool,
    // Mock-only knobs.
    tokens: Option<u32>,
    #[serde(default, deserialize_with = "super::duration::deserialize_opt")]
    delay: Option<Duration>,
    #[serde(default, deserialize_with = "super::duration::deserialize_opt")]
    ttft: Option<Duration>,
    fault: Option<Fault>,
    fault_status: Option<u16>,
    fail_first: Option<u64>,
    reasoning: Option<bool>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Model {
    name: String,
    provider: String,
    model: Option<String>,
    max_tokens: Option<u64>,
    weight: Option<u32>,
    rpm: Option<u64>,
    tpm: Option<u64>,
    max_parallel_requests: Option<u32>,
    #[serde(default, deserialize_with = "super::duration::deserialize_opt")]
    timeout: Option<Duration>,
    #[serde(default, deserialize_with = "super::duration::deserialize_opt")]
    first_token_timeout: Option<Duration>,
    #[serde(default, deserialize_with = "super::duration::deserialize_opt")]
    stream_idle_timeout: Option<Duration>,
    input_cost_per_token: Option<f64>,
    output_cost_per_token: Option<f64>,
    cache_read_input_token_cost: Option<f64>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct Routing {
    strategy: Option<String>,
    num_retries: Option<u32>,
    #[serde(default, deserialize_with = "super::duration::deserialize_opt")]
    attempt_timeout: Option<Duration>,
    #[serde(default, deserialize_with = "super::duration::deserialize_opt")]
    first_token_timeout: Option<Duration>,
    #[serde(default, deserialize_with = "super::duration::deserialize_opt")]
    max_retry_after: Option<Duration>,
    allowed_fails: Option<u32>,
    #[serde(default, deserialize_with = "super::duration::deserialize_opt")]
    fail_window: Option<Duration>,
    #[serde(default, deserialize_with = "super::duration::deserialize_opt")]
    cooldown_time: Option<Duration>,
    /// Kept as a mapping so fallback order follows the file.
    #[serde(default)]
    fallbacks: Option<serde_yaml_ng::Mapping>,
    #[serde(default)]
    context_window_fallbacks: Option<serde_yaml_ng::Mapping>,
    #[serde(default)]
    default_fallbacks: Vec<String>,
    #[serde(default, deserialize_with = "super::duration::deserialize_opt")]
    health_check_interval: Option<Duration>,
    #[serde(default, deserialize_with = "super::duration::deserialize_opt")]
    timeout: Option<Duration>,
    #[serde(default, deserialize_with = "super::duration::deserialize_opt")]
    connect_timeout: Option<Duration>,
    #[serde(default, deserialize_with = "super::duration::deserialize_opt")]
    stream_idle_timeout: Option<Duration>,
    #[serde(default, deserialize_with = "super::duration::deserialize_opt")]
    retry_backoff: Option<Duration>,
}

pub(super) fn load(
    mut value: Value,
    file: &str,
    env: &dyn EnvSource,
) -> Result<Settings, ConfigError> {
    interpolate(&mut value, "", env)?;
    let f: File = from_value(value, file)?;
    let mut s = Settings {
        format: ConfigFormat::Native,
        ..Settings::default()
    };
    if let Some(h) = f.server.host {
        s.server.host = h;
    }
    if let Some(p) = f.server.port {
        s.server.port = p;
    }
    if let Some(mb) = f.server.max_request_size_mb {
        s.server.max_request_bytes = mb_to_bytes(mb, "server.max_request_size_mb")?;
    }
    if let Some(n) = f.server.max_concurrent_requests {
        s.server.max_concurrent_requests = n;
    }
    if let Some(n) = f.server.max_queue {
        s.server.max_queue = n;
    }
    if let Some(t) = f.server.queue_timeout {
        s.server.queue_timeout = t;
    }
    if let Some(p) = f.server.metrics_port {
        s.server.metrics_port = Some(p);
    }
    if let Some(t) = f.server.shutdown_grace {
        s.server.shutdown_grace = t;
    }
    s.auth.master_key = secret_from(f.auth.master_key);
    for (i, k) in f.auth.keys.into_iter().enumerate() {
        s.auth.keys.push(virtual_key(i, k)?);
    }
    let l = f.limits;
    if let Some(r) = l.per_ip {
        s.limits.per_ip = RateLimits {
            rpm: r.rpm,
            tpm: r.tpm,
            max_parallel_requests: r.max_parallel_requests,
        };
    }
    for (i, cidr) in l.trusted_proxies.iter().enumerate() {
        let net = cidr
            .parse::<ipnet::IpNet>()
            .or_else(|_| cidr.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
            .map_err(|_| ConfigError::Invalid {
                key: format!("limits.trusted_proxies[{i}]"),
                message: format!("`{cidr}` is not an address or CIDR"),
            })?;
        s.limits.trusted_proxies.push(net);
    }
    s.limits.redis_url = secret_from(l.redis_url);
    if let Some(mode) = l.on_redis_error {
        s.limits.on_redis_error = match mode.as_str() {
            "allow" => OnRedisError::Allow,
            "deny" => OnRedisError::Deny,
            other => {
                return Err(ConfigError::Invalid {
                    key: "limits.on_redis_error".into(),
                    message: format!("`{other}`: write allow or deny"),
                });
            }
        };
    }
    if let Some(t) = l.redis_timeout {
        s.limits.redis_timeout = t;
    }
    if let Some(endpoint) = f.tracing.otlp_endpoint.filter(|e| !e.trim().is_empty()) {
        s.tracing = Some(crate::telemetry::otlp::OtlpSettings {
            endpoint: super::otlp_traces_url(&endpoint, "tracing.otlp_endpoint")?,
            service_name: f.tracing.service_name.unwrap_or_else(|| "llm-proxy".into()),
            headers: f
                .tracing
                .headers
                .into_iter()
                .map(|(k, v)| (k, crate::secret::Secret::new(v)))
                .collect(),
        });
    }
    let lg = f.ledger;
    if let Some(e) = lg.enabled {
        s.ledger.enabled = e;
    }
    if let Some(url) = lg.database_url {
        s.ledger.store = super::ledger_store(&url, "ledger.database_url")?;
    }
    if let Some(n) = lg.queue_size {
        s.ledger.queue_size = n.max(1);
    }
    if let Some(l) = f.log_level {
        s.log_level = l;
    }
    s.default_provider = f.default_provider;
    s.default_model = f.default_model;
    for (name, p) in f.providers {
        let name = match name {
            Value::String(n) => n,
            other => {
                return Err(ConfigError::Invalid {
                    key: "providers".into(),
                    message: format!("provider names must be strings, got {other:?}"),
                });
            }
        };
        let p: Provider = from_value(p, file).map_err(|e| match e {
            ConfigError::Key { file, key, message } => ConfigError::Key {
                file,
                key: if key == "(top level)" {
                    format!("providers.{name}")
                } else {
                    format!("providers.{name}.{key}")
                },
                message,
            },
            other => other,
        })?;
        s.providers.push(provider(name, p)?);
    }
    for m in f.models {
        let mut ms = ModelSettings::new(
            m.name.clone(),
            m.provider,
            m.model.unwrap_or_else(|| m.name.clone()),
        );
        ms.max_tokens = m.max_tokens;
        ms.weight = m.weight.unwrap_or(1);
        ms.rpm = m.rpm;
        ms.tpm = m.tpm;
        ms.max_parallel_requests = m.max_parallel_requests;
        ms.timeouts = ModelTimeouts {
            timeout: m.timeout,
            first_token_timeout: m.first_token_timeout,
            stream_idle_timeout: m.stream_idle_timeout,
        };
        ms.price = match (m.input_cost_per_token, m.output_cost_per_token) {
            (None, None) => None,
            (i, o) => Some(crate::ledger::prices::Price {
                input: i.unwrap_or(0.0),
                output: o.unwrap_or(0.0),
                cached_input: m.cache_read_input_token_cost,
            }),
        };
        s.models.push(ms);
    }
    let r = f.routing;
    if let Some(name) = r.strategy {
        s.routing.strategy = Strategy::parse(&name).ok_or_else(|| ConfigError::Invalid {
            key: "routing.strategy".into(),
            message: format!(
                "unknown strategy `{name}` (simple-shuffle, least-busy, latency-based, usage-based)"
            ),
        })?;
    }
    if let Some(t) = r.first_token_timeout {
        s.routing.first_token_timeout = Some(t);
    }
    if let Some(t) = r.attempt_timeout {
        s.routing.attempt_timeout = Some(t);
    }
    if let Some(t) = r.max_retry_after {
        s.routing.max_retry_after = t;
    }
    if let Some(n) = r.allowed_fails {
        s.routing.allowed_fails = n;
    }
    if let Some(t) = r.fail_window {
        s.routing.fail_window = t;
    }
    if let Some(t) = r.cooldown_time {
        s.routing.cooldown_time = t;
    }
    if let Some(m) = r.fallbacks {
        s.routing.fallbacks = fallback_map(m, "routing.fallbacks")?;
    }
    if let Some(m) = r.context_window_fallbacks {
        s.routing.context_window_fallbacks = fallback_map(m, "routing.context_window_fallbacks")?;
    }
    s.routing.default_fallbacks = r.default_fallbacks;
    s.routing.health_check_interval = r.health_check_interval;
    if let Some(n) = r.num_retries {
        s.routing.num_retries = n;
    }
    if let Some(t) = r.timeout {
        s.routing.timeout = t;
    }
    if let Some(t) = r.connect_timeout {
        s.routing.connect_timeout = t;
    }
    if let Some(t) = r.stream_idle_timeout {
        s.routing.stream_idle_timeout = t;
    }
    if let Some(t) = r.retry_backoff {
        s.routing.retry_backoff = t;
    }
    Ok(s)
}

fn virtual_key(i: usize, k: Key) -> Result<VirtualKeySettings, ConfigError> {
    let at = |field: &str| format!("auth.keys[{i}].{field}");
    let hash = match (k.key, k.key_sha256) {
        (Some(key), None) if !key.trim().is_empty() => crate::secret::sha256(key.trim().as_bytes()),
        (Some(_), None) => {
            return Err(ConfigError::Invalid {
                key: at("key"),
                message: "is empty (is its environment variable set?)".into(),
            });
        }
        (None, Some(hex)) => {
            crate::secret::parse_sha256_hex(&hex).ok_or_else(|| ConfigError::Invalid {
                key: at("key_sha256"),
                message: "must be 64 hex digits (the SHA-256 of the key)".into(),
            })?
        }
        _ => {
            return Err(ConfigError::Invalid {
                key: format!("auth.keys[{i}]"),
                message: "give exactly one of `key` and `key_sha256`".into(),
            });
        }
    };
    if k.name.trim().is_empty() {
        return Err(ConfigError::Invalid {
            key: at("name"),
            message: "must not be empty".into(),
        });
    }
    Ok(VirtualKeySettings {
        name: k.name,
        key_sha256: hash,
        models: k.models,
        limits: RateLimits {
            rpm: k.rpm,
            tpm: k.tpm,
            max_parallel_requests: k.max_parallel_requests,
        },
        max_budget_usd: k.max_budget_usd,
        budget_period: k.budget_period,
        metadata: k.metadata,
        log_content: k.log_content,
    })
}

/// `{model: [fallback, …]}` in file order; a single name may stand for a one-item list.
fn fallback_map(
    m: serde_yaml_ng::Mapping,
    key: &str,
) -> Result<Vec<(String, Vec<String>)>, ConfigError> {
    let bad = |message: String| ConfigError::Invalid {
        key: key.into(),
        message,
    };
    let mut out = Vec::new();
    for (k, v) in m {
        let Value::String(model) = k else {
            return Err(bad("model names must be strings".into()));
        };
        let list = match v {
            Value::String(one) => vec![one],
            Value::Sequence(seq) => seq
                .into_iter()
                .map(|x| match x {
                    Value::String(s) => Ok(s),
                    _ => Err(bad(format!("`{model}`: fallbacks must be model names"))),
                })
                .collect::<Result<_, _>>()?,
            _ => return Err(bad(format!("`{model}`: write a list of model names"))),
        };
        out.push((model, list));
    }
    Ok(out)
}

pub(super) fn mb_to_bytes(mb: f64, key: &str) -> Result<usize, ConfigError> {
    if mb.is_finite() && mb > 0.0 && mb < 1e6 {
        Ok((mb * 1024.0 * 1024.0) as usize)
    } else {
        Err(ConfigError::Invalid {
            key: key.into(),
            message: format!("{mb} is not a usable size in MiB"),
        })
    }
}

/// The spec's own example names providers without a `kind`: infer it from the name, and
/// treat any other named provider with a `base_url` as OpenAI-compatible.
fn infer_kind(name: &str, p: &Provider) -> Result<ProviderKind, ConfigError> {
    match &p.kind {
        Some(k) => ProviderKind::parse(k).ok_or_else(|| ConfigError::Invalid {
            key: format!("providers.{name}.kind"),
            message: format!(
                "unknown kind `{k}` (known: openai, anthropic, azure, gemini, ollama, vllm, \
                 lm_studio, deepseek, mistral, groq, openrouter, mock)"
            ),
        }),
        None => match ProviderKind::parse(name) {
            Some(k) => Ok(k),
            None if p.base_url.is_some() => Ok(ProviderKind::OpenAi),
            None => Err(ConfigError::Invalid {
                key: format!("providers.{name}"),
                message: "set `kind` (e.g. openai) or a `base_url`".into(),
            }),
        },
    }
}

fn provider(name: String, p: Provider) -> Result<ProviderSettings, ConfigError> {
    let kind = infer_kind(&name, &p)?;
    let mock_keys = [
        ("tokens", p.tokens.is_some()),
        ("delay", p.delay.is_some()),
        ("ttft", p.ttft.is_some()),
        ("fault", p.fault.is_some()),
        ("fault_status", p.fault_status.is_some()),
        ("fail_first", p.fail_first.is_some()),
        ("reasoning", p.reasoning.is_some()),
    ];
    let mut mock = MockSettings::default();
    if kind == ProviderKind::Mock {
        if let Some(v) = p.tokens {
            mock.tokens = v;
        }
        if let Some(v) = p.delay {
            mock.delay = v;
        }
        if let Some(v) = p.ttft {
            mock.ttft = v;
        }
        mock.fault = p.fault;
        if let Some(v) = p.fault_status {
            if !(400..600).contains(&v) {
                return Err(ConfigError::Invalid {
                    key: format!("providers.{name}.fault_status"),
                    message: "must be an HTTP error status (400-599)".into(),
                });
            }
            mock.fault_status = v;
        }
        if let Some(v) = p.fail_first {
            mock.fail_first = v;
        }
        if let Some(v) = p.reasoning {
            mock.reasoning = v;
        }
    } else if let Some((key, _)) = mock_keys.iter().find(|(_, set)| *set) {
        return Err(ConfigError::Invalid {
            key: format!("providers.{name}.{key}"),
            message: "only applies to providers of kind `mock`".into(),
        });
    }
    if p.api_version.is_some() && kind != ProviderKind::Azure {
        return Err(ConfigError::Invalid {
            key: format!("providers.{name}.api_version"),
            message: "only applies to providers of kind `azure`".into(),
        });
    }
    if kind == ProviderKind::Azure && p.base_url.is_none() {
        return Err(ConfigError::Invalid {
            key: format!("providers.{name}.base_url"),
            message: "azure needs the resource endpoint, e.g. https://NAME.openai.azure.com".into(),
        });
    }
    let base_url = p
        .base_url
        .filter(|u| !u.trim().is_empty())
        .or_else(|| kind.default_base_url().map(str::to_owned));
    Ok(ProviderSettings {
        name,
        kind,
        base_url,
        api_key: secret_from(p.api_key),
        headers: p
            .headers
            .into_iter()
            .map(|(k, v)| (k, Secret::new(v)))
            .collect(),
        api_version: p.api_version,
        discover_models: p.discover_models,
        mock,
    })
}
