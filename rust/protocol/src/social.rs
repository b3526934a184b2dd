//! Social features: leaderboards (`/api/v1/leaderboards`), achievements (`/api/v1/achievements`),
//! player statistics (`/api/v1/stats`), friends (`/api/v1/friends`) and groups (`/api/v1/groups`).

use serde::{Deserialize, Serialize};
use serde_json::Value;

// ---------------------------------------------------------------------------------------------
// Leaderboards
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum SortOrder {
    /// Highest score ranks first.
    #[default]
    Desc,
    /// Lowest score ranks first (e.g. race times).
    Asc,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum ScoreOperator {
    /// Keep the player's best score (by the board's sort order).
    #[default]
    Best,
    /// Keep the last submitted score.
    Latest,
    /// Add the submitted value (may be negative) to the player's score.
    Increment,
    /// Add the submitted value, which must not be negative, to the player's score.
    Sum,
}

/// `PUT /api/v1/leaderboards/{id}` (server key): create or replace a board definition.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct LeaderboardDefinition {
    /// Required by `POST`; `PUT` takes it from the path (its body schema has no `id`).
    #[serde(default)]
    #[cfg_attr(
        feature = "openapi",
        schema(
            required = true,
            min_length = 1,
            max_length = 64,
            pattern = r"^[A-Za-z0-9_.-]+$"
        )
    )]
    pub id: String,
    #[serde(default)]
    pub sort_order: SortOrder,
    #[serde(default)]
    pub operator: ScoreOperator,
    /// `none`, `daily`, `weekly` (weeks start Monday 00:00 UTC), `monthly`, or a cron expression
    /// (5 fields, or 6 with seconds first; UTC) whose fire times start new periods. The schema's
    /// pattern covers numbers and `*`/`*/n` per field; the server takes any cron expression.
    #[serde(default = "default_reset")]
    #[cfg_attr(
        feature = "openapi",
        schema(
            pattern = r"^[ \t\r\n]*(|none|daily|weekly|monthly|((\*(/[1-7])?|[1-5]?[0-9]) )?(\*(/[1-7])?|[1-5]?[0-9]) (\*(/[1-7])?|1?[0-9]|2[0-3]) (\*(/[1-7])?|[1-9]|[12][0-9]|3[01]) (\*(/[1-7])?|[1-9]|1[0-2]) (\*(/[1-7])?|[1-7]))[ \t\r\n]*$"
        )
    )]
    pub reset: String,
    /// Submissions below this are rejected with 409.
    #[serde(default, deserialize_with = "crate::int::option_i64")]
    pub min_score: Option<i64>,
    /// Submissions above this are rejected with 409.
    #[serde(default, deserialize_with = "crate::int::option_i64")]
    pub max_score: Option<i64>,
    /// Scores only from a server key; players get 403.
    #[serde(default)]
    pub server_authoritative: bool,
    /// A player statistic feeding this board: updating the stat submits to it.
    #[serde(default)]
    #[cfg_attr(
        feature = "openapi",
        schema(min_length = 1, max_length = 64, pattern = r"^[A-Za-z0-9_.-]+$")
    )]
    pub stat: Option<String>,
}

fn default_reset() -> String {
    "none".to_owned()
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct LeaderboardList {
    pub leaderboards: Vec<LeaderboardDefinition>,
}

/// `POST /api/v1/leaderboards/{id}/scores`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct SubmitScoreRequest {
    #[serde(deserialize_with = "crate::int::i64")]
    pub score: i64,
    /// Stored with the entry and returned on reads (at most 4 KiB as JSON).
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<Object>))]
    pub metadata: Option<Value>,
    /// Server key only: whose score this is. Players always submit for themselves; naming
    /// someone else is a 403.
    #[serde(default)]
    pub user_id: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct LeaderboardEntry {
    /// 1-based, exact.
    pub rank: u64,
    pub user_id: String,
    pub username: String,
    pub score: i64,
    /// How many scores this player submitted in the period.
    pub num_scores: i64,
    #[cfg_attr(feature = "openapi", schema(value_type = Object))]
    pub metadata: Value,
    /// Unix ms when the current score was reached (ties rank the earlier first).
    pub updated_at: i64,
}

/// Answer to a submit: the caller's entry after the submission.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct SubmitScoreResponse {
    pub leaderboard_id: String,
    pub period: i64,
    pub entry: LeaderboardEntry,
}

