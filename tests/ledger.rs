//! The usage ledger over real sockets: one row per request (including client disconnects
//! and errors) after a burst, costs from the price table and config, usage aggregates and
//! the recent-request history on the admin API, a flush on graceful shutdown, and no key
//! anywhere in it.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::time::Duration;

use common::*;
use serde_json::{Value, json};

const MASTER: &str = "ledger-master-0123456789";
const TEAM: &str = "ledger-team-key-0123456789";

fn db_path() -> TempFile {
    TempFile::new("ledger", ".db")
}

fn config(db: &std::path::Path) -> String {
    format!(
        "{}auth:\n  master_key: {MASTER}\n  keys:\n    - {{ name: team, key: {TEAM} }}\n\
         ledger: {{ database_url: 'sqlite://{}' }}\n",
        ledger_burst::MODELS,
        db.display()
    )
}

async fn post(url: &str, key: &str, model: &str, stream: bool) -> reqwest::Response {
    client()
        .post(format!("{url}/v1/chat/completions"))
        .bearer_auth(key)
        .json(&json!({"model": model, "stream": stream,
                      "messages": [{"role": "user", "content": "hello ledger"}]}))
        .send()
        .await
        .unwrap()
}

fn rows(db: &std::path::Path, sql: &str) -> i64 {
    let conn = rusqlite::Connection::open(db).unwrap();
    conn.query_row(sql, [], |r| r.get(0)).unwrap()
}

