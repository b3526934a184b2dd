//! Matchmaking on the realtime socket: `join_queue`, `leave_queue`, `queue_status`, and the
//! `match_found` / `matchmaking_timeout` pushes.
//!
//! Tickets live in memory on the node that matches, pooled by project, mode and region: the
//! node itself when alone, the cluster's matchmaker otherwise (`remote`: the other nodes forward
//! their players' tickets to it and keep copies). A background task (every
//! `matchmaking.interval_ms`, and at once after a submission) runs [`pool::form_matches`] over
//! each pool, creates a room with a seat reserved for each matched player and pushes
//! `match_found` to their sockets. Mode rules come from SQL
//! (`PUT /api/v1/matchmaking/modes/{mode}`, cached here) or, for unconfigured modes, from the
//! server's `[matchmaking]` defaults.
//!
//! Locks: the pool's mutex is never held across an await; while it is held only the socket
//! registry (`Users`) and presence are consulted, never the rooms. It and the copies' mutex
//! (`remote`) are never held together.

pub mod handlers;
pub mod pool;
pub mod remote;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex, RwLock, Weak};
use std::time::Duration;

use aethex_protocol::matchmaking::{MatchmakingModeConfig, MAX_MATCH_PLAYERS};
use aethex_protocol::realtime::{
    MatchedPlayer, PresenceStatus, QueueRequest, RoomProperties, ServerMessage, Ticket,
};
use tokio::sync::Notify;

use self::pool::{Candidate, Rules};
use self::remote::{Copies, Submitted};
use super::conn::encode;
use crate::app::{AppInner, AppState};
use crate::config::MatchmakingConfig;
use crate::db::Db;
use crate::error::{ApiError, ApiResult};

pub use handlers::{router, MatchmakingApi};

/// Largest `properties` of a ticket, as JSON text.
const MAX_PROPERTIES_BYTES: usize = 4096;

/// `(project id, mode)`.
type ModeKey = (String, String);
/// `(project id, mode, region)`.
type BucketKey = (String, String, String);

#[derive(Default)]
pub struct Matchmaking {
    pool: Mutex<Pool>,
    /// Configured modes read from SQL. Unconfigured ones are not cached (a player could name
    /// any number of them); their tickets use the defaults.
    modes: RwLock<HashMap<ModeKey, MatchmakingModeConfig>>,
    /// Rooms of formed matches nobody has joined yet, by the time they close (unix ms).
    unclaimed: Mutex<Vec<(i64, String)>>,
    /// Starts a pass before the next interval (after a submission).
    wake: Arc<Notify>,
    /// In a cluster: the tickets this node's sockets submitted, wherever they are matched.
    copies: Copies,
}

#[derive(Default)]
struct Pool {
    tickets: HashMap<String, Queued>,
    /// `(project id, user id)` -> the one ticket the player is on.
    by_player: HashMap<(String, String), String>,
    /// Ticket ids of each pool in submission order (key: a per-node counter).
    buckets: HashMap<BucketKey, BTreeMap<u64, String>>,
    next_seq: u64,
}

struct Queued {
    project_id: String,
    seq: u64,
    ticket: Ticket,
    properties: Option<serde_json::Value>,
    /// The node whose socket submitted it, when not this one.
    origin: Option<String>,
}

/// What a pass decided, carried out once the pool lock is released.
enum Event {
    Matched {
        project_id: String,
        mode: String,
        region: String,
        tickets: Vec<Queued>,
    },
    TimedOut(Queued),
}

impl Queued {
    fn bucket(&self) -> BucketKey {
        (
            self.project_id.clone(),
            self.ticket.mode.clone(),
            self.ticket.region.clone(),
        )
    }
}

impl Pool {
    /// Adds a ticket whose players are on no other ticket.
    fn insert(
        &mut self,
        project_id: &str,
        ticket: Ticket,
        properties: Option<serde_json::Value>,
        origin: Option<String>,
    ) {
        let seq = self.next_seq;
        self.next_seq += 1;
        for player in &ticket.players {
            self.by_player.insert(
                (project_id.to_owned(), player.clone()),
                ticket.ticket_id.clone(),
            );
        }
        let queued = Queued {
            project_id: project_id.to_owned(),
            seq,
            ticket,
            properties,
            origin,
        };
        self.buckets
            .entry(queued.bucket())
            .or_default()
            .insert(seq, queued.ticket.ticket_id.clone());
        self.tickets.insert(queued.ticket.ticket_id.clone(), queued);
    }

