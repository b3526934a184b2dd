//! Assembles the server: storage, shared state, every service's routes and the common layers.

use std::net::SocketAddr;
use std::ops::Deref;
use std::sync::{Arc, OnceLock};

use axum::extract::{DefaultBodyLimit, State};
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{middleware, Json, Router};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use tokio::net::TcpListener;
use tower_http::compression::CompressionLayer;
use tower_http::trace::TraceLayer;

use crate::blobs::Blobs;
use crate::clock::{Clock, SystemClock};
use crate::cluster::Cluster;
use crate::config::Config;
use crate::db::Db;
use crate::projects::{CreatedProject, Projects, DEFAULT_PROJECT};
use crate::tokens::TokenKeys;
use crate::{analytics, auth, chat, http, openapi, realtime, saves, social};

/// Largest request body outside endpoints that set their own limit.
const DEFAULT_BODY_LIMIT: usize = 1024 * 1024;

pub struct AppInner {
    pub config: Config,
    pub db: Db,
    pub blobs: Blobs,
    pub projects: Projects,
    pub tokens: TokenKeys,
    pub clock: Arc<dyn Clock>,
    pub auth: auth::AuthService,
    pub saves: saves::SavesService,
    pub social: social::SocialService,
    pub realtime: realtime::RealtimeService,
    /// Set when this node is one of several (`--nats-url`).
    pub cluster: Option<Arc<Cluster>>,
    pub chat: chat::ChatService,
    pub analytics: analytics::AnalyticsService,
}

/// Shared by every handler; cloning is one `Arc` increment.
#[derive(Clone)]
pub struct AppState(pub Arc<AppInner>);

impl Deref for AppState {
    type Target = AppInner;
    fn deref(&self) -> &AppInner {
        &self.0
    }
}

/// A built server: state plus router, not yet listening.
pub struct Server {
    pub state: AppState,
    pub router: Router,
    /// Set when this start created the `default` project (first start).
    pub created_default_project: Option<CreatedProject>,
}

impl Server {
    pub async fn build(config: Config) -> anyhow::Result<Self> {
        Self::build_with_clock(config, Arc::new(SystemClock)).await
    }

    pub async fn build_with_clock(config: Config, clock: Arc<dyn Clock>) -> anyhow::Result<Self> {
        crate::data_files::secure_data_dir(&config.data_dir)?;
        let db = Db::connect_with(&config.database_url(), &config.database).await?;
        let blobs = Blobs::open(&config.blob_store_url())?;
        let projects = Projects::new(db.clone());
        let created_default_project = ensure_default_project(&config, &projects, &*clock).await?;
        let tokens =
            TokenKeys::load_or_create(db.clone(), config.auth.issuer.clone(), clock.now_ms())
                .await?;
        let auth = auth::AuthService::new(&config, &db).await?;
        let saves = saves::SavesService::new(&config, &db, &blobs).await?;
        let cluster = Cluster::connect(&config.cluster).await?;
        let social = social::SocialService::new(&db, clock.as_ref(), cluster.clone()).await?;
        let chat = chat::ChatService::new(&config.chat);
        let analytics = analytics::AnalyticsService::new(&db);
        let state = AppState(Arc::new(AppInner {
            config,
            db,
            blobs,
            projects,
            tokens,
            clock,
            auth,
            saves,
            social,
            realtime: realtime::RealtimeService::default(),
            cluster,
            chat,
            analytics,
        }));
        realtime::presence::Presence::start(&state);
        if let Some(cluster) = &state.cluster {
            state.realtime.users.attach_cluster(cluster.clone());
            cluster.start(&state);
        }
        let router = router(state.clone());
        realtime::matchmaking::spawn(&state);
        Ok(Self {
            state,
            router,
            created_default_project,
        })
    }

