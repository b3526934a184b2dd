//! AeThex Cloud reference backend.
//!
//! One module per service (`auth`, `saves`, ...); the rest is the shared spine every service uses:
//! configuration, the error model, storage (SQL + blobs), projects and keys, access tokens, the
//! caller extractor, metrics and the OpenAPI document.

pub mod analytics;
pub mod app;
pub mod auth;
pub mod blobs;
pub mod caller;
pub mod chat;
pub mod clock;
pub mod cluster;
pub mod config;
pub mod data_files;
pub mod db;
pub mod error;
pub mod group_commit;
pub mod http;
pub mod openapi;
pub mod projects;
pub mod realtime;
pub mod saves;
pub mod social;
pub mod tokens;

pub use app::{AppState, Server};
pub use config::Config;
pub use error::{ApiError, ApiResult};
