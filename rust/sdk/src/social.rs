//! `Social`: leaderboards, achievements, player statistics, friends and groups
//! (`/api/v1/leaderboards`, `/achievements`, `/stats`, `/friends`, `/groups`; docs/api/social.md).
//!
//! Every call returns a [`RequestId`] at once and goes through the session's `authed` path (token
//! refresh, typed errors, retries for requests that are safe to repeat). Answers are parsed into
//! the protocol types (so a server that drifts from the contract is an error, not a half-filled
//! Dictionary) and handed over as `Value` dictionaries whose list comes first, because the
//! binding's result object iterates the payload's first list (`entries`, `achievements`, ...).
//!
//! Signals (service names as the binding registers its objects):
//! - `social.leaderboards` `score_submitted(board: String, entry: Dictionary)`
//! - `social.achievements` `achievement_unlocked(achievement: Dictionary)`: once per achievement,
//!   in the one call the server reports it newly unlocked (unlock, set_progress or a stat update)
//! - `social.friends` `friends_updated(status: Dictionary {user_id, state})` after each change the
//!   caller makes. The server cannot push yet, so changes made by others are seen on `list`.

use std::collections::BTreeMap;
use std::sync::Arc;

use aethex_protocol::social::{
    AchievementList, AchievementPercentages, AchievementUpdate, CreateGroupRequest, FriendList,
    FriendStatus, Group, GroupInviteRequest, GroupList, GroupMember, GroupMembers,
    HeartbeatRequest, LeaderboardEntry, LeaderboardList, LeaderboardPage, PlayerAchievement,
    PlayerSearchPage, SetProgressRequest, StatsResponse, SubmitScoreRequest, SubmitScoreResponse,
    UnlockRequest, UpdateStatsRequest,
};
use aethex_protocol::ErrorCode;
use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use reqwest::Method;
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::client::Shared;
use crate::codec::{from_json, plain_from_json, to_json};
use crate::http::Request;
use crate::{RequestId, SdkError, Value};

const LEADERBOARDS: &str = "social.leaderboards";
const ACHIEVEMENTS: &str = "social.achievements";
const FRIENDS: &str = "social.friends";

/// Everything but RFC 3986 unreserved characters is escaped in path segments and query values.
const COMPONENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

fn escape(text: &str) -> String {
    utf8_percent_encode(text, COMPONENT).to_string()
}

fn invalid(message: impl Into<String>) -> SdkError {
    SdkError::new(ErrorCode::InvalidRequest, message)
}

/// Reached as `client.social()`; hands out the five services.
#[derive(Clone)]
pub struct Social {
    leaderboards: Leaderboards,
    achievements: Achievements,
    stats: Stats,
    friends: Friends,
    groups: Groups,
}

impl Social {
    pub(crate) fn new(shared: Arc<Shared>) -> Self {
        Self {
            leaderboards: Leaderboards {
                shared: shared.clone(),
            },
            achievements: Achievements {
                shared: shared.clone(),
            },
            stats: Stats {
                shared: shared.clone(),
            },
            friends: Friends {
                shared: shared.clone(),
            },
            groups: Groups { shared },
        }
    }

    pub fn leaderboards(&self) -> &Leaderboards {
        &self.leaderboards
    }

    pub fn achievements(&self) -> &Achievements {
        &self.achievements
    }

    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    pub fn friends(&self) -> &Friends {
        &self.friends
    }

    pub fn groups(&self) -> &Groups {
        &self.groups
    }
}

// ---------------------------------------------------------------------------------------------
// Plumbing shared by the services
// ---------------------------------------------------------------------------------------------

/// Sends with the session and parses the answer as `T` (an empty 204 body reads as `{}`).
async fn fetch<T: DeserializeOwned>(
    shared: &Arc<Shared>,
    build: impl Fn() -> Request,
) -> Result<T, SdkError> {
    let reply = shared.authed(build).await?;
    if reply.body.is_empty() {
        return serde_json::from_value(serde_json::json!({})).map_err(|e| {
            SdkError::new(
                ErrorCode::Internal,
                format!("unexpected empty answer from the server: {e}"),
            )
        });
    }
    reply.json()
}

/// An empty answer (204) for calls whose result is `{}`.
#[derive(serde::Deserialize)]
struct Empty {}

