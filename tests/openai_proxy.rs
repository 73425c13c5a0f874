//! The OpenAI dialect through the proxy to a fake OpenAI upstream, over real sockets.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use common::*;
use serde_json::{Value, json};

async fn post(url: &str, body: &Value) -> reqwest::Response {
    client()
        .post(format!("{url}/v1/chat/completions"))
        .json(body)
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn non_streaming_is_forwarded_verbatim_with_params_passed_through() {
    let up = fake_upstream().await;
    let px = proxy(&upstream_config(&up, "")).await;
    let mut body = chat_body("chat", false);
    body["seed"] = json!(42);
    body["response_format"] = json!({"type": "text"});
    body["logit_bias"] = json!({"50256": -100});
    let resp = post(&px.url(), &body).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["x-llm-proxy-model"], "chat");
    assert_eq!(resp.headers()["x-llm-proxy-deployment"], "up/ok");
    assert_eq!(resp.headers()["x-llm-proxy-attempts"], "1");
    assert!(resp.headers().contains_key("x-request-id"));
    let got: Value = resp.json().await.unwrap();
    assert_eq!(
        got,
        completion_body(),
        "upstream body must pass through unchanged"
    );

    let sent = up.last_body();
    assert_eq!(
        sent["model"], "ok",
        "the alias is replaced by the upstream model id"
    );
    assert_eq!(sent["seed"], 42);
    assert_eq!(sent["response_format"]["type"], "text");
    assert_eq!(sent["logit_bias"]["50256"], -100);
    assert_eq!(sent["stream"], false);
    assert_eq!(
        up.last_headers()["authorization"],
        "Bearer sk-upstream-secret-0123456789"
    );
}

#[tokio::test]
async fn streaming_passes_chunks_and_strips_usage_the_client_did_not_ask_for() {
    let up = fake_upstream().await;
    let px = proxy(&upstream_config(&up, "")).await;

    let events = sse_events(post(&px.url(), &chat_body("chat", true)).await).await;
    assert_eq!(events.last().unwrap(), "[DONE]");
    let chunks: Vec<Value> = events[..events.len() - 1]
        .iter()
        .map(|e| serde_json::from_str(e).unwrap())
        .collect();
    let text: String = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
        .collect();
    assert_eq!(text, "Hello world");
    assert!(
        chunks
            .iter()
            .all(|c| c["choices"].as_array().is_some_and(|a| !a.is_empty())),
        "no usage chunk: {chunks:?}"
    );
    assert_eq!(
        chunks[0]["system_fingerprint"], "fp_fake",
        "chunks pass through verbatim"
    );
    assert_eq!(
        up.last_body()["stream_options"]["include_usage"],
        true,
        "usage is always requested upstream"
    );

    let mut body = chat_body("chat", true);
    body["stream_options"] = json!({"include_usage": true});
    let events = sse_events(post(&px.url(), &body).await).await;
    let usage: Value = serde_json::from_str(&events[events.len() - 2]).unwrap();
    assert_eq!(usage["choices"], json!([]));
    assert_eq!(usage["usage"]["total_tokens"], 12);
}

#[tokio::test]
async fn streaming_tool_call_deltas_keep_their_index() {
    let up = fake_upstream().await;
    let px = proxy(&upstream_config(&up, "")).await;
    let events = sse_events(post(&px.url(), &chat_body("tools", true)).await).await;
    let mut calls: Vec<(String, String, String)> = vec![Default::default(); 2];
    let mut finish = None;
    for e in &events[..events.len() - 1] {
        let c: Value = serde_json::from_str(e).unwrap();
        for tc in c["choices"][0]["delta"]["tool_calls"]
            .as_array()
            .into_iter()
            .flatten()
        {
            let i = tc["index"].as_u64().unwrap() as usize;
            if let Some(id) = tc["id"].as_str() {
                calls[i].0 = id.into();
            }
            if let Some(n) = tc["function"]["name"].as_str() {
                calls[i].1 = n.into();
            }
            calls[i]
                .2
                .push_str(tc["function"]["arguments"].as_str().unwrap_or(""));
        }
        if let Some(f) = c["choices"][0]["finish_reason"].as_str() {
            finish = Some(f.to_owned());
        }
    }
    assert_eq!(
        calls[0],
        (
            "call_a".into(),
            "get_weather".into(),
            "{\"city\": \"Paris\"}".into()
        )
    );
    assert_eq!(
        calls[1],
        (
            "call_b".into(),
            "get_time".into(),
            "{\"city\": \"Paris\"}".into()
        )
    );
    assert_eq!(finish.as_deref(), Some("tool_calls"));
}

