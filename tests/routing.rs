//! Chaos tests of the router over real sockets: a fault-injecting fake upstream (500 once
//! and always, 429 with retry-after, hangs, resets mid-stream, slow drip, malformed JSON,
//! context-length refusals) behind several deployments. Each test asserts the upstream
//! attempts, the deployment that served, what the client got, and time bounds.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use common::*;
use serde_json::{Value, json};

/// Two providers on the same fake upstream (so deployments differ by provider and id).
/// `routing` is `key: value` pairs separated by `, ` that override the test defaults.
fn config(up: &FakeUpstream, models: &str, routing: &str) -> String {
    let mut pairs: Vec<(String, String)> = [
        ("num_retries", "1"),
        ("timeout", "5s"),
        ("attempt_timeout", "2s"),
        ("retry_backoff", "10ms"),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    for item in routing.split(", ").filter(|s| !s.trim().is_empty()) {
        let (k, v) = item.split_once(": ").unwrap();
        pairs.retain(|(x, _)| x != k.trim());
        pairs.push((k.trim().to_owned(), v.trim().to_owned()));
    }
    let routing: Vec<String> = pairs.iter().map(|(k, v)| format!("{k}: {v}")).collect();
    format!(
        r#"
providers:
  a: {{ kind: openai, base_url: "{base}" }}
  b: {{ kind: openai, base_url: "{base}" }}
  mock: {{ kind: mock }}
models:
{models}
routing: {{ {routing} }}
"#,
        base = up.base_url(),
        routing = routing.join(", ")
    )
}

async fn post(url: &str, model: &str, stream: bool) -> reqwest::Response {
    client()
        .post(format!("{url}/v1/chat/completions"))
        .json(&chat_body(model, stream))
        .send()
        .await
        .unwrap()
}

fn header(resp: &reqwest::Response, name: &str) -> String {
    resp.headers()
        .get(name)
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default()
}

async fn health(url: &str) -> Value {
    client()
        .get(format!("{url}/health"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

fn state_of<'a>(h: &'a Value, deployment: &str) -> &'a str {
    h["deployments"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["deployment"] == deployment)
        .unwrap()["state"]
        .as_str()
        .unwrap()
}

#[tokio::test]
async fn a_retry_goes_to_another_deployment_at_once() {
    let up = fake_upstream().await;
    // Weight 0 on the healthy one makes the failing one the deterministic first pick.
    let px = proxy(&config(
        &up,
        "  - { name: m, provider: a, model: fail500, weight: 1 }\n  - { name: m, provider: b, model: ok, weight: 0 }",
        "retry_backoff: 2s",
    ))
    .await;
    let t = Instant::now();
    let resp = post(&px.url(), "m", false).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(header(&resp, "x-llm-proxy-deployment"), "b/ok");
    assert_eq!(header(&resp, "x-llm-proxy-attempts"), "2");
    assert!(
        t.elapsed() < Duration::from_secs(1),
        "no backoff before another deployment"
    );
    assert_eq!((up.hits_for("fail500"), up.hits_for("ok")), (1, 1));
}

#[tokio::test]
async fn a_failing_deployment_is_cooled_down_then_probed() {
    let up = fake_upstream().await;
    let px = proxy(&config(
        &up,
        "  - { name: m, provider: a, model: fail500, weight: 1 }\n  - { name: m, provider: b, model: ok, weight: 0 }",
        "allowed_fails: 2, cooldown_time: 400ms",
    ))
    .await;
    let url = px.url();
    for _ in 0..2 {
        let resp = post(&url, "m", false).await;
        assert_eq!(resp.status(), 200);
        assert_eq!(header(&resp, "x-llm-proxy-attempts"), "2");
    }
    let h = health(&url).await;
    assert_eq!(h["status"], "degraded");
    assert_eq!(state_of(&h, "a/fail500"), "cooling");
    assert_eq!(state_of(&h, "b/ok"), "healthy");
    assert!(
        h["deployments"][0]["cooldown_remaining_s"]
            .as_f64()
            .unwrap()
            > 0.0
    );
    // Cooling: the failing deployment is not even tried.
    let resp = post(&url, "m", false).await;
    assert_eq!(header(&resp, "x-llm-proxy-attempts"), "1");
    assert_eq!(up.hits_for("fail500"), 2);
    // After the cooldown one probe goes through; it fails, so it cools again.
    tokio::time::sleep(Duration::from_millis(450)).await;
    let resp = post(&url, "m", false).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(up.hits_for("fail500"), 3);
    let resp = post(&url, "m", false).await;
    assert_eq!(header(&resp, "x-llm-proxy-attempts"), "1");
    assert_eq!(up.hits_for("fail500"), 3);
}

#[tokio::test]
async fn a_recovered_deployment_is_taken_back_by_its_probe() {
    let up = fake_upstream().await;
    let px = proxy(&config(
        &up,
        "  - { name: m, provider: a, model: ok }",
        "allowed_fails: 1, cooldown_time: 300ms, num_retries: 0",
    ))
    .await;
    let url = px.url();
    up.state.fail_all.store(true, Ordering::SeqCst);
    assert_eq!(post(&url, "m", false).await.status(), 502);
    // Every deployment of the model is out and there is no fallback: a fast 503.
    let t = Instant::now();
    let resp = post(&url, "m", false).await;
    assert_eq!(resp.status(), 503);
    assert!(t.elapsed() < Duration::from_millis(200));
    let after: u64 = header(&resp, "retry-after").parse().unwrap();
    assert!(after >= 1);
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["error"]["code"], "UNAVAILABLE");
    assert_eq!(up.hits(), 1, "nothing was sent to the cooling deployment");
    up.state.fail_all.store(false, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(350)).await;
    assert_eq!(
        post(&url, "m", false).await.status(),
        200,
        "the probe succeeds"
    );
    assert_eq!(state_of(&health(&url).await, "a/ok"), "healthy");
}

#[tokio::test]
async fn fallbacks_run_after_retries_and_name_the_model_that_served() {
    let up = fake_upstream().await;
    let px = proxy(&config(
        &up,
        "  - { name: primary, provider: a, model: fail500 }\n  - { name: backup, provider: b, model: ok }\n  - { name: other, provider: a, model: fail500 }",
        "fallbacks: { primary: [backup] }, default_fallbacks: [backup]",
    ))
    .await;
    let resp = post(&px.url(), "primary", true).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(header(&resp, "x-llm-proxy-model"), "backup");
    assert_eq!(header(&resp, "x-llm-proxy-deployment"), "b/ok");
    assert_eq!(
        header(&resp, "x-llm-proxy-attempts"),
        "3",
        "2 on primary, 1 on backup"
    );
    let events = sse_events(resp).await;
    assert_eq!(events.last().unwrap(), "[DONE]");
    // default_fallbacks serve models without their own.
    let resp = post(&px.url(), "other", false).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(header(&resp, "x-llm-proxy-model"), "backup");
}

#[tokio::test]
async fn context_length_errors_go_to_context_window_fallbacks_only() {
    let up = fake_upstream().await;
    let px = proxy(&config(
        &up,
        "  - { name: small, provider: a, model: context-too-long }\n  - { name: big, provider: b, model: ok }\n  - { name: plain, provider: a, model: context-too-long }",
        "context_window_fallbacks: { small: [big] }",
    ))
    .await;
    let resp = post(&px.url(), "small", false).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(header(&resp, "x-llm-proxy-model"), "big");
    assert_eq!(
        header(&resp, "x-llm-proxy-attempts"),
        "2",
        "not retried on small"
    );
    // Without one, the refusal reaches the client as what it is.
    let resp = post(&px.url(), "plain", false).await;
    assert_eq!(resp.status(), 400);
    let v: Value = resp.json().await.unwrap();
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("maximum context length")
    );
}