fn empty() -> Value {
    Value::Dictionary(Vec::new())
}

/// A protocol value as a Dictionary with `list` (when given) moved to the front.
fn payload<T: Serialize>(answer: &T, list: Option<&str>) -> Value {
    let mut value = plain_from_json(&serde_json::to_value(answer).expect("answers serialize"));
    if let (Some(list), Value::Dictionary(pairs)) = (list, &mut value) {
        if let Some(at) = pairs
            .iter()
            .position(|(k, _)| matches!(k, Value::String(s) if s == list))
        {
            let pair = pairs.remove(at);
            pairs.insert(0, pair);
        }
    }
    value
}

/// Metadata went up in the tagged encoding (so Vector2, Color... come back typed); anything
/// else (e.g. written by a server tool) is read as plain JSON.
fn metadata_value(json: &serde_json::Value) -> Value {
    from_json(json).unwrap_or_else(|_| plain_from_json(json))
}

fn set_key(value: &mut Value, key: &str, new: Value) {
    if let Value::Dictionary(pairs) = value {
        match pairs
            .iter_mut()
            .find(|(k, _)| matches!(k, Value::String(s) if s == key))
        {
            Some((_, v)) => *v = new,
            None => pairs.push((Value::String(key.to_owned()), new)),
        }
    }
}

fn entry_value(entry: &LeaderboardEntry) -> Value {
    let mut value = payload(entry, None);
    set_key(&mut value, "metadata", metadata_value(&entry.metadata));
    value
}

fn text(value: &Value) -> Option<&str> {
    match value {
        Value::String(s) | Value::StringName(s) => Some(s),
        _ => None,
    }
}

fn integer(value: &Value) -> Option<i64> {
    match value {
        Value::Int(i) => Some(*i),
        Value::Float(f) if f.fract() == 0.0 && f.abs() < 9.0e15 => Some(*f as i64),
        _ => None,
    }
}

/// The entries of an options Dictionary (`Nil` means none), keys checked against `allowed` so
/// a typo is an error instead of a silently ignored option.
fn options<'a>(
    value: &'a Value,
    allowed: &[&str],
    call: &str,
) -> Result<Vec<(&'a str, &'a Value)>, SdkError> {
    let pairs = match value {
        Value::Nil => return Ok(Vec::new()),
        Value::Dictionary(pairs) => pairs,
        _ => return Err(invalid(format!("{call}: options must be a Dictionary"))),
    };
    pairs
        .iter()
        .map(|(k, v)| match text(k) {
            Some(key) if allowed.contains(&key) => Ok((key, v)),
            _ => Err(invalid(format!(
                "{call}: unknown option {} (expected one of {})",
                text(k).map_or_else(|| format!("{k:?}"), |key| format!("`{key}`")),
                allowed.join(", ")
            ))),
        })
        .collect()
}

fn query_string(params: &[(&str, String)]) -> String {
    let joined: Vec<String> = params
        .iter()
        .map(|(k, v)| format!("{k}={}", escape(v)))
        .collect();
    if joined.is_empty() {
        String::new()
    } else {
        format!("?{}", joined.join("&"))
    }
}

// ---------------------------------------------------------------------------------------------
// Leaderboards
// ---------------------------------------------------------------------------------------------

#[derive(Clone)]
pub struct Leaderboards {
    shared: Arc<Shared>,
}

impl Leaderboards {
    /// Submits `score` for the signed-in player. Result `{leaderboard_id, period, entry}` where
    /// `entry` is `{rank, user_id, username, score, num_scores, metadata, updated_at}` after the
    /// submission; emits `score_submitted(board, entry)`. Not retried: on `increment`/`sum`
    /// boards a repeat would count twice.
    pub fn submit_score(&self, board: String, score: i64, metadata: Option<Value>) -> RequestId {
        self.shared.spawn_call(move |shared| async move {
            let body = SubmitScoreRequest {
                score,
                metadata: metadata.filter(|m| *m != Value::Nil).map(|m| to_json(&m)),
                user_id: None,
            };
            let path = format!("/api/v1/leaderboards/{}/scores", escape(&board));
            let answer: SubmitScoreResponse = fetch(&shared, || {
                Request::new(Method::POST, path.clone())
                    .json(&body)
                    .no_retry()
            })
            .await?;
            let entry = entry_value(&answer.entry);
            shared.emit(
                LEADERBOARDS,
                "score_submitted",
                vec![Value::String(board), entry.clone()],
            );
            Ok(Value::dict([
                ("leaderboard_id", Value::String(answer.leaderboard_id)),
                ("period", Value::Int(answer.period)),
                ("entry", entry),
            ]))
        })
    }

