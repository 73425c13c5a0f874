//! Upstreams over TLS, as every hosted provider is: a fake OpenAI-compatible server behind
//! rustls with a certificate from a private CA made for the test (`openssl`), the proxy as
//! a subprocess trusting that CA through `SSL_CERT_FILE`. The proxy must verify the
//! certificate, negotiate HTTP/2 through ALPN when the upstream offers it (HTTP/1.1 when
//! it does not), stream over either, and refuse an upstream whose certificate it cannot
//! verify without leaking its key.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::convert::Infallible;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use common::*;
use http_body_util::{BodyExt, Full};
use hyper::{Request, Response};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, BufReader};

const MASTER: &str = "sk-tls-master-0123456789";
const UPSTREAM_KEY: &str = "sk-tls-upstream-0123456789";

/// A directory for the test's keys and certificates, removed at the end.
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> Self {
        let p = std::env::temp_dir().join(format!("llm-proxy-tls-{}", llm_proxy::ids::uuid_v4()));
        std::fs::create_dir_all(&p).unwrap();
        Self(p)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn openssl(dir: &Path, args: &[&str]) {
    let out = std::process::Command::new("openssl")
        .current_dir(dir)
        .args(args)
        .output()
        .expect("the openssl command (Debian package openssl) makes the test certificates");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A CA (`{name}-ca.pem`) and a server certificate it signed for 127.0.0.1 and localhost
/// (`{name}-server.pem`, `{name}-server.key`).
fn make_certs(dir: &Path, name: &str) {
    let ca_key = format!("{name}-ca.key");
    let ca = format!("{name}-ca.pem");
    let key = format!("{name}-server.key");
    let csr = format!("{name}-server.csr");
    let cert = format!("{name}-server.pem");
    let ext = format!("{name}-server.ext");
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    let mut args = vec![
        "req",
        "-x509",
        "-days",
        "2",
        "-subj",
        "/CN=llm-proxy test CA",
    ];
    args.extend(ec);
    args.extend(["-keyout", &ca_key, "-out", &ca]);
    args.extend([
        "-addext",
        "basicConstraints=critical,CA:TRUE",
        "-addext",
        "keyUsage=critical,keyCertSign,cRLSign",
    ]);
    openssl(dir, &args);
    let mut args = vec!["req", "-subj", "/CN=localhost"];
    args.extend(ec);
    args.extend(["-keyout", &key, "-out", &csr]);
    openssl(dir, &args);
    std::fs::write(
        dir.join(&ext),
        "subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=CA:FALSE\n\
         keyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\n",
    )
    .unwrap();
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-days",
            "2",
            "-in",
            &csr,
            "-CA",
            &ca,
            "-CAkey",
            &ca_key,
            "-CAcreateserial",
            "-out",
            &cert,
            "-extfile",
            &ext,
        ],
    );
}

/// What the fake upstream saw of each request.
#[derive(Debug, Clone)]
struct Seen {
    version: http::Version,
    authorization: Option<String>,
    /// Which of the upstream's accepted connections the request came on (0 = the first).
    connection: usize,
}

/// An OpenAI-compatible upstream over TLS offering `alpn` (e.g. h2 and http/1.1).
async fn tls_upstream(dir: &Path, name: &str, alpn: &[&[u8]]) -> (u16, Arc<Mutex<Vec<Seen>>>) {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let certs: Vec<CertificateDer<'static>> =
        CertificateDer::pem_file_iter(dir.join(format!("{name}-server.pem")))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
    let key = PrivateKeyDer::from_pem_file(dir.join(format!("{name}-server.key"))).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .unwrap();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = seen.clone();
    tokio::spawn(async move {
        for connection in 0.. {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            let acceptor = acceptor.clone();
            let log = log.clone();
            tokio::spawn(async move {
                // A client that refuses the certificate ends the handshake: nothing to serve.
                let Ok(tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let service =
                    hyper::service::service_fn(move |req| reply(req, log.clone(), connection));
                let _ = hyper_util::server::conn::auto::Builder::new(
                    hyper_util::rt::TokioExecutor::new(),
                )
                .serve_connection(hyper_util::rt::TokioIo::new(tls), service)
                .await;
            });
        }
    });
    (port, seen)
}

async fn reply(
    req: Request<hyper::body::Incoming>,
    log: Arc<Mutex<Vec<Seen>>>,
    connection: usize,
) -> Result<Response<Full<Bytes>>, Infallible> {
    log.lock().unwrap().push(Seen {
        connection,
        version: req.version(),
        authorization: req
            .headers()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned),
    });
    let body = req.into_body().collect().await.unwrap().to_bytes();
    let body: Value = serde_json::from_slice(&body).unwrap();
    let model = body["model"].as_str().unwrap_or("?").to_owned();
    let usage = json!({"prompt_tokens": 5, "completion_tokens": 2, "total_tokens": 7});
    let resp = if body["stream"] == true {
        let chunk = |delta: Value, finish: Value| {
            json!({"id": "c1", "object": "chat.completion.chunk", "created": 1, "model": model,
                   "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]})
        };
        let mut text = String::new();
        for c in [
            chunk(
                json!({"role": "assistant", "content": "over "}),
                Value::Null,
            ),
            chunk(json!({"content": "tls"}), Value::Null),
            chunk(json!({}), json!("stop")),
            json!({"id": "c1", "object": "chat.completion.chunk", "created": 1, "model": model,
                   "choices": [], "usage": usage}),
        ] {
            text.push_str(&format!("data: {c}\n\n"));
        }
        text.push_str("data: [DONE]\n\n");
        Response::builder()
            .header("content-type", "text/event-stream")
            .body(Full::new(Bytes::from(text)))
    } else {
        let reply = json!({"id": "r1", "object": "chat.completion", "created": 1, "model": model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": "over tls"},
                         "finish_reason": "stop"}],
            "usage": usage});
        Response::builder()
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(reply.to_string())))
    };
    Ok(resp.unwrap())
}