    fn remove(&mut self, ticket_id: &str) -> Option<Queued> {
        let queued = self.tickets.remove(ticket_id)?;
        for player in &queued.ticket.players {
            self.by_player
                .remove(&(queued.project_id.clone(), player.clone()));
        }
        let key = queued.bucket();
        if let Some(bucket) = self.buckets.get_mut(&key) {
            bucket.remove(&queued.seq);
            if bucket.is_empty() {
                self.buckets.remove(&key);
            }
        }
        Some(queued)
    }

    fn ticket_of(&self, project_id: &str, user_id: &str) -> Option<&String> {
        self.by_player
            .get(&(project_id.to_owned(), user_id.to_owned()))
    }
}

fn rules_of(config: Option<&MatchmakingModeConfig>, defaults: &MatchmakingConfig) -> Rules {
    match config {
        // Stored rules were validated to 1..=MAX_MATCH_PLAYERS.
        Some(c) => Rules {
            min_players: c.min_players as u32,
            max_players: c.max_players as u32,
            widen_per_sec: c.widen_per_sec,
            max_widen: c.max_widen,
        },
        None => Rules {
            min_players: defaults.default_min_players.max(1),
            max_players: defaults.default_max_players.clamp(1, MAX_MATCH_PLAYERS),
            widen_per_sec: defaults.default_widen_per_sec.max(0.0),
            max_widen: defaults.default_max_widen.max(0.0),
        },
    }
}

fn timeout_ms(config: Option<&MatchmakingModeConfig>, defaults: &MatchmakingConfig) -> i64 {
    config.map_or(i64::from(defaults.default_timeout_secs), |c| c.timeout_secs) * 1000
}

/// Mode and region names: 1 to 64 of `[A-Za-z0-9_.-]`, like every other id.
fn validate_name(kind: &str, name: &str) -> ApiResult<()> {
    crate::social::validate_id(kind, name)
}

impl Matchmaking {
    /// The configured rules of a mode (`None`: the defaults apply), from the cache or SQL.
    pub async fn mode(
        &self,
        db: &Db,
        project_id: &str,
        mode: &str,
    ) -> ApiResult<Option<MatchmakingModeConfig>> {
        let key = (project_id.to_owned(), mode.to_owned());
        if let Some(cached) = self.modes.read().expect("lock").get(&key) {
            return Ok(Some(cached.clone()));
        }
        let loaded = handlers::load_mode(db, project_id, mode).await?;
        if let Some(config) = &loaded {
            self.modes
                .write()
                .expect("lock")
                .insert(key, config.clone());
        }
        Ok(loaded)
    }

    /// Records a mode's new rules after this node wrote them to SQL, here and on the other nodes.
    fn mode_written(
        &self,
        state: &AppState,
        project_id: &str,
        mode: &str,
        config: Option<MatchmakingModeConfig>,
    ) {
        self.set_mode(project_id, mode, config.clone());
        remote::mode_written(state, project_id, mode, config);
    }

    /// Records a mode's new rules.
    fn set_mode(&self, project_id: &str, mode: &str, config: Option<MatchmakingModeConfig>) {
        let key = (project_id.to_owned(), mode.to_owned());
        let mut modes = self.modes.write().expect("lock");
        match config {
            Some(config) => modes.insert(key, config),
            None => modes.remove(&key),
        };
    }

    fn cached_mode(&self, project_id: &str, mode: &str) -> Option<MatchmakingModeConfig> {
        self.modes
            .read()
            .expect("lock")
            .get(&(project_id.to_owned(), mode.to_owned()))
            .cloned()
    }

