//! The official `openai` and `anthropic` Python SDKs pointed at the proxy can chat, stream
//! and call tools against the built-in mock. `scripts/test` provides a Python with both
//! SDKs installed and sets LLM_PROXY_REQUIRE_SDK=1, so there these tests cannot be skipped.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::collections::HashMap;

/// Runs `tests/sdk/<script>` against a proxy serving the built-in config behind a master
/// key, with `base_path` appended to the proxy's URL as the SDK's base URL.
async fn run_sdk_check(module: &str, script: &str, base_path: &str) {
    let python = std::env::var("LLM_PROXY_TEST_PYTHON").unwrap_or_else(|_| "python3".into());
    let required = std::env::var("LLM_PROXY_REQUIRE_SDK").is_ok_and(|v| v == "1");
    let has_sdk = std::process::Command::new(&python)
        .args(["-c", &format!("import {module}")])
        .output()
        .is_ok_and(|o| o.status.success());
    if !has_sdk {
        assert!(
            !required,
            "{python} cannot import {module}; run scripts/test, which installs it"
        );
        eprintln!("skipped: {python} has no {module} SDK (scripts/test installs it)");
        return;
    }
    let key = "sdk-test-master-key";
    let env = HashMap::from([("LLM_PROXY__INTERNAL_API_KEY".to_string(), key.to_string())]);
    let mut s = llm_proxy::config::load(None, &env).unwrap();
    s.server.port = 0;
    let px = llm_proxy::server::spawn(&s).await.unwrap();
    let script = format!("{}/tests/sdk/{script}", env!("CARGO_MANIFEST_DIR"));
    let out = tokio::process::Command::new(&python)
        .arg(script)
        .arg(format!("{}{base_path}", px.url()))
        .arg(key)
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "{module} SDK check failed:\n{stdout}\n{stderr}"
    );
    assert!(stdout.contains("checks passed"), "{stdout}");
    eprintln!("{stdout}");
}

#[tokio::test]
async fn official_openai_python_sdk_works_against_the_mock() {
    run_sdk_check("openai", "openai_sdk_check.py", "/v1").await;
}

#[tokio::test]
async fn official_anthropic_python_sdk_works_against_the_mock() {
    // The Anthropic SDK appends /v1/messages itself.
    run_sdk_check("anthropic", "anthropic_sdk_check.py", "").await;
}