#[tokio::test]
async fn first_chunk_reaches_the_client_while_upstream_holds_the_rest() {
    let up = fake_upstream().await;
    let px = proxy(&upstream_config(&up, "routing: { timeout: 10s, stream_idle_timeout: 10s }").replace("routing: { num_retries: 1, timeout: 5s, attempt_timeout: 1s, retry_backoff: 10ms, stream_idle_timeout: 500ms }", "")).await;
    let resp = post(&px.url(), &chat_body("hold", true)).await;
    assert_eq!(resp.status(), 200);
    let mut r = SseReader::new(resp);
    let first = tokio::time::timeout(Duration::from_secs(5), r.next())
        .await
        .expect("the first chunk must arrive while the upstream is still holding")
        .unwrap();
    assert!(first.contains("\"role\":\"assistant\""), "{first}");
    assert_eq!(
        up.state.chunks_sent.load(Ordering::SeqCst),
        1,
        "upstream has sent only one chunk"
    );
    up.state.release.notify_one();
    let mut rest = Vec::new();
    while let Some(e) = r.next().await {
        rest.push(e);
    }
    assert_eq!(rest.last().unwrap(), "[DONE]");
    assert!(rest.iter().any(|e| e.contains("second")));
}

#[tokio::test]
async fn client_disconnect_cancels_the_upstream_stream() {
    let up = fake_upstream().await;
    let px = proxy(&upstream_config(&up, "")).await;
    let resp = post(&px.url(), &chat_body("slow", true)).await;
    let mut r = SseReader::new(resp);
    r.next().await.unwrap();
    r.next().await.unwrap();
    drop(r);
    let dropped = up.state.dropped_notify.notified();
    if !up.state.stream_dropped.load(Ordering::SeqCst) {
        tokio::time::timeout(Duration::from_secs(5), dropped)
            .await
            .expect("upstream stream must be cancelled when the client goes away");
    }
    let sent = up.state.chunks_sent.load(Ordering::SeqCst);
    assert!(
        sent < 50,
        "upstream kept streaming after the client left: {sent} chunks"
    );
}

#[tokio::test]
async fn upstream_5xx_is_retried_once_then_served() {
    let up = fake_upstream().await;
    let px = proxy(&upstream_config(&up, "")).await;
    let resp = post(&px.url(), &chat_body("fail500-once", false)).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["x-llm-proxy-attempts"], "2");
    assert_eq!(up.hits(), 2);
}

#[tokio::test]
async fn upstream_429_is_retried_honouring_retry_after() {
    let up = fake_upstream().await;
    let px = proxy(&upstream_config(&up, "")).await;
    let t = Instant::now();
    let resp = post(&px.url(), &chat_body("fail429-once", true)).await;
    assert_eq!(resp.status(), 200);
    assert!(
        t.elapsed() >= Duration::from_millis(50),
        "retry-after-ms was not honoured"
    );
    assert_eq!(up.hits(), 2);
    assert_eq!(sse_events(resp).await.last().unwrap(), "[DONE]");
}

#[tokio::test]
async fn persistent_5xx_gives_provider_error_after_retries() {
    let up = fake_upstream().await;
    let px = proxy(&upstream_config(&up, "")).await;
    let resp = post(&px.url(), &chat_body("fail500", false)).await;
    assert_eq!(resp.status(), 502);
    let rid = resp.headers()["x-request-id"].to_str().unwrap().to_owned();
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["error"]["code"], "PROVIDER_ERROR");
    assert_eq!(v["error"]["upstream_status"], 500);
    assert_eq!(v["error"]["request_id"], rid);
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("upstream exploded")
    );
    assert_eq!(up.hits(), 2, "one attempt plus num_retries: 1");
}

#[tokio::test]
async fn upstream_rate_limit_outlasting_retries_is_our_429_with_its_hint() {
    let up = fake_upstream().await;
    let px = proxy(&upstream_config(&up, "")).await;
    let resp = post(&px.url(), &chat_body("fail429", false)).await;
    assert_eq!(resp.status(), 429);
    assert_eq!(resp.headers()["retry-after"], "2");
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["error"]["code"], "RATE_LIMIT");
    assert_eq!(v["error"]["upstream_status"], 429);
    assert_eq!(up.hits(), 2, "retried once first");
}

