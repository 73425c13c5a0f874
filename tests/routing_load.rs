//! Load with a failure: 1,000 concurrent streams over two deployments, one of which goes
//! down mid-run. No client sees an error (a request that had not started streaming fails
//! over before its first byte), and the failed deployment is taken out. Bounded: 1,000
//! requests started over about a second, each stream a few hundred milliseconds long.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;

const REQUESTS: usize = 1_000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_deployment_failing_mid_run_costs_no_client_an_error() {
    let a = fake_upstream().await;
    let b = fake_upstream().await;
    let yaml = format!(
        r#"
providers:
  a: {{ kind: openai, base_url: "{a}" }}
  b: {{ kind: openai, base_url: "{b}" }}
models:
  - {{ name: m, provider: a, model: drip }}
  - {{ name: m, provider: b, model: drip }}
routing: {{ num_retries: 2, timeout: 30s, retry_backoff: 10ms, allowed_fails: 3, cooldown_time: 60s }}
"#,
        a = a.base_url(),
        b = b.base_url()
    );
    let px = proxy(&yaml).await;
    let url = Arc::new(px.url());
    let http = client();
    let started = Instant::now();
    let mut tasks = Vec::with_capacity(REQUESTS);
    for i in 0..REQUESTS {
        if i == REQUESTS / 2 {
            // Deployment a goes down while half the streams are running on both.
            a.state.fail_all.store(true, Ordering::SeqCst);
        }
        let (url, http) = (url.clone(), http.clone());
        tasks.push(tokio::spawn(async move {
            let resp = http
                .post(format!("{url}/v1/chat/completions"))
                .json(&chat_body("m", true))
                .send()
                .await
                .unwrap();
            let status = resp.status().as_u16();
            let served = resp.headers()["x-llm-proxy-deployment"]
                .to_str()
                .unwrap()
                .to_owned();
            let body = resp.text().await.unwrap();
            (status, served, body)
        }));
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let mut errors = Vec::new();
    let mut on_a = 0;
    for t in tasks {
        let (status, served, body) = t.await.unwrap();
        if served.starts_with("a/") {
            on_a += 1;
        }
        let clean = status == 200
            && body.trim_end().ends_with("data: [DONE]")
            && !body.contains("\"error\"");
        if !clean {
            errors.push((status, served, body));
        }
    }
    let took = started.elapsed();
    assert!(
        errors.is_empty(),
        "{} client errors, first: {:?}",
        errors.len(),
        errors.first()
    );
    assert!(
        on_a > 0 && on_a < REQUESTS,
        "both deployments served: {on_a} on a"
    );
    let health: Value = client()
        .get(format!("{url}/health"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let a_state = health["deployments"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["deployment"].as_str().unwrap().starts_with("a/"))
        .unwrap()["state"]
        .clone();
    assert_eq!(a_state, "cooling", "the failed deployment is out: {health}");
    // Once it was out, it got (almost) nothing: at most the requests already choosing it
    // when it tripped.
    let failed_on_a = a.hits() - on_a;
    assert!(
        failed_on_a < 100,
        "{failed_on_a} attempts went to the dead deployment"
    );
    eprintln!(
        "{REQUESTS} streams in {took:?}; {on_a} served by a before it failed, \
         {failed_on_a} attempts on a after"
    );
}
