//! Configuration: the native YAML format, LiteLLM's `config.yaml`, `${ENV}` interpolation and
//! `LLM_PROXY__*` overrides, all resolved at start into one immutable [`Settings`].
//!
//! Every problem is found here, when the process starts (or `check-config` runs), with the
//! file and the key named: a request never discovers a config mistake.

mod duration;
mod env;
mod interpolate;
mod litellm;
mod native;

use std::path::{Path, PathBuf};
use std::time::Duration;

pub use duration::parse as parse_duration;
pub use env::apply_env_overrides;
pub use interpolate::{EnvSource, ProcessEnv};

use crate::providers::mock::MockSettings;
use crate::secret::Secret;

/// The built-in configuration served when no file is given: the mock provider only.
pub const EMBEDDED_CONFIG: &str = include_str!("embedded.yaml");

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{file}: not valid YAML: {message}")]
    Yaml { file: String, message: String },
    #[error("{file}: {key}: {message}")]
    Key {
        file: String,
        key: String,
        message: String,
    },
    #[error("environment variable {var} is not set (needed by `{key}`)")]
    MissingEnv { var: String, key: String },
    #[error("`{key}`: {message}")]
    Invalid { key: String, message: String },
    #[error("environment variable {var}: {message}")]
    EnvOverride { var: String, message: String },
}

/// Which format a file was in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConfigFormat {
    Embedded,
    Native,
    LiteLlm,
}

impl ConfigFormat {
    pub fn as_str(self) -> &'static str {
        match self {
            ConfigFormat::Embedded => "built-in (mock provider)",
            ConfigFormat::Native => "llm-proxy YAML",
            ConfigFormat::LiteLlm => "LiteLLM config.yaml",
        }
    }
}

/// Every upstream kind the config can name. Kinds that are OpenAI-compatible presets differ
/// only in their default base URL.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProviderKind {
    OpenAi,
    Mock,
    Anthropic,
    Azure,
    Gemini,
    Ollama,
    Vllm,
    LmStudio,
    DeepSeek,
    Mistral,
    Groq,
    OpenRouter,
}

impl ProviderKind {
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "openai" | "openai_compatible" | "custom_openai" | "llamacpp" | "litellm_proxy" => {
                ProviderKind::OpenAi
            }
            "mock" => ProviderKind::Mock,
            "anthropic" => ProviderKind::Anthropic,
            "azure" | "azure_openai" => ProviderKind::Azure,
            "gemini" | "google" => ProviderKind::Gemini,
            "ollama" | "ollama_chat" => ProviderKind::Ollama,
            "vllm" | "hosted_vllm" => ProviderKind::Vllm,
            "lm_studio" | "lmstudio" => ProviderKind::LmStudio,
            "deepseek" => ProviderKind::DeepSeek,
            "mistral" => ProviderKind::Mistral,
            "groq" => ProviderKind::Groq,
            "openrouter" => ProviderKind::OpenRouter,
            _ => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            ProviderKind::OpenAi => "openai",
            ProviderKind::Mock => "mock",
            ProviderKind::Anthropic => "anthropic",
            ProviderKind::Azure => "azure",
            ProviderKind::Gemini => "gemini",
            ProviderKind::Ollama => "ollama",
            ProviderKind::Vllm => "vllm",
            ProviderKind::LmStudio => "lm_studio",
            ProviderKind::DeepSeek => "deepseek",
            ProviderKind::Mistral => "mistral",
            ProviderKind::Groq => "groq",
            ProviderKind::OpenRouter => "openrouter",
        }
    }

    /// The base URL used when the config gives none.
    pub fn default_base_url(self) -> Option<&'static str> {
        Some(match self {
            ProviderKind::OpenAi => "https://api.openai.com/v1",
            ProviderKind::Anthropic => "https://api.anthropic.com",
            ProviderKind::Gemini => "https://generativelanguage.googleapis.com/v1beta",
            ProviderKind::Ollama => "http://localhost:11434/v1",
            ProviderKind::Vllm => "http://localhost:8000/v1",
            ProviderKind::LmStudio => "http://localhost:1234/v1",
            ProviderKind::DeepSeek => "https://api.deepseek.com/v1",
            ProviderKind::Mistral => "https://api.mistral.ai/v1",
            ProviderKind::Groq => "https://api.groq.com/openai/v1",
            ProviderKind::OpenRouter => "https://openrouter.ai/api/v1",
            ProviderKind::Mock | ProviderKind::Azure => return None,
        })
    }

    /// Whether this build talks to the kind through the OpenAI-compatible provider.
    pub fn is_openai_compatible(self) -> bool {
        matches!(
            self,
            ProviderKind::OpenAi
                | ProviderKind::Ollama
                | ProviderKind::Vllm
                | ProviderKind::LmStudio
                | ProviderKind::DeepSeek
                | ProviderKind::Mistral
                | ProviderKind::Groq
                | ProviderKind::OpenRouter
        )
    }
}