    /// `join_queue` from `user_id`'s socket: validates, checks the party, queues the ticket and
    /// tells the party. The reply to the submitter is the caller's.
    pub async fn join(
        &self,
        state: &AppState,
        project_id: &str,
        user_id: &str,
        req: QueueRequest,
    ) -> ApiResult<Ticket> {
        validate_name("mode", &req.mode)?;
        validate_name("region", &req.region)?;
        let [low, high] = req.skill_range;
        if !low.is_finite() || !high.is_finite() {
            return Err(ApiError::invalid(
                "skill_range must hold two finite numbers",
            ));
        }
        if low > high {
            return Err(ApiError::invalid(
                "skill_range must be [low, high] with low <= high",
            ));
        }
        if let Some(properties) = &req.properties {
            if !properties.is_object() {
                return Err(ApiError::invalid("properties must be a JSON object"));
            }
            if properties.to_string().len() > MAX_PROPERTIES_BYTES {
                return Err(ApiError::invalid(format!(
                    "properties must be at most {MAX_PROPERTIES_BYTES} bytes as JSON"
                )));
            }
        }
        let mut players = vec![user_id.to_owned()];
        for member in &req.party {
            if players.contains(member) {
                return Err(ApiError::invalid(
                    "party lists each other player once and not the submitter",
                ));
            }
            players.push(member.clone());
        }
        let config = self.mode(&state.db, project_id, &req.mode).await?;
        let defaults = &state.config.matchmaking;
        let rules = rules_of(config.as_ref(), defaults);
        if players.len() > rules.max_players as usize {
            return Err(ApiError::invalid(format!(
                "mode {:?} takes at most {} players per match; this ticket has {}",
                req.mode,
                rules.max_players,
                players.len()
            )));
        }
        if !req.party.is_empty() {
            let friends: HashSet<String> =
                crate::social::friends::friend_ids(&state.db, project_id, user_id)
                    .await?
                    .into_iter()
                    .collect();
            if let Some(stranger) = req.party.iter().find(|m| !friends.contains(*m)) {
                return Err(ApiError::forbidden(format!(
                    "party member {stranger:?} is not an accepted friend of yours"
                )));
            }
        }
        let now_ms = state.clock.now_ms();
        let ticket = Ticket {
            ticket_id: crate::db::new_id(),
            mode: req.mode,
            region: req.region,
            skill_range: req.skill_range,
            effective_range: req.skill_range,
            players,
            created_at: now_ms,
            expires_at: now_ms.saturating_add(timeout_ms(config.as_ref(), defaults)),
        };
        let submitted = Submitted {
            project_id: project_id.to_owned(),
            ticket: ticket.clone(),
            properties: req.properties,
        };
        match &state.cluster {
            Some(cluster) => remote::submit(state, cluster, submitted).await?,
            None => {
                self.admit(state, submitted, None, true)?;
                self.wake.notify_one();
            }
        }
        Ok(ticket)
    }

    /// Puts a ticket in this node's pool, refused when one of its players is on another ticket.
    /// `fresh`: a new submission, whose party must be connected and is told; otherwise a ticket
    /// handed over when the matchmaker changed (already in the pool: nothing to do).
    fn admit(
        &self,
        state: &AppState,
        submitted: Submitted,
        origin: Option<String>,
        fresh: bool,
    ) -> ApiResult<()> {
        let Submitted {
            project_id,
            ticket,
            properties,
        } = submitted;
        {
            let mut pool = lock(&self.pool);
            if pool.tickets.contains_key(&ticket.ticket_id) {
                return Ok(());
            }
            for player in &ticket.players {
                if pool.ticket_of(&project_id, player).is_some() {
                    let whom = if *player == ticket.players[0] {
                        "you are".to_owned()
                    } else {
                        format!("party member {player:?} is")
                    };
                    return Err(ApiError::conflict(format!(
                        "{whom} already on a matchmaking ticket"
                    )));
                }
            }
            // Checked under the pool lock: a player going offline drops their tickets after
            // leaving the socket registry, so either this sees them gone or the drop sees this
            // ticket.
            if fresh {
                let mut party = ticket.players[1..].iter();
                if let Some(away) = party.find(|m| !connected(state, &project_id, m)) {
                    return Err(ApiError::conflict(format!(
                        "party member {away:?} is not connected to the realtime socket"
                    )));
                }
            }
            pool.insert(&project_id, ticket.clone(), properties, origin);
        }
        if fresh {
            let frame = encode(
                None,
                ServerMessage::QueueJoined {
                    ticket: ticket.clone(),
                },
            );
            for member in &ticket.players[1..] {
                state.realtime.users.send(&project_id, member, &frame);
            }
        }
        Ok(())
    }