#[tokio::test]
async fn one_row_per_request_costs_admin_api_and_a_flush_on_shutdown() {
    let db = db_path();
    let px = proxy(&config(&db)).await;
    let url = px.url();

    // A burst of mixed requests: replies, streams, errors, and clients that hang up.
    let burst = ledger_burst::run(
        std::slice::from_ref(&url),
        MASTER,
        TEAM,
        1000,
        Duration::ZERO,
    )
    .await;
    assert_eq!(burst.answered, 1000);
    assert_eq!(burst.completed.len(), 800);
    tokio::time::sleep(Duration::from_millis(300)).await; // disconnects are logged

    // The admin API: recent requests and aggregates (master key only).
    let get = |path: &str, key: &str| {
        let (url, path, key) = (url.clone(), path.to_owned(), key.to_owned());
        async move {
            client()
                .get(format!("{url}{path}"))
                .bearer_auth(key)
                .send()
                .await
                .unwrap()
        }
    };
    assert_eq!(get("/admin/requests", TEAM).await.status(), 403);
    let recent: Value = get("/admin/requests?limit=5", MASTER)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(recent["requests"].as_array().unwrap().len(), 5);
    let one = &recent["requests"][0];
    for field in [
        "request_id",
        "endpoint",
        "status",
        "result",
        "latency_ms",
        "chunks",
    ] {
        assert!(!one[field].is_null(), "{field} missing: {one}");
    }
    // Let the writer catch up, then aggregate.
    tokio::time::sleep(Duration::from_millis(800)).await;
    let usage: Value = get("/admin/usage?group_by=key&since=1h", MASTER)
        .await
        .json()
        .await
        .unwrap();
    let team = usage["groups"]
        .as_array()
        .unwrap()
        .iter()
        .find(|g| g["group"] == "team")
        .unwrap()
        .clone();
    assert_eq!(team["requests"], 400, "{usage}");
    assert_eq!(team["errors"], 200, "the unknown-model requests");
    assert!(team["cost_usd"].as_f64().unwrap() > 0.0);

    // Graceful shutdown flushes the queue: exactly one row per request.
    stop(px).await;
    assert_eq!(rows(&db, "SELECT COUNT(*) FROM requests"), 1000);
    assert_eq!(
        rows(&db, "SELECT COUNT(DISTINCT request_id) FROM requests"),
        1000
    );
    assert_eq!(
        rows(
            &db,
            "SELECT COUNT(*) FROM requests WHERE result = 'client_closed'"
        ),
        200
    );
    assert_every_completed_request_has_a_row(&db, &burst.completed);
    // gpt-4o-mini from the built-in table; `custom` from the config: 0.001/0.002 per token.
    let conn = rusqlite::Connection::open(&db).unwrap();
    let (tin, tout, cost): (i64, i64, f64) = conn
        .query_row(
            "SELECT tokens_in, tokens_out, cost_usd FROM requests WHERE model = 'custom' LIMIT 1",
            [],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
        .unwrap();
    assert!((cost - (tin as f64 * 0.001 + tout as f64 * 0.002)).abs() < 1e-9);
    let priced: f64 = conn
        .query_row(
            "SELECT cost_usd FROM requests WHERE model = 'priced' AND status = 200 LIMIT 1",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert!(priced > 0.0 && priced < 0.001);
    // No key anywhere in the ledger.
    let dump: String = conn
        .query_row(
            "SELECT group_concat(COALESCE(key_name,'') || request_id || COALESCE(trace_id,''), ',') FROM requests",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert!(!dump.contains(TEAM) && !dump.contains(MASTER));
}

#[tokio::test]
async fn a_spent_budget_is_429_budget_exceeded() {
    let db = db_path();
    let yaml = format!(
        "providers: {{ mock: {{ kind: mock }} }}\n\
         models:\n  - {{ name: custom, provider: mock, model: mock-small, input_cost_per_token: 0.001, output_cost_per_token: 0.002 }}\n\
         auth:\n  master_key: {MASTER}\n  keys:\n    - {{ name: team, key: {TEAM}, max_budget_usd: 0.01, budget_period: 30d }}\n\
         ledger: {{ database_url: 'sqlite://{}' }}\n",
        db.display()
    );
    let px = proxy(&yaml).await;
    // One reply costs ~0.03 USD (a few tokens at 0.001/0.002): the budget is spent.
    assert_eq!(post(&px.url(), TEAM, "custom", false).await.status(), 200);
    let resp = post(&px.url(), TEAM, "custom", false).await;
    assert_eq!(resp.status(), 429);
    assert!(resp.headers().contains_key("retry-after"));
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["error"]["code"], "BUDGET_EXCEEDED");
    assert_eq!(v["error"]["type"], "insufficient_quota");
    assert!(v["error"]["message"].as_str().unwrap().contains("team"));
    // The master key has no budget.
    assert_eq!(post(&px.url(), MASTER, "custom", false).await.status(), 200);

    // A restart reads the spend back from the ledger.
    drop(px);
    tokio::time::sleep(Duration::from_millis(700)).await;
    let px = proxy(&yaml).await;
    assert_eq!(post(&px.url(), TEAM, "custom", false).await.status(), 429);
}

fn assert_every_completed_request_has_a_row(db: &std::path::Path, completed: &[String]) {
    let conn = rusqlite::Connection::open(db).unwrap();
    let mut stmt = conn.prepare("SELECT request_id FROM requests").unwrap();
    let ids: std::collections::HashSet<String> = stmt
        .query_map([], |r| r.get(0))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    let missing: Vec<&String> = completed.iter().filter(|id| !ids.contains(*id)).collect();
    assert!(
        missing.is_empty(),
        "no row for {} completed requests: {missing:?}",
        missing.len()
    );
}

/// SIGTERM in the middle of a burst: the process stops taking connections, finishes what
/// it is serving, writes the ledger and exits 0; every request whose reply reached its
/// client has its row.
#[tokio::test]
async fn sigterm_mid_burst_loses_no_completed_request() {
    use tokio::io::AsyncBufReadExt;
    let db = db_path();
    let cfg = TempFile::new("ledger", ".yaml");
    std::fs::write(&cfg, config(&db)).unwrap();
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_llm-proxy"))
        .arg("--config")
        .arg(&*cfg)
        .args(["--port", "0"])
        .env("LLM_PROXY__LOG_LEVEL", "info")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = tokio::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let (url, _) = wait_listening(&mut lines).await;
    // Drain the log so the proxy never blocks on a full pipe.
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });

    // 1000 requests started 1 ms apart; SIGTERM lands after about a third of them.
    let burst = tokio::spawn(async move {
        ledger_burst::run(&[url], MASTER, TEAM, 1000, Duration::from_millis(1)).await
    });
    tokio::time::sleep(Duration::from_millis(400)).await;
    let status = sigterm_and_wait(&mut child, Duration::from_secs(30)).await;
    assert!(status.success(), "graceful shutdown exits 0: {status}");
    let burst = burst.await.unwrap();
    assert!(
        burst.completed.len() > 50 && burst.answered < 1000,
        "SIGTERM was not mid-burst: {} completed, {} answered",
        burst.completed.len(),
        burst.answered
    );
    eprintln!(
        "SIGTERM mid-burst: {} completed, {} answered of 1000",
        burst.completed.len(),
        burst.answered
    );
    assert_every_completed_request_has_a_row(&db, &burst.completed);
}
