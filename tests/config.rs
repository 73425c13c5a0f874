//! Config loading: both formats, interpolation, overrides, and errors that name the key.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::HashMap;
use std::path::Path;

use llm_proxy::config::{self, ConfigFormat, Settings};

fn env(pairs: &[(&str, &str)]) -> HashMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn example_env() -> HashMap<String, String> {
    env(&[
        ("OPENAI_API_KEY", "sk-openai-test-key-000000"),
        ("ANTHROPIC_API_KEY", "sk-ant-test-key-000000"),
        ("LLM_PROXY__INTERNAL_API_KEY", "internal-key-123"),
    ])
}

fn load_file(name: &str, e: &HashMap<String, String>) -> Result<Settings, config::ConfigError> {
    config::load(Some(Path::new(&format!("examples/{name}"))), e)
}

fn err(yaml: &str) -> String {
    config::load_str(yaml, "bad.yaml", &HashMap::new())
        .unwrap_err()
        .to_string()
}

#[test]
fn both_formats_load_to_the_same_routing_table() {
    let e = example_env();
    let native = load_file("llm-proxy.yaml", &e).unwrap();
    let litellm = load_file("litellm-config.yaml", &e).unwrap();
    assert_eq!(native.format, ConfigFormat::Native);
    assert_eq!(litellm.format, ConfigFormat::LiteLlm);
    assert_eq!(native.routes().len(), 3);
    assert_eq!(native.routes(), litellm.routes());
    assert_eq!(
        native
            .auth
            .master_key
            .as_ref()
            .map(|k| k.expose().to_owned()),
        litellm
            .auth
            .master_key
            .as_ref()
            .map(|k| k.expose().to_owned())
    );
    assert_eq!(
        native.server.max_request_bytes,
        litellm.server.max_request_bytes
    );
    assert_eq!(native.routing.num_retries, litellm.routing.num_retries);
    assert_eq!(native.routing.timeout, litellm.routing.timeout);
}

#[test]
fn the_issue_example_loads_exactly_as_written() {
    let s = load_file("spec-config.yaml", &example_env()).unwrap();
    assert_eq!(s.server.port, 8002);
    assert_eq!(s.default_provider.as_deref(), Some("openai"));
    let routes = s.routes();
    let claude = routes
        .iter()
        .find(|r| r.model == "claude-3-sonnet")
        .unwrap();
    assert_eq!(claude.kind, "anthropic");
    assert_eq!(claude.upstream_model, "claude-3-5-sonnet-latest");
    let local = routes.iter().find(|r| r.model == "local-7b").unwrap();
    assert_eq!(local.base_url.as_deref(), Some("http://localhost:8001/v1"));
    assert!(!local.has_key);
    let gpt = routes.iter().find(|r| r.model == "gpt-4.1-mini").unwrap();
    assert_eq!(gpt.max_tokens, Some(128000));
    assert_eq!(gpt.upstream_model, "gpt-4.1-mini", "model defaults to name");
}

#[test]
fn missing_env_var_names_the_variable_and_key() {
    let e = env(&[("OPENAI_API_KEY", "x")]);
    let msg = load_file("spec-config.yaml", &e).unwrap_err().to_string();
    assert!(msg.contains("LLM_PROXY__INTERNAL_API_KEY"), "{msg}");
    assert!(msg.contains("auth.master_key"), "{msg}");
    let msg = load_file("litellm-config.yaml", &env(&[]))
        .unwrap_err()
        .to_string();
    assert!(
        msg.contains("OPENAI_API_KEY") && msg.contains("model_list[0].litellm_params.api_key"),
        "{msg}"
    );
}

#[test]
fn credentials_in_a_base_url_are_refused_without_repeating_them() {
    let msg =
        err("providers: { p: { kind: openai, base_url: 'https://user:pw-0123456789@x/v1' } }");
    assert!(msg.contains("providers.p.base_url"), "{msg}");
    assert!(msg.contains("api_key"), "{msg}");
    assert!(!msg.contains("pw-0123456789"), "{msg}");
}