    /// Serves until `shutdown` resolves.
    pub async fn serve(
        self,
        listener: TcpListener,
        shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        use axum::serve::ListenerExt;
        // Without TCP_NODELAY a small realtime frame written right after another waits for the
        // client's delayed ACK (~40 ms on Linux): Nagle's algorithm.
        let listener = listener.tap_io(|stream| {
            if let Err(e) = stream.set_nodelay(true) {
                tracing::debug!(error = %e, "cannot set TCP_NODELAY");
            }
        });
        let cluster = self.state.cluster.clone();
        let served = axum::serve(
            listener,
            self.router
                .into_make_service_with_connect_info::<SocketAddr>(),
        )
        .with_graceful_shutdown(shutdown)
        .await;
        if let Some(cluster) = cluster {
            // The other nodes drop this node's players now rather than after the timeout.
            cluster.shutdown().await;
        }
        served
    }
}

/// Creates project `default` on first start and writes its keys into the data dir.
async fn ensure_default_project(
    config: &Config,
    projects: &Projects,
    clock: &dyn Clock,
) -> anyhow::Result<Option<CreatedProject>> {
    if projects.by_name(DEFAULT_PROJECT).await?.is_some() {
        return Ok(None);
    }
    let created = projects.create(DEFAULT_PROJECT, clock.now_ms()).await?;
    write_secret_file(
        &config.data_dir.join("default-project-key"),
        &created.client_key,
    )?;
    write_secret_file(
        &config.data_dir.join("default-server-key"),
        &created.server_key,
    )?;
    Ok(Some(created))
}

fn write_secret_file(path: &std::path::Path, contents: &str) -> std::io::Result<()> {
    crate::data_files::write_secret(path, &format!("{contents}\n"))
}

fn prometheus() -> &'static PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE.get_or_init(|| {
        let recorder = PrometheusBuilder::new().build_recorder();
        let handle = recorder.handle();
        // Several servers in one test process share the process-wide recorder.
        let _ = metrics::set_global_recorder(recorder);
        handle
    })
}

fn router(state: AppState) -> Router {
    prometheus();
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics_text))
        .route("/.well-known/jwks.json", get(jwks))
        .route("/api/v1/openapi.json", get(openapi_json))
        .merge(auth::router())
        .merge(saves::router(&state.config))
        .merge(social::router())
        .merge(realtime::router())
        .merge(chat::router())
        .merge(analytics::router())
        .fallback(http::not_found_fallback)
        .layer(middleware::from_fn(http::record_metrics))
        .layer(DefaultBodyLimit::max(DEFAULT_BODY_LIMIT))
        .layer(middleware::from_fn_with_state(
            DEFAULT_BODY_LIMIT.max(saves::write_body_limit(&state.config)),
            http::decompress_request,
        ))
        .layer(middleware::from_fn(http::reject_nul_in_url))
        .layer(middleware::from_fn(http::json_errors))
        .layer(CompressionLayer::new())
        .layer(middleware::from_fn(http::drain_unread_body))
        .layer(TraceLayer::new_for_http().make_span_with(request_span))
        .with_state(state)
}

/// The trace span of a request names its method and path only: a query may carry a credential
/// (`/api/v1/realtime?token=…` for clients that cannot set headers), and logs must not.
fn request_span(req: &axum::http::Request<axum::body::Body>) -> tracing::Span {
    tracing::debug_span!("request", method = %req.method(), path = %req.uri().path())
}

async fn healthz() -> &'static str {
    "ok"
}

async fn readyz(State(state): State<AppState>) -> impl IntoResponse {
    match sqlx::query("SELECT 1").execute(&state.db.read).await {
        Ok(_) => (StatusCode::OK, "ready"),
        Err(e) => {
            tracing::warn!(error = %e, "readiness check failed");
            (StatusCode::SERVICE_UNAVAILABLE, "database unavailable")
        }
    }
}

async fn metrics_text() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        prometheus().render(),
    )
}

async fn jwks(State(state): State<AppState>) -> Json<serde_json::Value> {
    Json(state.tokens.jwks())
}

async fn openapi_json() -> Json<utoipa::openapi::OpenApi> {
    Json(openapi::document())
}