    /// Reads a page. `options` (Dictionary or Nil): `range` (`"global"` default, `"around_me"`,
    /// `"friends"`), `limit`, `cursor` (a previous page's `next_cursor`), `period` (`"current"`,
    /// `"previous"` or a period start in unix ms). Result `{entries: [...], leaderboard_id,
    /// period, next_reset_at, total, next_cursor, me}`.
    pub fn get(&self, board: String, options: Value) -> RequestId {
        self.shared.spawn_call(move |shared| async move {
            let query = page_query(&options)?;
            let path = format!("/api/v1/leaderboards/{}{query}", escape(&board));
            let page: LeaderboardPage =
                fetch(&shared, || Request::new(Method::GET, path.clone())).await?;
            Ok(page_value(&page))
        })
    }

    /// One player's entry and exact rank (`user_id` None: the caller). `period` as in [`get`].
    /// Result: the entry Dictionary; `not_found` when the player has no score in the period.
    ///
    /// [`get`]: Leaderboards::get
    pub fn get_rank(
        &self,
        board: String,
        user_id: Option<String>,
        period: Option<String>,
    ) -> RequestId {
        self.shared.spawn_call(move |shared| async move {
            let who = user_id.unwrap_or_else(|| "me".to_owned());
            let query = match period {
                Some(p) => query_string(&[("period", p)]),
                None => String::new(),
            };
            let path = format!(
                "/api/v1/leaderboards/{}/ranks/{}{query}",
                escape(&board),
                escape(&who)
            );
            let entry: LeaderboardEntry =
                fetch(&shared, || Request::new(Method::GET, path.clone())).await?;
            Ok(entry_value(&entry))
        })
    }

    /// The project's board definitions. Result `{leaderboards: [{id, sort_order, operator,
    /// reset, min_score, max_score, server_authoritative, stat}]}`.
    pub fn list(&self) -> RequestId {
        self.shared.spawn_call(move |shared| async move {
            let list: LeaderboardList = fetch(&shared, || {
                Request::new(Method::GET, "/api/v1/leaderboards")
            })
            .await?;
            Ok(payload(&list, Some("leaderboards")))
        })
    }
}

fn page_query(options_value: &Value) -> Result<String, SdkError> {
    let mut params = Vec::new();
    for (key, value) in options(
        options_value,
        &["range", "limit", "cursor", "period"],
        "leaderboards.get",
    )? {
        let rendered = match (key, value) {
            ("limit", v) => integer(v).map(|i| i.to_string()),
            ("period", v) => text(v)
                .map(str::to_owned)
                .or_else(|| integer(v).map(|i| i.to_string())),
            (_, v) => text(v).map(str::to_owned),
        };
        let rendered = rendered.ok_or_else(|| {
            invalid(format!(
                "leaderboards.get: option `{key}` has the wrong type ({value:?})"
            ))
        })?;
        params.push((key, rendered));
    }
    Ok(query_string(&params))
}

fn page_value(page: &LeaderboardPage) -> Value {
    Value::dict([
        (
            "entries",
            Value::Array(page.entries.iter().map(entry_value).collect()),
        ),
        ("leaderboard_id", Value::String(page.leaderboard_id.clone())),
        ("period", Value::Int(page.period)),
        (
            "next_reset_at",
            page.next_reset_at.map_or(Value::Nil, Value::Int),
        ),
        ("total", Value::Int(page.total as i64)),
        (
            "next_cursor",
            page.next_cursor.clone().map_or(Value::Nil, Value::String),
        ),
        ("me", page.me.as_ref().map_or(Value::Nil, entry_value)),
    ])
}

// ---------------------------------------------------------------------------------------------
// Achievements
// ---------------------------------------------------------------------------------------------

#[derive(Clone)]
pub struct Achievements {
    shared: Arc<Shared>,
}