#[tokio::test]
async fn upstream_4xx_is_not_retried() {
    let up = fake_upstream().await;
    let px = proxy(&upstream_config(&up, "")).await;
    let resp = post(&px.url(), &chat_body("fail400", true)).await;
    assert_eq!(resp.status(), 400, "the client's mistake keeps its class");
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["error"]["code"], "INVALID_REQUEST");
    assert_eq!(v["error"]["upstream_status"], 400);
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("Invalid parameter")
    );
    assert_eq!(up.hits(), 1);
}

#[tokio::test]
async fn hanging_upstream_times_out_with_504_within_bounds() {
    let up = fake_upstream().await;
    let px = proxy(&upstream_config(&up, "")).await;
    let t = Instant::now();
    let resp = post(&px.url(), &chat_body("hang", false)).await;
    let took = t.elapsed();
    assert_eq!(resp.status(), 504);
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["error"]["code"], "TIMEOUT");
    assert_eq!(up.hits(), 2, "a timeout is retried");
    assert!(
        took >= Duration::from_secs(2) && took < Duration::from_secs(5),
        "{took:?}"
    );
}

#[tokio::test]
async fn mid_stream_upstream_error_becomes_a_clean_error_event() {
    let up = fake_upstream().await;
    let px = proxy(&upstream_config(&up, "")).await;
    let resp = post(&px.url(), &chat_body("midstream-error", true)).await;
    assert_eq!(
        resp.status(),
        200,
        "headers were already committed by the first chunk"
    );
    let events = sse_events(resp).await;
    assert!(events[0].contains("partial"));
    let err: Value = serde_json::from_str(&events[events.len() - 2]).unwrap();
    assert_eq!(err["error"]["code"], "PROVIDER_ERROR");
    assert!(err["error"]["request_id"].is_string());
    assert_eq!(events.last().unwrap(), "[DONE]");
    assert_eq!(up.hits(), 1, "no retry once bytes reached the client");
}

#[tokio::test]
async fn stalled_stream_ends_with_a_timeout_event() {
    let up = fake_upstream().await;
    let px = proxy(&upstream_config(&up, "")).await;
    let resp = post(&px.url(), &chat_body("stall", true)).await;
    let events = tokio::time::timeout(Duration::from_secs(5), sse_events(resp))
        .await
        .unwrap();
    let err: Value = serde_json::from_str(&events[events.len() - 2]).unwrap();
    assert_eq!(err["error"]["code"], "TIMEOUT");
}

#[tokio::test]
async fn garbage_from_upstream_is_a_provider_error_not_a_crash() {
    let up = fake_upstream().await;
    let px = proxy(&upstream_config(&up, "")).await;
    let resp = post(&px.url(), &chat_body("garbage", true)).await;
    assert_eq!(resp.status(), 502);
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["error"]["code"], "PROVIDER_ERROR");
    // The proxy still serves.
    assert_eq!(
        post(&px.url(), &chat_body("chat", false)).await.status(),
        200
    );
}

#[tokio::test]
async fn unicode_split_across_network_writes_arrives_intact() {
    let up = fake_upstream().await;
    let px = proxy(&upstream_config(&up, "")).await;
    let events = sse_events(post(&px.url(), &chat_body("unicode", true)).await).await;
    let c: Value = serde_json::from_str(&events[0]).unwrap();
    assert_eq!(c["choices"][0]["delta"]["content"], "héllo 🙂");
}

#[tokio::test]
async fn unreachable_upstream_is_retried_then_502() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    drop(listener);
    let cfg = format!(
        "providers: {{ dead: {{ kind: openai, base_url: 'http://127.0.0.1:{port}/v1' }} }}\n\
         models: [ {{ name: m, provider: dead }} ]\nrouting: {{ retry_backoff: 1ms }}\n"
    );
    let px = proxy(&cfg).await;
    let resp = post(&px.url(), &chat_body("m", false)).await;
    assert_eq!(resp.status(), 502);
    assert_eq!(resp.headers()["x-llm-proxy-attempts"], "2");
    let v: Value = resp.json().await.unwrap();
    assert!(
        v["error"]["message"].as_str().unwrap().contains("connect"),
        "{v}"
    );
}

