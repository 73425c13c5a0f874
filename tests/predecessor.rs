//! A team moving from the Python predecessor keeps its LiteLLM config and its calls: the
//! predecessor's own LiteLLM configuration loads as written (keys llm-proxy does not act on
//! are warned about), and its documented curl examples, run by the real `curl`, succeed.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::collections::HashMap;
use std::path::Path;

use common::fake_providers::fake_providers;
use common::*;
use serde_json::Value;

const DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/predecessor");

#[tokio::test]
async fn predecessor_config_and_curl_examples_work_unchanged() {
    let up = fake_upstream().await;
    let fp = fake_providers().await;
    let env = HashMap::from([
        ("FAKE_OPENAI_V1".to_string(), up.base_url()),
        (
            "FAKE_OPENAI_ROOT".to_string(),
            format!("http://{}", up.addr),
        ),
        ("FAKE_ROOT".to_string(), fp.root()),
    ]);
    let mut settings =
        llm_proxy::config::load(Some(Path::new(&format!("{DIR}/litellm_config.yaml"))), &env)
            .unwrap();
    assert_eq!(
        settings.routing.fallbacks,
        [
            ("gpt-4".to_string(), vec!["gpt-3.5-turbo".to_string()]),
            ("claude-3-haiku".to_string(), vec!["gpt-4".to_string()])
        ]
    );
    for key in [
        "general_settings.database_url",
        "router_settings.retry_policy",
        "router_settings.rate_limit",
    ] {
        assert!(
            settings.warnings.iter().any(|w| w.contains(key)),
            "no warning for {key}: {:?}",
            settings.warnings
        );
    }
    settings.server.port = 0;
    let px = llm_proxy::server::spawn(&settings).await.unwrap();

    let out = tokio::process::Command::new("bash")
        .arg(format!("{DIR}/curl_examples.sh"))
        .env("BASE", px.url())
        .env("LLM_PROXY__INTERNAL_API_KEY", "sk-1234")
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let sections: HashMap<&str, &str> = stdout
        .split("=== ")
        .filter_map(|s| s.split_once('\n'))
        .map(|(n, body)| (n.trim(), body.trim()))
        .collect();

    // 1: the model list, in the spec's shape.
    let models: Value = serde_json::from_str(sections["1"]).unwrap();
    let ids: Vec<&str> = models
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap())
        .collect();
    assert_eq!(
        ids,
        [
            "gpt-4",
            "claude-3-haiku",
            "azure-gpt-4",
            "local-llama",
            "llama2",
            "mistral",
            "gpt-3.5-turbo"
        ]
    );
    assert_eq!(models[0]["provider"], "openai");

    // 2: a streamed chat completion, as SSE ending in [DONE].
    let stream = sections["2"];
    assert!(stream.trim_end().ends_with("data: [DONE]"), "{stream}");
    let text: String = stream
        .lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .filter(|d| *d != "[DONE]")
        .filter_map(|d| {
            serde_json::from_str::<Value>(d).unwrap()["choices"][0]["delta"]["content"]
                .as_str()
                .map(str::to_owned)
        })
        .collect();
    assert_eq!(text, "Hello world");

    // 3: the Ollama-backed model, non-streaming.
    let reply: Value = serde_json::from_str(sections["3"]).unwrap();
    assert_eq!(
        reply["choices"][0]["message"]["content"],
        "Hello from upstream"
    );
    let sent = up.last_body();
    assert_eq!(sent["model"], "llama2");
    assert_eq!(sent["messages"][0]["content"], "Hello!");

    // And without the internal key, the same call is refused as the predecessor did.
    let out = tokio::process::Command::new("bash")
        .arg(format!("{DIR}/curl_examples.sh"))
        .env("BASE", px.url())
        .env("LLM_PROXY__INTERNAL_API_KEY", "wrong")
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("\"code\":\"UNAUTHORIZED\""), "{stdout}");
}