#[tokio::test]
async fn streams_fail_over_before_the_first_byte_and_never_after() {
    let up = fake_upstream().await;
    let px = proxy(&config(
        &up,
        "  - { name: m, provider: a, model: fail500, weight: 1 }\n  - { name: m, provider: b, model: ok, weight: 0 }\n  - { name: cut, provider: a, model: reset }\n  - { name: cut, provider: b, model: ok, weight: 0 }",
        "",
    ))
    .await;
    let resp = post(&px.url(), "m", true).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(header(&resp, "x-llm-proxy-deployment"), "b/ok");
    let events = sse_events(resp).await;
    assert_eq!(events.last().unwrap(), "[DONE]");
    // A reset after the first chunk: a clean error event, no second attempt.
    let resp = post(&px.url(), "cut", true).await;
    assert_eq!(resp.status(), 200);
    let events = sse_events(resp).await;
    let err: Value =
        serde_json::from_str(&events[events.len() - 2]).unwrap_or_else(|_| panic!("{events:?}"));
    assert_eq!(err["error"]["code"], "PROVIDER_ERROR", "{events:?}");
    assert_eq!(events.last().unwrap(), "[DONE]");
    assert_eq!(up.hits_for("reset"), 1);
    assert_eq!(
        up.hits_for("ok"),
        1,
        "only the first stream used the healthy deployment"
    );
    assert_eq!(state_of(&health(&px.url()).await, "a/reset"), "degraded");
}