    /// `leave_queue`: removes `ticket_id` (or the player's ticket) and tells its other players.
    /// Returns the removed ticket ids.
    pub async fn leave(
        &self,
        state: &AppState,
        project_id: &str,
        user_id: &str,
        ticket_id: Option<&str>,
    ) -> ApiResult<Vec<String>> {
        match &state.cluster {
            Some(cluster) => remote::leave(state, cluster, project_id, user_id, ticket_id).await,
            None => self.leave_here(state, project_id, user_id, ticket_id),
        }
    }

    /// `leave_queue` against this node's pool.
    fn leave_here(
        &self,
        state: &AppState,
        project_id: &str,
        user_id: &str,
        ticket_id: Option<&str>,
    ) -> ApiResult<Vec<String>> {
        let removed = {
            let mut pool = lock(&self.pool);
            let own = pool.ticket_of(project_id, user_id).cloned();
            let target = match (ticket_id, own) {
                (Some(asked), Some(own)) if asked == own => Some(own),
                (Some(_), _) => {
                    return Err(ApiError::not_found("you are not on this ticket"));
                }
                (None, own) => own,
            };
            target.and_then(|id| pool.remove(&id))
        };
        let Some(queued) = removed else {
            return Ok(Vec::new());
        };
        let ids = vec![queued.ticket.ticket_id.clone()];
        self.tell_left(state, &queued, Some(user_id));
        remote::finished(state, [&queued]);
        Ok(ids)
    }

    /// `queue_status`: the ticket with its current effective range, for its players only.
    pub async fn status(
        &self,
        state: &AppState,
        project_id: &str,
        user_id: &str,
        ticket_id: &str,
    ) -> ApiResult<Ticket> {
        match &state.cluster {
            Some(cluster) => remote::status(state, cluster, project_id, user_id, ticket_id).await,
            None => self.status_here(state, project_id, user_id, ticket_id),
        }
    }

    /// `queue_status` against this node's pool.
    fn status_here(
        &self,
        state: &AppState,
        project_id: &str,
        user_id: &str,
        ticket_id: &str,
    ) -> ApiResult<Ticket> {
        let pool = lock(&self.pool);
        let queued = pool
            .tickets
            .get(ticket_id)
            .filter(|q| q.project_id == project_id && q.ticket.players.iter().any(|p| p == user_id))
            .ok_or_else(|| ApiError::not_found("you are not on this ticket"))?;
        let rules = rules_of(
            self.cached_mode(project_id, &queued.ticket.mode).as_ref(),
            &state.config.matchmaking,
        );
        let mut ticket = queued.ticket.clone();
        ticket.effective_range =
            rules.effective_range(ticket.skill_range, ticket.created_at, state.clock.now_ms());
        Ok(ticket)
    }

    /// The player's last socket on this node closed: they could not hear `match_found`, so
    /// their ticket goes (the party is told with `queue_left`). In a cluster: the tickets
    /// submitted on this node that they are on.
    pub fn player_offline(&self, state: &AppState, project_id: &str, user_id: &str) {
        if let Some(cluster) = &state.cluster {
            return remote::player_offline(state, cluster, project_id, user_id);
        }
        let removed = {
            let mut pool = lock(&self.pool);
            match pool.ticket_of(project_id, user_id).cloned() {
                Some(id) => pool.remove(&id),
                None => None,
            }
        };
        if let Some(queued) = removed {
            self.tell_left(state, &queued, Some(user_id));
        }
    }

    /// Removes one ticket from this node's pool (its submitting node cancelled it).
    /// The player is offline on every node: a ticket of theirs in this node's pool (it is the
    /// matchmaker) is cancelled, whichever node submitted it.
    pub fn player_left_cluster(&self, state: &AppState, project_id: &str, user_id: &str) {
        let ticket_id = lock(&self.pool).ticket_of(project_id, user_id).cloned();
        if let Some(ticket_id) = ticket_id {
            self.cancel_here(state, project_id, &ticket_id, user_id);
        }
    }

    fn cancel_here(&self, state: &AppState, project_id: &str, ticket_id: &str, except: &str) {
        let removed = {
            let mut pool = lock(&self.pool);
            match pool.tickets.get(ticket_id) {
                Some(q) if q.project_id == project_id => pool.remove(ticket_id),
                _ => None,
            }
        };
        if let Some(queued) = removed {
            self.tell_left(state, &queued, Some(except));
            remote::finished(state, [&queued]);
        }
    }

