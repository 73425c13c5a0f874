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
    if let Some(v) = env.var("LLM_PROXY__METRICS_PORT") {
        s.server.metrics_port = Some(parse("LLM_PROXY__METRICS_PORT", &v, "a port number")?);
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
    // The per-address limit (`limits.per_ip`), the rule that applies to master-key and
    // anonymous callers: settable per deployment without editing a shared config file.
    if let Some(v) = env.var("LLM_PROXY__RATE_LIMIT_RPM") {
        s.limits.per_ip.rpm = Some(parse("LLM_PROXY__RATE_LIMIT_RPM", &v, "a whole number")?);
    }
    if let Some(v) = env.var("LLM_PROXY__RATE_LIMIT_TPM") {
        s.limits.per_ip.tpm = Some(parse("LLM_PROXY__RATE_LIMIT_TPM", &v, "a whole number")?);
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
    // OpenTelemetry's standard variables, for either config format.
    let traces = env
        .var("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
        .map(|v| (v, "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"))
        .or_else(|| {
            env.var("OTEL_EXPORTER_OTLP_ENDPOINT")
                .map(|v| (v, "OTEL_EXPORTER_OTLP_ENDPOINT"))
        });
    if let Some((v, var)) = traces.filter(|(v, _)| !v.trim().is_empty()) {
        let endpoint = super::otlp_traces_url(&v, var).map_err(|e| ConfigError::EnvOverride {
            var: var.into(),
            message: e.to_string(),
        })?;
        let t = s
            .tracing
            .get_or_insert_with(|| crate::telemetry::otlp::OtlpSettings {
                endpoint: String::new(),
                service_name: "llm-proxy".into(),
                headers: Vec::new(),
            });
        t.endpoint = endpoint;
    }
    if let Some(t) = &mut s.tracing {
        if let Some(name) = env
            .var("OTEL_SERVICE_NAME")
            .filter(|n| !n.trim().is_empty())
        {
            t.service_name = name.trim().to_owned();
        }
        // `k=v,k2=v2`, as the SDKs read it.
        if let Some(h) = env.var("OTEL_EXPORTER_OTLP_HEADERS") {
            for pair in h.split(',').filter(|p| !p.trim().is_empty()) {
                let Some((k, v)) = pair.split_once('=') else {
                    return Err(ConfigError::EnvOverride {
                        var: "OTEL_EXPORTER_OTLP_HEADERS".into(),
                        message: "write name=value pairs separated by commas".into(),
                    });
                };
                t.headers
                    .push((k.trim().to_owned(), crate::secret::Secret::new(v.trim())));
            }
        }
    }
    for (var, why) in RETIRED {
        if env.var(var).is_some() {
            s.warnings.push(format!("{var} is ignored: {why}"));
        }
    }
    Ok(())
}
