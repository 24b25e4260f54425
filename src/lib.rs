//! Tollgate: an AI gateway. One OpenAI-compatible entry point in front of every LLM, with
//! consumers, keys, groups and per-consumer model access. See `shared/design.md` for the map.

pub mod admin;
pub mod auth;
pub mod body;
pub mod cli;
pub mod config;
pub mod dialect;
pub mod error;
pub mod fast_hash;
pub mod import;
pub mod json_out;
pub mod openwebui;
pub mod policy;
pub mod providers;
pub mod proxy;
pub mod reload;
pub mod routing;
pub mod server;
pub mod snapshot;
pub mod state;
pub mod store;
mod swar;
pub mod telemetry;

pub use error::GatewayError;
pub use server::Gateway;
