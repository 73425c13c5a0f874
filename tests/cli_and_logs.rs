//! The real binary: `check-config`, start-up refusals, and a log capture that proves no key
//! ever reaches the logs.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::process::Stdio;
use std::time::Duration;

use common::*;
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, BufReader};

const BIN: &str = env!("CARGO_BIN_EXE_llm-proxy");
const MASTER: &str = "master-secret-5d0c1b7e";
const AUDITED_KEY: &str = "audited-key-must-not-be-logged-0123";
const LIMITED_KEY: &str = "limited-key-must-not-be-logged-0123";
const UPSTREAM_KEY: &str = "sk-upstream-9a8b7c6d5e4f3a2b";

fn temp_config(text: &str) -> TempFile {
    let file = TempFile::new("test", ".yaml");
    std::fs::write(&file, text).unwrap();
    file
}

#[test]
fn check_config_prints_models_and_masks_secrets() {
    let cfg = temp_config(
        "auth: { master_key: ${MK} }\nproviders:\n  up: { kind: openai, base_url: 'http://127.0.0.1:9/v1', api_key: ${UK} }\n  mock: { kind: mock }\n\
         models: [ { name: gpt-x, provider: up, model: gpt-4o }, { name: mock-small, provider: mock } ]\n",
    );
    let out = std::process::Command::new(BIN)
        .args(["check-config", "--config"])
        .arg(&*cfg)
        .env("MK", MASTER)
        .env("UK", UPSTREAM_KEY)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{text}");
    assert!(
        text.contains("gpt-x") && text.contains("up/gpt-4o"),
        "{text}"
    );
    assert!(text.contains("***"), "{text}");
    assert!(text.contains("config OK"), "{text}");
    assert!(
        !text.contains(MASTER) && !text.contains(UPSTREAM_KEY),
        "{text}"
    );
}

#[test]
fn check_config_fails_naming_the_key() {
    let cfg = temp_config(
        "providers: { p: { kind: openai, base_url: 'http://x/v1', api_key: ${NOT_SET_ANYWHERE_42} } }\n",
    );
    let out = std::process::Command::new(BIN)
        .args(["check-config", "--config"])
        .arg(&*cfg)
        .env_remove("NOT_SET_ANYWHERE_42")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("NOT_SET_ANYWHERE_42") && err.contains("providers.p.api_key"),
        "{err}"
    );
}

#[test]
fn refuses_a_public_address_without_a_key() {
    let out = std::process::Command::new(BIN)
        .args(["--host", "0.0.0.0", "--port", "0"])
        .env_remove("LLM_PROXY__INTERNAL_API_KEY")
        .env_remove("LLM_PROXY__CONFIG")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("refusing") && text.contains("--allow-unauthenticated"),
        "{text}"
    );
}

#[test]
fn help_explains_both_commands_and_the_environment() {
    let out = std::process::Command::new(BIN)
        .arg("--help")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    for needle in [
        "check-config",
        "--config",
        "--port",
        "LLM_PROXY__INTERNAL_API_KEY",
        "LLM_PROXY__LOG_LEVEL",
    ] {
        assert!(text.contains(needle), "--help lacks {needle}");
    }
}

#[tokio::test]
async fn logs_have_one_line_per_request_and_never_a_key() {
    logs_scenario(false).await;
}

/// The same scenario with the proxy confined to one CPU, where it runs tokio's
/// single-threaded scheduler: every feature must work there too.
#[tokio::test]
async fn on_one_cpu_the_proxy_runs_single_threaded_and_everything_works() {
    logs_scenario(true).await;
}