#[derive(Debug, Clone)]
pub struct ServerSettings {
    pub host: String,
    pub port: u16,
    pub max_request_bytes: usize,
    pub max_concurrent_requests: usize,
    /// Requests that may wait for a slot once `max_concurrent_requests` are in flight.
    pub max_queue: usize,
    /// How long a queued request waits for a slot before 503.
    pub queue_timeout: Duration,
    /// On SIGTERM, how long in-flight requests and streams may take to finish before
    /// streams are closed with an error event.
    pub shutdown_grace: Duration,
    /// Serve on a non-loopback address with no key configured (explicit opt-in).
    pub allow_unauthenticated: bool,
    /// Also serve `/metrics` (alone, same key rule) on this port of `host`, for scrapers
    /// on a network the API port is not exposed to.
    pub metrics_port: Option<u16>,
}

impl Default for ServerSettings {
    fn default() -> Self {
        Self {
            host: "127.0.0.1".into(),
            port: 8002,
            max_request_bytes: 32 << 20,
            max_concurrent_requests: 10_000,
            max_queue: 1_000,
            queue_timeout: Duration::from_secs(2),
            shutdown_grace: Duration::from_secs(30),
            allow_unauthenticated: false,
            metrics_port: None,
        }
    }
}

#[derive(Debug, Clone, Default)]
pub struct AuthSettings {
    /// The master key (the predecessor's internal key, LiteLLM's `master_key`).
    pub master_key: Option<Secret>,
    /// Per-user keys with their own models and limits.
    pub keys: Vec<VirtualKeySettings>,
}

/// Requests, tokens and concurrency allowed to one client.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RateLimits {
    pub rpm: Option<u64>,
    pub tpm: Option<u64>,
    pub max_parallel_requests: Option<u32>,
}

impl RateLimits {
    pub fn is_empty(&self) -> bool {
        self.rpm.is_none() && self.tpm.is_none() && self.max_parallel_requests.is_none()
    }
}

/// A virtual key. Only its SHA-256 is kept.
#[derive(Clone)]
pub struct VirtualKeySettings {
    pub name: String,
    pub key_sha256: [u8; 32],
    /// Glob patterns (`*`, `?`) of the model names it may use; empty = all.
    pub models: Vec<String>,
    pub limits: RateLimits,
    /// Spend cap per `budget_period` (e.g. `30d`), enforced once the usage ledger exists.
    pub max_budget_usd: Option<f64>,
    pub budget_period: Option<Duration>,
    /// Free-form (team, owner, …), shown in logs by name only.
    pub metadata: serde_json::Map<String, serde_json::Value>,
    /// Log this key's prompts and completions (an explicit opt-in, e.g. for an audited
    /// integration); off, nothing a user wrote or a model answered reaches the logs.
    pub log_content: bool,
}

impl std::fmt::Debug for VirtualKeySettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VirtualKeySettings")
            .field("name", &self.name)
            .field("key_sha256", &"***")
            .field("models", &self.models)
            .field("limits", &self.limits)
            .finish()
    }
}

/// The usage ledger.
#[derive(Debug, Clone)]
pub struct LedgerSettings {
    pub enabled: bool,
    /// `ledger.database_url`: a SQLite file (default `llm-proxy.db` in the working
    /// directory) or a PostgreSQL database.
    pub store: crate::ledger::Store,
    /// Records waiting to be written before new ones are dropped (and counted).
    pub queue_size: usize,
}

impl Default for LedgerSettings {
    fn default() -> Self {
        Self {
            enabled: true,
            store: crate::ledger::Store::Sqlite("llm-proxy.db".into()),
            queue_size: 10_000,
        }
    }
}