#[tokio::test]
async fn a_hung_deployment_costs_one_attempt_timeout() {
    let up = fake_upstream().await;
    let px = proxy(&config(
        &up,
        "  - { name: m, provider: a, model: hang, weight: 1, timeout: 300ms }\n  - { name: m, provider: b, model: ok, weight: 0 }",
        "",
    ))
    .await;
    let t = Instant::now();
    let resp = post(&px.url(), "m", false).await;
    let took = t.elapsed();
    assert_eq!(resp.status(), 200);
    assert_eq!(header(&resp, "x-llm-proxy-deployment"), "b/ok");
    assert!(
        took >= Duration::from_millis(300) && took < Duration::from_millis(1500),
        "{took:?}"
    );
}

#[tokio::test]
async fn total_timeout_bounds_retries() {
    let up = fake_upstream().await;
    let px = proxy(&config(
        &up,
        "  - { name: m, provider: a, model: hang }",
        "timeout: 700ms, attempt_timeout: 500ms, num_retries: 5",
    ))
    .await;
    let t = Instant::now();
    let resp = post(&px.url(), "m", false).await;
    let took = t.elapsed();
    assert_eq!(resp.status(), 504);
    assert_eq!(
        up.hits(),
        2,
        "the second attempt is cut by the total deadline"
    );
    assert!(took < Duration::from_millis(1200), "{took:?}");
}

#[tokio::test]
async fn malformed_replies_are_not_retried_on_the_same_deployment() {
    let up = fake_upstream().await;
    let px = proxy(&config(
        &up,
        "  - { name: m, provider: a, model: malformed }",
        "",
    ))
    .await;
    let resp = post(&px.url(), "m", false).await;
    assert_eq!(resp.status(), 502);
    assert_eq!(up.hits(), 1);
}

#[tokio::test]
async fn a_slow_drip_is_not_an_idle_timeout() {
    let up = fake_upstream().await;
    let px = proxy(&config(
        &up,
        "  - { name: m, provider: a, model: drip }",
        "stream_idle_timeout: 300ms",
    ))
    .await;
    let events = sse_events(post(&px.url(), "m", true).await).await;
    assert_eq!(events.last().unwrap(), "[DONE]");
    assert!(
        events.iter().all(|e| !e.contains("\"error\"")),
        "{events:?}"
    );
}

#[tokio::test]
async fn least_busy_and_max_parallel_spread_concurrent_streams() {
    let up = fake_upstream().await;
    let px = proxy(&config(
        &up,
        "  - { name: m, provider: a, model: hold, max_parallel_requests: 1 }\n  - { name: m, provider: b, model: hold }",
        "strategy: least-busy",
    ))
    .await;
    let first = post(&px.url(), "m", true).await;
    let second = post(&px.url(), "m", true).await;
    let mut served = [
        header(&first, "x-llm-proxy-deployment"),
        header(&second, "x-llm-proxy-deployment"),
    ];
    served.sort();
    assert_eq!(served, ["a/hold", "b/hold"]);
    let h = health(&px.url()).await;
    for d in h["deployments"].as_array().unwrap() {
        assert_eq!(d["in_flight"], 1, "{d}");
    }
    // a is full (max_parallel_requests: 1): a third stream must go to b.
    let third = post(&px.url(), "m", true).await;
    assert_eq!(header(&third, "x-llm-proxy-deployment"), "b/hold");
    up.state.release.notify_waiters();
    drop((first, second, third));
}

#[tokio::test]
async fn usage_based_and_latency_based_steer_traffic() {
    let up = fake_upstream().await;
    let px = proxy(&config(
        &up,
        "  - { name: u, provider: a, model: ok, rpm: 1 }\n  - { name: u, provider: b, model: ok, rpm: 1000 }",
        "strategy: usage-based",
    ))
    .await;
    let mut served = Vec::new();
    for _ in 0..4 {
        served.push(header(
            &post(&px.url(), "u", false).await,
            "x-llm-proxy-deployment",
        ));
    }
    let on_a = served.iter().filter(|d| *d == "a/ok").count();
    assert!(on_a <= 1, "a is at its rpm after one request: {served:?}");

    let px = proxy(&config(
        &up,
        "  - { name: l, provider: a, model: late }\n  - { name: l, provider: b, model: ok }",
        "strategy: latency-based",
    ))
    .await;
    let mut served = Vec::new();
    for _ in 0..6 {
        let resp = post(&px.url(), "l", true).await;
        served.push(header(&resp, "x-llm-proxy-deployment"));
        let _ = resp.text().await;
    }
    // Once both are measured, the faster first token wins every time.
    assert!(served[3..].iter().all(|d| d == "b/ok"), "{served:?}");
}

