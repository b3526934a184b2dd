//! The persisted analytics queue: `data_dir/analytics/queue.jsonl`, one event per line, oldest
//! first. New events are appended (and fsynced) in groups; removing uploaded events or dropping
//! the oldest over the cap rewrites the file atomically. A crash can leave a torn last line: it
//! is skipped at load and the next write rewrites the file clean. A crash between an upload and
//! the rewrite re-sends those events at the next start; the server stores each event id once.

use std::collections::VecDeque;
use std::fs::{self, OpenOptions};
use std::io::{self, Write};
use std::path::PathBuf;

use aethex_protocol::analytics::AnalyticsEvent;

use crate::storage::write_atomic;

pub(crate) struct DiskQueue {
    path: PathBuf,
    events: VecDeque<AnalyticsEvent>,
    /// Events at the back of `events` not in the file yet.
    unwritten: usize,
    /// The file is not a prefix of `events` any more: write it whole next time.
    rewrite: bool,
    cap: usize,
    /// Oldest events dropped because the queue was full, since this queue was loaded.
    pub dropped: u64,
}

impl DiskQueue {
    pub fn load(path: PathBuf, cap: usize) -> Self {
        let mut queue = Self {
            path,
            events: VecDeque::new(),
            unwritten: 0,
            rewrite: false,
            cap: cap.max(1),
            dropped: 0,
        };
        let bytes = match fs::read(&queue.path) {
            Ok(bytes) => bytes,
            Err(e) => {
                if e.kind() != io::ErrorKind::NotFound {
                    tracing::warn!(error = %e, "analytics queue unreadable; starting empty");
                }
                return queue;
            }
        };
        if !bytes.is_empty() && bytes.last() != Some(&b'\n') {
            queue.rewrite = true;
        }
        for line in bytes.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
            match serde_json::from_slice::<AnalyticsEvent>(line) {
                Ok(event) => queue.events.push_back(event),
                Err(_) => queue.rewrite = true,
            }
        }
        while queue.events.len() > queue.cap {
            queue.events.pop_front();
            queue.dropped += 1;
            queue.rewrite = true;
        }
        queue
    }

    pub fn len(&self) -> usize {
        self.events.len()
    }

    pub fn is_empty(&self) -> bool {
        self.events.is_empty()
    }

    /// Adds an event in memory; `persist` writes it. Over the cap the oldest is dropped.
    pub fn push(&mut self, event: AnalyticsEvent) {
        self.events.push_back(event);
        self.unwritten += 1;
        if self.events.len() > self.cap {
            self.events.pop_front();
            self.dropped += 1;
            self.unwritten = self.unwritten.min(self.events.len());
            self.rewrite = true;
        }
    }

    /// The oldest `n` events (fewer when fewer are queued).
    pub fn front(&self, n: usize) -> Vec<AnalyticsEvent> {
        self.events.iter().take(n).cloned().collect()
    }

    /// Forgets the oldest `n` events (uploaded, or refused by the server).
    pub fn remove_front(&mut self, n: usize) {
        let n = n.min(self.events.len());
        self.events.drain(..n);
        self.unwritten = self.unwritten.min(self.events.len());
        self.rewrite = true;
    }

    /// Empties the queue and deletes its file (consent revoked).
    pub fn clear(&mut self) -> io::Result<()> {
        self.events.clear();
        self.unwritten = 0;
        self.rewrite = false;
        match fs::remove_file(&self.path) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }

    /// Makes the file match memory: appends the new events, or rewrites it when needed.
    pub fn persist(&mut self) -> io::Result<()> {
        if self.rewrite {
            let mut bytes = Vec::new();
            for event in &self.events {
                serde_json::to_writer(&mut bytes, event).map_err(io::Error::other)?;
                bytes.push(b'\n');
            }
            write_atomic(&self.path, &bytes, true)?;
        } else if self.unwritten > 0 {
            let mut bytes = Vec::new();
            for event in self.events.iter().skip(self.events.len() - self.unwritten) {
                serde_json::to_writer(&mut bytes, event).map_err(io::Error::other)?;
                bytes.push(b'\n');
            }
            if let Some(dir) = self.path.parent() {
                fs::create_dir_all(dir)?;
            }
            let mut options = OpenOptions::new();
            options.create(true).append(true);
            #[cfg(unix)]
            {
                use std::os::unix::fs::OpenOptionsExt;
                options.mode(0o600);
            }
            let mut file = options.open(&self.path)?;
            file.write_all(&bytes)?;
            file.sync_data()?;
        }
        self.rewrite = false;
        self.unwritten = 0;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use aethex_protocol::analytics::EventKind;

    fn event(n: i64) -> AnalyticsEvent {
        AnalyticsEvent {
            id: format!("event-{n:04}"),
            kind: EventKind::Event,
            name: "e".into(),
            properties: Default::default(),
            value: None,
            session_id: "session-1".into(),
            seq: n,
            client_time: n,
        }
    }

    fn seqs(queue: &DiskQueue) -> Vec<i64> {
        queue.front(usize::MAX).iter().map(|e| e.seq).collect()
    }

    #[test]
    fn appends_survive_a_reload_and_the_cap_drops_the_oldest() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("analytics").join("queue.jsonl");
        let mut queue = DiskQueue::load(path.clone(), 3);
        for n in 0..2 {
            queue.push(event(n));
        }
        queue.persist().unwrap();
        queue.push(event(2));
        queue.persist().unwrap();
        assert_eq!(seqs(&DiskQueue::load(path.clone(), 3)), [0, 1, 2]);

        queue.push(event(3));
        queue.push(event(4));
        assert_eq!(queue.dropped, 2);
        queue.persist().unwrap();
        assert_eq!(seqs(&DiskQueue::load(path.clone(), 3)), [2, 3, 4]);

        queue.remove_front(2);
        queue.persist().unwrap();
        assert_eq!(seqs(&DiskQueue::load(path.clone(), 3)), [4]);
        queue.clear().unwrap();
        assert!(!path.exists());
    }

    #[test]
    fn a_torn_last_line_is_skipped_and_rewritten() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("queue.jsonl");
        let mut queue = DiskQueue::load(path.clone(), 10);
        queue.push(event(0));
        queue.persist().unwrap();
        // A crash in the middle of an append.
        let mut file = OpenOptions::new().append(true).open(&path).unwrap();
        file.write_all(b"{\"id\":\"event-00").unwrap();
        drop(file);
        let mut queue = DiskQueue::load(path.clone(), 10);
        assert_eq!(seqs(&queue), [0]);
        queue.push(event(1));
        queue.persist().unwrap();
        assert_eq!(seqs(&DiskQueue::load(path, 10)), [0, 1]);
    }
}
