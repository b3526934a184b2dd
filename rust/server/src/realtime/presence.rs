//! Presence from the socket: `online` while a player has a socket, `in_match` while they hold a
//! room seat, `offline` once both are gone. Accepted friends get `presence_changed`, and the
//! social service's presence (`GET /api/v1/friends`) shows the same status.
//!
//! Each node knows its own players (`local`) and, in a cluster, what every other node announced
//! (`remote`, see `crate::cluster`). A player's status is the highest over all nodes, so a
//! player with sockets on two nodes stays online until both are gone. Every node sees every
//! transition and tells only the friends connected to it: no push crosses nodes, and each node
//! looks friends up once per transition of a player, never per relayed message.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use aethex_protocol::realtime::{PresenceStatus, ServerMessage};
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

use super::conn::encode;
use crate::app::{AppInner, AppState};

/// Transitions waiting for their friend lookup; beyond this a burst drops pushes (logged), never
/// blocks a socket.
const NOTICE_QUEUE: usize = 4096;

/// `(project id, user id)`.
pub type UserKey = (String, String);

/// One player's status as one node sees it, as carried between nodes.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NodeStatus {
    pub project_id: String,
    pub user_id: String,
    pub status: PresenceStatus,
}

pub struct Presence {
    inner: Mutex<Inner>,
    notices: mpsc::Sender<Notice>,
    /// Taken by the worker when the server starts.
    notice_rx: Mutex<Option<mpsc::Receiver<Notice>>>,
}

#[derive(Default)]
struct Inner {
    /// This node's players that are not offline here.
    local: HashMap<UserKey, PresenceStatus>,
    /// Other nodes by node id.
    remote: HashMap<String, RemoteNode>,
}

struct RemoteNode {
    last_heard: Instant,
    users: HashMap<UserKey, PresenceStatus>,
}

/// A player's status changed; their friends on this node are told.
struct Notice {
    key: UserKey,
    status: PresenceStatus,
    at: i64,
}

impl Default for Presence {
    fn default() -> Self {
        let (notices, rx) = mpsc::channel(NOTICE_QUEUE);
        Self {
            inner: Mutex::default(),
            notices,
            notice_rx: Mutex::new(Some(rx)),
        }
    }
}

fn rank(status: PresenceStatus) -> u8 {
    match status {
        PresenceStatus::Offline => 0,
        PresenceStatus::Online => 1,
        PresenceStatus::InMatch => 2,
    }
}

fn highest(a: PresenceStatus, b: PresenceStatus) -> PresenceStatus {
    if rank(a) >= rank(b) {
        a
    } else {
        b
    }
}

impl Inner {
    fn combined(&self, key: &UserKey) -> PresenceStatus {
        let local = self
            .local
            .get(key)
            .copied()
            .unwrap_or(PresenceStatus::Offline);
        self.remote
            .values()
            .filter_map(|n| n.users.get(key).copied())
            .fold(local, highest)
    }
}

impl Presence {
    /// Starts the worker that tells friends about transitions. It holds the server weakly and
    /// ends with it.
    pub fn start(state: &AppState) {
        let Some(mut rx) = lock(&state.realtime.presence.notice_rx).take() else {
            return;
        };
        let weak: Weak<AppInner> = Arc::downgrade(&state.0);
        tokio::spawn(async move {
            while let Some(notice) = rx.recv().await {
                let Some(inner) = weak.upgrade() else { return };
                tell_friends(&AppState(inner), notice).await;
            }
        });
    }

    /// Recomputes this node's status of the player from their sockets and seats; the one call
    /// after anything that may change either (a socket opened or closed, a seat taken or
    /// released, the end of a resume grace period).
    pub fn refresh(state: &AppState, project_id: &str, user_id: &str) {
        let realtime = &state.realtime;
        let key = (project_id.to_owned(), user_id.to_owned());
        let mut inner = lock(&realtime.presence.inner);
        // Read under the presence lock so two sockets of one player closing at once cannot
        // publish their statuses out of order.
        let status = if realtime.rooms.seats(project_id, user_id) > 0 {
            // A seat kept through a resume grace period still counts as in a match.
            PresenceStatus::InMatch
        } else if realtime.users.is_online(project_id, user_id) {
            PresenceStatus::Online
        } else {
            PresenceStatus::Offline
        };
        let before_local = inner
            .local
            .get(&key)
            .copied()
            .unwrap_or(PresenceStatus::Offline);
        if before_local == status {
            return;
        }
        let before = inner.combined(&key);
        if status == PresenceStatus::Offline {
            inner.local.remove(&key);
        } else {
            inner.local.insert(key.clone(), status);
        }
        let after = inner.combined(&key);
        let at = state.clock.now_ms();
        if let Some(cluster) = &state.cluster {
            cluster.announce_presence(NodeStatus {
                project_id: key.0.clone(),
                user_id: key.1.clone(),
                status,
            });
        }
        drop(inner);
        if before != after {
            changed(state, key, after, at);
        }
    }