async fn logs_scenario(one_cpu: bool) {
    let up = fake_upstream().await;
    // `fail500-once` fails the first request its fake sees: it gets a fake of its own.
    let flaky_up = fake_upstream().await;
    let ledger = TempFile::new("logs", ".db");
    let cfg = temp_config(&format!(
        "auth: {{ master_key: ${{MK}}, keys: [ {{ name: limited, key: ${{LK}}, rpm: 1 }}, {{ name: audited, key: ${{AK}}, log_content: true }} ] }}\nproviders:\n  up: {{ kind: openai, base_url: '{}', api_key: ${{UK}} }}\n  \
         flaky_up: {{ kind: openai, base_url: '{}', api_key: ${{UK}} }}\n\
         models: [ {{ name: chat, provider: up, model: ok, input_cost_per_token: 0.001, output_cost_per_token: 0.002 }}, {{ name: echo, provider: up, model: echo-key }}, {{ name: tools, provider: up, model: tools }},\n  \
         {{ name: flaky, provider: flaky_up, model: fail500-once }}, {{ name: hang, provider: up, model: hang }} ]\n\
         routing: {{ retry_backoff: 1ms, timeout: 2s, attempt_timeout: 300ms, num_retries: 1 }}\n",
        up.base_url(),
        flaky_up.base_url()
    ));
    // `taskset` (util-linux) sets the CPU affinity the proxy sizes its runtime by: the
    // first CPU this test may use.
    let mut command = if one_cpu {
        let status = std::fs::read_to_string("/proc/self/status").unwrap();
        let allowed = status
            .lines()
            .find_map(|l| l.strip_prefix("Cpus_allowed_list:"))
            .unwrap();
        let first = allowed.trim().split([',', '-']).next().unwrap().to_owned();
        let mut c = tokio::process::Command::new("taskset");
        c.args(["-c", &first, BIN]);
        c
    } else {
        tokio::process::Command::new(BIN)
    };
    let mut child = command
        .arg("--config")
        .arg(&*cfg)
        .args(["--port", "0"])
        .env("MK", MASTER)
        .env("UK", UPSTREAM_KEY)
        .env("LK", LIMITED_KEY)
        .env("AK", AUDITED_KEY)
        .env(
            "LLM_PROXY__LEDGER_DATABASE_URL",
            format!("sqlite://{}", ledger.display()),
        )
        .env("LLM_PROXY__LOG_LEVEL", "trace")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let (url, mut log) = wait_listening(&mut lines).await;
    let startup: Value = serde_json::from_str(log.last().unwrap()).unwrap();
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let expected = if one_cpu || cpus == 1 {
        "current_thread"
    } else {
        "multi_thread"
    };
    assert_eq!(startup["runtime"], expected, "{startup}");
    let c = client();
    let post = |model: &str, stream: bool, key: &str| {
        c.post(format!("{url}/v1/chat/completions"))
            .header("authorization", format!("Bearer {key}"))
            .header("x-request-id", format!("req-{model}-{stream}-{}", key.len()))
            .json(&json!({"model": model, "stream": stream, "messages": [{"role": "user", "content": "hi"}]}))
            .send()
    };
    assert_eq!(post("chat", false, MASTER).await.unwrap().status(), 200);
    let s = post("tools", true, MASTER).await.unwrap();
    assert_eq!(s.status(), 200);
    s.text().await.unwrap();
    assert_eq!(
        post("chat", false, "wrong-key-that-must-not-be-logged")
            .await
            .unwrap()
            .status(),
        401
    );
    assert_eq!(post("echo", false, MASTER).await.unwrap().status(), 502);
    // A retry (the first attempt fails with 500), a timeout, and a rate-limited key.
    assert_eq!(post("flaky", false, MASTER).await.unwrap().status(), 200);
    assert_eq!(post("hang", false, MASTER).await.unwrap().status(), 504);
    assert_eq!(
        post("chat", false, LIMITED_KEY).await.unwrap().status(),
        200
    );
    let limited = c
        .post(format!("{url}/v1/chat/completions"))
        .bearer_auth(LIMITED_KEY)
        .header("x-request-id", "req-limited-2")
        .header(
            "traceparent",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        )
        .json(&json!({"model": "chat", "messages": [{"role": "user", "content": "hi"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(limited.status(), 429);
    // A key that opted in to content logging: its prompt and completion, streamed too.
    for stream in [false, true] {
        let r = c
            .post(format!("{url}/v1/chat/completions"))
            .bearer_auth(AUDITED_KEY)
            .header("x-request-id", format!("req-audited-{stream}"))
            .json(&json!({"model": "chat", "stream": stream,
                          "messages": [{"role": "user", "content": "audit this prompt"}]}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        r.text().await.unwrap();
    }

    // SIGTERM: graceful shutdown, then read everything it wrote.
    let status = sigterm_and_wait(&mut child, Duration::from_secs(10)).await;
    assert!(status.success(), "graceful shutdown exits 0");
    while let Ok(Some(line)) = lines.next_line().await {
        log.push(line);
    }
    let mut stderr = String::new();
    tokio::io::AsyncReadExt::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr)
        .await
        .unwrap();
    let all = format!("{}\n{stderr}", log.join("\n"));
    for secret in [
        MASTER,
        UPSTREAM_KEY,
        LIMITED_KEY,
        "wrong-key-that-must-not-be-logged",
    ] {
        assert!(
            !all.contains(secret),
            "secret {secret} leaked into the logs"
        );
    }

    let requests: Vec<Value> = log
        .iter()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v["target"] == "llm_proxy::request")
        .collect();
    let by_id = |id: &str| {
        let found: Vec<&Value> = requests.iter().filter(|v| v["request_id"] == id).collect();
        assert_eq!(found.len(), 1, "exactly one line for {id}: {requests:?}");
        found[0].clone()
    };
    let ok = by_id(&format!("req-chat-false-{}", MASTER.len()));
    assert_eq!(ok["model"], "chat");
    assert_eq!(ok["provider"], "up");
    assert_eq!(ok["status"], 200);
    assert_eq!(ok["tokens_in"], 9);
    assert_eq!(ok["tokens_out"], 3);
    assert!(ok["latency_ms"].is_number());
    let stream = by_id(&format!("req-tools-true-{}", MASTER.len()));
    assert_eq!(stream["stream"], true);
    assert!(stream["ttft_ms"].is_number());
    assert_eq!(stream["finish_reason"], "tool_calls");
    assert_eq!(stream["tokens_out"], 3);
    let err = by_id(&format!("req-echo-false-{}", MASTER.len()));
    assert_eq!(err["status"], 502);
    assert_eq!(err["error_code"], "PROVIDER_ERROR");
    assert_eq!(err["level"], "WARN");
    let denied = by_id(&format!(
        "req-chat-false-{}",
        "wrong-key-that-must-not-be-logged".len()
    ));
    assert_eq!(denied["status"], 401);

    // Every line carries the request's trace id and the client's address; a costed model
    // its cost.
    assert_eq!(ok["trace_id"].as_str().map(str::len), Some(32), "{ok}");
    assert_eq!(ok["client_ip"], "127.0.0.1");
    assert!(ok["upstream_ms"].is_number(), "{ok}");
    // Decode speed: output tokens over the time after the first one (streams).
    assert!(stream["tokens_per_sec"].is_number(), "{stream}");
    assert!((ok["cost_usd"].as_f64().unwrap() - (9.0 * 0.001 + 3.0 * 0.002)).abs() < 1e-9);
    // The retry: two attempts, a WARN line naming the failure, then success.
    let flaky = by_id(&format!("req-flaky-false-{}", MASTER.len()));
    assert_eq!(
        (flaky["status"].as_u64(), flaky["attempts"].as_u64()),
        (Some(200), Some(2))
    );
    let warns = |needle: &str| {
        log.iter()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .any(|v| v["level"] == "WARN" && v.to_string().contains(needle))
    };
    assert!(warns("retrying after upstream failure"), "no retry WARN");
    // The timeout: 504 TIMEOUT at WARN, and a WARN line for the attempt that timed out.
    let hang = by_id(&format!("req-hang-false-{}", MASTER.len()));
    assert_eq!(hang["status"], 504);
    assert_eq!(hang["error_code"], "TIMEOUT");
    assert_eq!(hang["level"], "WARN");
    assert!(warns("upstream timeout"), "no timeout WARN");
    // The rate-limited request: the key's name, 429 RATE_LIMIT, and the caller's trace id.
    let limited = by_id("req-limited-2");
    assert_eq!(limited["status"], 429);
    assert_eq!(limited["error_code"], "RATE_LIMIT");
    assert_eq!(limited["key"], "limited");
    assert_eq!(limited["trace_id"], "4bf92f3577b34da6a3ce929d0e0e4736");

    // Content lines: only for the audited key (two requests), none for the other keys'.
    let content: Vec<Value> = log
        .iter()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v["target"] == "llm_proxy::content")
        .collect();
    assert_eq!(content.len(), 2, "{content:?}");
    for line in &content {
        assert_eq!(line["key"], "audited");
        assert!(
            line["prompt"]
                .as_str()
                .unwrap()
                .contains("audit this prompt"),
            "{line}"
        );
        assert!(!line["completion"].as_str().unwrap().is_empty(), "{line}");
    }
}
