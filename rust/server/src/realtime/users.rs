//! Who is connected to this node: a player's live sockets, for pushes addressed to a player
//! rather than to a room (presence, friend updates, direct messages, `match_found`).
//!
//! A player may hold several sockets (several devices); a push goes to all of them.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use super::conn::{ConnHandle, Frame};

/// `(project id, user id)` -> live sockets, oldest first.
type SocketsByPlayer = HashMap<(String, String), Vec<Arc<ConnHandle>>>;

#[derive(Default)]
pub struct Users {
    sockets: Mutex<SocketsByPlayer>,
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

    pub fn is_online(&self, project_id: &str, user_id: &str) -> bool {
        lock(&self.sockets).contains_key(&(project_id.to_owned(), user_id.to_owned()))
    }

    /// Queues `frame` on every socket of the player; false when the player has none here.
    pub fn send(&self, project_id: &str, user_id: &str, frame: &Frame) -> bool {
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