#[test]
fn bad_native_configs_name_the_key() {
    let cases = [
        (
            "providers: { p: { kind: openai, bsae_url: 'http://x' } }",
            "providers.p",
        ),
        (
            "providers: { p: { kind: openai, base_url: 'http://x' } }\nmodels: [ { name: m, provider: q } ]",
            "models[0].provider",
        ),
        ("providers: { p: { kind: warp } }", "providers.p.kind"),
        (
            "providers: { p: { kind: openai, base_url: 'ftp://x' } }",
            "providers.p.base_url",
        ),
        (
            "providers: { p: { kind: openai, base_url: 'http://x:80800/v1' } }",
            "providers.p.base_url",
        ),
        ("routing: { timeout: soon }", "routing.timeout"),
        ("server: { port: 99999 }", "server.port"),
        ("server: { prot: 1 }", "server"),
        ("default_provider: nope", "default_provider"),
        (
            "providers: { p: { kind: openai, tokens: 5 } }",
            "providers.p.tokens",
        ),
        ("models: [ { name: m } ]", "models[0]"),
        (
            "providers: { p: { kind: mock, fault: explode } }",
            "providers.p.fault",
        ),
        ("providers: [1, 2]", "providers"),
    ];
    for (yaml, key) in cases {
        let msg = err(yaml);
        assert!(
            msg.contains(key),
            "`{yaml}` → {msg} (expected to name {key})"
        );
    }
    assert!(err("{ not yaml").contains("not valid YAML"));
    assert!(err("- a\n- b").contains("mapping"));
}

#[test]
fn bad_litellm_configs_name_the_key_and_unsupported_keys_warn() {
    let msg = err("model_list:\n  - model_name: x\n    litellm_params: { model: llama2 }\n");
    assert!(msg.contains("model_list[0].litellm_params.model"), "{msg}");
    let msg = err("model_list:\n  - model_name: x\n");
    assert!(
        msg.contains("model_list[0]") && msg.contains("litellm_params"),
        "{msg}"
    );

    let s = config::load_str(
        "model_list:\n  - model_name: a\n    litellm_params: { model: openai/a, api_base: 'http://h/v1', rpm: 10, weird: 1 }\n\
         router_settings: { routing_strategy: least-busy, num_retries: 3 }\n\
         litellm_settings: { set_verbose: true, cache: true }\n\
         general_settings: { master_key: sk-1234, database_url: 'postgres://u:pw-0123456789@db/llm', alerting: [slack] }\n\
         environment_variables: { FOO: bar }\n",
        "l.yaml",
        &HashMap::new(),
    )
    .unwrap();
    let w = s.warnings.join("\n");
    for key in [
        "model_list[0].litellm_params.weird",
        "litellm_settings.set_verbose",
        "litellm_settings.cache",
        "general_settings.alerting",
    ] {
        assert!(w.contains(key), "no warning for {key}: {w}");
    }
    // LiteLLM's database becomes the shared ledger, its URL a secret.
    assert!(!w.contains("database_url"), "{w}");
    match &s.ledger.store {
        llm_proxy::ledger::Store::Postgres(url) => {
            assert_eq!(url.expose(), "postgres://u:pw-0123456789@db/llm");
            assert!(!format!("{:?}", s.ledger).contains("pw-0123456789"));
        }
        other => panic!("not a PostgreSQL ledger: {other:?}"),
    }
    assert!(
        !w.contains("routing_strategy") && !w.contains(".rpm"),
        "{w}"
    );
    assert_eq!(s.routing.num_retries, 3);
    assert_eq!(s.routing.strategy, config::Strategy::LeastBusy);
    assert_eq!(s.models[0].rpm, Some(10));
    assert_eq!(s.auth.master_key.unwrap().expose(), "sk-1234");
}