impl Achievements {
    /// Unlocks `id`. Result `{achievement: {...}, newly_unlocked: [ids]}`; emits
    /// `achievement_unlocked(achievement)` when this call unlocked it.
    pub fn unlock(&self, id: String) -> RequestId {
        self.shared.spawn_call(move |shared| async move {
            let path = format!("/api/v1/achievements/{}/unlock", escape(&id));
            let body = UnlockRequest::default();
            let update: AchievementUpdate = fetch(&shared, || {
                Request::new(Method::POST, path.clone()).json(&body)
            })
            .await?;
            Ok(announce_update(&shared, update).await)
        })
    }

    /// Raises the progress of `id` to `progress` (monotonic, capped at the goal; reaching the
    /// goal unlocks). Result and signal as [`unlock`](Achievements::unlock).
    pub fn set_progress(&self, id: String, progress: i64) -> RequestId {
        self.shared.spawn_call(move |shared| async move {
            let path = format!("/api/v1/achievements/{}/progress", escape(&id));
            let body = SetProgressRequest {
                progress,
                user_id: None,
            };
            let update: AchievementUpdate = fetch(&shared, || {
                Request::new(Method::POST, path.clone()).json(&body)
            })
            .await?;
            Ok(announce_update(&shared, update).await)
        })
    }

    /// Every achievement the player can see (hidden ones once unlocked). Result
    /// `{achievements: [{id, name, description, icon_url, hidden, unlocked, progress, goal,
    /// unlocked_at}]}`.
    pub fn get_all(&self) -> RequestId {
        self.shared.spawn_call(move |shared| async move {
            let list: AchievementList = fetch(&shared, || {
                Request::new(Method::GET, "/api/v1/achievements")
            })
            .await?;
            Ok(payload(&list, Some("achievements")))
        })
    }

    /// Global unlock rates. Result `{achievements: [{id, unlocked_count, percent}],
    /// total_players}`.
    pub fn get_percentages(&self) -> RequestId {
        self.shared.spawn_call(move |shared| async move {
            let list: AchievementPercentages = fetch(&shared, || {
                Request::new(Method::GET, "/api/v1/achievements/percentages")
            })
            .await?;
            Ok(payload(&list, Some("achievements")))
        })
    }
}

/// Emits `achievement_unlocked` for each id the server reports newly unlocked and answers the
/// update as a Dictionary.
async fn announce_update(shared: &Arc<Shared>, update: AchievementUpdate) -> Value {
    let known = [update.achievement.clone()];
    announce_unlocks(shared, &update.newly_unlocked, &known).await;
    payload(&update, None)
}

/// `achievement_unlocked(achievement)` once per id. Ids not in `known` (unlocked through a stat)
/// are described by one read of the list; if that read fails the signal still fires with what
/// is known for sure: `{id, unlocked: true}`.
async fn announce_unlocks(shared: &Arc<Shared>, ids: &[String], known: &[PlayerAchievement]) {
    if ids.is_empty() {
        return;
    }
    let mut described: BTreeMap<String, Value> = known
        .iter()
        .map(|a| (a.id.clone(), payload(a, None)))
        .collect();
    if ids.iter().any(|id| !described.contains_key(id)) {
        let list: Result<AchievementList, _> =
            fetch(shared, || Request::new(Method::GET, "/api/v1/achievements")).await;
        match list {
            Ok(list) => described.extend(
                list.achievements
                    .iter()
                    .map(|a| (a.id.clone(), payload(a, None))),
            ),
            Err(e) => tracing::warn!(error = %e, "could not describe newly unlocked achievements"),
        }
    }
    for id in ids {
        let achievement = described.get(id).cloned().unwrap_or_else(|| {
            Value::dict([
                ("id", Value::String(id.clone())),
                ("unlocked", Value::Bool(true)),
            ])
        });
        shared.emit(ACHIEVEMENTS, "achievement_unlocked", vec![achievement]);
    }
}

// ---------------------------------------------------------------------------------------------
// Stats
// ---------------------------------------------------------------------------------------------

#[derive(Clone)]
pub struct Stats {
    shared: Arc<Shared>,
}

impl Stats {
    /// Sets stat `name` to `value`. Result as [`update`](Stats::update).
    pub fn set(&self, name: String, value: i64) -> RequestId {
        self.send(UpdateStatsRequest {
            set: BTreeMap::from([(name, value)]),
            increment: BTreeMap::new(),
        })
    }