#[tokio::test]
async fn graceful_shutdown_lets_short_requests_finish_and_ends_streams_cleanly() {
    let yaml = "server: { shutdown_grace: 300ms }\nproviders: { mock: { kind: mock } }\n\
                models: [ { name: long, provider: mock, model: long-n100-d100 } ]\n";
    let mut px = proxy(yaml).await;
    let url = px.url();
    let resp = post(&url, "long", true).await;
    assert_eq!(resp.status(), 200);
    let mut reader = SseReader::new(resp);
    assert!(reader.next().await.is_some());
    let t = Instant::now();
    px.shutdown();
    let mut events = Vec::new();
    while let Some(ev) = reader.next().await {
        events.push(ev);
    }
    let last = events.last().cloned().unwrap_or_default();
    let err: Value = serde_json::from_str(&events[events.len() - 2]).unwrap();
    assert_eq!(err["error"]["code"], "UNAVAILABLE", "{events:?}");
    // The stream outlived the grace period, so it ended with an error event, not a cut.
    let took = t.elapsed();
    assert!(
        took >= Duration::from_millis(250) && took < Duration::from_secs(3),
        "{took:?}"
    );
    assert_eq!(last, "[DONE]");
    let handle = px.handle;
    let done = tokio::time::timeout(Duration::from_secs(5), handle).await;
    assert!(done.is_ok(), "the server stops once nothing is in flight");
}

#[tokio::test]
async fn router_config_in_both_formats() {
    let native = "providers: { a: { kind: openai, base_url: 'http://127.0.0.1:9/v1' } }\n\
        models:\n  - { name: m, provider: a, model: x, weight: 3, rpm: 60, tpm: 1000, max_parallel_requests: 4, timeout: 20s }\n  - { name: n, provider: a }\n\
        routing: { strategy: latency-based, allowed_fails: 5, cooldown_time: 10s, fallbacks: { m: [n] }, default_fallbacks: [n] }\n";
    let litellm = "model_list:\n  - model_name: m\n    litellm_params: { model: openai/x, api_base: 'http://127.0.0.1:9/v1', weight: 3, rpm: 60, tpm: 1000, max_parallel_requests: 4, timeout: 20 }\n  - model_name: n\n    litellm_params: { model: openai/n, api_base: 'http://127.0.0.1:9/v1' }\n\
        router_settings: { routing_strategy: latency-based-routing, allowed_fails: 5, cooldown_time: 10, fallbacks: [ { m: [n] } ], default_fallbacks: [n] }\n";
    let env = std::collections::HashMap::new();
    let a = llm_proxy::config::load_str(native, "n.yaml", &env).unwrap();
    let b = llm_proxy::config::load_str(litellm, "l.yaml", &env).unwrap();
    let mut bm = b.models[0].clone();
    bm.provider = a.models[0].provider.clone();
    assert_eq!(a.models[0], bm);
    assert_eq!(a.routing.strategy, b.routing.strategy);
    assert_eq!(a.routing.fallbacks, b.routing.fallbacks);
    assert_eq!(a.routing.default_fallbacks, b.routing.default_fallbacks);
    assert_eq!(a.routing.allowed_fails, 5);
    assert_eq!(b.routing.cooldown_time, Duration::from_secs(10));
    assert!(
        b.warnings.iter().all(|w| !w.contains("router_settings")),
        "{:?}",
        b.warnings
    );
    // A fallback to nowhere is a start-up error naming the key.
    let bad = "providers: { a: { kind: openai, base_url: 'http://h/v1' } }\nmodels: [ { name: m, provider: a } ]\n\
               routing: { fallbacks: { m: [ghost] } }\n";
    let msg = llm_proxy::config::load_str(bad, "b.yaml", &env)
        .unwrap_err()
        .to_string();
    assert!(
        msg.contains("routing.fallbacks.m") && msg.contains("ghost"),
        "{msg}"
    );
    let _ = json!({});
}

#[tokio::test]
async fn active_health_checks_take_a_dead_provider_out_and_bring_it_back() {
    let up = fake_upstream().await;
    let px = proxy(&config(
        &up,
        "  - { name: m, provider: a, model: ok }",
        "health_check_interval: 50ms, allowed_fails: 2, cooldown_time: 300ms",
    ))
    .await;
    let url = px.url();
    up.state.fail_all.store(true, Ordering::SeqCst);
    let mut state = String::new();
    for _ in 0..40 {
        tokio::time::sleep(Duration::from_millis(25)).await;
        state = state_of(&health(&url).await, "a/ok").to_owned();
        if state == "cooling" {
            break;
        }
    }
    assert_eq!(
        state, "cooling",
        "failed checks took it out without any traffic"
    );
    up.state.fail_all.store(false, Ordering::SeqCst);
    for _ in 0..40 {
        tokio::time::sleep(Duration::from_millis(25)).await;
        state = state_of(&health(&url).await, "a/ok").to_owned();
        if state == "healthy" {
            break;
        }
    }
    assert_eq!(
        state, "healthy",
        "a passing check brings it back before its cooldown ends"
    );
}