/// Parses a ledger URL found at config key `key`.
pub fn ledger_store(url: &str, key: &str) -> Result<crate::ledger::Store, ConfigError> {
    crate::ledger::Store::parse(url).map_err(|message| ConfigError::Invalid {
        key: key.into(),
        message,
    })
}

/// The OTLP/HTTP traces URL from a collector's base URL (`…/v1/traces` appended, as the
/// OpenTelemetry SDKs do with `OTEL_EXPORTER_OTLP_ENDPOINT`) or a full traces URL.
pub fn otlp_traces_url(endpoint: &str, key: &str) -> Result<String, ConfigError> {
    let e = endpoint.trim().trim_end_matches('/');
    if !(e.starts_with("http://") || e.starts_with("https://")) {
        return Err(ConfigError::Invalid {
            key: key.into(),
            message: format!(
                "`{e}` is not an http(s) URL (OTLP over gRPC is not supported; use OTLP/HTTP, port 4318)"
            ),
        });
    }
    Ok(if e.ends_with("/v1/traces") {
        e.to_owned()
    } else {
        format!("{e}/v1/traces")
    })
}

/// What to do when the shared (Redis) limit store cannot be reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OnRedisError {
    /// Keep serving with this replica's own limits.
    #[default]
    Allow,
    /// Refuse limited requests with 503 until Redis is back.
    Deny,
}

#[derive(Debug, Clone)]
pub struct LimitsSettings {
    /// Limits per client address, for requests without a per-user key.
    pub per_ip: RateLimits,
    /// Proxies whose `X-Forwarded-For` is believed (CIDRs); others' is ignored.
    pub trusted_proxies: Vec<ipnet::IpNet>,
    /// Shared limit store for several replicas (the URL may hold a password).
    pub redis_url: Option<Secret>,
    pub on_redis_error: OnRedisError,
    /// One round trip to Redis at most this long before the error policy applies.
    pub redis_timeout: Duration,
}

impl Default for LimitsSettings {
    fn default() -> Self {
        Self {
            per_ip: RateLimits::default(),
            trusted_proxies: Vec::new(),
            redis_url: None,
            on_redis_error: OnRedisError::Allow,
            redis_timeout: Duration::from_millis(100),
        }
    }
}

/// How the router picks among a model's deployments.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Strategy {
    /// Weighted random (by `weight`).
    #[default]
    SimpleShuffle,
    /// The fewest requests in flight.
    LeastBusy,
    /// Power of two choices on the moving average of time to first token / latency.
    LatencyBased,
    /// The furthest under its `rpm` / `tpm`.
    UsageBased,
}

impl Strategy {
    /// Our names and LiteLLM's `routing_strategy` names.
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "simple-shuffle" | "simple_shuffle" | "shuffle" => Strategy::SimpleShuffle,
            "least-busy" | "least_busy" => Strategy::LeastBusy,
            "latency-based" | "latency-based-routing" | "latency_based" => Strategy::LatencyBased,
            "usage-based" | "usage-based-routing" | "usage-based-routing-v2" | "usage_based" => {
                Strategy::UsageBased
            }
            _ => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Strategy::SimpleShuffle => "simple-shuffle",
            Strategy::LeastBusy => "least-busy",
            Strategy::LatencyBased => "latency-based",
            Strategy::UsageBased => "usage-based",
        }
    }
}

#[derive(Debug, Clone)]
pub struct RoutingSettings {
    pub strategy: Strategy,
    /// Extra attempts after the first, per model (fallback models get their own).
    pub num_retries: u32,
    /// The whole request, retries and fallbacks included, until the reply (non-streaming)
    /// or the first chunk of a stream.
    pub timeout: Duration,
    /// One non-streaming attempt (defaults to `timeout`): shorter lets a hung upstream be
    /// retried within the request's time.
    pub attempt_timeout: Option<Duration>,
    /// One attempt's wait for a stream's first chunk (defaults to `attempt_timeout`).
    pub first_token_timeout: Option<Duration>,
    pub connect_timeout: Duration,
    /// Longest silence between two chunks of a stream.
    pub stream_idle_timeout: Duration,
    /// Pause before a retry on the same deployment; doubles each time, with jitter.
    pub retry_backoff: Duration,
    /// The longest upstream `retry-after` honoured before a retry.
    pub max_retry_after: Duration,
    /// Failures within `fail_window` that take a deployment out.
    pub allowed_fails: u32,
    pub fail_window: Duration,
    /// How long a failing deployment stays out before one probe request is let through.
    pub cooldown_time: Duration,
    /// Model → models to try, in order, once its own attempts are spent.
    pub fallbacks: Vec<(String, Vec<String>)>,
    /// Model → models to try when the request was too long for it.
    pub context_window_fallbacks: Vec<(String, Vec<String>)>,
    /// Tried for any model without its own `fallbacks`.
    pub default_fallbacks: Vec<String>,
    /// Ask each provider for its model list this often; failures count against its
    /// deployments, success brings them back (off when unset).
    pub health_check_interval: Option<Duration>,
}

