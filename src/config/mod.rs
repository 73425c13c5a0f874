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
    /// Serve on a non-loopback address with no key configured (explicit opt-in).
    pub allow_unauthenticated: bool,
}

impl Default for ServerSettings {
    fn default() -> Self {
        Self {
            host: "127.0.0.1".into(),
            port: 8002,
            max_request_bytes: 32 << 20,
            max_concurrent_requests: 10_000,
            allow_unauthenticated: false,
        }
    }
}

#[derive(Debug, Clone, Default)]
pub struct AuthSettings {
    /// The master key (the predecessor's internal key, LiteLLM's `master_key`).
    pub master_key: Option<Secret>,
}

#[derive(Debug, Clone)]
pub struct RoutingSettings {
    /// Extra attempts after the first (the spec's minimum is one).
    pub num_retries: u32,
    /// Whole non-streaming request, or the wait for a stream's first chunk.
    pub timeout: Duration,
    pub connect_timeout: Duration,
    /// Longest silence between two chunks of a stream.
    pub stream_idle_timeout: Duration,
    /// Pause before the first retry; doubles for each further one.
    pub retry_backoff: Duration,
}

impl Default for RoutingSettings {
    fn default() -> Self {
        Self {
            num_retries: 1,
            timeout: Duration::from_secs(600),
            connect_timeout: Duration::from_secs(10),
            stream_idle_timeout: Duration::from_secs(120),
            retry_backoff: Duration::from_millis(100),
        }
    }
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

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelSettings {
    /// The name clients ask for.
    pub name: String,
    pub provider: String,
    /// The upstream's id for it.
    pub model: String,
    pub max_tokens: Option<u64>,
}

#[derive(Debug, Clone)]
pub struct Settings {
    pub server: ServerSettings,
    pub auth: AuthSettings,
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
                let ok = reqwest::Url::parse(url)
                    .map(|u| matches!(u.scheme(), "http" | "https") && u.host().is_some())
                    .unwrap_or(false);
                if !ok {
                    return Err(ConfigError::Invalid {
                        key: format!("providers.{}.base_url", p.name),
                        message: format!("`{url}` is not an http(s) URL"),
                    });
                }
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