/// `GET /api/v1/leaderboards/{id}?range=global|around_me|friends&limit=&cursor=&period=`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct LeaderboardPage {
    pub leaderboard_id: String,
    /// Start of the period read (unix ms; 0 for boards that never reset).
    pub period: i64,
    /// When the current period ends (unix ms); absent for boards that never reset.
    pub next_reset_at: Option<i64>,
    /// Entries in the whole period.
    pub total: u64,
    pub entries: Vec<LeaderboardEntry>,
    /// Pass as `cursor` to read the next page (global range only); absent on the last page.
    pub next_cursor: Option<String>,
    /// The caller's own entry, when the caller is a player with a score in this period.
    pub me: Option<LeaderboardEntry>,
}

// ---------------------------------------------------------------------------------------------
// Achievements and statistics
// ---------------------------------------------------------------------------------------------

/// `PUT /api/v1/achievements/{id}` (server key).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct AchievementDefinition {
    /// Required by `POST`; `PUT` takes it from the path (its body schema has no `id`).
    #[serde(default)]
    #[cfg_attr(
        feature = "openapi",
        schema(
            required = true,
            min_length = 1,
            max_length = 64,
            pattern = r"^[A-Za-z0-9_.-]+$"
        )
    )]
    pub id: String,
    #[cfg_attr(
        feature = "openapi",
        schema(
            min_length = 1,
            max_length = 128,
            pattern = r"^[^\x00]*[^\t-\r \u0085\u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000\x00][^\x00]*$"
        )
    )]
    pub name: String,
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(max_length = 1024))]
    pub description: String,
    #[serde(default)]
    pub icon_url: Option<String>,
    /// Listed to players only once they unlocked it.
    #[serde(default)]
    pub hidden: bool,
    /// Progress needed to unlock; 1 for plain unlock-once achievements.
    #[serde(default = "default_goal", deserialize_with = "crate::int::i64")]
    #[cfg_attr(feature = "openapi", schema(minimum = 1))]
    pub goal: i64,
    /// A statistic whose value is this achievement's progress.
    #[serde(default)]
    #[cfg_attr(
        feature = "openapi",
        schema(min_length = 1, max_length = 64, pattern = r"^[A-Za-z0-9_.-]+$")
    )]
    pub stat: Option<String>,
}

fn default_goal() -> i64 {
    1
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct PlayerAchievement {
    pub id: String,
    pub name: String,
    pub description: String,
    pub icon_url: Option<String>,
    pub hidden: bool,
    pub unlocked: bool,
    pub progress: i64,
    pub goal: i64,
    pub unlocked_at: Option<i64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct AchievementList {
    pub achievements: Vec<PlayerAchievement>,
}

/// `POST /api/v1/achievements/{id}/progress`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct SetProgressRequest {
    #[cfg_attr(feature = "openapi", schema(minimum = 0))]
    #[serde(deserialize_with = "crate::int::i64")]
    pub progress: i64,
    /// Server key only: whose progress this is.
    #[serde(default)]
    pub user_id: Option<String>,
}

/// Body of `POST /api/v1/achievements/{id}/unlock` (optional; server key names the user).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct UnlockRequest {
    #[serde(default)]
    pub user_id: Option<String>,
}