impl Default for RoutingSettings {
    fn default() -> Self {
        Self {
            strategy: Strategy::SimpleShuffle,
            num_retries: 1,
            timeout: Duration::from_secs(600),
            attempt_timeout: None,
            first_token_timeout: None,
            connect_timeout: Duration::from_secs(10),
            stream_idle_timeout: Duration::from_secs(120),
            retry_backoff: Duration::from_millis(100),
            max_retry_after: Duration::from_secs(10),
            allowed_fails: 3,
            fail_window: Duration::from_secs(60),
            cooldown_time: Duration::from_secs(30),
            fallbacks: Vec::new(),
            context_window_fallbacks: Vec::new(),
            default_fallbacks: Vec::new(),
            health_check_interval: None,
        }
    }
}

/// Per-deployment overrides of the routing timeouts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ModelTimeouts {
    pub timeout: Option<Duration>,
    pub first_token_timeout: Option<Duration>,
    pub stream_idle_timeout: Option<Duration>,
}

#[derive(Debug, Clone)]
pub struct ProviderSettings {
    pub name: String,
    pub kind: ProviderKind,
    /// Resolved: the kind's default when the config gave none.
    pub base_url: Option<String>,
    pub api_key: Option<Secret>,
    /// Extra headers sent upstream (values may be credentials, so they are secrets).
    pub headers: Vec<(String, Secret)>,
    /// Azure OpenAI's `api-version` query parameter (required for classic deployment URLs).
    pub api_version: Option<String>,
    /// Ask the provider which models it serves (in the background) and list them too.
    pub discover_models: bool,
    pub mock: MockSettings,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ModelSettings {
    /// The name clients ask for.
    pub name: String,
    pub provider: String,
    /// The upstream's id for it.
    pub model: String,
    pub max_tokens: Option<u64>,
    /// Share of traffic among the model's deployments (simple-shuffle).
    pub weight: u32,
    /// This deployment's requests and tokens per minute (usage-based routing steers
    /// around a deployment at its limit).
    pub rpm: Option<u64>,
    pub tpm: Option<u64>,
    /// Requests in flight at most; a full deployment is skipped.
    pub max_parallel_requests: Option<u32>,
    pub timeouts: ModelTimeouts,
    /// USD per token, when configured (else the built-in table's price, if any).
    pub price: Option<crate::ledger::prices::Price>,
}

impl ModelSettings {
    pub fn new(name: String, provider: String, model: String) -> Self {
        Self {
            name,
            provider,
            model,
            max_tokens: None,
            weight: 1,
            rpm: None,
            tpm: None,
            max_parallel_requests: None,
            timeouts: ModelTimeouts::default(),
            price: None,
        }
    }
}

#[derive(Debug, Clone)]
pub struct Settings {
    pub server: ServerSettings,
    pub auth: AuthSettings,
    pub limits: LimitsSettings,
    pub ledger: LedgerSettings,
    /// OpenTelemetry trace export (off unless an endpoint is set).
    pub tracing: Option<crate::telemetry::otlp::OtlpSettings>,
    pub log_level: String,
    pub default_provider: Option<String>,
    pub default_model: Option<String>,
    pub providers: Vec<ProviderSettings>,
    pub models: Vec<ModelSettings>,
    pub routing: RoutingSettings,
    pub format: ConfigFormat,
    pub source: Option<PathBuf>,
    /// Things the operator should know: unsupported keys, ignored settings.
    pub warnings: Vec<String>,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            server: ServerSettings::default(),
            auth: AuthSettings::default(),
            limits: LimitsSettings::default(),
            ledger: LedgerSettings::default(),
            tracing: None,
            log_level: "info".into(),
            default_provider: None,
            default_model: None,
            providers: Vec::new(),
            models: Vec::new(),
            routing: RoutingSettings::default(),
            format: ConfigFormat::Embedded,
            source: None,
            warnings: Vec::new(),
        }
    }
}

