//! The fast lane: the chat endpoints (every route whose handler is [`serve`]) answered
//! without axum's router, extractors and layers, ahead of the router that serves the rest.
//!
//! Why: these are the requests a gateway exists for, and on them the general machinery
//! cost more CPU than the JSON work: a path lookup, a boxed clone of the route's service,
//! copies of the header map and URI for the extractors, and five type-map insertions per
//! request (peer address, request context, principal, URL parameters, the handler's
//! marker). Here the same steps — request id, key check, the dialect's handler, the
//! `x-request-id` header and the log line — run as plain calls on the request the
//! connection read. The router keeps every route (it is the whole description of the
//! API, for the OpenAPI document and for `metrics_app`); a test checks that each
//! fast-lane path is one of its routes, so the two cannot drift apart.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use axum::body::Body;
use axum::extract::{ConnectInfo, Request};
use axum::response::Response;
use futures_util::future::BoxFuture;
use http::Method;
use hyper::body::Incoming;
use tower::ServiceExt;
use tower::util::Oneshot;

use super::serve::{Dialect, serve};
use super::{AppState, Caller, HttpRouter, RequestCtx, auth, context};

/// Starts one fast-lane request: the state, the peer, the request and its route's path.
type Start = fn(Arc<AppState>, SocketAddr, Request, &'static str) -> BoxFuture<'static, Response>;

/// The fast lane's routes (all `POST`): the path as the router knows it, and its dialect.
const ROUTES: [(&str, Start); 9] = {
    use super::{llm, messages::Anthropic, openai::OpenAi};
    [
        ("/v1/chat/completions", start::<OpenAi>),
        ("/chat/completions", start::<OpenAi>),
        ("/v1/messages", start::<Anthropic>),
        ("/llm/chat", start::<llm::Chat>),
        ("/v1/llm/chat", start::<llm::Chat>),
        ("/llm/stream", start::<llm::Stream>),
        ("/v1/llm/stream", start::<llm::Stream>),
        ("/llm/completions", start::<llm::Completions>),
        ("/v1/llm/completions", start::<llm::Completions>),
    ]
};

fn route(path: &str) -> Option<(&'static str, Start)> {
    ROUTES.into_iter().find(|(p, _)| *p == path)
}

fn start<D: Dialect>(
    state: Arc<AppState>,
    peer: SocketAddr,
    req: Request,
    path: &'static str,
) -> BoxFuture<'static, Response> {
    // The box first, then the future written into it: built as `Box::pin(answer(..))`,
    // the future (about 7 KiB) was assembled on the stack and copied into the box, twice
    // (callgrind: two 7 KiB memcpys per request). Allocated before the value is made,
    // LLVM writes the value into the box directly.
    let boxed: Box<_> = Box::write(Box::new_uninit(), answer::<D>(state, peer, req, path));
    Box::into_pin(boxed)
}

/// What the request-context layer, the key layer and the handler do on the router's
/// path, in the same order and with the same results.
async fn answer<D: Dialect>(
    state: Arc<AppState>,
    peer: SocketAddr,
    req: Request,
    path: &'static str,
) -> Response {
    let ctx = RequestCtx::new(req.headers());
    let (parts, body) = req.into_parts();
    let (mut resp, logged) = match state.keys.identify(auth::presented_keys(&parts.headers)) {
        Ok(principal) => {
            let caller = Caller {
                principal,
                peer: Some(peer),
            };
            let served = serve::<D>(state, ctx.clone(), caller, parts.headers, parts.uri, body);
            (served.await.0, true)
        }
        Err(failure) => (auth::refusal(failure, &ctx), false),
    };
    context::finish(&ctx, &Method::POST, path, &mut resp, logged);
    resp
}

/// The API port's service: the state, and the router for everything off the fast lane.
#[derive(Clone)]
pub struct Api {
    state: Arc<AppState>,
    router: HttpRouter,
}

impl Api {
    pub fn new(state: Arc<AppState>) -> Self {
        Self {
            router: super::app(state.clone()),
            state,
        }
    }

    /// The service for one connection from `peer`.
    pub fn lane(&self, peer: SocketAddr) -> FastLane {
        FastLane {
            state: self.state.clone(),
            router: self.router.clone(),
            peer,
        }
    }
}

/// One connection's service: the fast lane's routes directly, the rest through the router.
#[derive(Clone)]
pub struct FastLane {
    state: Arc<AppState>,
    router: HttpRouter,
    peer: SocketAddr,
}

impl hyper::service::Service<http::Request<Incoming>> for FastLane {
    type Response = Response;
    type Error = Infallible;
    type Future = LaneFuture;

    fn call(&self, req: http::Request<Incoming>) -> Self::Future {
        if req.method() == Method::POST {
            if let Some((path, start)) = route(req.uri().path()) {
                return LaneFuture::Fast {
                    fut: start(self.state.clone(), self.peer, req.map(Body::new), path),
                };
            }
        }
        let mut req = req.map(Body::new);
        req.extensions_mut().insert(ConnectInfo(self.peer));
        LaneFuture::Routed {
            fut: self.router.clone().oneshot(req),
        }
    }
}

pin_project_lite::pin_project! {
    #[project = LaneProj]
    pub enum LaneFuture {
        Fast { fut: BoxFuture<'static, Response> },
        Routed { #[pin] fut: Oneshot<HttpRouter, Request> },
    }
}

impl std::future::Future for LaneFuture {
    type Output = Result<Response, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project() {
            LaneProj::Fast { fut } => fut.as_mut().poll(cx).map(Ok),
            LaneProj::Routed { fut } => fut.poll(cx),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every fast-lane path is a `POST` route of the router (so the OpenAPI document, the
    /// router and the fast lane agree), and nothing else is taken off the router.
    #[test]
    fn fast_lane_paths_are_router_routes() {
        let src = include_str!("mod.rs");
        for (path, _) in ROUTES {
            assert!(route(path).is_some(), "{path} not found in the fast lane");
            assert!(
                src.contains(&format!(".route(\"{path}\", post(")),
                "{path} is in the fast lane but not a POST route of the router"
            );
        }
        for other in [
            "/v1/messages/count_tokens",
            "/v1/models",
            "/health",
            "/v1/chat/completions/",
            "/V1/chat/completions",
        ] {
            assert!(route(other).is_none(), "{other} must go through the router");
        }
    }
}