    fn tell_left(&self, state: &AppState, queued: &Queued, except: Option<&str>) {
        tell_left(state, &queued.project_id, &queued.ticket, except);
    }

    /// Tickets queued on this node.
    pub fn queued(&self) -> usize {
        lock(&self.pool).tickets.len()
    }

    /// Queues a ticket without a socket or checks (the benchmark's way in).
    pub fn enqueue_unchecked(
        &self,
        project_id: &str,
        ticket: Ticket,
        properties: Option<serde_json::Value>,
    ) {
        lock(&self.pool).insert(project_id, ticket, properties, None);
    }

    /// One matching pass over every pool: takes matched and timed-out tickets out of the pool.
    fn pass(&self, defaults: &MatchmakingConfig, now_ms: i64) -> Vec<Event> {
        let mut events = Vec::new();
        let mut pool = lock(&self.pool);
        let keys: Vec<BucketKey> = pool.buckets.keys().cloned().collect();
        for key in keys {
            let (project_id, mode, region) = &key;
            let ids: Vec<String> = pool.buckets[&key].values().cloned().collect();
            let candidates: Vec<Candidate> = ids
                .iter()
                .map(|id| {
                    let t = &pool.tickets[id].ticket;
                    Candidate {
                        range: t.skill_range,
                        created_at: t.created_at,
                        expires_at: t.expires_at,
                        players: t.players.len() as u32,
                    }
                })
                .collect();
            let rules = rules_of(self.cached_mode(project_id, mode).as_ref(), defaults);
            let outcome = pool::form_matches(&candidates, &rules, now_ms);
            for i in outcome.timed_out {
                if let Some(queued) = pool.remove(&ids[i]) {
                    events.push(Event::TimedOut(queued));
                }
            }
            for found in outcome.matches {
                let tickets = found.iter().filter_map(|&i| pool.remove(&ids[i])).collect();
                events.push(Event::Matched {
                    project_id: project_id.clone(),
                    mode: mode.clone(),
                    region: region.clone(),
                    tickets,
                });
            }
        }
        events
    }

    /// Empties the pool without a word to the players: another node matches now, and each
    /// ticket's node hands it over.
    fn clear_pool(&self) {
        let mut pool = lock(&self.pool);
        if !pool.tickets.is_empty() {
            *pool = Pool::default();
        }
    }

    /// Drops the tickets submitted on nodes that left the cluster (their sockets went with
    /// them); the players on other nodes are told with `queue_left`, and so is the node, in case
    /// it was only silent for a while: it must not keep copies that no matchmaker holds.
    fn drop_origins(&self, state: &AppState, nodes: &[String]) {
        if nodes.is_empty() {
            return;
        }
        let removed: Vec<Queued> = {
            let mut pool = lock(&self.pool);
            let ids: Vec<String> = pool
                .tickets
                .values()
                .filter(|q| q.origin.as_ref().is_some_and(|o| nodes.contains(o)))
                .map(|q| q.ticket.ticket_id.clone())
                .collect();
            ids.iter().filter_map(|id| pool.remove(id)).collect()
        };
        for queued in &removed {
            self.tell_left(state, queued, None);
        }
        remote::finished(state, &removed);
    }

    /// Runs one pass and carries out its decisions: rooms and `match_found` for matches,
    /// `matchmaking_timeout` for expired tickets, and closes rooms nobody claimed in time.
    /// In a cluster, only the matchmaker matches. Returns the number of tickets matched.
    pub fn run_once(&self, state: &AppState) -> usize {
        let now_ms = state.clock.now_ms();
        let defaults = &state.config.matchmaking;
        let matching = match &state.cluster {
            Some(cluster) => remote::sync(state, cluster),
            None => true,
        };
        let events = if matching {
            self.pass(defaults, now_ms)
        } else {
            Vec::new()
        };
        let mut matched = 0;
        for event in events {
            match event {
                Event::TimedOut(queued) => {
                    remote::finished(state, [&queued]);
                    let frame = encode(
                        None,
                        ServerMessage::MatchmakingTimeout {
                            ticket_id: queued.ticket.ticket_id.clone(),
                        },
                    );
                    for player in &queued.ticket.players {
                        state
                            .realtime
                            .users
                            .send(&queued.project_id, player, &frame);
                    }
                }
                Event::Matched {
                    project_id,
                    mode,
                    region,
                    tickets,
                } => {
                    matched += tickets.len();
                    remote::finished(state, &tickets);
                    self.deliver(state, &project_id, mode, region, tickets, now_ms);
                }
            }
        }
        let claim_deadline_passed: Vec<String> = {
            let mut unclaimed = lock(&self.unclaimed);
            let (due, keep): (Vec<_>, Vec<_>) =
                unclaimed.drain(..).partition(|(at, _)| *at <= now_ms);
            *unclaimed = keep;
            due.into_iter().map(|(_, room)| room).collect()
        };
        for room_id in claim_deadline_passed {
            state.realtime.rooms.close_if_unclaimed(&room_id);
        }
        matched
    }