#[tokio::test]
async fn upstream_error_text_never_echoes_the_provider_key() {
    let up = fake_upstream().await;
    let px = proxy(&upstream_config(&up, "")).await;
    let resp = post(&px.url(), &chat_body("echo-key", false)).await;
    assert_eq!(resp.status(), 502);
    let text = resp.text().await.unwrap();
    assert!(text.contains("Incorrect API key provided"), "{text}");
    assert!(!text.contains("sk-upstream-secret-0123456789"), "{text}");
    assert!(!text.contains("0123456789"), "{text}");
}

#[tokio::test]
async fn models_endpoints_list_configured_models() {
    let up = fake_upstream().await;
    let px = proxy(&upstream_config(&up, "")).await;
    let c = client();
    let v: Value = c
        .get(format!("{}/v1/models", px.url()))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(v["object"], "list");
    assert_eq!(v["data"][0]["id"], "chat");
    assert_eq!(v["data"][0]["object"], "model");
    for path in ["/llm/models", "/v1/llm/models"] {
        let v: Value = c
            .get(format!("{}{path}", px.url()))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(v[0]["id"], "chat");
        assert_eq!(v[0]["provider"], "up");
    }
    let h: Value = c
        .get(format!("{}/health", px.url()))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(h["status"], "ok");
    assert_eq!(h["providers"][0]["kind"], "openai");
}

#[tokio::test]
async fn trace_context_is_continued_and_forwarded_upstream() {
    let up = fake_upstream().await;
    let px = proxy(&upstream_config(&up, "")).await;
    let parent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let resp = client()
        .post(format!("{}/v1/chat/completions", px.url()))
        .header("traceparent", parent)
        .json(&chat_body("chat", false))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let sent = up.last_headers()["traceparent"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(
        sent.starts_with("00-4bf92f3577b34da6a3ce929d0e0e4736-"),
        "{sent}"
    );
    assert_ne!(sent, parent, "the proxy is a span of its own");
    // Without one, a trace starts at the proxy.
    let _ = post(&px.url(), &chat_body("chat", false)).await;
    let fresh = up.last_headers()["traceparent"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(
        fresh.starts_with("00-") && !fresh.contains("4bf92f35"),
        "{fresh}"
    );
}

/// Clients that speak HTTP/2 with prior knowledge (h2c, as load balancers may) are served
/// over HTTP/2: a reply, a stream and the routes off the fast lane. HTTP/1.1 clients on
/// the same port are unaffected, including one that sends its request a byte at a time.
#[tokio::test]
async fn http2_prior_knowledge_and_http1_share_the_port() {
    let up = fake_upstream().await;
    let px = proxy(&upstream_config(&up, "")).await;
    let _ = rustls::crypto::ring::default_provider().install_default();
    let h2 = reqwest::Client::builder()
        .no_proxy()
        .http2_prior_knowledge()
        .build()
        .unwrap();
    let resp = h2
        .post(format!("{}/v1/chat/completions", px.url()))
        .json(&chat_body("chat", false))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.version(), reqwest::Version::HTTP_2);
    assert_eq!(resp.status(), 200);
    assert!(resp.headers().contains_key("x-request-id"));
    assert_eq!(resp.json::<Value>().await.unwrap(), completion_body());
    let resp = h2
        .post(format!("{}/v1/chat/completions", px.url()))
        .json(&chat_body("chat", true))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.version(), reqwest::Version::HTTP_2);
    let events = sse_events(resp).await;
    assert_eq!(events.last().map(String::as_str), Some("[DONE]"));
    let health = h2.get(format!("{}/health", px.url())).send().await.unwrap();
    assert_eq!(health.version(), reqwest::Version::HTTP_2);
    assert_eq!(health.status(), 200);

    // HTTP/1.1, its request trickling in one byte at a time: "P" could still be the
    // HTTP/2 preface, "PO" no longer is.
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let addr = px.url().trim_start_matches("http://").to_owned();
    let mut tcp = tokio::net::TcpStream::connect(&addr).await.unwrap();
    tcp.set_nodelay(true).unwrap();
    let body = chat_body("chat", false).to_string();
    let request = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nhost: {addr}\r\nconnection: close\r\n\
         content-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    );
    for b in request.as_bytes() {
        tcp.write_all(&[*b]).await.unwrap();
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let mut reply = String::new();
    tcp.read_to_string(&mut reply).await.unwrap();
    assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");
}
