//! The auth matrix and the error envelope for every code, over real sockets.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::collections::HashMap;

use common::*;
use serde_json::{Value, json};

const KEY: &str = "master-key-for-tests-7f3a";

fn keyed(extra: &str) -> String {
    format!(
        "auth: {{ master_key: {KEY} }}\nproviders: {{ mock: {{ kind: mock }} }}\n\
         models: [ {{ name: mock-small, provider: mock }}, {{ name: slow, provider: mock, model: slow-n5-d200 }} ]\n{extra}"
    )
}

async fn send(url: &str, headers: &[(&str, &str)], body: &str) -> reqwest::Response {
    let mut rb = client()
        .post(format!("{url}/v1/chat/completions"))
        .header("content-type", "application/json")
        .body(body.to_owned());
    for (k, v) in headers {
        rb = rb.header(*k, *v);
    }
    rb.send().await.unwrap()
}

/// Asserts the envelope: status, code, a `type`, a message, and the request id that the
/// `x-request-id` header also carries.
async fn expect_error(resp: reqwest::Response, status: u16, code: &str) -> Value {
    assert_eq!(resp.status().as_u16(), status);
    let rid = resp.headers()["x-request-id"].to_str().unwrap().to_owned();
    assert_eq!(resp.headers()["content-type"], "application/json");
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["error"]["code"], code, "{v}");
    assert_eq!(v["error"]["request_id"], rid.as_str());
    assert!(v["error"]["type"].is_string());
    assert!(!v["error"]["message"].as_str().unwrap().is_empty());
    v
}

const OK_BODY: &str = r#"{"model":"mock-small","messages":[{"role":"user","content":"hi"}]}"#;

