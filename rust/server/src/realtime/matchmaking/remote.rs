//! Matchmaking across the nodes of a cluster: one node matches, the others forward to it.
//!
//! The *matchmaker* is the live node with the lowest id as this node's presence view knows the
//! nodes (`crate::cluster`: heard from, not gone with `bye` or silent past `node_timeout_ms`).
//! Ids are UUIDv7, so it is the longest-running node. Every node follows it from its matching
//! task (`sync`, each pass):
//!
//! - A socket's `join_queue` is checked on its own node (names, ranges, party friends, mode
//!   rules), then handed to the matchmaker (`<prefix>.mm.<id>`, a request), which refuses it as
//!   one node would (a player already queued, a party member offline) or admits it. The
//!   submitting node keeps a *copy* of its tickets.
//! - `leave_queue` and `queue_status` are asked of the matchmaker. A ticket's player whose last
//!   socket on the submitting node closes cancels it there (`cancel`).
//! - The matchmaker matches as one node does: the room is created there, reserved for the
//!   players, who join it through the rooms-across-nodes path; `match_found`,
//!   `matchmaking_timeout` and `queue_left` reach any node through `Users::send`. It tells each
//!   ticket's node when the ticket is done (`gone`), which drops its copy.
//! - When the matchmaker changes (it left, went silent, or a lower id appeared), every node hands
//!   its copies to the new one, with their original `created_at` and `expires_at`, so widening
//!   and the timeout carry on; a node that stops being the matchmaker empties its pool, and the
//!   matchmaker drops the tickets of nodes that left (their sockets went with them).
//!
//! A node alone, or without NATS, matches its own tickets and runs none of this.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

use aethex_protocol::matchmaking::MatchmakingModeConfig;
use aethex_protocol::realtime::Ticket;
use aethex_protocol::{ApiErrorBody, ErrorCode};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use super::{lock, tell_left, Queued};
use crate::app::AppState;
use crate::cluster::Cluster;
use crate::error::{ApiError, ApiResult};

/// How long past its expiry a copy is kept: the matchmaker times tickets out and says so, but
/// one that lost a ticket (it took this node for gone) never will.
const STALE_COPY_MS: i64 = 60_000;

/// A ticket as handed to the matchmaker.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Submitted {
    pub project_id: String,
    pub ticket: Ticket,
    pub properties: Option<serde_json::Value>,
}

/// What nodes send on `<prefix>.mm.<id>`.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
enum Message {
    /// To the matchmaker, answered with one `Answer<()>` per ticket. `fresh`: a player's
    /// `join_queue`; otherwise copies handed over after the matchmaker changed.
    Submit {
        origin: String,
        fresh: bool,
        tickets: Vec<Submitted>,
    },
    /// To the matchmaker, answered with `Answer<Vec<String>>`.
    Leave {
        project_id: String,
        user_id: String,
        ticket_id: Option<String>,
    },
    /// To the matchmaker, answered with `Answer<Ticket>`.
    Status {
        project_id: String,
        user_id: String,
        ticket_id: String,
    },
    /// To the matchmaker: `user_id`, one of the ticket's players, went offline on its node.
    Cancel {
        project_id: String,
        ticket_id: String,
        user_id: String,
    },
    /// From the matchmaker: these tickets of the receiving node left the pool.
    Gone { ticket_ids: Vec<String> },
    /// To every node: a mode's rules were written (`None`: removed) on the sender.
    Mode {
        project_id: String,
        mode: String,
        config: Option<MatchmakingModeConfig>,
    },
}

type Answer<T> = Result<T, ApiErrorBody>;

/// The tickets this node's sockets submitted, and the matchmaker as last seen.
#[derive(Default)]
pub struct Copies(Mutex<CopiesInner>);

#[derive(Default)]
struct CopiesInner {
    matchmaker: Option<String>,
    /// Other nodes live at the last pass.
    live: HashSet<String>,
    tickets: HashMap<String, Copy>,
}

struct Copy {
    submitted: Submitted,
    /// The matchmaker it was handed to; `None`: to hand to the current one.
    sent_to: Option<String>,
}

impl Copies {
    fn forget(&self, ticket_ids: &[String]) {
        let mut inner = lock(&self.0);
        for id in ticket_ids {
            inner.tickets.remove(id);
        }
    }
}

/// The matchmaker in this node's view.
fn matchmaker(state: &AppState, cluster: &Cluster) -> String {
    lowest(cluster.node_id(), &state.realtime.presence.nodes())
}

fn lowest<'a>(me: &str, others: impl IntoIterator<Item = &'a String>) -> String {
    others
        .into_iter()
        .map(String::as_str)
        .filter(|n| *n < me)
        .min()
        .unwrap_or(me)
        .to_owned()
}