    /// Another node's status of one player.
    pub fn remote_update(state: &AppState, node: &str, update: NodeStatus) {
        let key = (update.project_id, update.user_id);
        let mut inner = lock(&state.realtime.presence.inner);
        let before = inner.combined(&key);
        let users = &mut inner
            .remote
            .entry(node.to_owned())
            .or_insert_with(|| RemoteNode {
                last_heard: Instant::now(),
                users: HashMap::new(),
            })
            .users;
        if update.status == PresenceStatus::Offline {
            users.remove(&key);
        } else {
            users.insert(key.clone(), update.status);
        }
        let after = inner.combined(&key);
        drop(inner);
        if before != after {
            changed(state, key, after, state.clock.now_ms());
        }
    }

    /// Everything another node reports at once (when nodes meet); replaces what was known.
    pub fn remote_snapshot(state: &AppState, node: &str, users: Vec<NodeStatus>) {
        let users: HashMap<UserKey, PresenceStatus> = users
            .into_iter()
            .filter(|u| u.status != PresenceStatus::Offline)
            .map(|u| ((u.project_id, u.user_id), u.status))
            .collect();
        Self::replace_node(state, node, Some(users));
    }

    /// A node announced it is alive; true when it was not known (it gets this node's
    /// snapshot).
    pub fn node_heard(&self, node: &str) -> bool {
        let mut inner = lock(&self.inner);
        match inner.remote.get_mut(node) {
            Some(n) => {
                n.last_heard = Instant::now();
                false
            }
            None => {
                inner.remote.insert(
                    node.to_owned(),
                    RemoteNode {
                        last_heard: Instant::now(),
                        users: HashMap::new(),
                    },
                );
                true
            }
        }
    }

    /// Drops a node that said goodbye or went silent: its players' statuses go with it.
    pub fn node_gone(state: &AppState, node: &str) {
        Self::replace_node(state, node, None);
    }

    /// The other nodes heard from and not taken for gone.
    pub fn nodes(&self) -> Vec<String> {
        lock(&self.inner).remote.keys().cloned().collect()
    }

    /// Nodes not heard from within `timeout`.
    pub fn silent_nodes(&self, timeout: Duration) -> Vec<String> {
        lock(&self.inner)
            .remote
            .iter()
            .filter(|(_, n)| n.last_heard.elapsed() > timeout)
            .map(|(id, _)| id.clone())
            .collect()
    }

    fn replace_node(state: &AppState, node: &str, users: Option<HashMap<UserKey, PresenceStatus>>) {
        let mut inner = lock(&state.realtime.presence.inner);
        let touched: Vec<UserKey> = inner
            .remote
            .get(node)
            .into_iter()
            .flat_map(|n| n.users.keys())
            .chain(users.iter().flat_map(|u| u.keys()))
            .cloned()
            .collect();
        let before: Vec<PresenceStatus> = touched.iter().map(|k| inner.combined(k)).collect();
        match users {
            Some(users) => {
                inner
                    .remote
                    .entry(node.to_owned())
                    .or_insert_with(|| RemoteNode {
                        last_heard: Instant::now(),
                        users: HashMap::new(),
                    })
                    .users = users
            }
            None => {
                inner.remote.remove(node);
            }
        }
        let changes: Vec<(UserKey, PresenceStatus)> = touched
            .into_iter()
            .zip(before)
            .filter_map(|(k, b)| {
                let after = inner.combined(&k);
                (after != b).then_some((k, after))
            })
            .collect();
        drop(inner);
        let at = state.clock.now_ms();
        for (key, status) in changes {
            changed(state, key, status, at);
        }
    }

    /// This node's own players, for a node that just joined.
    pub fn local_snapshot(&self) -> Vec<NodeStatus> {
        lock(&self.inner)
            .local
            .iter()
            .map(|((project_id, user_id), status)| NodeStatus {
                project_id: project_id.clone(),
                user_id: user_id.clone(),
                status: *status,
            })
            .collect()
    }

    /// The player's status over every node.
    pub fn status(&self, project_id: &str, user_id: &str) -> PresenceStatus {
        lock(&self.inner).combined(&(project_id.to_owned(), user_id.to_owned()))
    }
}

/// A player's status over all nodes changed: the social presence follows, friends here are told.
fn changed(state: &AppState, key: UserKey, status: PresenceStatus, at: i64) {
    state.social.presence.set_live(&key.1, status, at);
    if status == PresenceStatus::Offline {
        // A party member offline on any node (or on a node that went away) ends the ticket,
        // as their own socket closing does on one node.
        state
            .realtime
            .matchmaking
            .player_left_cluster(state, &key.0, &key.1);
    }
    if let Err(e) = state
        .realtime
        .presence
        .notices
        .try_send(Notice { key, status, at })
    {
        tracing::warn!(error = %e, "presence notice queue full; a presence_changed push is dropped");
    }
}

async fn tell_friends(state: &AppState, notice: Notice) {
    let (project_id, user_id) = &notice.key;
    let friends = match crate::social::friends::friend_ids(&state.db, project_id, user_id).await {
        Ok(friends) => friends,
        Err(e) => {
            tracing::warn!(error = ?e, "looking up friends for a presence push");
            return;
        }
    };
    if friends.is_empty() {
        return;
    }
    let frame = encode(
        None,
        ServerMessage::PresenceChanged {
            user_id: user_id.clone(),
            status: notice.status,
            at: notice.at,
        },
    );
    for friend in friends {
        state.realtime.users.send_local(project_id, &friend, &frame);
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}