/// One row of the routing table: what a model name resolves to. Comparable across formats.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Route {
    pub model: String,
    pub kind: &'static str,
    pub base_url: Option<String>,
    pub upstream_model: String,
    pub has_key: bool,
    pub max_tokens: Option<u64>,
}

impl Settings {
    pub fn provider(&self, name: &str) -> Option<&ProviderSettings> {
        self.providers.iter().find(|p| p.name == name)
    }

    /// The resolved routing table, sorted, for comparison and display.
    pub fn routes(&self) -> Vec<Route> {
        let mut out: Vec<Route> = self
            .models
            .iter()
            .filter_map(|m| {
                let p = self.provider(&m.provider)?;
                Some(Route {
                    model: m.name.clone(),
                    kind: p.kind.as_str(),
                    base_url: p.base_url.clone(),
                    upstream_model: m.model.clone(),
                    has_key: p.api_key.is_some(),
                    max_tokens: m.max_tokens,
                })
            })
            .collect();
        out.sort();
        out
    }

    /// Checks cross-references and values that single keys cannot check alone.
    fn validate(&self) -> Result<(), ConfigError> {
        for (i, m) in self.models.iter().enumerate() {
            if m.name.is_empty() {
                return Err(ConfigError::Invalid {
                    key: format!("models[{i}].name"),
                    message: "must not be empty".into(),
                });
            }
            if self.provider(&m.provider).is_none() {
                return Err(ConfigError::Invalid {
                    key: format!("models[{i}].provider"),
                    message: format!(
                        "provider `{}` is not defined under `providers` (defined: {})",
                        m.provider,
                        self.provider_names()
                    ),
                });
            }
        }
        if let Some(dp) = &self.default_provider {
            if self.provider(dp).is_none() {
                return Err(ConfigError::Invalid {
                    key: "default_provider".into(),
                    message: format!(
                        "provider `{dp}` is not defined under `providers` (defined: {})",
                        self.provider_names()
                    ),
                });
            }
        }
        for p in &self.providers {
            if let Some(url) = &p.base_url {
                if let Err(why) = crate::providers::http::parse_url(url) {
                    // A URL with credentials in it is not repeated.
                    let message = if url.contains('@') {
                        why
                    } else {
                        format!("`{url}`: {why}")
                    };
                    return Err(ConfigError::Invalid {
                        key: format!("providers.{}.base_url", p.name),
                        message,
                    });
                }
            }
        }
        // A fallback must lead somewhere: a configured model, or any name when a default
        // provider takes unknown names.
        if self.default_provider.is_none() {
            let known = |m: &str| self.models.iter().any(|x| x.name == m);
            let r = &self.routing;
            let lists = r
                .fallbacks
                .iter()
                .map(|(m, f)| ("routing.fallbacks", m, f))
                .chain(
                    r.context_window_fallbacks
                        .iter()
                        .map(|(m, f)| ("routing.context_window_fallbacks", m, f)),
                );
            for (key, model, targets) in lists {
                for t in targets.iter().chain(std::iter::once(model)) {
                    if !known(t) {
                        return Err(ConfigError::Invalid {
                            key: format!("{key}.{model}"),
                            message: format!("model `{t}` is not configured"),
                        });
                    }
                }
            }
            for t in &r.default_fallbacks {
                if !known(t) {
                    return Err(ConfigError::Invalid {
                        key: "routing.default_fallbacks".into(),
                        message: format!("model `{t}` is not configured"),
                    });
                }
            }
        }
        // A limit of 0 would refuse everything (or, to a reader, mean "no limit"): neither
        // is worth allowing by accident.
        let zero = |key: String, l: &RateLimits| -> Result<(), ConfigError> {
            for (field, v) in [
                ("rpm", l.rpm),
                ("tpm", l.tpm),
                (
                    "max_parallel_requests",
                    l.max_parallel_requests.map(u64::from),
                ),
            ] {
                if v == Some(0) {
                    return Err(ConfigError::Invalid {
                        key: format!("{key}.{field}"),
                        message: "must be at least 1 (leave it out for no limit)".into(),
                    });
                }
            }
            Ok(())
        };
        for (i, k) in self.auth.keys.iter().enumerate() {
            zero(format!("auth.keys[{i}]"), &k.limits)?;
        }
        zero("limits.per_ip".into(), &self.limits.per_ip)?;
        for (i, m) in self.models.iter().enumerate() {
            let l = RateLimits {
                rpm: m.rpm,
                tpm: m.tpm,
                max_parallel_requests: m.max_parallel_requests,
            };
            zero(format!("models[{i}]"), &l)?;
        }
        let mut names = std::collections::HashSet::new();
        let mut hashes = std::collections::HashSet::new();
        for (i, k) in self.auth.keys.iter().enumerate() {
            if !names.insert(&k.name) {
                return Err(ConfigError::Invalid {
                    key: format!("auth.keys[{i}].name"),
                    message: format!("`{}` is used twice", k.name),
                });
            }
            let same_as_master = self
                .auth
                .master_key
                .as_ref()
                .is_some_and(|m| crate::secret::sha256(m.expose().as_bytes()) == k.key_sha256);
            if !hashes.insert(k.key_sha256) || same_as_master {
                return Err(ConfigError::Invalid {
                    key: format!("auth.keys[{i}]"),
                    message: "the same key is given twice (or equals the master key)".into(),
                });
            }
        }
        if self.server.max_request_bytes == 0 {
            return Err(ConfigError::Invalid {
                key: "server.max_request_size_mb".into(),
                message: "must be positive".into(),
            });
        }
        Ok(())
    }

