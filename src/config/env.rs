//! `LLM_PROXY__*` environment overrides: the predecessor's variables keep working, and
//! anything set in the environment wins over the file (the command line wins over both).

use super::interpolate::EnvSource;
use super::{ConfigError, Settings, secret_from};

/// The predecessor's variables that no longer mean anything, with what to do instead.
const RETIRED: [(&str, &str); 5] = [
    (
        "LLM_PROXY__LLM_MODE",
        "without --config the built-in mock provider is served; with one, its providers",
    ),
    (
        "LLM_PROXY__LITELLM_PROXY_URL",
        "llm-proxy calls providers directly; point --config at your LiteLLM config.yaml",
    ),
    (
        "LLM_PROXY__LITELLM_API_KEY",
        "llm-proxy calls providers directly; keys live in the config",
    ),
    ("LLM_PROXY__VERSION", "the version is built in"),
    (
        "LLM_PROXY__NUM_RETRIES",
        "set routing.num_retries in the config",
    ),
];

fn parse<T: std::str::FromStr>(var: &str, value: &str, what: &str) -> Result<T, ConfigError> {
    value.trim().parse().map_err(|_| ConfigError::EnvOverride {
        var: var.into(),
        message: format!("`{value}` is not {what}"),
    })
}

pub fn apply_env_overrides(s: &mut Settings, env: &dyn EnvSource) -> Result<(), ConfigError> {
    if let Some(v) = env.var("LLM_PROXY__HOST") {
        s.server.host = v;
    }
    if let Some(v) = env.var("LLM_PROXY__PORT") {
        s.server.port = parse("LLM_PROXY__PORT", &v, "a port number")?;
    }
    if let Some(v) = env.var("LLM_PROXY__INTERNAL_API_KEY") {
        if let Some(key) = secret_from(Some(v)) {
            s.auth.master_key = Some(key);
        }
    }
    if let Some(v) = env.var("LLM_PROXY__LOG_LEVEL") {
        s.log_level = v.trim().to_ascii_lowercase();
    }
    if let Some(v) = env.var("LLM_PROXY__REQUEST_TIMEOUT") {
        s.routing.timeout =
            super::duration::parse(&v).map_err(|message| ConfigError::EnvOverride {
                var: "LLM_PROXY__REQUEST_TIMEOUT".into(),
                message,
            })?;
    }
    if let Some(v) = env.var("LLM_PROXY__MAX_CONCURRENT_REQUESTS") {
        s.server.max_concurrent_requests =
            parse("LLM_PROXY__MAX_CONCURRENT_REQUESTS", &v, "a whole number")?;
    }
    if let Some(v) = env.var("LLM_PROXY__DEFAULT_MODEL") {
        if !v.trim().is_empty() {
            s.default_model = Some(v.trim().to_owned());
        }
    }
    // The ledger's database, for either config format (its URL may hold a password, so
    // it belongs in the environment rather than the file).
    if let Some(v) = env.var("LLM_PROXY__LEDGER_DATABASE_URL") {
        s.ledger.store =
            crate::ledger::Store::parse(&v).map_err(|message| ConfigError::EnvOverride {
                var: "LLM_PROXY__LEDGER_DATABASE_URL".into(),
                message,
            })?;
    }
    for (var, why) in RETIRED {
        if env.var(var).is_some() {
            s.warnings.push(format!("{var} is ignored: {why}"));
        }
    }
    Ok(())
}