    /// Adds `amount` (may be negative) to stat `name`. Result as [`update`](Stats::update).
    pub fn increment(&self, name: String, amount: i64) -> RequestId {
        self.send(UpdateStatsRequest {
            set: BTreeMap::new(),
            increment: BTreeMap::from([(name, amount)]),
        })
    }

    /// Sets and increments several stats in one request: `set` and `increment` are Dictionaries
    /// name -> int (or Nil). Result `{stats: [{name, value, updated_at}], values: {name: value},
    /// newly_unlocked: [ids]}` for the changed stats; emits `achievement_unlocked` for
    /// achievements the change unlocked.
    pub fn update(&self, set: Value, increment: Value) -> RequestId {
        let request = stat_map(&set, "set").and_then(|set| {
            Ok(UpdateStatsRequest {
                set,
                increment: stat_map(&increment, "increment")?,
            })
        });
        match request {
            Ok(request) => self.send(request),
            Err(e) => self.shared.spawn_call(move |_| async move { Err(e) }),
        }
    }

    /// The player's stats. Result as [`update`](Stats::update) (`newly_unlocked` empty).
    pub fn get(&self) -> RequestId {
        self.shared.spawn_call(move |shared| async move {
            let answer: StatsResponse =
                fetch(&shared, || Request::new(Method::GET, "/api/v1/stats/me")).await?;
            Ok(stats_value(&answer))
        })
    }

    fn send(&self, request: UpdateStatsRequest) -> RequestId {
        self.shared.spawn_call(move |shared| async move {
            // Setting is idempotent; incrementing twice would count twice.
            let repeatable = request.increment.is_empty();
            let answer: StatsResponse = fetch(&shared, || {
                let r = Request::new(Method::POST, "/api/v1/stats/me").json(&request);
                if repeatable {
                    r
                } else {
                    r.no_retry()
                }
            })
            .await?;
            announce_unlocks(&shared, &answer.newly_unlocked, &[]).await;
            Ok(stats_value(&answer))
        })
    }
}

fn stat_map(value: &Value, which: &str) -> Result<BTreeMap<String, i64>, SdkError> {
    let pairs = match value {
        Value::Nil => return Ok(BTreeMap::new()),
        Value::Dictionary(pairs) => pairs,
        _ => {
            return Err(invalid(format!(
                "stats.update: `{which}` must be a Dictionary"
            )))
        }
    };
    pairs
        .iter()
        .map(|(k, v)| match (text(k), integer(v)) {
            (Some(name), Some(amount)) => Ok((name.to_owned(), amount)),
            _ => Err(invalid(format!(
                "stats.update: `{which}` maps stat names to integers, got {k:?}: {v:?}"
            ))),
        })
        .collect()
}

fn stats_value(answer: &StatsResponse) -> Value {
    let mut value = payload(answer, Some("stats"));
    let values = answer
        .stats
        .iter()
        .map(|s| (s.name.clone(), Value::Int(s.value)));
    if let Value::Dictionary(pairs) = &mut value {
        pairs.insert(1, (Value::String("values".into()), Value::dict(values)));
    }
    value
}

// ---------------------------------------------------------------------------------------------
// Friends
// ---------------------------------------------------------------------------------------------

#[derive(Clone)]
pub struct Friends {
    shared: Arc<Shared>,
}

impl Friends {
    /// Sends a friend request (if they already asked, you become friends).
    pub fn send_request(&self, user_id: String) -> RequestId {
        self.act(user_id, "request")
    }

    /// Accepts a request received from `user_id`.
    pub fn accept(&self, user_id: String) -> RequestId {
        self.act(user_id, "accept")
    }

    /// Declines a request received from `user_id`.
    pub fn decline(&self, user_id: String) -> RequestId {
        self.act(user_id, "decline")
    }

    /// Withdraws a request sent to `user_id`.
    pub fn cancel(&self, user_id: String) -> RequestId {
        self.act(user_id, "cancel")
    }

    /// Ends a friendship on both sides.
    pub fn remove(&self, user_id: String) -> RequestId {
        self.act(user_id, "remove")
    }

    /// Blocks `user_id`: ends friendship and requests; neither finds the other in search.
    pub fn block(&self, user_id: String) -> RequestId {
        self.act(user_id, "block")
    }

