//! `/api/v1/matchmaking/modes/*`: the rules of each game mode, set with the server key. The
//! tickets themselves travel on the realtime socket (`join_queue`, see [`crate::realtime`]).

use serde::{Deserialize, Serialize};

/// Most players one match may hold.
pub const MAX_MATCH_PLAYERS: u32 = 100;

/// `PUT /api/v1/matchmaking/modes/{mode}` (server key): the rules of one mode.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct MatchmakingModeConfig {
    /// Fewest players a match of this mode starts with (a party counts all its players).
    #[serde(deserialize_with = "crate::int::i64")]
    #[cfg_attr(feature = "openapi", schema(minimum = 1, maximum = 100))]
    pub min_players: i64,
    /// Most players a match holds; at least `min_players` (409 otherwise).
    #[serde(deserialize_with = "crate::int::i64")]
    #[cfg_attr(feature = "openapi", schema(minimum = 1, maximum = 100))]
    pub max_players: i64,
    /// Seconds a ticket waits for a match before `matchmaking_timeout` ends it.
    #[serde(deserialize_with = "crate::int::i64")]
    #[cfg_attr(feature = "openapi", schema(minimum = 1, maximum = 86400))]
    pub timeout_secs: i64,
    /// Skill points each side of a ticket's range widens by per second of waiting.
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(minimum = 0, maximum = 1000000000))]
    pub widen_per_sec: f64,
    /// Largest widening of each side.
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(minimum = 0, maximum = 1000000000))]
    pub max_widen: f64,
    /// Tick rate of the rooms matches of this mode get (see `RoomProperties::tick_rate`); at most
    /// the server's `realtime.max_tick_rate` (409 otherwise).
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "crate::int::option_i64"
    )]
    #[cfg_attr(feature = "openapi", schema(minimum = 1, maximum = 1000))]
    pub tick_rate: Option<i64>,
    /// Metadata of the rooms matches of this mode get (a JSON object, at most 4 KiB).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<Object>))]
    pub metadata: Option<serde_json::Value>,
}

/// A configured mode.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct MatchmakingMode {
    pub mode: String,
    #[serde(flatten)]
    pub config: MatchmakingModeConfig,
}

/// `GET /api/v1/matchmaking/modes`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct MatchmakingModeList {
    /// Configured modes by name; any other mode uses the server's `[matchmaking]` defaults.
    pub modes: Vec<MatchmakingMode>,
}