#[test]
fn litellm_environment_variables_feed_interpolation() {
    let s = config::load_str(
        "environment_variables: { UP_KEY: from-file }\nmodel_list:\n  - model_name: a\n    litellm_params: { model: openai/a, api_key: os.environ/UP_KEY }\n",
        "l.yaml",
        &HashMap::new(),
    )
    .unwrap();
    assert_eq!(
        s.providers[0].api_key.as_ref().unwrap().expose(),
        "from-file"
    );
}

#[test]
fn litellm_url_conventions() {
    let s = config::load_str(
        "model_list:\n\
         - { model_name: a, litellm_params: { model: openai/a, api_base: 'http://h:1/v1' } }\n\
         - { model_name: b, litellm_params: { model: anthropic/claude-x } }\n\
         - { model_name: c, litellm_params: { model: openai/c } }\n\
         - { model_name: d, litellm_params: { model: openai/d, api_base: 'http://h:1/v1' } }\n",
        "l.yaml",
        &HashMap::new(),
    )
    .unwrap();
    let r = s.routes();
    assert_eq!(r[0].base_url.as_deref(), Some("http://h:1/v1"));
    assert_eq!(r[1].base_url.as_deref(), Some("https://api.anthropic.com"));
    assert_eq!(r[2].base_url.as_deref(), Some("https://api.openai.com/v1"));
    assert_eq!(
        s.providers.len(),
        3,
        "a and d share one provider: {:?}",
        s.providers
    );
}