#[tokio::test]
async fn auth_matrix() {
    let px = proxy(&keyed("")).await;
    let url = px.url();
    let v = expect_error(send(&url, &[], OK_BODY).await, 401, "UNAUTHORIZED").await;
    assert!(v["error"]["message"].as_str().unwrap().contains("missing"));
    assert_eq!(v["error"]["type"], "authentication_error");
    let bearer = format!("Bearer {KEY}");
    let wrong_bearer = "Bearer nope".to_string();
    for (h, good, bad) in [
        ("authorization", bearer.as_str(), wrong_bearer.as_str()),
        ("x-api-key", KEY, "nope"),
        ("x-internal-auth", KEY, "nope"),
    ] {
        let r = send(&url, &[(h, good)], OK_BODY).await;
        assert_eq!(r.status(), 200, "{h} with the right key");
        let v = expect_error(send(&url, &[(h, bad)], OK_BODY).await, 401, "UNAUTHORIZED").await;
        assert!(
            v["error"]["message"].as_str().unwrap().contains("invalid"),
            "{h}"
        );
        assert!(
            !v.to_string().contains("nope"),
            "presented keys are never echoed"
        );
    }
    // Lower-case scheme and a wrong key next to a right one.
    assert_eq!(
        send(
            &url,
            &[("authorization", &format!("bearer {KEY}"))],
            OK_BODY
        )
        .await
        .status(),
        200
    );
    assert_eq!(
        send(
            &url,
            &[("x-api-key", "nope"), ("x-internal-auth", KEY)],
            OK_BODY
        )
        .await
        .status(),
        200
    );
    // Model listings are protected too; health is not.
    let c = client();
    assert_eq!(
        c.get(format!("{url}/v1/models"))
            .send()
            .await
            .unwrap()
            .status(),
        401
    );
    assert_eq!(
        c.get(format!("{url}/v1/models"))
            .header("x-internal-auth", KEY)
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    assert_eq!(
        c.get(format!("{url}/health"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
}

#[tokio::test]
async fn request_id_is_accepted_or_generated() {
    let px = proxy(&keyed("")).await;
    let r = send(
        &px.url(),
        &[("x-internal-auth", KEY), ("x-request-id", "trace-abc.123")],
        OK_BODY,
    )
    .await;
    assert_eq!(r.headers()["x-request-id"], "trace-abc.123");
    let r = send(
        &px.url(),
        &[("x-request-id", "bad id with spaces")],
        OK_BODY,
    )
    .await;
    let rid = r.headers()["x-request-id"].to_str().unwrap().to_owned();
    assert_ne!(rid, "bad id with spaces");
    assert_eq!(rid.len(), 36, "a UUID is generated: {rid}");
}

#[tokio::test]
async fn invalid_requests_are_400_naming_the_param() {
    let px = proxy(&keyed("")).await;
    let url = px.url();
    let auth = [("x-internal-auth", KEY)];
    let cases: [(&str, Option<&str>); 9] = [
        ("{not json", None),
        ("[1,2,3]", None),
        ("", None),
        (
            r#"{"model":"mock-small","messages":[{"role":"user","content":"x"}],"temperature":"hot"}"#,
            Some("temperature"),
        ),
        (
            r#"{"model":"mock-small","messages":[{"role":"user","content":"x"}],"temperature":3}"#,
            Some("temperature"),
        ),
        (
            r#"{"model":"mock-small","messages":[{"role":"robot","content":"x"}]}"#,
            Some("messages[0].role"),
        ),
        (r#"{"model":"mock-small","messages":[]}"#, Some("messages")),
        (
            r#"{"model":"mock-small","messages":[{"role":"user","content":"x"}],"max_tokens":-5}"#,
            Some("max_tokens"),
        ),
        (
            r#"{"messages":[{"role":"user","content":"x"}]}"#,
            Some("model"),
        ),
    ];
    for (body, param) in cases {
        let v = expect_error(send(&url, &auth, body).await, 400, "INVALID_REQUEST").await;
        assert_eq!(v["error"]["param"].as_str(), param, "{body}");
    }
    // Invalid UTF-8 inside a JSON string.
    let resp = client()
        .post(format!("{url}/v1/chat/completions"))
        .header("x-internal-auth", KEY)
        .body(b"{\"model\":\"mock-small\",\"messages\":[{\"role\":\"user\",\"content\":\"\xff\xfe\"}]}".to_vec())
        .send()
        .await
        .unwrap();
    expect_error(resp, 400, "INVALID_REQUEST").await;
}

#[tokio::test]
async fn default_model_fills_a_missing_model() {
    let env = HashMap::from([(
        "LLM_PROXY__DEFAULT_MODEL".to_string(),
        "mock-small".to_string(),
    )]);
    let px = proxy_with_env(&keyed(""), env).await;
    let r = send(
        &px.url(),
        &[("x-internal-auth", KEY)],
        r#"{"messages":[{"role":"user","content":"x"}]}"#,
    )
    .await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["x-llm-proxy-model"], "mock-small");
}

#[tokio::test]
async fn unknown_model_and_route_are_404() {
    let px = proxy(&keyed("")).await;
    let body = r#"{"model":"gpt-9","messages":[{"role":"user","content":"x"}]}"#;
    let v = expect_error(
        send(&px.url(), &[("x-internal-auth", KEY)], body).await,
        404,
        "NOT_FOUND",
    )
    .await;
    let msg = v["error"]["message"].as_str().unwrap();
    assert!(msg.contains("gpt-9") && msg.contains("/v1/models"), "{msg}");
    let r = client()
        .get(format!("{}/v1/nothing", px.url()))
        .send()
        .await
        .unwrap();
    expect_error(r, 404, "NOT_FOUND").await;
    let r = client()
        .get(format!("{}/v1/chat/completions", px.url()))
        .send()
        .await
        .unwrap();
    expect_error(r, 404, "NOT_FOUND").await;
}

#[tokio::test]
async fn oversized_body_is_413() {
    let px = proxy(&keyed("server: { max_request_size_mb: 0.001 }")).await;
    let big = json!({"model":"mock-small","messages":[{"role":"user","content":"x".repeat(5000)}]})
        .to_string();
    expect_error(
        send(&px.url(), &[("x-internal-auth", KEY)], &big).await,
        413,
        "PAYLOAD_TOO_LARGE",
    )
    .await;
    // Without a content-length (chunked), the limit holds as well.
    let chunks = futures_util::stream::iter(
        (0..10).map(|_| Ok::<_, std::io::Error>(bytes::Bytes::from(vec![b' '; 1000]))),
    );
    let resp = client()
        .post(format!("{}/v1/chat/completions", px.url()))
        .header("x-internal-auth", KEY)
        .body(reqwest::Body::wrap_stream(chunks))
        .send()
        .await
        .unwrap();
    expect_error(resp, 413, "PAYLOAD_TOO_LARGE").await;
}

#[tokio::test]
async fn concurrency_limit_is_503_with_retry_after() {
    let px = proxy(&keyed(
        "server: { max_concurrent_requests: 1, max_queue: 0 }",
    ))
    .await;
    let url = px.url();
    let slow = r#"{"model":"slow","stream":true,"messages":[{"role":"user","content":"x"}]}"#;
    let first = send(&url, &[("x-internal-auth", KEY)], slow).await;
    assert_eq!(first.status(), 200);
    let resp = send(&url, &[("x-internal-auth", KEY)], OK_BODY).await;
    assert_eq!(resp.headers()["retry-after"], "1");
    expect_error(resp, 503, "UNAVAILABLE").await;
    drop(first);
}

#[tokio::test]
async fn a_short_bounded_queue_absorbs_a_burst_then_refuses() {
    let px = proxy(&keyed(
        "server: { max_concurrent_requests: 1, max_queue: 1, queue_timeout: 5s }",
    ))
    .await;
    let url = px.url();
    let slow = r#"{"model":"slow","stream":true,"messages":[{"role":"user","content":"x"}]}"#;
    let first = send(&url, &[("x-internal-auth", KEY)], slow).await;
    assert_eq!(first.status(), 200);
    // The second waits in the queue for the stream to finish, then is served.
    let queued = {
        let url = url.clone();
        tokio::spawn(async move { send(&url, &[("x-internal-auth", KEY)], OK_BODY).await })
    };
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    // The queue (one place) is full: the third is refused at once.
    let t = std::time::Instant::now();
    let third = send(&url, &[("x-internal-auth", KEY)], OK_BODY).await;
    assert!(t.elapsed() < std::time::Duration::from_secs(1));
    expect_error(third, 503, "UNAVAILABLE").await;
    let _ = first.text().await;
    assert_eq!(queued.await.unwrap().status(), 200);
}

#[tokio::test]
async fn provider_error_and_timeout_envelopes() {
    let cfg = format!(
        "auth: {{ master_key: {KEY} }}\nproviders:\n  bad: {{ kind: mock, fault: error, fault_status: 503 }}\n  \
         stuck: {{ kind: mock, fault: hang }}\nmodels: [ {{ name: bad, provider: bad }}, {{ name: stuck, provider: stuck }} ]\n\
         routing: {{ timeout: 200ms, num_retries: 0 }}\n"
    );
    let px = proxy(&cfg).await;
    let body =
        |m: &str| format!(r#"{{"model":"{m}","messages":[{{"role":"user","content":"x"}}]}}"#);
    let v = expect_error(
        send(&px.url(), &[("x-internal-auth", KEY)], &body("bad")).await,
        502,
        "PROVIDER_ERROR",
    )
    .await;
    assert_eq!(v["error"]["upstream_status"], 503);
    assert_eq!(v["error"]["type"], "api_error");
    expect_error(
        send(&px.url(), &[("x-internal-auth", KEY)], &body("stuck")).await,
        504,
        "TIMEOUT",
    )
    .await;
}
