//! Virtual keys and rate limits over real sockets: per-key requests, tokens and
//! parallel requests, model restrictions, per-address limits with trusted proxies, the
//! `x-ratelimit-*` headers, and the issue's config contract as written.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::collections::HashMap;

use common::*;
use serde_json::{Value, json};

const MASTER: &str = "master-key-0123456789";
const TEAM_A: &str = "team-a-key-0123456789";
const TEAM_B: &str = "team-b-key-0123456789";

/// The limits issue's config contract, exactly as written there.
const CONTRACT: &str = r#"
providers: { mock: { kind: mock } }
models: [ { name: mock-small, provider: mock } ]
auth:
  master_key: ${MASTER_KEY}
  keys:
    - { name: team-a, key: ${TEAM_A_KEY}, rpm: 30, tpm: 100000, max_parallel_requests: 4, models: ["mock-*"] }
    - { name: team-b, key_sha256: "<hex sha256 of the key>", rpm: 600 }
limits:
  per_ip: { rpm: 60 }
  redis_url: ${REDIS_URL}     # omit for in-process limits
  on_redis_error: allow       # or deny
"#;

fn sha256_hex(s: &str) -> String {
    llm_proxy::secret::sha256(s.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn env() -> HashMap<String, String> {
    HashMap::from([
        ("MASTER_KEY".to_string(), MASTER.to_string()),
        ("TEAM_A_KEY".to_string(), TEAM_A.to_string()),
        ("REDIS_URL".to_string(), String::new()),
    ])
}

async fn call(url: &str, key: &str, model: &str, extra: &[(&str, &str)]) -> reqwest::Response {
    let mut rb = client()
        .post(format!("{url}/v1/chat/completions"))
        .bearer_auth(key)
        .json(&chat_body(model, false));
    for (h, v) in extra {
        rb = rb.header(*h, *v);
    }
    rb.send().await.unwrap()
}

fn limited(yaml_keys: &str, limits: &str) -> String {
    format!(
        "providers: {{ mock: {{ kind: mock }}, slow: {{ kind: mock }} }}\n\
         models: [ {{ name: mock-small, provider: mock }}, {{ name: other, provider: mock }},\n\
                   {{ name: slow, provider: slow, model: slow-n20-d100 }} ]\n\
         auth:\n  master_key: {MASTER}\n  keys:\n{yaml_keys}\nlimits: {limits}\n"
    )
}

#[tokio::test]
async fn the_contract_config_loads_exactly_as_written() {
    let text = CONTRACT.replace("<hex sha256 of the key>", &sha256_hex(TEAM_B));
    let px = proxy_with_env(&text, env()).await;
    for key in [MASTER, TEAM_A, TEAM_B] {
        let resp = call(&px.url(), key, "mock-small", &[]).await;
        assert_eq!(resp.status(), 200, "{key}");
    }
    let resp = call(&px.url(), TEAM_A, "mock-small", &[]).await;
    assert_eq!(resp.headers()["x-ratelimit-limit-requests"], "30");
    assert_eq!(resp.headers()["x-ratelimit-remaining-requests"], "28");
    assert_eq!(resp.headers()["x-ratelimit-limit-tokens"], "100000");
    assert!(
        resp.headers()["x-ratelimit-reset-requests"]
            .to_str()
            .unwrap()
            .ends_with('s')
    );
    let resp = call(&px.url(), TEAM_B, "mock-small", &[]).await;
    assert_eq!(resp.headers()["x-ratelimit-limit-requests"], "600");
    assert_eq!(
        call(&px.url(), "sk-unknown", "mock-small", &[])
            .await
            .status(),
        401
    );
}

#[tokio::test]
async fn per_key_requests_per_minute_then_429_with_the_limit_named() {
    let px = proxy(&limited(
        &format!("    - {{ name: team-a, key: {TEAM_A}, rpm: 3 }}"),
        "{}",
    ))
    .await;
    for i in 0..3 {
        let resp = call(&px.url(), TEAM_A, "mock-small", &[]).await;
        assert_eq!(resp.status(), 200);
        assert_eq!(
            resp.headers()["x-ratelimit-remaining-requests"],
            (2 - i).to_string().as_str()
        );
    }
    let resp = call(&px.url(), TEAM_A, "mock-small", &[]).await;
    assert_eq!(resp.status(), 429);
    let after: u64 = resp.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=20).contains(&after), "{after}");
    assert_eq!(resp.headers()["x-ratelimit-remaining-requests"], "0");
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["error"]["code"], "RATE_LIMIT");
    let msg = v["error"]["message"].as_str().unwrap();
    assert!(
        msg.contains("requests per minute") && msg.contains("team-a"),
        "{msg}"
    );
    // The master key is not this key's limit.
    assert_eq!(
        call(&px.url(), MASTER, "mock-small", &[]).await.status(),
        200
    );
}