fn unavailable() -> ApiError {
    ApiError::new(
        ErrorCode::Unavailable,
        "the matchmaker did not answer (it may be changing); try again",
    )
}

fn to_body(e: ApiError) -> ApiErrorBody {
    ApiErrorBody {
        code: e.code,
        message: e.message,
        details: e.details,
    }
}

fn from_body(e: ApiErrorBody) -> ApiError {
    ApiError {
        code: e.code,
        message: e.message,
        details: e.details,
        retry_after: None,
    }
}

fn encode(message: &impl Serialize) -> Option<bytes::Bytes> {
    match serde_json::to_vec(message) {
        Ok(bytes) => Some(bytes.into()),
        Err(e) => {
            tracing::error!(error = %e, "encoding a matchmaking message");
            None
        }
    }
}

/// Asks `node`; `None` when it did not answer in time (or answered nonsense).
async fn ask<T: DeserializeOwned>(cluster: &Cluster, node: &str, message: &Message) -> Option<T> {
    let answer = cluster.mm_request(node, encode(message)?).await?;
    serde_json::from_slice(&answer).ok()
}

fn notice(cluster: &Cluster, node: &str, message: &Message) {
    if let Some(payload) = encode(message) {
        cluster.mm_notice(node, payload);
    }
}

/// A player's `join_queue`, checked on this node: kept as a copy and admitted by the matchmaker.
pub(super) async fn submit(
    state: &AppState,
    cluster: &Cluster,
    submitted: Submitted,
) -> ApiResult<()> {
    let mm = matchmaker(state, cluster);
    let matchmaking = &state.realtime.matchmaking;
    let id = submitted.ticket.ticket_id.clone();
    // Kept before the matchmaker sees it: its `gone` may come before its answer.
    lock(&matchmaking.copies.0).tickets.insert(
        id.clone(),
        Copy {
            submitted: submitted.clone(),
            sent_to: Some(mm.clone()),
        },
    );
    let admitted = if mm == cluster.node_id() {
        let admitted = matchmaking.admit(state, submitted, None, true);
        if admitted.is_ok() {
            matchmaking.wake.notify_one();
        }
        admitted
    } else {
        let (project_id, user_id) = (
            submitted.project_id.clone(),
            submitted.ticket.players[0].clone(),
        );
        let message = Message::Submit {
            origin: cluster.node_id().to_owned(),
            fresh: true,
            tickets: vec![submitted],
        };
        match ask::<Vec<Answer<()>>>(cluster, &mm, &message).await {
            Some(mut answers) if answers.len() == 1 => answers.remove(0).map_err(from_body),
            _ => {
                // It may have been admitted all the same: the player was told it was not.
                notice(
                    cluster,
                    &mm,
                    &Message::Cancel {
                        project_id,
                        ticket_id: id.clone(),
                        user_id,
                    },
                );
                Err(unavailable())
            }
        }
    };
    if admitted.is_err() {
        matchmaking.copies.forget(&[id]);
    }
    admitted
}

pub(super) async fn leave(
    state: &AppState,
    cluster: &Cluster,
    project_id: &str,
    user_id: &str,
    ticket_id: Option<&str>,
) -> ApiResult<Vec<String>> {
    let mm = matchmaker(state, cluster);
    let matchmaking = &state.realtime.matchmaking;
    if mm == cluster.node_id() {
        return matchmaking.leave_here(state, project_id, user_id, ticket_id);
    }
    let message = Message::Leave {
        project_id: project_id.to_owned(),
        user_id: user_id.to_owned(),
        ticket_id: ticket_id.map(str::to_owned),
    };
    let ids = ask::<Answer<Vec<String>>>(cluster, &mm, &message)
        .await
        .ok_or_else(unavailable)?
        .map_err(from_body)?;
    // Not handed to a later matchmaker even if the `gone` is lost.
    matchmaking.copies.forget(&ids);
    Ok(ids)
}

pub(super) async fn status(
    state: &AppState,
    cluster: &Cluster,
    project_id: &str,
    user_id: &str,
    ticket_id: &str,
) -> ApiResult<Ticket> {
    let mm = matchmaker(state, cluster);
    if mm == cluster.node_id() {
        return state
            .realtime
            .matchmaking
            .status_here(state, project_id, user_id, ticket_id);
    }
    let message = Message::Status {
        project_id: project_id.to_owned(),
        user_id: user_id.to_owned(),
        ticket_id: ticket_id.to_owned(),
    };
    ask::<Answer<Ticket>>(cluster, &mm, &message)
        .await
        .ok_or_else(unavailable)?
        .map_err(from_body)
}