    pub fn unblock(&self, user_id: String) -> RequestId {
        self.act(user_id, "unblock")
    }

    /// Relationships with presence. `state` filters: `friend`, `sent`, `received`, `blocked`.
    /// Result `{friends: [{user_id, username, state, presence, last_seen, since}]}`.
    pub fn list(&self, state: Option<String>) -> RequestId {
        self.shared.spawn_call(move |shared| async move {
            let query = match state {
                Some(s) => query_string(&[("state", s)]),
                None => String::new(),
            };
            let path = format!("/api/v1/friends{query}");
            let list: FriendList =
                fetch(&shared, || Request::new(Method::GET, path.clone())).await?;
            Ok(payload(&list, Some("friends")))
        })
    }

    /// Players whose username starts with `query` (case-insensitive). Result `{players:
    /// [{user_id, username}], next_cursor}`.
    pub fn search(&self, query: String, limit: Option<u32>, cursor: Option<String>) -> RequestId {
        self.shared.spawn_call(move |shared| async move {
            let mut params = vec![("q", query)];
            if let Some(limit) = limit {
                params.push(("limit", limit.to_string()));
            }
            if let Some(cursor) = cursor {
                params.push(("cursor", cursor));
            }
            let path = format!("/api/v1/friends/search{}", query_string(&params));
            let page: PlayerSearchPage =
                fetch(&shared, || Request::new(Method::GET, path.clone())).await?;
            Ok(payload(&page, Some("players")))
        })
    }

    /// Stamps the player's presence (`in_match` shows them as in a match). Result `{}`.
    pub fn heartbeat(&self, in_match: bool) -> RequestId {
        self.shared.spawn_call(move |shared| async move {
            let body = HeartbeatRequest { in_match };
            let _: Empty = fetch(&shared, || {
                Request::new(Method::POST, "/api/v1/friends/heartbeat").json(&body)
            })
            .await?;
            Ok(empty())
        })
    }

    /// Result `{user_id, state}` (`state` Nil when no relationship is left); emits
    /// `friends_updated` with the same Dictionary.
    fn act(&self, user_id: String, action: &'static str) -> RequestId {
        self.shared.spawn_call(move |shared| async move {
            let path = format!("/api/v1/friends/{}/{action}", escape(&user_id));
            let status: FriendStatus =
                fetch(&shared, || Request::new(Method::POST, path.clone())).await?;
            let value = payload(&status, None);
            shared.emit(FRIENDS, "friends_updated", vec![value.clone()]);
            Ok(value)
        })
    }
}

// ---------------------------------------------------------------------------------------------
// Groups
// ---------------------------------------------------------------------------------------------

#[derive(Clone)]
pub struct Groups {
    shared: Arc<Shared>,
}

impl Groups {
    /// Creates a group the caller owns. `options` (Dictionary or Nil): `description`, `open`
    /// (default true), `max_members` (default 100). Result: the group `{id, name, description,
    /// open, max_members, member_count, created_at, my_role}`. Not retried (a repeat would find
    /// the name taken).
    pub fn create(&self, name: String, options_value: Value) -> RequestId {
        self.shared.spawn_call(move |shared| async move {
            let mut body = CreateGroupRequest {
                name,
                description: String::new(),
                open: true,
                max_members: 100,
            };
            for (key, value) in options(
                &options_value,
                &["description", "open", "max_members"],
                "groups.create",
            )? {
                let wrong = || invalid(format!("groups.create: option `{key}` has the wrong type"));
                match key {
                    "description" => body.description = text(value).ok_or_else(wrong)?.to_owned(),
                    "open" => match value {
                        Value::Bool(b) => body.open = *b,
                        _ => return Err(wrong()),
                    },
                    _ => body.max_members = integer(value).ok_or_else(wrong)?,
                }
            }
            let group: Group = fetch(&shared, || {
                Request::new(Method::POST, "/api/v1/groups")
                    .json(&body)
                    .no_retry()
            })
            .await?;
            Ok(payload(&group, None))
        })
    }

