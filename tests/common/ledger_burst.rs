//! A burst of mixed requests for the ledger tests: replies, streams, errors and clients that
//! hang up mid-stream, each with its own request id, so a test can check that every
//! request whose reply arrived has exactly one ledger row.

use serde_json::json;

use super::{SseReader, client};

/// The models the burst asks for, on the built-in mock provider (`custom` has a configured
/// price, `priced` a built-in one, `slow` streams 40 chunks 50 ms apart).
pub const MODELS: &str = "providers: { mock: { kind: mock }, slow: { kind: mock } }\n\
     models:\n  - { name: priced, provider: mock, model: gpt-4o-mini }\n  \
     - { name: custom, provider: mock, model: mock-small, input_cost_per_token: 0.001, output_cost_per_token: 0.002 }\n  \
     - { name: slow, provider: slow, model: slow-n40-d50 }\n";

/// What happened to a burst.
#[derive(Debug, Default)]
pub struct Outcome {
    /// Request ids whose whole reply reached the client (hang-ups are not here).
    pub completed: Vec<String>,
    /// Requests that received a status (including the ones that hung up after it).
    pub answered: usize,
}

/// Sends `n` requests, spread over `urls` and started `pace` apart: of every five, a
/// priced reply for `team`, a stream for `master`, an unknown model for `team` (404), a
/// stream `master` hangs up on after its first event, and a priced reply for `master`.
pub async fn run(
    urls: &[String],
    master: &str,
    team: &str,
    n: usize,
    pace: std::time::Duration,
) -> Outcome {
    // One client (one connection pool) and at most 200 requests in flight: a thousand
    // sockets at once on each side would exceed the default open-file limit.
    let http = client();
    let slots = std::sync::Arc::new(tokio::sync::Semaphore::new(200));
    let mut tasks = Vec::new();
    for i in 0..n {
        let url = urls[i % urls.len()].clone();
        let http = http.clone();
        let slots = slots.clone();
        let (master, team) = (master.to_owned(), team.to_owned());
        let id = format!("burst-{i}");
        tasks.push(tokio::spawn(async move {
            let Ok(_slot) = slots.acquire_owned().await else {
                return (false, None);
            };
            let (key, model, stream) = match i % 5 {
                0 => (team, "priced", false),
                1 => (master, "custom", true),
                2 => (team, "no-such-model", false),
                3 => (master, "slow", true),
                _ => (master, "priced", false),
            };
            let sent = http
                .post(format!("{url}/v1/chat/completions"))
                .bearer_auth(key)
                .header("x-request-id", &id)
                .json(&json!({"model": model, "stream": stream,
                              "messages": [{"role": "user", "content": "hello ledger"}]}))
                .send()
                .await;
            let Ok(resp) = sent else { return (false, None) };
            if i % 5 == 3 {
                let mut r = SseReader::new(resp);
                let _ = r.next().await;
                return (true, None);
            }
            match resp.text().await {
                Ok(_) => (true, Some(id)),
                Err(_) => (true, None),
            }
        }));
        if !pace.is_zero() {
            tokio::time::sleep(pace).await;
        }
    }
    let mut out = Outcome::default();
    for t in tasks {
        if let Ok((answered, completed)) = t.await {
            out.answered += usize::from(answered);
            out.completed.extend(completed);
        }
    }
    out
}