/// The player's last socket on this node closed: the tickets submitted here that they are on
/// are cancelled.
pub(super) fn player_offline(state: &AppState, cluster: &Cluster, project_id: &str, user_id: &str) {
    let matchmaking = &state.realtime.matchmaking;
    let cancelled: Vec<String> = {
        let mut inner = lock(&matchmaking.copies.0);
        let ids: Vec<String> = inner
            .tickets
            .iter()
            .filter(|(_, c)| {
                c.submitted.project_id == project_id
                    && c.submitted.ticket.players.iter().any(|p| p == user_id)
            })
            .map(|(id, _)| id.clone())
            .collect();
        for id in &ids {
            inner.tickets.remove(id);
        }
        ids
    };
    if cancelled.is_empty() {
        return;
    }
    let mm = matchmaker(state, cluster);
    for ticket_id in cancelled {
        if mm == cluster.node_id() {
            matchmaking.cancel_here(state, project_id, &ticket_id, user_id);
        } else {
            let message = Message::Cancel {
                project_id: project_id.to_owned(),
                ticket_id,
                user_id: user_id.to_owned(),
            };
            notice(cluster, &mm, &message);
        }
    }
}

/// A mode's rules were written on this node: the others' caches follow.
pub(super) fn mode_written(
    state: &AppState,
    project_id: &str,
    mode: &str,
    config: Option<MatchmakingModeConfig>,
) {
    let Some(cluster) = &state.cluster else {
        return;
    };
    let message = Message::Mode {
        project_id: project_id.to_owned(),
        mode: mode.to_owned(),
        config,
    };
    for node in state.realtime.presence.nodes() {
        notice(cluster, &node, &message);
    }
}

/// On the matchmaker: tickets that left the pool (matched, timed out, left, cancelled). Their
/// nodes drop their copies.
pub(super) fn finished<'a>(state: &AppState, tickets: impl IntoIterator<Item = &'a Queued>) {
    let Some(cluster) = &state.cluster else {
        return;
    };
    let mut by_origin: HashMap<Option<&str>, Vec<String>> = HashMap::new();
    for queued in tickets {
        by_origin
            .entry(queued.origin.as_deref())
            .or_default()
            .push(queued.ticket.ticket_id.clone());
    }
    for (origin, ticket_ids) in by_origin {
        match origin {
            None => state.realtime.matchmaking.copies.forget(&ticket_ids),
            Some(node) => notice(cluster, node, &Message::Gone { ticket_ids }),
        }
    }
}

/// Before each pass: follows the matchmaker and hands it the copies it lacks. True when this
/// node is the matchmaker (and matches).
pub(super) fn sync(state: &AppState, cluster: &Arc<Cluster>) -> bool {
    let me = cluster.node_id();
    let nodes: HashSet<String> = state.realtime.presence.nodes().into_iter().collect();
    let mm = lowest(me, &nodes);
    let matchmaking = &state.realtime.matchmaking;
    let (was_matchmaker, left, due) = {
        let mut inner = lock(&matchmaking.copies.0);
        let was_matchmaker = inner.matchmaker.as_deref() == Some(me);
        if inner.matchmaker.as_ref() != Some(&mm) {
            if inner.matchmaker.is_some() {
                tracing::info!(matchmaker = %mm, "the cluster's matchmaker changed");
            }
            // A new matchmaker has none of them.
            for copy in inner.tickets.values_mut() {
                copy.sent_to = None;
            }
            inner.matchmaker = Some(mm.clone());
        }
        let left: Vec<String> = inner.live.difference(&nodes).cloned().collect();
        inner.live = nodes;
        let now_ms = state.clock.now_ms();
        inner
            .tickets
            .retain(|_, c| c.submitted.ticket.expires_at.saturating_add(STALE_COPY_MS) > now_ms);
        let due: Vec<Submitted> = inner
            .tickets
            .values_mut()
            .filter(|c| c.sent_to.is_none())
            .map(|c| {
                c.sent_to = Some(mm.clone());
                c.submitted.clone()
            })
            .collect();
        (was_matchmaker, left, due)
    };
    if mm != me {
        // Only when this node stops matching: a ticket admitted while this pass read an older
        // view (the `Submit` handler reads the view anew) must survive to the next pass.
        if was_matchmaker {
            matchmaking.clear_pool();
        }
    } else {
        matchmaking.drop_origins(state, &left);
    }
    if !due.is_empty() {
        hand_over(state, cluster, mm.clone(), due);
    }
    mm == me
}

