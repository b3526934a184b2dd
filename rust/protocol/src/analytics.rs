//! Analytics: `/api/v1/analytics/*`. Opt-in: a player's events are accepted only after the
//! player consented (`PUT /api/v1/analytics/consent`).

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// Most events in one `POST /api/v1/analytics/events`.
pub const MAX_EVENTS_PER_BATCH: usize = 500;
/// Most properties of one event.
pub const MAX_PROPERTIES: usize = 64;
/// Largest serialized `properties` of one event, in bytes.
pub const MAX_PROPERTIES_BYTES: usize = 8 * 1024;
/// Deepest nesting of objects/arrays inside `properties` (a flat object is depth 1).
pub const MAX_PROPERTIES_DEPTH: usize = 4;
/// Event and property names: 1 to 64 of these characters.
pub const NAME_PATTERN: &str = r"^[A-Za-z0-9_][A-Za-z0-9_.:-]{0,63}$";
/// Event ids: what a UUID's text form uses (the SDK sends UUID v7).
pub const EVENT_ID_PATTERN: &str = r"^[A-Za-z0-9-]{8,64}$";
/// Latest accepted client time (unix milliseconds): year 2100. Earlier than 0 is refused too.
pub const MAX_CLIENT_TIME_MS: i64 = 4_102_444_800_000;

/// `PUT /api/v1/analytics/consent`: the player agrees to analytics.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ConsentRequest {
    /// The player said they are under 13 (COPPA): their events are stored without any
    /// identifier and their user properties are not stored.
    #[serde(default)]
    pub under_13: bool,
}

/// A player's analytics consent as the server stores it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Consent {
    pub granted: bool,
    pub under_13: bool,
    /// Unix milliseconds of the last grant or revocation; `null` when the player never answered.
    pub updated_at: Option<i64>,
}

/// `GET`/`PUT /api/v1/analytics/settings` (server key): the project's analytics settings.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct AnalyticsSettings {
    /// The whole game is directed at children (COPPA): every player is treated as `under_13`.
    pub coppa: bool,
}

/// What an event records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    /// `track_event`: a named occurrence with properties.
    Event,
    /// `track_metric`: a named number (`value` required).
    Metric,
    /// `track_screen`: the player opened the screen `name`.
    Screen,
    /// `set_user_property`: the player's property `name` is now `properties.value` (the SDK
    /// sends `{"value": …}`; the server keeps the newest properties per player and name).
    UserProperty,
}

impl EventKind {
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::Event => "event",
            EventKind::Metric => "metric",
            EventKind::Screen => "screen",
            EventKind::UserProperty => "user_property",
        }
    }
}

/// One recorded event, as the SDK queues and uploads it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct AnalyticsEvent {
    /// Unique per event (UUID v7 from the SDK): a re-sent event is ingested once.
    #[cfg_attr(feature = "openapi", schema(pattern = r"^[A-Za-z0-9-]{8,64}$"))]
    pub id: String,
    pub kind: EventKind,
    #[cfg_attr(
        feature = "openapi",
        schema(pattern = r"^[A-Za-z0-9_][A-Za-z0-9_.:-]{0,63}$")
    )]
    pub name: String,
    /// Any JSON object: at most 64 members per object or array, 4 levels of nesting in all,
    /// 8 KiB serialized. (The server's OpenAPI document states the bounds: see
    /// `analytics::ingest::properties_schema` there.)
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(value_type = Object))]
    pub properties: Map<String, Value>,
    /// The number a `metric` records; other kinds may carry one too. A metric without one is
    /// stored and counted, and left out of value statistics.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<f64>,
    /// The SDK's session (one per game launch).
    #[cfg_attr(feature = "openapi", schema(pattern = r"^[A-Za-z0-9-]{8,64}$"))]
    pub session_id: String,
    /// Position of the event in its session, from 0.
    #[serde(deserialize_with = "crate::int::i64")]
    #[cfg_attr(feature = "openapi", schema(minimum = 0))]
    pub seq: i64,
    /// Unix milliseconds on the player's clock when the event happened.
    #[serde(deserialize_with = "crate::int::i64")]
    #[cfg_attr(
        feature = "openapi",
        schema(minimum = 0, maximum = 4_102_444_800_000_i64)
    )]
    pub client_time: i64,
}