    /// Groups by name prefix (all when `query` is None). Result `{groups: [...]}`.
    pub fn search(&self, query: Option<String>, limit: Option<u32>) -> RequestId {
        let mut params = Vec::new();
        if let Some(q) = query {
            params.push(("q", q));
        }
        if let Some(limit) = limit {
            params.push(("limit", limit.to_string()));
        }
        self.read_list(format!("/api/v1/groups{}", query_string(&params)))
    }

    /// Groups the caller belongs to, is invited to or asked to join. Result `{groups: [...]}`.
    pub fn list(&self) -> RequestId {
        self.read_list("/api/v1/groups/mine".to_owned())
    }

    /// One group. Result: the group Dictionary.
    pub fn get_group(&self, group_id: String) -> RequestId {
        self.shared.spawn_call(move |shared| async move {
            let path = format!("/api/v1/groups/{}", escape(&group_id));
            let group: Group = fetch(&shared, || Request::new(Method::GET, path.clone())).await?;
            Ok(payload(&group, None))
        })
    }

    /// Members by role (pending ones only for admins). Result `{members: [{user_id, username,
    /// role, since}]}`.
    pub fn members(&self, group_id: String) -> RequestId {
        self.shared.spawn_call(move |shared| async move {
            let path = format!("/api/v1/groups/{}/members", escape(&group_id));
            let members: GroupMembers =
                fetch(&shared, || Request::new(Method::GET, path.clone())).await?;
            Ok(payload(&members, Some("members")))
        })
    }

    /// Joins an open group or accepts an invite; asks to join a closed one (`my_role` is then
    /// `requested`). Result: the group.
    pub fn join(&self, group_id: String) -> RequestId {
        self.shared.spawn_call(move |shared| async move {
            let path = format!("/api/v1/groups/{}/join", escape(&group_id));
            let group: Group = fetch(&shared, || Request::new(Method::POST, path.clone())).await?;
            Ok(payload(&group, None))
        })
    }

    /// Leaves (or withdraws a request/invite). Result `{}`.
    pub fn leave(&self, group_id: String) -> RequestId {
        self.shared.spawn_call(move |shared| async move {
            let path = format!("/api/v1/groups/{}/leave", escape(&group_id));
            let _: Empty = fetch(&shared, || {
                Request::new(Method::POST, path.clone()).no_retry()
            })
            .await?;
            Ok(empty())
        })
    }

    /// Invites `user_id` (admins and the owner). Result: the member `{user_id, username, role,
    /// since}`.
    pub fn invite(&self, group_id: String, user_id: String) -> RequestId {
        self.shared.spawn_call(move |shared| async move {
            let path = format!("/api/v1/groups/{}/invite", escape(&group_id));
            let body = GroupInviteRequest { user_id };
            let member: GroupMember = fetch(&shared, || {
                Request::new(Method::POST, path.clone()).json(&body)
            })
            .await?;
            Ok(payload(&member, None))
        })
    }

    /// Accepts `user_id`'s request to join. Result: the member.
    pub fn accept_request(&self, group_id: String, user_id: String) -> RequestId {
        self.member_action(group_id, user_id, "accept")
    }

    /// Removes `user_id` (ranked below the caller). Result: the member's last role.
    pub fn kick(&self, group_id: String, user_id: String) -> RequestId {
        self.member_action(group_id, user_id, "kick")
    }

    /// member -> admin; admin -> owner (owner only; the old owner becomes admin).
    pub fn promote(&self, group_id: String, user_id: String) -> RequestId {
        self.member_action(group_id, user_id, "promote")
    }

    /// admin -> member (owner only).
    pub fn demote(&self, group_id: String, user_id: String) -> RequestId {
        self.member_action(group_id, user_id, "demote")
    }

    fn member_action(&self, group_id: String, user_id: String, action: &'static str) -> RequestId {
        self.shared.spawn_call(move |shared| async move {
            let path = format!(
                "/api/v1/groups/{}/members/{}/{action}",
                escape(&group_id),
                escape(&user_id)
            );
            let member: GroupMember =
                fetch(&shared, || Request::new(Method::POST, path.clone())).await?;
            Ok(payload(&member, None))
        })
    }

    fn read_list(&self, path: String) -> RequestId {
        self.shared.spawn_call(move |shared| async move {
            let list: GroupList =
                fetch(&shared, || Request::new(Method::GET, path.clone())).await?;
            Ok(payload(&list, Some("groups")))
        })
    }
}