#[tokio::test]
async fn per_key_tokens_reserve_and_settle() {
    let px = proxy(&limited(
        &format!("    - {{ name: team-a, key: {TEAM_A}, tpm: 60 }}"),
        "{}",
    ))
    .await;
    // Each mock reply reports ~19 tokens; after three the minute's 60 are spent.
    let mut statuses = Vec::new();
    for _ in 0..5 {
        statuses.push(
            call(&px.url(), TEAM_A, "mock-small", &[])
                .await
                .status()
                .as_u16(),
        );
    }
    assert_eq!(&statuses[..3], &[200, 200, 200], "{statuses:?}");
    assert_eq!(statuses[4], 429, "{statuses:?}");
    let resp = call(&px.url(), TEAM_A, "mock-small", &[]).await;
    let v: Value = resp.json().await.unwrap();
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("tokens per minute")
    );
}

#[tokio::test]
async fn parallel_requests_per_key() {
    let px = proxy(&limited(
        &format!("    - {{ name: team-a, key: {TEAM_A}, max_parallel_requests: 1 }}"),
        "{}",
    ))
    .await;
    let url = px.url();
    let first = client()
        .post(format!("{url}/v1/chat/completions"))
        .bearer_auth(TEAM_A)
        .json(&chat_body("slow", true))
        .send()
        .await
        .unwrap();
    assert_eq!(first.status(), 200);
    let second = call(&url, TEAM_A, "mock-small", &[]).await;
    assert_eq!(second.status(), 429);
    let v: Value = second.json().await.unwrap();
    assert!(v["error"]["message"].as_str().unwrap().contains("parallel"));
    // When the stream ends, its slot is free again.
    let _ = first.text().await.unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    assert_eq!(call(&url, TEAM_A, "mock-small", &[]).await.status(), 200);
}

#[tokio::test]
async fn keys_are_held_to_their_models() {
    let px = proxy(&limited(
        &format!("    - {{ name: team-a, key: {TEAM_A}, models: [\"mock-*\"] }}"),
        "{}",
    ))
    .await;
    assert_eq!(
        call(&px.url(), TEAM_A, "mock-small", &[]).await.status(),
        200
    );
    let resp = call(&px.url(), TEAM_A, "other", &[]).await;
    assert_eq!(resp.status(), 403);
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["error"]["code"], "FORBIDDEN");
    assert!(v["error"]["message"].as_str().unwrap().contains("team-a"));
    assert_eq!(call(&px.url(), MASTER, "other", &[]).await.status(), 200);
}

#[tokio::test]
async fn per_address_limits_believe_forwarded_for_only_from_trusted_proxies() {
    // Not trusted: every request is the peer's (127.0.0.1), whatever it claims.
    let px = proxy(&limited(
        &format!("    - {{ name: team-a, key: {TEAM_A} }}"),
        "{ per_ip: { rpm: 2 } }",
    ))
    .await;
    let xff = |ip: &'static str| [("x-forwarded-for", ip)];
    assert_eq!(
        call(&px.url(), MASTER, "mock-small", &xff("1.1.1.1"))
            .await
            .status(),
        200
    );
    assert_eq!(
        call(&px.url(), MASTER, "mock-small", &xff("2.2.2.2"))
            .await
            .status(),
        200
    );
    let resp = call(&px.url(), MASTER, "mock-small", &xff("3.3.3.3")).await;
    assert_eq!(resp.status(), 429);
    let v: Value = resp.json().await.unwrap();
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("address 127.0.0.1")
    );
    // A per-user key is limited by its own limits (none here), not by address.
    assert_eq!(
        call(&px.url(), TEAM_A, "mock-small", &[]).await.status(),
        200
    );

    // Trusted: the client behind the proxy is the one limited.
    let px = proxy(&limited(
        &format!("    - {{ name: team-a, key: {TEAM_A} }}"),
        "{ per_ip: { rpm: 2 }, trusted_proxies: [\"127.0.0.0/8\"] }",
    ))
    .await;
    for _ in 0..2 {
        let r = call(&px.url(), MASTER, "mock-small", &xff("1.1.1.1")).await;
        assert_eq!(r.status(), 200);
    }
    let r = call(&px.url(), MASTER, "mock-small", &xff("1.1.1.1")).await;
    assert_eq!(r.status(), 429);
    let v: Value = r.json().await.unwrap();
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("address 1.1.1.1")
    );
    // Another client behind the same proxy has its own limit; a spoofed hop before the
    // client is ignored (the right-most untrusted address counts).
    let other = [("x-forwarded-for", "9.9.9.9, 2.2.2.2")];
    assert_eq!(
        call(&px.url(), MASTER, "mock-small", &other).await.status(),
        200
    );
}