/// `POST /api/v1/analytics/events`: a batch of events (the body may be zstd-compressed).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct IngestRequest {
    /// Unix milliseconds on the player's clock when the batch was sent: the server corrects
    /// every event's time by the difference to its own clock.
    #[serde(deserialize_with = "crate::int::i64")]
    #[cfg_attr(
        feature = "openapi",
        schema(minimum = 0, maximum = 4_102_444_800_000_i64)
    )]
    pub sent_at: i64,
    #[cfg_attr(feature = "openapi", schema(min_items = 1, max_items = 500))]
    pub events: Vec<AnalyticsEvent>,
}

/// The answer to an ingestion.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct IngestResponse {
    /// Events stored by this request.
    pub accepted: i64,
    /// Events already stored before (a re-sent batch): ignored.
    pub duplicates: i64,
}

/// One day of `GET /api/v1/analytics/query/active`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ActiveDay {
    /// UTC day as `YYYY-MM-DD`.
    pub day: String,
    /// Distinct identified players with an event that day.
    pub dau: i64,
    /// Distinct players over the 7 days ending that day.
    pub wau: i64,
    /// Distinct players over the 30 days ending that day.
    pub mau: i64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ActiveResponse {
    pub days: Vec<ActiveDay>,
}

/// One arm of an experiment.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Variant {
    #[cfg_attr(
        feature = "openapi",
        schema(pattern = r"^[A-Za-z0-9_][A-Za-z0-9_.:-]{0,63}$")
    )]
    pub name: String,
    /// Relative share of players (a variant of weight 2 gets twice the players of weight 1).
    #[serde(deserialize_with = "crate::int::i64")]
    #[cfg_attr(feature = "openapi", schema(minimum = 1, maximum = 10000))]
    pub weight: i64,
}

/// Which players an experiment includes; an empty list does not restrict.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Targeting {
    /// Platforms (as the SDK reports them, e.g. `android`, `windows`).
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(max_items = 32))]
    pub platforms: Vec<String>,
    /// Game builds (versions).
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(max_items = 32))]
    pub builds: Vec<String>,
    /// User properties the player must have, with exactly these JSON values.
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(value_type = Object))]
    pub user_properties: Map<String, Value>,
}

/// `PUT /api/v1/analytics/experiments/{key}` (server key).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ExperimentDefinition {
    #[cfg_attr(feature = "openapi", schema(min_items = 1, max_items = 16))]
    pub variants: Vec<Variant>,
    #[serde(default)]
    pub targeting: Targeting,
    /// Players are assigned only while it runs; stopping keeps the definition.
    pub running: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Experiment {
    pub key: String,
    #[serde(flatten)]
    pub definition: ExperimentDefinition,
    pub updated_at: i64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ExperimentList {
    pub experiments: Vec<Experiment>,
}

/// `PUT /api/v1/analytics/config/{key}` (server key): a remote config value.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ConfigValue {
    /// Any JSON value (the request body is at most 1 MiB).
    #[cfg_attr(feature = "openapi", schema(value_type = Value))]
    pub value: Value,
}

/// `GET /api/v1/analytics/assignments` (player): what the SDK caches.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Assignments {
    /// Running experiment key -> this player's variant (experiments the player is not targeted
    /// by are absent).
    pub variants: std::collections::BTreeMap<String, String>,
    /// Every remote config value of the project.
    #[cfg_attr(feature = "openapi", schema(value_type = Object))]
    pub config: Map<String, Value>,
}
