//! What an admission costs: the in-process limiter, and the Redis one (one Lua script per
//! admission) against a local `redis-server`. `cargo bench --bench admission` runs it; a
//! test run only checks that it builds. Redis is measured when `redis-server` is
//! installed (the bench starts its own on a free port). Results: `bench/ADMISSION.md`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use llm_proxy::config::{LimitsSettings, RateLimits};
use llm_proxy::limits::{Limiter, Scope, Who};
use llm_proxy::secret::Secret;

fn scope(i: usize) -> Scope {
    Scope {
        who: Who::Key(format!("bench-{i}").into()),
        limits: RateLimits {
            rpm: Some(u64::MAX / 4),
            tpm: Some(u64::MAX / 4),
            max_parallel_requests: Some(1_000_000),
        },
    }
}

/// Admits (and settles) `n` requests from `tasks` concurrent tasks; returns per-admission
/// latencies.
async fn run(limiter: Arc<Limiter>, n: usize, tasks: usize, scopes: usize) -> Vec<Duration> {
    let mut handles = Vec::new();
    for t in 0..tasks {
        let limiter = limiter.clone();
        handles.push(tokio::spawn(async move {
            let mut lat = Vec::with_capacity(n / tasks);
            for i in 0..n / tasks {
                let s = scope((t * 7919 + i) % scopes);
                let start = Instant::now();
                let ticket = limiter.admit(s, 100, "bench").await;
                lat.push(start.elapsed());
                if let Ok(t) = ticket {
                    t.finish(Some(120));
                }
            }
            lat
        }));
    }
    let mut all = Vec::new();
    for h in handles {
        all.extend(h.await.unwrap_or_default());
    }
    all
}

fn report(name: &str, mut lat: Vec<Duration>, wall: Duration) {
    lat.sort();
    let pct = |p: f64| lat[((lat.len() as f64 * p) as usize).min(lat.len() - 1)];
    let mean = lat.iter().sum::<Duration>() / lat.len() as u32;
    println!(
        "| {name} | {} | {:.0} | {:.2?} | {:.2?} | {:.2?} |",
        lat.len(),
        lat.len() as f64 / wall.as_secs_f64(),
        mean,
        pct(0.5),
        pct(0.99)
    );
}

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        println!("admission benchmark: run `cargo bench --bench admission`");
        return;
    }
    let Ok(rt) = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    else {
        return;
    };
    rt.block_on(async {
        println!("| store | admissions | per second | mean | p50 | p99 |");
        println!("|---|---|---|---|---|---|");
        let Ok(local) = Limiter::new(&LimitsSettings::default()) else {
            return;
        };
        let local = Arc::new(local);
        let _ = run(local.clone(), 20_000, 1, 1000).await; // warm up
        for (tasks, scopes) in [(1, 1), (1, 10_000), (8, 1), (8, 10_000)] {
            let t = Instant::now();
            let lat = run(local.clone(), 400_000, tasks, scopes).await;
            report(
                &format!("in-process, {tasks} task(s), {scopes} key(s)"),
                lat,
                t.elapsed(),
            );
        }
        let Some(mut redis) = start_redis() else {
            println!("(redis-server not installed: Redis not measured)");
            return;
        };
        let settings = LimitsSettings {
            redis_url: Some(Secret::new(format!("redis://127.0.0.1:{}/", redis.1))),
            redis_timeout: Duration::from_secs(1),
            ..LimitsSettings::default()
        };
        let Ok(shared) = Limiter::new(&settings) else {
            return;
        };
        let shared = Arc::new(shared);
        let _ = run(shared.clone(), 2_000, 1, 100).await; // connect, load the script
        for (tasks, scopes) in [(1, 1), (1, 1000), (32, 1), (32, 1000)] {
            let t = Instant::now();
            let lat = run(shared.clone(), 40_000, tasks, scopes).await;
            report(
                &format!("Redis, {tasks} task(s), {scopes} key(s)"),
                lat,
                t.elapsed(),
            );
        }
        let _ = redis.0.kill();
        let _ = redis.0.wait();
    });
}

/// A throwaway redis-server on a free port.
fn start_redis() -> Option<(std::process::Child, u16)> {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .ok()?
        .local_addr()
        .ok()?
        .port();
    let child = std::process::Command::new("redis-server")
        .args([
            "--port",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
        ])
        .args(["--appendonly", "no"])
        .stdout(std::process::Stdio::null())
        .spawn()
        .ok()?;
    let deadline = Instant::now() + Duration::from_secs(5);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        if Instant::now() > deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Some((child, port))
}