/// The proxy binary with `config`, trusting only the CA in `ca_file`; returns its URL.
async fn spawn_proxy(config: &Path, ca_file: &Path) -> (tokio::process::Child, String) {
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_llm-proxy"))
        .arg("--config")
        .arg(config)
        .args(["--port", "0"])
        .env("SSL_CERT_FILE", ca_file)
        .env_remove("SSL_CERT_DIR")
        .env("MK", MASTER)
        .env("UK", UPSTREAM_KEY)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let (url, _) = wait_listening(&mut lines).await;
    // Keep draining its log so it never blocks on a full pipe.
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    (child, url)
}

async fn chat(url: &str, model: &str, stream: bool) -> reqwest::Response {
    client()
        .post(format!("{url}/v1/chat/completions"))
        .bearer_auth(MASTER)
        .json(&json!({"model": model, "stream": stream,
                      "messages": [{"role": "user", "content": "hi"}]}))
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn tls_upstreams_are_verified_and_speak_http2_when_offered() {
    let dir = TempDir::new();
    make_certs(&dir.0, "good");
    make_certs(&dir.0, "other");
    let (h2_port, h2_seen) = tls_upstream(&dir.0, "good", &[b"h2", b"http/1.1"]).await;
    let (h1_port, h1_seen) = tls_upstream(&dir.0, "good", &[b"http/1.1"]).await;
    let config = TempFile::new("tls", ".yaml");
    std::fs::write(
        &config,
        format!(
            "auth: {{ master_key: ${{MK}} }}\n\
             providers:\n  h2: {{ kind: openai, base_url: 'https://localhost:{h2_port}/v1', api_key: ${{UK}} }}\n  \
             h1: {{ kind: openai, base_url: 'https://127.0.0.1:{h1_port}/v1', api_key: ${{UK}} }}\n\
             models: [ {{ name: via-h2, provider: h2, model: m }}, {{ name: via-h1, provider: h1, model: m }} ]\n\
             routing: {{ num_retries: 0, timeout: 10s }}\n\
             ledger: {{ enabled: false }}\n"
        ),
    )
    .unwrap();

    // Trusting the CA that signed the upstreams' certificates.
    let (mut proxy, url) = spawn_proxy(&config, &dir.0.join("good-ca.pem")).await;
    for model in ["via-h2", "via-h1"] {
        let r = chat(&url, model, false).await;
        assert_eq!(r.status(), 200, "{model}");
        let v: Value = r.json().await.unwrap();
        assert_eq!(v["choices"][0]["message"]["content"], "over tls", "{model}");
        assert_eq!(v["usage"]["total_tokens"], 7, "{model}");
        let r = chat(&url, model, true).await;
        assert_eq!(r.status(), 200, "{model}");
        let events = sse_events(r).await;
        assert_eq!(events.last().map(String::as_str), Some("[DONE]"), "{model}");
        assert!(
            events.iter().any(|e| e.contains("\"tls\"")),
            "{model}: {events:?}"
        );
    }
    for (seen, version) in [
        (&h2_seen, http::Version::HTTP_2),
        (&h1_seen, http::Version::HTTP_11),
    ] {
        let seen = seen.lock().unwrap().clone();
        assert_eq!(seen.len(), 2, "{seen:?}");
        for s in &seen {
            assert_eq!(s.version, version, "{seen:?}");
            // One connection for the reply and the stream after it: HTTP/2's is shared,
            // HTTP/1.1's went back to the pool once the reply had been read.
            assert_eq!(s.connection, 0, "{seen:?}");
            assert_eq!(
                s.authorization.as_deref(),
                Some(format!("Bearer {UPSTREAM_KEY}").as_str())
            );
        }
    }
    let _ = proxy.kill().await;

    // Trusting another CA only: the upstream's certificate is refused, the request fails
    // as the provider's failure, and neither key appears in the answer.
    let (mut proxy, url) = spawn_proxy(&config, &dir.0.join("other-ca.pem")).await;
    let r = chat(&url, "via-h2", false).await;
    let status = r.status().as_u16();
    let body = r.text().await.unwrap();
    assert!(matches!(status, 502 | 503), "{status} {body}");
    assert!(
        body.contains("certificate") || body.contains("Certificate"),
        "{body}"
    );
    assert!(
        !body.contains(UPSTREAM_KEY) && !body.contains(MASTER),
        "{body}"
    );
    assert_eq!(h2_seen.lock().unwrap().len(), 2, "no request got through");
    let _ = proxy.kill().await;
}
