//! Analytics: `/api/v1/analytics/*`.
//!
//! Opt-in only: a player's events are stored only while their consent (stored here with its
//! time, revocable) is granted. COPPA players (`under_13`, or every player of a project whose
//! `coppa` setting is on) have their events stored without user or session id and their user
//! properties dropped.
//!
//! Experiments and remote config (`experiments`) are defined with the server key; players read
//! their deterministic assignments.
//!
//! Ingestion is idempotent by event id and group-committed (`store`); the rollups the queries
//! read (players per day, events per day and name, latest user properties) are maintained in the
//! same transaction.

mod consent;
mod experiments;
mod ingest;
mod query;
pub mod store;

use axum::routing::{get, post, put};
use axum::Router;
use utoipa::OpenApi;

use ingest::PropertiesSchema;

use crate::app::AppState;
use crate::db::Db;

#[derive(Clone, Debug)]
pub struct AnalyticsService {
    writer: store::EventWriter,
}

impl AnalyticsService {
    pub fn new(db: &Db) -> Self {
        Self {
            writer: store::EventWriter::start(db),
        }
    }
}

pub fn router() -> Router<AppState> {
    Router::new()
        .route(
            "/api/v1/analytics/consent",
            put(consent::grant_consent)
                .get(consent::get_consent)
                .delete(consent::revoke_consent),
        )
        .route(
            "/api/v1/analytics/settings",
            get(consent::get_settings).put(consent::put_settings),
        )
        .route("/api/v1/analytics/events", post(ingest::ingest))
        .route("/api/v1/analytics/query/active", get(query::active))
        .route(
            "/api/v1/analytics/experiments",
            get(experiments::list_experiments),
        )
        .route(
            "/api/v1/analytics/experiments/{key}",
            put(experiments::put_experiment).delete(experiments::delete_experiment),
        )
        .route(
            "/api/v1/analytics/config/{key}",
            put(experiments::put_config).delete(experiments::delete_config),
        )
        .route(
            "/api/v1/analytics/assignments",
            get(experiments::assignments),
        )
}

#[derive(OpenApi)]
#[openapi(
    paths(
        consent::get_consent,
        consent::grant_consent,
        consent::revoke_consent,
        consent::get_settings,
        consent::put_settings,
        ingest::ingest,
        query::active,
        experiments::put_experiment,
        experiments::list_experiments,
        experiments::delete_experiment,
        experiments::put_config,
        experiments::delete_config,
        experiments::assignments,
    ),
    components(schemas(
        aethex_protocol::analytics::ConsentRequest,
        aethex_protocol::analytics::Consent,
        aethex_protocol::analytics::AnalyticsSettings,
        aethex_protocol::analytics::EventKind,
        aethex_protocol::analytics::AnalyticsEvent,
        aethex_protocol::analytics::IngestRequest,
        aethex_protocol::analytics::IngestResponse,
        aethex_protocol::analytics::ActiveDay,
        aethex_protocol::analytics::ActiveResponse,
        aethex_protocol::analytics::Variant,
        aethex_protocol::analytics::Targeting,
        aethex_protocol::analytics::ExperimentDefinition,
        aethex_protocol::analytics::Experiment,
        aethex_protocol::analytics::ExperimentList,
        aethex_protocol::analytics::ConfigValue,
        aethex_protocol::analytics::Assignments,
    )),
    modifiers(&PropertiesSchema),
    tags((name = "analytics", description = "Opt-in events and metrics, consent, and the query API"))
)]
pub struct AnalyticsApi;
