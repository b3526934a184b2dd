//! The request log tests assert on: every API request, what faults hit it and what came of it.

use std::collections::{BTreeMap, VecDeque};
use std::time::{Duration, Instant};

use axum::http::HeaderMap;
use serde::Serialize;

#[derive(Debug, Clone, Serialize)]
pub struct LogEntry {
    /// 1 for the first request since start (or the last `clear_log`/reset).
    pub seq: u64,
    pub method: String,
    pub path: String,
    pub query: Option<String>,
    /// The status the client received; `None` when the connection was dropped before any.
    pub status: Option<u16>,
    /// Whether the API handled the request (its effect, e.g. a new save version, happened).
    /// Also true when the handler started and the client hung up before the answer.
    pub handled: bool,
    /// The connection closed before the mock answered, not by a drop fault: the client hung up
    /// (e.g. its request timeout fired during a delay) or the mock went offline.
    pub client_gone: bool,
    /// The faults that fired on this request, e.g. `["delay 200ms", "fail 503 unavailable"]`.
    pub faults: Vec<String>,
    /// Request headers as received (before decompression), lowercase names.
    pub headers: BTreeMap<String, String>,
    /// Time since the mock started when the request arrived.
    #[serde(rename = "at_ms", serialize_with = "as_millis")]
    pub at: Duration,
    /// Time from arrival to the answer (or the drop).
    #[serde(rename = "duration_ms", serialize_with = "as_millis")]
    pub duration: Duration,
    #[serde(skip)]
    pub(crate) arrived: Instant,
}

fn as_millis<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f64(d.as_secs_f64() * 1000.0)
}

impl LogEntry {
    pub(crate) fn begin(
        method: &str,
        path: &str,
        query: Option<&str>,
        headers: &HeaderMap,
        started: Instant,
    ) -> Self {
        let arrived = Instant::now();
        LogEntry {
            seq: 0,
            method: method.to_owned(),
            path: path.to_owned(),
            query: query.map(str::to_owned),
            status: None,
            handled: false,
            client_gone: false,
            faults: Vec::new(),
            headers: headers
                .iter()
                .map(|(name, value)| {
                    (
                        name.as_str().to_owned(),
                        String::from_utf8_lossy(value.as_bytes()).into_owned(),
                    )
                })
                .collect(),
            at: arrived.duration_since(started),
            duration: Duration::ZERO,
            arrived,
        }
    }

    /// A request header, by lowercase name.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(String::as_str)
    }

    /// `Content-Encoding` of the request body as sent.
    pub fn content_encoding(&self) -> Option<&str> {
        self.header("content-encoding")
    }

    /// Whether the client got no HTTP answer (the socket was closed, by the mock or the client).
    pub fn dropped(&self) -> bool {
        self.status.is_none()
    }
}

/// The log keeps this many newest entries, so a long-running binary does not grow without bound.
pub const LOG_CAPACITY: usize = 100_000;

#[derive(Debug, Default)]
pub(crate) struct RequestLog {
    next_seq: u64,
    entries: VecDeque<LogEntry>,
}

impl RequestLog {
    pub fn push(&mut self, mut entry: LogEntry) {
        self.next_seq += 1;
        entry.seq = self.next_seq;
        entry.duration = entry.arrived.elapsed();
        if self.entries.len() >= LOG_CAPACITY {
            self.entries.pop_front();
        }
        self.entries.push_back(entry);
    }

    pub fn entries(&self) -> Vec<LogEntry> {
        self.entries.iter().cloned().collect()
    }

    pub fn clear(&mut self) {
        *self = RequestLog::default();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_log_keeps_the_newest_entries_and_keeps_counting() {
        let started = Instant::now();
        let mut log = RequestLog::default();
        for _ in 0..LOG_CAPACITY + 5 {
            log.push(LogEntry::begin(
                "GET",
                "/x",
                None,
                &HeaderMap::new(),
                started,
            ));
        }
        let entries = log.entries();
        assert_eq!(entries.len(), LOG_CAPACITY);
        assert_eq!(entries[0].seq, 6);
        assert_eq!(entries.last().unwrap().seq, (LOG_CAPACITY + 5) as u64);
        log.clear();
        log.push(LogEntry::begin(
            "GET",
            "/x",
            None,
            &HeaderMap::new(),
            started,
        ));
        assert_eq!(log.entries()[0].seq, 1);
    }
}