#[test]
fn bad_key_configs_name_the_key() {
    let env = HashMap::new();
    for (yaml, key) in [
        (
            "auth: { keys: [ { name: a, key: x, key_sha256: 'ab' } ] }",
            "auth.keys[0]",
        ),
        (
            "auth: { keys: [ { name: a, key_sha256: 'zz' } ] }",
            "auth.keys[0].key_sha256",
        ),
        (
            "auth: { keys: [ { name: a, key: x1 }, { name: a, key: x2 } ] }",
            "auth.keys[1].name",
        ),
        (
            "auth: { master_key: same, keys: [ { name: a, key: same } ] }",
            "auth.keys[0]",
        ),
        (
            "limits: { trusted_proxies: [ 'not-an-ip' ] }",
            "limits.trusted_proxies[0]",
        ),
        ("limits: { on_redis_error: maybe }", "limits.on_redis_error"),
    ] {
        let msg = llm_proxy::config::load_str(yaml, "k.yaml", &env)
            .unwrap_err()
            .to_string();
        assert!(msg.contains(key), "{yaml}: {msg}");
    }
    let _ = json!({});
}

#[tokio::test]
async fn deployment_limits_are_soft_the_router_waits_briefly_then_refuses() {
    let px = proxy(
        "providers: { mock: { kind: mock } }\n\
         models:\n  - { name: d, provider: mock, model: mock-small, rpm: 2 }\n  \
         - { name: p, provider: mock, model: p-n5-d100, max_parallel_requests: 1 }\n",
    )
    .await;
    let url = px.url();
    let post = |model: &'static str, stream: bool| {
        let url = url.clone();
        async move {
            client()
                .post(format!("{url}/v1/chat/completions"))
                .json(&chat_body(model, stream))
                .send()
                .await
                .unwrap()
        }
    };
    assert_eq!(post("d", false).await.status(), 200);
    assert_eq!(post("d", false).await.status(), 200);
    let t = std::time::Instant::now();
    let resp = post("d", false).await;
    assert_eq!(resp.status(), 429);
    assert!(
        t.elapsed() >= std::time::Duration::from_millis(900),
        "it waited first"
    );
    let v: Value = resp.json().await.unwrap();
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("at its rpm")
    );
    // A deployment at its parallel limit: the next request waits for the slot.
    let stream = post("p", true).await;
    let waiting = tokio::spawn(post("p", false));
    let _ = stream.text().await.unwrap();
    assert_eq!(waiting.await.unwrap().status(), 200);
}

#[tokio::test]
async fn listings_show_a_key_only_its_models() {
    let px = proxy(&limited(
        &format!("    - {{ name: team-a, key: {TEAM_A}, models: [\"mock-*\"] }}"),
        "{}",
    ))
    .await;
    let list = |key: &'static str, path: &'static str| {
        let url = px.url();
        async move {
            client()
                .get(format!("{url}{path}"))
                .bearer_auth(key)
                .send()
                .await
                .unwrap()
                .json::<Value>()
                .await
                .unwrap()
        }
    };
    let v = list(TEAM_A, "/v1/models").await;
    let ids: Vec<&str> = v["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["mock-small"]);
    let v = list(TEAM_A, "/llm/models").await;
    assert_eq!(v.as_array().unwrap().len(), 1);
    let v = list(MASTER, "/v1/models").await;
    assert_eq!(v["data"].as_array().unwrap().len(), 3);
}

#[tokio::test]
async fn fallbacks_do_not_take_a_key_outside_its_models() {
    let up = fake_upstream().await;
    let yaml = format!(
        "providers: {{ up: {{ kind: openai, base_url: '{base}' }} }}\n\
         models: [ {{ name: primary, provider: up, model: fail500 }}, {{ name: backup, provider: up, model: ok }} ]\n\
         auth:\n  master_key: {MASTER}\n  keys:\n    - {{ name: team-a, key: {TEAM_A}, models: [primary] }}\n\
         routing: {{ num_retries: 0, fallbacks: {{ primary: [backup] }} }}\n",
        base = up.base_url()
    );
    let px = proxy(&yaml).await;
    let resp = call(&px.url(), TEAM_A, "primary", &[]).await;
    assert_eq!(resp.status(), 502, "backup is not the key's to use");
    let resp = call(&px.url(), MASTER, "primary", &[]).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["x-llm-proxy-model"], "backup");
}

#[test]
fn zero_limits_and_endless_durations_are_config_errors() {
    let env = HashMap::new();
    for (yaml, key) in [
        (
            "auth: { keys: [ { name: a, key: k1, rpm: 0 } ] }",
            "auth.keys[0].rpm",
        ),
        (
            "limits: { per_ip: { max_parallel_requests: 0 } }",
            "limits.per_ip.max_parallel_requests",
        ),
        (
            "providers: { m: { kind: mock } }\nmodels: [ { name: x, provider: m, tpm: 0 } ]",
            "models[0].tpm",
        ),
        (
            "routing: { timeout: 18446744073709551615 }",
            "routing.timeout",
        ),
        (
            "routing: { cooldown_time: 100000000000y }",
            "routing.cooldown_time",
        ),
    ] {
        let msg = llm_proxy::config::load_str(yaml, "z.yaml", &env)
            .unwrap_err()
            .to_string();
        assert!(msg.contains(key), "{yaml}: {msg}");
    }
}
