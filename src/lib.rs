//! llm-proxy: one fast binary that gives every service one safe, uniform door to every LLM.
//!
//! The crate is laid out along the request path (see `DESIGN.md` in the shared docs):
//! [`api`] owns HTTP, [`wire`] owns every wire format, [`types`] is the canonical language
//! the [`router`] speaks, [`providers`] call upstreams, [`config`] loads settings and
//! [`telemetry`] records what happened. Dependencies only point down that list.

pub mod api;
pub mod config;
pub mod connections;
pub mod decimal;
pub mod error;
pub mod ids;
pub mod keys;
pub mod ledger;
pub mod limits;
pub mod providers;
pub mod router;
pub mod secret;
pub mod server;
pub mod shutdown;
pub mod telemetry;
pub mod types;
pub mod wire;