/// Answer of unlock and set_progress: the achievement's state and what this call unlocked.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct AchievementUpdate {
    pub achievement: PlayerAchievement,
    /// Ids this very call unlocked (empty when it was already unlocked): emit
    /// `achievement_unlocked` for each, exactly once.
    pub newly_unlocked: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct AchievementPercentage {
    pub id: String,
    pub unlocked_count: i64,
    /// 0 to 100, of all players of the project.
    pub percent: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct AchievementPercentages {
    pub total_players: i64,
    pub achievements: Vec<AchievementPercentage>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Stat {
    pub name: String,
    pub value: i64,
    pub updated_at: i64,
}

/// `POST /api/v1/stats/{user_id}`: set and/or increment several stats at once.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct UpdateStatsRequest {
    /// Name -> new value.
    #[serde(default, deserialize_with = "crate::int::map_i64")]
    #[cfg_attr(feature = "openapi", schema(schema_with = stat_map_schema))]
    pub set: std::collections::BTreeMap<String, i64>,
    /// Name -> amount added (may be negative).
    #[serde(default, deserialize_with = "crate::int::map_i64")]
    #[cfg_attr(feature = "openapi", schema(schema_with = stat_map_schema))]
    pub increment: std::collections::BTreeMap<String, i64>,
}

/// Stat name -> value: up to 50 stats named like other ids.
#[cfg(feature = "openapi")]
fn stat_map_schema() -> utoipa::openapi::Object {
    use utoipa::openapi::schema::{ObjectBuilder, SchemaFormat, Type};
    use utoipa::openapi::KnownFormat;
    ObjectBuilder::new()
        .property_names(Some(
            ObjectBuilder::new()
                .schema_type(Type::String)
                .min_length(Some(1))
                .max_length(Some(64))
                .pattern(Some(r"^[A-Za-z0-9_.-]+$")),
        ))
        .additional_properties(Some(
            ObjectBuilder::new()
                .schema_type(Type::Integer)
                .format(Some(SchemaFormat::KnownFormat(KnownFormat::Int64))),
        ))
        .max_properties(Some(50))
        .build()
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct StatsResponse {
    pub stats: Vec<Stat>,
    /// Achievements this call unlocked through stat-driven progress.
    #[serde(default)]
    pub newly_unlocked: Vec<String>,
}

// ---------------------------------------------------------------------------------------------
// Friends
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum FriendState {
    Friend,
    /// The caller sent a request the other has not answered.
    Sent,
    /// The other sent the caller a request.
    Received,
    /// The caller blocked the other.
    Blocked,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum Presence {
    Online,
    Offline,
    InMatch,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Friend {
    pub user_id: String,
    pub username: String,
    pub state: FriendState,
    pub presence: Presence,
    /// Unix ms of the player's last request or heartbeat seen by this node.
    pub last_seen: Option<i64>,
    pub since: i64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct FriendList {
    pub friends: Vec<Friend>,
}

/// Answer of a friend action: the relationship as the caller now sees it (`None`: none left).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct FriendStatus {
    pub user_id: String,
    pub state: Option<FriendState>,
}

/// `POST /api/v1/friends/heartbeat`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct HeartbeatRequest {
    #[serde(default)]
    pub in_match: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct PlayerSummary {
    pub user_id: String,
    pub username: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct PlayerSearchPage {
    pub players: Vec<PlayerSummary>,
    pub next_cursor: Option<String>,
}

// ---------------------------------------------------------------------------------------------
// Groups
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum GroupRole {
    /// Asked to join a closed group; an admin accepts.
    Requested,
    /// Invited by an admin; joining accepts.
    Invited,
    Member,
    Admin,
    Owner,
}

/// `POST /api/v1/groups`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct CreateGroupRequest {
    /// 3 to 64 characters once leading and trailing whitespace is trimmed. The pattern spells
    /// out Unicode White_Space (what Rust's `trim` removes): `\s` means other sets in other regex
    /// dialects, and clients validate with those.
    #[cfg_attr(
        feature = "openapi",
        schema(
            pattern = r"^[\t-\r \u0085\u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]*[^\t-\r \u0085\u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000\x00][^\x00]{1,62}[^\t-\r \u0085\u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000\x00][\t-\r \u0085\u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]*$"
        )
    )]
    pub name: String,
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(max_length = 1024))]
    pub description: String,
    /// Anyone may join an open group; a closed one needs an accepted request or an invite.
    #[serde(default = "default_true")]
    pub open: bool,
    #[serde(default = "default_max_members", deserialize_with = "crate::int::i64")]
    #[cfg_attr(feature = "openapi", schema(minimum = 1, maximum = 10000))]
    pub max_members: i64,
}

fn default_true() -> bool {
    true
}

fn default_max_members() -> i64 {
    100
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Group {
    pub id: String,
    pub name: String,
    pub description: String,
    pub open: bool,
    pub max_members: i64,
    pub member_count: i64,
    pub created_at: i64,
    /// The caller's role, when a member (or invited/requested).
    pub my_role: Option<GroupRole>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct GroupList {
    pub groups: Vec<Group>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct GroupMember {
    pub user_id: String,
    pub username: String,
    pub role: GroupRole,
    pub since: i64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct GroupMembers {
    pub members: Vec<GroupMember>,
}

/// `POST /api/v1/groups/{id}/invite`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct GroupInviteRequest {
    pub user_id: String,
}
