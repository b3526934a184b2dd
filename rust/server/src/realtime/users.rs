//! Who is connected to this node: a player's live sockets, for pushes addressed to a player
//! rather than to a room (presence, friend updates, direct messages, `match_found`).
//!
//! A player may hold several sockets (several devices); a push goes to all of them, on this node
//! and, in a cluster, on the others.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

use super::conn::{ConnHandle, Frame};
use crate::cluster::Cluster;

/// `(project id, user id)` -> live sockets, oldest first.
type SocketsByPlayer = HashMap<(String, String), Vec<Arc<ConnHandle>>>;

#[derive(Default)]
pub struct Users {
    sockets: Mutex<SocketsByPlayer>,
    /// Set once at start when this node is part of a cluster.
    cluster: OnceLock<Arc<Cluster>>,
}

impl Users {
    /// Records a new socket; true when it is the player's first (the player came online).
    pub fn register(&self, conn: &Arc<ConnHandle>) -> bool {
        let mut sockets = lock(&self.sockets);
        let entry = sockets
            .entry((conn.project_id.clone(), conn.user_id.clone()))
            .or_default();
        entry.push(conn.clone());
        entry.len() == 1
    }

    /// Forgets a closed socket; true when it was the player's last (the player went offline).
    pub fn unregister(&self, conn: &ConnHandle) -> bool {
        let mut sockets = lock(&self.sockets);
        let key = (conn.project_id.clone(), conn.user_id.clone());
        let Some(entry) = sockets.get_mut(&key) else {
            return false;
        };
        entry.retain(|c| c.id != conn.id);
        let last = entry.is_empty();
        if last {
            sockets.remove(&key);
        }
        last
    }

    /// Whether the player's socket `conn_id` is open on this node.
    pub fn has_conn(&self, project_id: &str, user_id: &str, conn_id: u64) -> bool {
        lock(&self.sockets)
            .get(&(project_id.to_owned(), user_id.to_owned()))
            .is_some_and(|conns| conns.iter().any(|c| c.id == conn_id))
    }

    pub fn is_online(&self, project_id: &str, user_id: &str) -> bool {
        lock(&self.sockets).contains_key(&(project_id.to_owned(), user_id.to_owned()))
    }

    pub fn attach_cluster(&self, cluster: Arc<Cluster>) {
        let _ = self.cluster.set(cluster);
    }

    /// Queues `frame` on every socket of the player, on every node; false when the player has
    /// none on this node (the other nodes deliver theirs without answering).
    pub fn send(&self, project_id: &str, user_id: &str, frame: &Frame) -> bool {
        if let Some(cluster) = self.cluster.get() {
            if let Some(portable) = super::remote::portable(frame) {
                cluster.forward_push(project_id, user_id, &portable.message);
            }
        }
        self.send_local(project_id, user_id, frame)
    }

    /// Queues `frame` on one socket of the player on this node; false when it is gone.
    pub fn send_to_conn(
        &self,
        project_id: &str,
        user_id: &str,
        conn_id: u64,
        frame: Frame,
    ) -> bool {
        let conn = lock(&self.sockets)
            .get(&(project_id.to_owned(), user_id.to_owned()))
            .and_then(|conns| conns.iter().find(|c| c.id == conn_id).cloned());
        match conn {
            Some(conn) => {
                conn.push(frame);
                true
            }
            None => false,
        }
    }

    /// Queues `frame` on the player's sockets on this node only.
    pub fn send_local(&self, project_id: &str, user_id: &str, frame: &Frame) -> bool {
        let sockets: Vec<Arc<ConnHandle>> =
            match lock(&self.sockets).get(&(project_id.to_owned(), user_id.to_owned())) {
                Some(conns) => conns.clone(),
                None => return false,
            };
        // Pushed outside the registry lock: a push may close a slow socket.
        for conn in &sockets {
            conn.push(frame.clone());
        }
        true
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}