    fn provider_names(&self) -> String {
        let names: Vec<&str> = self.providers.iter().map(|p| p.name.as_str()).collect();
        if names.is_empty() {
            "none".into()
        } else {
            names.join(", ")
        }
    }
}

/// Loads settings from `path` (or the embedded default), interpolating from `env`, then
/// applies `LLM_PROXY__*` overrides from `env`.
pub fn load(path: Option<&Path>, env: &dyn EnvSource) -> Result<Settings, ConfigError> {
    let (text, file) = match path {
        Some(p) => (
            std::fs::read_to_string(p).map_err(|source| ConfigError::Io {
                path: p.to_owned(),
                source,
            })?,
            p.display().to_string(),
        ),
        None => (EMBEDDED_CONFIG.to_owned(), "<built-in config>".to_owned()),
    };
    let mut settings = load_str(&text, &file, env)?;
    if path.is_none() {
        settings.format = ConfigFormat::Embedded;
    }
    settings.source = path.map(Path::to_owned);
    apply_env_overrides(&mut settings, env)?;
    settings.validate()?;
    Ok(settings)
}

/// Parses config text, auto-detecting the format: a top-level `model_list` means LiteLLM.
pub fn load_str(text: &str, file: &str, env: &dyn EnvSource) -> Result<Settings, ConfigError> {
    let (safe, refs) = interpolate::protect(text);
    let mut value: serde_yaml_ng::Value =
        serde_yaml_ng::from_str(&safe).map_err(|e| ConfigError::Yaml {
            file: file.to_owned(),
            message: e.to_string(),
        })?;
    interpolate::restore(&mut value, &refs);
    let value = match value {
        serde_yaml_ng::Value::Null => serde_yaml_ng::Value::Mapping(Default::default()),
        v @ serde_yaml_ng::Value::Mapping(_) => v,
        _ => {
            return Err(ConfigError::Yaml {
                file: file.to_owned(),
                message: "the top level must be a mapping of keys".into(),
            });
        }
    };
    let is_litellm = value.get("model_list").is_some();
    let settings = if is_litellm {
        litellm::load(value, file, env)?
    } else {
        native::load(value, file, env)?
    };
    settings.validate()?;
    Ok(settings)
}

/// Deserializes `value` into `T`, naming the failing key in the error.
fn from_value<T: serde::de::DeserializeOwned>(
    value: serde_yaml_ng::Value,
    file: &str,
) -> Result<T, ConfigError> {
    serde_path_to_error::deserialize(value).map_err(|e| {
        let path = e.path().to_string();
        ConfigError::Key {
            file: file.to_owned(),
            key: if path == "." {
                "(top level)".into()
            } else {
                path
            },
            message: e.into_inner().to_string(),
        }
    })
}

/// A key is optional in the file but, when present, must not be an empty secret.
fn secret_from(value: Option<String>) -> Option<Secret> {
    value.filter(|v| !v.trim().is_empty()).map(Secret::new)
}