#[test]
fn env_overrides_win_and_bad_values_name_the_variable() {
    let e = env(&[
        ("LLM_PROXY__PORT", "9100"),
        ("LLM_PROXY__HOST", "0.0.0.0"),
        ("LLM_PROXY__INTERNAL_API_KEY", "k-env"),
        ("LLM_PROXY__REQUEST_TIMEOUT", "45"),
        ("LLM_PROXY__MAX_CONCURRENT_REQUESTS", "7"),
        ("LLM_PROXY__DEFAULT_MODEL", "mock-small"),
        ("LLM_PROXY__RATE_LIMIT_RPM", "600"),
        ("LLM_PROXY__RATE_LIMIT_TPM", "90000"),
        ("LLM_PROXY__LOG_LEVEL", "DEBUG"),
        ("LLM_PROXY__LLM_MODE", "mock"),
        (
            "LLM_PROXY__LEDGER_DATABASE_URL",
            "sqlite:///var/lib/llm-proxy/ledger.db",
        ),
    ]);
    let s = config::load(None, &e).unwrap();
    match &s.ledger.store {
        llm_proxy::ledger::Store::Sqlite(p) => {
            assert_eq!(p, std::path::Path::new("/var/lib/llm-proxy/ledger.db"));
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(s.server.port, 9100);
    assert_eq!(s.server.host, "0.0.0.0");
    assert_eq!(s.auth.master_key.unwrap().expose(), "k-env");
    assert_eq!(s.routing.timeout.as_secs(), 45);
    assert_eq!(s.server.max_concurrent_requests, 7);
    assert_eq!(s.default_model.as_deref(), Some("mock-small"));
    assert_eq!(s.limits.per_ip.rpm, Some(600));
    assert_eq!(s.limits.per_ip.tpm, Some(90000));
    assert_eq!(s.log_level, "debug");
    assert!(s.warnings.iter().any(|w| w.contains("LLM_PROXY__LLM_MODE")));

    let msg = config::load(None, &env(&[("LLM_PROXY__PORT", "eighty")]))
        .unwrap_err()
        .to_string();
    assert!(msg.contains("LLM_PROXY__PORT"), "{msg}");
    let msg = config::load(None, &env(&[("LLM_PROXY__REQUEST_TIMEOUT", "later")]))
        .unwrap_err()
        .to_string();
    assert!(msg.contains("LLM_PROXY__REQUEST_TIMEOUT"), "{msg}");
    let msg = config::load(None, &env(&[("LLM_PROXY__RATE_LIMIT_RPM", "lots")]))
        .unwrap_err()
        .to_string();
    assert!(msg.contains("LLM_PROXY__RATE_LIMIT_RPM"), "{msg}");
    let msg = config::load(
        None,
        &env(&[("LLM_PROXY__LEDGER_DATABASE_URL", "mysql://x")]),
    )
    .unwrap_err()
    .to_string();
    assert!(msg.contains("LLM_PROXY__LEDGER_DATABASE_URL"), "{msg}");
}

#[test]
fn embedded_default_serves_the_mock_on_8002() {
    let s = config::load(None, &HashMap::new()).unwrap();
    assert_eq!(s.format, ConfigFormat::Embedded);
    assert_eq!((s.server.host.as_str(), s.server.port), ("127.0.0.1", 8002));
    assert!(s.routes().iter().all(|r| r.kind == "mock"));
    assert!(s.routes().iter().any(|r| r.model == "mock-small"));
    assert!(s.routes().iter().any(|r| r.model == "mock-tools"));
    assert!(s.auth.master_key.is_none());
}

#[test]
fn the_spec_example_builds_a_router_for_every_provider_kind() {
    let s = load_file("spec-config.yaml", &example_env()).unwrap();
    let router = llm_proxy::router::Router::new(&s).unwrap();
    let kinds: Vec<&str> = router
        .providers()
        .iter()
        .map(|p| p.provider.kind())
        .collect();
    assert_eq!(kinds, ["openai", "anthropic", "openai", "mock"]);
}

#[test]
fn azure_needs_its_endpoint_and_api_version_only_applies_to_azure() {
    let env = HashMap::new();
    let msg = config::load_str(
        "providers:\n  az: { kind: azure, api_key: k }\n",
        "t.yaml",
        &env,
    )
    .unwrap_err()
    .to_string();
    assert!(msg.contains("providers.az.base_url"), "{msg}");
    let msg = config::load_str(
        "providers:\n  o: { kind: openai, api_version: 2024-10-21 }\n",
        "t.yaml",
        &env,
    )
    .unwrap_err()
    .to_string();
    assert!(msg.contains("providers.o.api_version"), "{msg}");
}

#[test]
fn secrets_never_show_in_debug_output() {
    let s = load_file("llm-proxy.yaml", &example_env()).unwrap();
    let dump = format!("{s:?}");
    for secret in [
        "sk-openai-test-key-000000",
        "sk-ant-test-key-000000",
        "internal-key-123",
    ] {
        assert!(!dump.contains(secret), "{secret} leaked in Debug");
    }
}

#[test]
fn every_provider_kind_loads_from_both_formats_to_the_same_routes() {
    let mut e = example_env();
    e.insert("AZURE_API_KEY".into(), "az-test-key-000000".into());
    e.insert("GEMINI_API_KEY".into(), "gm-test-key-000000".into());
    let native = load_file("providers.yaml", &e).unwrap();
    let litellm = load_file("litellm-providers.yaml", &e).unwrap();
    assert_eq!(native.routes(), litellm.routes());
    let kinds: Vec<&str> = native.routes().iter().map(|r| r.kind).collect();
    for kind in [
        "openai",
        "vllm",
        "anthropic",
        "azure",
        "gemini",
        "ollama",
        "mock",
    ] {
        assert!(kinds.contains(&kind), "{kind} missing from {kinds:?}");
    }
    let azure = native.provider("azure").unwrap();
    assert_eq!(azure.api_version.as_deref(), Some("2024-10-21"));
    assert_eq!(
        litellm
            .providers
            .iter()
            .find(|p| p.name == "azure")
            .unwrap()
            .api_version,
        azure.api_version
    );
    llm_proxy::router::Router::new(&native).unwrap();
    llm_proxy::router::Router::new(&litellm).unwrap();
}
