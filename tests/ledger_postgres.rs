//! The usage ledger in a real PostgreSQL, shared by two replicas: a burst of 1000 mixed
//! requests over both leaves exactly one row each in one database, either replica's
//! `/admin/usage` counts all of them, a replica started later reads a key's spend from it
//! and refuses a spent budget, and neither a wrong password nor the URL's password appears
//! in a start error. The test runs its own `postgres` (Debian's
//! `postgresql` package, on a free port, in a temporary directory, stopped at its end);
//! `scripts/test` installs the package when it is missing and sets
//! LLM_PROXY_REQUIRE_POSTGRES=1, so there this test cannot be skipped.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use serde_json::{Value, json};

const PASSWORD: &str = "pg-ledger-pass-0123456789";
const MASTER: &str = "pg-master-0123456789";
const TEAM: &str = "pg-team-key-0123456789";
const CAPPED: &str = "pg-capped-key-0123456789";

/// The newest installed PostgreSQL's binaries.
fn postgres_bin() -> Option<PathBuf> {
    let mut found: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let version = e.file_name().to_str()?.parse().ok()?;
            let bin = e.path().join("bin");
            bin.join("postgres").exists().then_some((version, bin))
        })
        .collect();
    found.sort();
    if let Some((_, bin)) = found.pop() {
        return Some(bin);
    }
    assert!(
        std::env::var("LLM_PROXY_REQUIRE_POSTGRES").as_deref() != Ok("1"),
        "PostgreSQL is not installed; scripts/test installs it"
    );
    eprintln!("skipped: no PostgreSQL (scripts/test installs it)");
    None
}

/// PostgreSQL refuses to run as root; as root the server runs as the `postgres` user.
fn run_as() -> Option<(u32, u32)> {
    let id = |flag: &str, user: Option<&str>| -> u32 {
        let out = Command::new("id").arg(flag).args(user).output().unwrap();
        String::from_utf8_lossy(&out.stdout).trim().parse().unwrap()
    };
    (id("-u", None) == 0).then(|| (id("-u", Some("postgres")), id("-g", Some("postgres"))))
}

fn command(bin: &Path, name: &str, user: Option<(u32, u32)>) -> Command {
    use std::os::unix::process::CommandExt;
    let mut c = Command::new(bin.join(name));
    if let Some((uid, gid)) = user {
        c.uid(uid).gid(gid);
    }
    c
}

/// A PostgreSQL server of the test's own; stopped (fast shutdown) and removed on drop.
struct Postgres {
    child: std::process::Child,
    dir: PathBuf,
    port: u16,
}

