//! `/metrics` over real sockets: it parses with Prometheus' own text parser (the official
//! Python client's), counters and histograms move as requests are served, and the
//! overhead header is on every reply. One server per test binary keeps counts exact.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::collections::HashMap;

use common::*;
use serde_json::{Value, json};

const MASTER: &str = "metrics-master-0123456789";
const TEAM: &str = "metrics-team-0123456789";

/// The value of one sample, `name{labels}` written exactly as exposed.
fn sample(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|l| {
            l.strip_prefix(series)?
                .strip_prefix(' ')?
                .trim()
                .parse()
                .ok()
        })
        .unwrap_or(0.0)
}

fn parse_with_prometheus(text: &str) -> Option<Value> {
    let python = std::env::var("LLM_PROXY_TEST_PYTHON").unwrap_or_else(|_| "python3".into());
    let script = r#"
import json, sys
from prometheus_client.parser import text_string_to_metric_families
families = {}
for f in text_string_to_metric_families(sys.stdin.read()):
    families[f.name] = {"type": f.type, "samples": len(f.samples)}
print(json.dumps(families))
"#;
    let has = std::process::Command::new(&python)
        .args(["-c", "import prometheus_client"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !has {
        assert!(
            std::env::var("LLM_PROXY_REQUIRE_SDK").as_deref() != Ok("1"),
            "{python} has no prometheus_client; scripts/test installs it"
        );
        return None;
    }
    use std::io::Write;
    let mut child = std::process::Command::new(&python)
        .args(["-c", script])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "the Prometheus parser refused /metrics"
    );
    Some(serde_json::from_slice(&out.stdout).unwrap())
}

#[tokio::test]
async fn metrics_parse_and_move_with_traffic() {
    let metrics_port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let db = TempFile::new("metrics", ".db");
    let yaml = format!(
        "providers: {{ mock: {{ kind: mock }} }}\n\
         models: [ {{ name: mock-small, provider: mock, input_cost_per_token: 0.001, output_cost_per_token: 0.002 }} ]\n\
         auth:\n  master_key: {MASTER}\n  keys:\n    - {{ name: team, key: {TEAM}, rpm: 2 }}\n\
         server: {{ metrics_port: {metrics_port} }}\n\
         ledger: {{ database_url: 'sqlite://{}' }}\n",
        db.display()
    );
    let px = proxy_with_env(&yaml, HashMap::new()).await;
    let url = px.url();
    let post = |key: &'static str, stream: bool| {
        let url = url.clone();
        async move {
            client()
                .post(format!("{url}/v1/chat/completions"))
                .bearer_auth(key)
                .json(&json!({"model": "mock-small", "stream": stream,
                              "messages": [{"role": "user", "content": "hi"}]}))
                .send()
                .await
                .unwrap()
        }
    };
    let reply = post(MASTER, false).await;
    let overhead: f64 = reply.headers()["x-llm-proxy-overhead-ms"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((0.0..100.0).contains(&overhead), "{overhead}");
    let _ = reply.text().await;
    let stream = post(MASTER, true).await;
    assert!(stream.headers().contains_key("x-llm-proxy-overhead-ms"));
    let _ = stream.text().await;
    for _ in 0..3 {
        let _ = post(TEAM, false).await.text().await; // the third is rate-limited
    }
    let metrics = |key: &'static str| {
        let url = url.clone();
        async move {
            client()
                .get(format!("{url}/metrics"))
                .bearer_auth(key)
                .send()
                .await
                .unwrap()
        }
    };
    assert_eq!(metrics(TEAM).await.status(), 403, "not for virtual keys");
    let resp = metrics(MASTER).await;
    assert!(
        resp.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain")
    );
    let text = resp.text().await.unwrap();

    let ok = r#"llm_proxy_requests_total{endpoint="chat_completions",model="mock-small",provider="mock",status="200"}"#;
    assert_eq!(sample(&text, ok), 4.0, "{text}");
    let limited = r#"llm_proxy_requests_total{endpoint="chat_completions",model="mock-small",provider="-",status="429"}"#;
    assert_eq!(sample(&text, limited), 1.0, "{text}");
    assert_eq!(
        sample(&text, r#"llm_proxy_rate_limited_total{scope="key"}"#),
        1.0
    );
    assert!(
        sample(
            &text,
            r#"llm_proxy_tokens_total{model="mock-small",provider="mock",type="output"}"#
        ) >= 4.0
    );
    assert_eq!(
        sample(
            &text,
            r#"llm_proxy_time_to_first_token_seconds_count{model="mock-small",provider="mock"}"#
        ),
        1.0,
        "one stream"
    );
    assert_eq!(
        sample(
            &text,
            r#"llm_proxy_overhead_seconds_count{model="mock-small",provider="mock"}"#
        ),
        4.0
    );
    assert_eq!(sample(&text, "llm_proxy_in_flight_requests"), 0.0);
    assert_eq!(sample(&text, "llm_proxy_open_streams"), 0.0);
    assert_eq!(
        sample(
            &text,
            r#"llm_proxy_deployment_state{deployment="mock/mock-small",state="healthy"}"#
        ),
        1.0
    );
    assert!(
        !text.contains(MASTER) && !text.contains(TEAM),
        "no key in metrics"
    );
    // Cost: every token at the configured price.
    let tokens = |t: &str| {
        sample(
            &text,
            &format!(r#"llm_proxy_tokens_total{{model="mock-small",provider="mock",type="{t}"}}"#),
        )
    };
    let cost = sample(
        &text,
        r#"llm_proxy_cost_usd_total{model="mock-small",provider="mock"}"#,
    );
    let expected = tokens("input") * 0.001 + tokens("output") * 0.002;
    assert!(
        expected > 0.0 && (cost - expected).abs() < 1e-9,
        "{cost} vs {expected}"
    );

    // The metrics port serves /metrics alone, under the same key rule.
    let side = format!("http://127.0.0.1:{metrics_port}");
    let r = client()
        .get(format!("{side}/metrics"))
        .bearer_auth(MASTER)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.text().await.unwrap().contains("llm_proxy_requests_total"));
    let r = client()
        .get(format!("{side}/metrics"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let r = client()
        .post(format!("{side}/v1/chat/completions"))
        .bearer_auth(MASTER)
        .json(&json!({"model": "mock-small", "messages": [{"role": "user", "content": "hi"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);

    if let Some(families) = parse_with_prometheus(&text) {
        for (name, kind) in [
            ("llm_proxy_requests", "counter"),
            ("llm_proxy_request_duration_seconds", "histogram"),
            ("llm_proxy_time_to_first_token_seconds", "histogram"),
            ("llm_proxy_overhead_seconds", "histogram"),
            ("llm_proxy_in_flight_requests", "gauge"),
            ("llm_proxy_cost_usd", "counter"),
        ] {
            assert_eq!(families[name]["type"], kind, "{name}: {families}");
        }
    }
}