    /// Creates the match's room and pushes `match_found` to every player.
    fn deliver(
        &self,
        state: &AppState,
        project_id: &str,
        mode: String,
        region: String,
        tickets: Vec<Queued>,
        now_ms: i64,
    ) {
        let config = self.cached_mode(project_id, &mode);
        let players: Vec<MatchedPlayer> = tickets
            .iter()
            .flat_map(|q| {
                q.ticket.players.iter().map(|user_id| MatchedPlayer {
                    user_id: user_id.clone(),
                    properties: q.properties.clone(),
                })
            })
            .collect();
        let user_ids: Vec<String> = players.iter().map(|p| p.user_id.clone()).collect();
        let properties = RoomProperties {
            metadata: config.as_ref().and_then(|c| c.metadata.clone()),
            max_players: Some(user_ids.len() as u32),
            private: false,
            labels: vec![mode.clone()],
            // Validated against realtime.max_tick_rate when stored.
            tick_rate: config.as_ref().and_then(|c| c.tick_rate).map(|t| t as u32),
        };
        let room_id = state.realtime.rooms.create_reserved(
            &state.config.realtime,
            project_id,
            &user_ids,
            properties,
            now_ms,
        );
        let claim_ms = state
            .config
            .matchmaking
            .room_claim_secs
            .saturating_mul(1000);
        lock(&self.unclaimed).push((
            now_ms.saturating_add(i64::try_from(claim_ms).unwrap_or(i64::MAX)),
            room_id.clone(),
        ));
        for queued in &tickets {
            let frame = encode(
                None,
                ServerMessage::MatchFound {
                    ticket_id: queued.ticket.ticket_id.clone(),
                    room_id: room_id.clone(),
                    mode: mode.clone(),
                    region: region.clone(),
                    players: players.clone(),
                },
            );
            for player in &queued.ticket.players {
                state.realtime.users.send(project_id, player, &frame);
            }
        }
    }
}

/// Starts the node's matching task; it ends when the server's state is dropped.
pub fn spawn(state: &AppState) {
    let weak: Weak<AppInner> = Arc::downgrade(&state.0);
    let interval = Duration::from_millis(state.config.matchmaking.interval_ms.max(10));
    tokio::spawn(async move {
        // The first pass is due one interval after start (an `interval` ticks at once).
        let mut ticks = tokio::time::interval_at(tokio::time::Instant::now() + interval, interval);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let Some(inner) = weak.upgrade() else { return };
            let state = AppState(inner);
            state.realtime.matchmaking.run_once(&state);
            let wake = state.realtime.matchmaking.wake.clone();
            // Not held while waiting, so dropping the server ends the task.
            drop(state);
            tokio::select! {
                _ = ticks.tick() => {}
                _ = wake.notified() => {}
            }
        }
    });
}

/// Tells a ticket's players (but `except`) that it left the queue.
fn tell_left(state: &AppState, project_id: &str, ticket: &Ticket, except: Option<&str>) {
    let frame = encode(
        None,
        ServerMessage::QueueLeft {
            ticket_ids: vec![ticket.ticket_id.clone()],
        },
    );
    for player in &ticket.players {
        if Some(player.as_str()) != except {
            state.realtime.users.send(project_id, player, &frame);
        }
    }
}

/// A party member can hear `match_found`: they have a socket here or, in a cluster, are online
/// on some node.
fn connected(state: &AppState, project_id: &str, user_id: &str) -> bool {
    state.realtime.users.is_online(project_id, user_id)
        || (state.cluster.is_some()
            && state.realtime.presence.status(project_id, user_id) != PresenceStatus::Offline)
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}
