//! Cloud saves: `/api/v1/saves/{user_id}/*`.

use axum::Router;
use utoipa::OpenApi;

use crate::app::AppState;
use crate::blobs::Blobs;
use crate::config::Config;
use crate::db::Db;

#[derive(Clone)]
pub struct SavesService {}

impl SavesService {
    pub async fn new(_config: &Config, _db: &Db, _blobs: &Blobs) -> anyhow::Result<Self> {
        Ok(Self {})
    }
}

pub fn router(_config: &Config) -> Router<AppState> {
    Router::new()
}

#[derive(OpenApi)]
#[openapi()]
pub struct SavesApi;
