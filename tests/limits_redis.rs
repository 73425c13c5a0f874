//! Limits shared across replicas through a real Redis: two llm-proxy processes enforce one
//! key's limit together; when Redis dies they keep serving on their own limits (`allow`)
//! or refuse (`deny`). The test starts its own `redis-server` on a free port and kills it;
//! `scripts/test` installs the Debian package when it is missing and sets
//! LLM_PROXY_REQUIRE_REDIS=1, so there this test cannot be skipped.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::process::Stdio;
use std::time::{Duration, Instant};

use common::*;
use tokio::process::{Child, Command};

const BIN: &str = env!("CARGO_BIN_EXE_llm-proxy");
const KEY: &str = "team-shared-key-0123456789";
const LIMIT: usize = 10;

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

async fn wait_for_port(port: u16) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .is_err()
    {
        assert!(Instant::now() < deadline, "nothing listens on {port}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn redis_binary() -> Option<&'static str> {
    let found = std::process::Command::new("redis-server")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if found {
        return Some("redis-server");
    }
    assert!(
        std::env::var("LLM_PROXY_REQUIRE_REDIS").as_deref() != Ok("1"),
        "redis-server is not installed; scripts/test installs it"
    );
    eprintln!("skipped: no redis-server (scripts/test installs it)");
    None
}

async fn start_redis(bin: &str, port: u16) -> Child {
    let child = Command::new(bin)
        .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
        .args([
            "--save",
            "",
            "--appendonly",
            "no",
            "--protected-mode",
            "yes",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    wait_for_port(port).await;
    child
}

async fn start_proxy(config: &std::path::Path, port: u16) -> Child {
    let child = Command::new(BIN)
        .args(["--config"])
        .arg(config)
        .args(["--port", &port.to_string()])
        .env("LLM_PROXY__LOG_LEVEL", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    wait_for_port(port).await;
    child
}

fn write_config(redis_port: u16, mode: &str) -> std::path::PathBuf {
    let text = format!(
        "providers: {{ mock: {{ kind: mock }} }}\n\
         models: [ {{ name: mock-small, provider: mock }} ]\n\
         auth:\n  keys:\n    - {{ name: shared, key: {KEY}, rpm: {LIMIT} }}\n\
         limits: {{ redis_url: 'redis://127.0.0.1:{redis_port}/', on_redis_error: {mode}, redis_timeout: 200ms }}\n"
    );
    let path = std::env::temp_dir().join(format!(
        "llm-proxy-redis-{mode}-{}.yaml",
        llm_proxy::ids::uuid_v4()
    ));
    std::fs::write(&path, text).unwrap();
    path
}

async fn status(port: u16) -> u16 {
    client()
        .post(format!("http://127.0.0.1:{port}/v1/chat/completions"))
        .bearer_auth(KEY)
        .json(&chat_body("mock-small", false))
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

#[tokio::test]
async fn two_replicas_share_one_limit_and_survive_redis_going_away() {
    let Some(bin) = redis_binary() else { return };
    let redis_port = free_port();
    let mut redis = start_redis(bin, redis_port).await;
    let allow = write_config(redis_port, "allow");
    let deny = write_config(redis_port, "deny");
    let (pa, pb, pc) = (free_port(), free_port(), free_port());
    let _a = start_proxy(&allow, pa).await;
    let _b = start_proxy(&allow, pb).await;
    let _c = start_proxy(&deny, pc).await;

    // 30 requests over two replicas: together they admit the key's one limit.
    let mut admitted = 0;
    for i in 0..30 {
        let port = if i % 2 == 0 { pa } else { pb };
        match status(port).await {
            200 => admitted += 1,
            429 => {}
            other => panic!("unexpected status {other}"),
        }
    }
    assert!(
        (LIMIT..=LIMIT + 1).contains(&admitted),
        "{admitted} admitted across two replicas for a limit of {LIMIT}"
    );
    // The third replica sees the same spent limit.
    assert_eq!(status(pc).await, 429);

    // Redis goes away: `allow` replicas keep serving on their own limits, `deny` refuses.
    redis.kill().await.unwrap();
    let _ = redis.wait().await;
    assert_eq!(
        status(pa).await,
        200,
        "allow: serves on this replica's own limit"
    );
    assert_eq!(status(pb).await, 200);
    assert_eq!(
        status(pc).await,
        503,
        "deny: refuses while the shared store is gone"
    );
    let _ = std::fs::remove_file(allow);
    let _ = std::fs::remove_file(deny);
}