/// Gives copies to a new matchmaker. Refused ones (a player queued again meanwhile) are
/// dropped with `queue_left`; unanswered ones are tried again at the next pass.
fn hand_over(state: &AppState, cluster: &Arc<Cluster>, mm: String, due: Vec<Submitted>) {
    let matchmaking = &state.realtime.matchmaking;
    if mm == cluster.node_id() {
        for submitted in due {
            let copy = submitted.clone();
            if let Err(e) = matchmaking.admit(state, submitted, None, false) {
                matchmaking
                    .copies
                    .forget(std::slice::from_ref(&copy.ticket.ticket_id));
                tell_refused(state, &copy, &e.message);
            }
        }
        return;
    }
    let message = Message::Submit {
        origin: cluster.node_id().to_owned(),
        fresh: false,
        tickets: due,
    };
    let (state, cluster) = (state.clone(), cluster.clone());
    tokio::spawn(async move {
        let answers = ask::<Vec<Answer<()>>>(&cluster, &mm, &message).await;
        let Message::Submit { tickets, .. } = message else {
            return;
        };
        let answers = answers.filter(|a| a.len() == tickets.len());
        let mut dropped = Vec::new();
        {
            let mut inner = lock(&state.realtime.matchmaking.copies.0);
            for (i, submitted) in tickets.into_iter().enumerate() {
                let id = &submitted.ticket.ticket_id;
                match answers.as_ref().map(|a| &a[i]) {
                    Some(Ok(())) => {}
                    Some(Err(e)) if e.code != ErrorCode::Unavailable => {
                        if inner.tickets.remove(id).is_some() {
                            dropped.push((submitted, e.message.clone()));
                        }
                    }
                    _ => {
                        if let Some(copy) = inner.tickets.get_mut(id) {
                            if copy.sent_to.as_ref() == Some(&mm) {
                                copy.sent_to = None;
                            }
                        }
                    }
                }
            }
        }
        for (submitted, why) in dropped {
            tell_refused(&state, &submitted, &why);
        }
    });
}

fn tell_refused(state: &AppState, submitted: &Submitted, why: &str) {
    tracing::info!(ticket = %submitted.ticket.ticket_id, reason = %why, "a ticket handed to the new matchmaker was refused");
    tell_left(state, &submitted.project_id, &submitted.ticket, None);
}

/// A message on this node's `<prefix>.mm.<id>`.
pub fn serve(state: &AppState, cluster: &Arc<Cluster>, reply_to: Option<String>, payload: &[u8]) {
    let message = match serde_json::from_slice::<Message>(payload) {
        Ok(message) => message,
        Err(e) => {
            tracing::warn!(error = %e, "undecodable matchmaking message");
            return;
        }
    };
    let matchmaking = &state.realtime.matchmaking;
    let here = matchmaker(state, cluster) == cluster.node_id();
    let answer = |payload: Option<bytes::Bytes>| {
        if let (Some(to), Some(payload)) = (reply_to.clone(), payload) {
            cluster.mm_reply(to, payload);
        }
    };
    match message {
        Message::Gone { ticket_ids } => matchmaking.copies.forget(&ticket_ids),
        Message::Mode {
            project_id,
            mode,
            config,
        } => matchmaking.set_mode(&project_id, &mode, config),
        Message::Cancel {
            project_id,
            ticket_id,
            user_id,
        } => matchmaking.cancel_here(state, &project_id, &ticket_id, &user_id),
        Message::Leave {
            project_id,
            user_id,
            ticket_id,
        } => {
            let left: Answer<Vec<String>> = if here {
                matchmaking
                    .leave_here(state, &project_id, &user_id, ticket_id.as_deref())
                    .map_err(to_body)
            } else {
                Err(to_body(unavailable()))
            };
            answer(encode(&left));
        }
        Message::Status {
            project_id,
            user_id,
            ticket_id,
        } => {
            let ticket: Answer<Ticket> = if here {
                matchmaking
                    .status_here(state, &project_id, &user_id, &ticket_id)
                    .map_err(to_body)
            } else {
                Err(to_body(unavailable()))
            };
            answer(encode(&ticket));
        }
        Message::Submit {
            origin,
            fresh,
            tickets,
        } => {
            let (state, cluster) = (state.clone(), cluster.clone());
            // The mode's rules may need reading from SQL.
            tokio::spawn(async move {
                let matchmaking = &state.realtime.matchmaking;
                let mut answers: Vec<Answer<()>> = Vec::with_capacity(tickets.len());
                for submitted in tickets {
                    let admitted = if matchmaker(&state, &cluster) != cluster.node_id() {
                        Err(unavailable())
                    } else {
                        match matchmaking
                            .mode(&state.db, &submitted.project_id, &submitted.ticket.mode)
                            .await
                        {
                            Ok(_) => {
                                matchmaking.admit(&state, submitted, Some(origin.clone()), fresh)
                            }
                            Err(e) => Err(e),
                        }
                    };
                    answers.push(admitted.map_err(to_body));
                }
                if let (Some(to), Some(payload)) = (reply_to, encode(&answers)) {
                    cluster.mm_reply(to, payload);
                }
                // After the answer is queued, so the submitter hears `queue_joined` first.
                matchmaking.wake.notify_one();
            });
        }
    }
}