impl Postgres {
    fn start(bin: &Path) -> Self {
        let user = run_as();
        let dir = std::env::temp_dir().join(format!("llm-proxy-pg-{}", llm_proxy::ids::uuid_v4()));
        std::fs::create_dir(&dir).unwrap();
        let pwfile = dir.join("pw");
        std::fs::write(&pwfile, PASSWORD).unwrap();
        if let Some((uid, gid)) = user {
            std::os::unix::fs::chown(&dir, Some(uid), Some(gid)).unwrap();
            std::os::unix::fs::chown(&pwfile, Some(uid), Some(gid)).unwrap();
        }
        let data = dir.join("data");
        let out = command(bin, "initdb", user)
            .arg("-D")
            .arg(&data)
            .args([
                "-U",
                "proxy",
                "-E",
                "UTF8",
                "--no-sync",
                "--auth-local=trust",
            ])
            .args(["--auth-host=scram-sha-256"])
            .arg(format!("--pwfile={}", pwfile.display()))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "initdb: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = command(bin, "postgres", user)
            .arg("-D")
            .arg(&data)
            .args(["-p", &port.to_string(), "-c", "listen_addresses=127.0.0.1"])
            .arg("-c")
            .arg(format!("unix_socket_directories={}", dir.display()))
            .args(["-c", "fsync=off"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let pg = Postgres { child, dir, port };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let ready = Command::new(bin.join("pg_isready"))
                .args(["-h", "127.0.0.1", "-p", &port.to_string(), "-q"])
                .status()
                .unwrap();
            if ready.success() {
                break;
            }
            assert!(Instant::now() < deadline, "postgres did not start");
            std::thread::sleep(Duration::from_millis(100));
        }
        pg
    }

    fn url(&self, password: &str) -> String {
        format!(
            "postgres://proxy:{password}@127.0.0.1:{}/postgres",
            self.port
        )
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        // SIGINT: PostgreSQL's fast shutdown (disconnects clients, stops its backends).
        let _ = Command::new("kill")
            .args(["-INT", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn config(db_url: &str) -> String {
    format!(
        "{}auth:\n  master_key: {MASTER}\n  keys:\n    - {{ name: team, key: {TEAM} }}\n    \
         - {{ name: capped, key: {CAPPED}, max_budget_usd: 0.01, budget_period: 30d }}\n\
         ledger: {{ database_url: '{db_url}' }}\n",
        ledger_burst::MODELS
    )
}

async fn post(url: &str, key: &str) -> reqwest::Response {
    // `custom` costs ~0.03 USD a reply: one spends the capped key's 0.01.
    client()
        .post(format!("{url}/v1/chat/completions"))
        .bearer_auth(key)
        .json(&json!({"model": "custom",
                      "messages": [{"role": "user", "content": "hello ledger"}]}))
        .send()
        .await
        .unwrap()
}

/// The ledger as the first release wrote it (schema version 1).
const SCHEMA_V1: &str = "
CREATE TABLE llm_proxy_schema_version (version INTEGER NOT NULL);
INSERT INTO llm_proxy_schema_version (version) VALUES (1);
CREATE TABLE llm_proxy_requests (
    id BIGSERIAL PRIMARY KEY, at_ms BIGINT NOT NULL, request_id TEXT NOT NULL, trace_id TEXT,
    key_name TEXT, endpoint TEXT NOT NULL, model TEXT, provider TEXT, deployment TEXT,
    status INTEGER NOT NULL, result TEXT NOT NULL, error_code TEXT, stream BOOLEAN NOT NULL,
    attempts INTEGER NOT NULL, tokens_in BIGINT, tokens_out BIGINT, tokens_cached BIGINT,
    tokens_reasoning BIGINT, cost_usd DOUBLE PRECISION, latency_ms DOUBLE PRECISION NOT NULL,
    ttft_ms DOUBLE PRECISION, chunks BIGINT NOT NULL, finish_reason TEXT
);
CREATE INDEX llm_proxy_requests_at ON llm_proxy_requests (at_ms);
CREATE INDEX llm_proxy_requests_key_at ON llm_proxy_requests (key_name, at_ms);
";

async fn count(url: &str, sql: &str) -> i64 {
    let (client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(conn);
    client.query_one(sql, &[]).await.unwrap().get(0)
}

#[tokio::test]
async fn two_replicas_share_one_postgres_ledger_and_its_budgets() {
    let Some(bin) = postgres_bin() else { return };
    let pg = Postgres::start(&bin);
    let db_url = pg.url(PASSWORD);
    let yaml = config(&db_url);
    // The database holds a ledger as the first release wrote it, which the replicas migrate.
    let (v1, conn) = tokio_postgres::connect(&db_url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(conn);
    v1.batch_execute(SCHEMA_V1).await.unwrap();

    // Two replicas, one database: a burst of 1000 mixed requests (replies, streams,
    // errors, clients that hang up) goes to both.
    let a = proxy(&yaml).await;
    let b = proxy(&yaml).await;
    let burst = ledger_burst::run(&[a.url(), b.url()], MASTER, TEAM, 1000, Duration::ZERO).await;
    assert_eq!(burst.answered, 1000);
    assert_eq!(burst.completed.len(), 800);
    // Each writer flushes at least every half second: either replica sees all of them.
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let v: Value = client()
            .get(format!("{}/admin/usage?group_by=key", b.url()))
            .bearer_auth(MASTER)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let groups = v["groups"].as_array().unwrap();
        let total: u64 = groups.iter().map(|g| g["requests"].as_u64().unwrap()).sum();
        if total == 1000 {
            let team = groups.iter().find(|g| g["group"] == "team").unwrap();
            assert_eq!(team["requests"], 400, "{v}");
            assert_eq!(team["errors"], 200, "the unknown-model requests: {v}");
            assert!(team["cost_usd"].as_f64().unwrap() > 0.0, "{v}");
            break;
        }
        assert!(Instant::now() < deadline, "usage never reached 1000: {v}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // The capped key spends its budget on replica A ...
    assert_eq!(post(&a.url(), CAPPED).await.status(), 200);
    stop(a).await;
    // ... and a replica started afterwards reads that spend from the shared ledger.
    let c = proxy(&yaml).await;
    let resp = post(&c.url(), CAPPED).await;
    assert_eq!(resp.status(), 429);
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["error"]["code"], "BUDGET_EXCEEDED");
    stop(b).await;
    stop(c).await;

    let (pg_client, conn) = tokio_postgres::connect(&db_url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(conn);
    // The key index now holds only requests made with a virtual key; the full one is
    // gone and the schema version is unchanged (older builds still start on it).
    assert_eq!(
        count(
            &db_url,
            "SELECT MAX(version)::BIGINT FROM llm_proxy_schema_version"
        )
        .await,
        1
    );
    let index: String = pg_client
        .query_one(
            "SELECT indexdef FROM pg_indexes WHERE indexname = 'llm_proxy_requests_key_named'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert!(index.contains("WHERE (key_name IS NOT NULL)"), "{index}");
    assert_eq!(
        count(
            &db_url,
            "SELECT COUNT(*) FROM pg_indexes WHERE indexname = 'llm_proxy_requests_key_at'"
        )
        .await,
        0
    );
    let ids: std::collections::HashSet<String> = pg_client
        .query("SELECT request_id FROM llm_proxy_requests", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    let missing: Vec<&String> = burst
        .completed
        .iter()
        .filter(|id| !ids.contains(*id))
        .collect();
    assert!(
        missing.is_empty(),
        "completed requests without a row: {missing:?}"
    );

    // One row per request (the burst and the two capped ones), keyed by name, never by key.
    assert_eq!(
        count(&db_url, "SELECT COUNT(*) FROM llm_proxy_requests").await,
        1002
    );
    assert_eq!(
        count(
            &db_url,
            "SELECT COUNT(DISTINCT request_id) FROM llm_proxy_requests WHERE request_id LIKE 'burst-%'"
        )
        .await,
        1000
    );
    assert_eq!(
        count(
            &db_url,
            "SELECT COUNT(*) FROM llm_proxy_requests WHERE result = 'client_closed'"
        )
        .await,
        200
    );
    assert_eq!(
        count(
            &db_url,
            "SELECT COUNT(*) FROM llm_proxy_requests WHERE key_name = 'capped'"
        )
        .await,
        2
    );
    assert_eq!(
        count(
            &db_url,
            &format!(
                "SELECT COUNT(*) FROM llm_proxy_requests WHERE key_name LIKE '%{TEAM}%' \
                 OR key_name LIKE '%{CAPPED}%' OR request_id LIKE '%{MASTER}%'"
            )
        )
        .await,
        0
    );

    // A wrong password fails the start with PostgreSQL's reason and no password at all.
    let wrong = "wrong-pg-pass-9876543210";
    let mut s = llm_proxy::config::load_str(
        &config(&pg.url(wrong)),
        "test.yaml",
        &std::collections::HashMap::new(),
    )
    .unwrap();
    s.server.host = "127.0.0.1".into();
    s.server.port = 0;
    let err = match llm_proxy::server::spawn(&s).await {
        Ok(_) => panic!("started with a wrong database password"),
        Err(e) => e.to_string(),
    };
    assert!(err.contains("password authentication failed"), "{err}");
    assert!(!err.contains(wrong) && !err.contains(PASSWORD), "{err}");
    assert!(!format!("{s:?}").contains(wrong), "settings debug shows it");
}
