//! Scripted faults: what to do to the next requests matching a route, and to the next frames of
//! the realtime socket matching a direction (and optionally a message `type` or a player).

use std::time::Duration;

use aethex_protocol::ErrorCode;
use axum::http::Method;
use serde::{Deserialize, Serialize};

/// Which requests a fault applies to: `"[METHOD ]/path/pattern"`.
///
/// In the path, `*` or `{name}` matches exactly one segment and a trailing `**` matches any
/// number of remaining segments (zero included). Without a method every method matches. `"*"` alone
/// matches every API request. Examples: `"POST /api/v1/saves/*"`, `"/api/v1/auth/**"`,
/// `"GET /api/v1/saves/{user_id}/{slot}"`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(from = "String", into = "String")]
pub struct Route {
    method: Option<String>,
    pattern: String,
}

impl Route {
    pub fn parse(text: &str) -> Self {
        let text = text.trim();
        match text.split_once(char::is_whitespace) {
            Some((method, pattern))
                if !method.is_empty() && method.chars().all(|c| c.is_ascii_alphabetic()) =>
            {
                Route {
                    method: Some(method.to_ascii_uppercase()),
                    pattern: pattern.trim().to_owned(),
                }
            }
            _ => Route {
                method: None,
                pattern: text.to_owned(),
            },
        }
    }

    pub fn matches(&self, method: &Method, path: &str) -> bool {
        if let Some(expected) = &self.method {
            if expected != method.as_str() {
                return false;
            }
        }
        if self.pattern == "*" || self.pattern == "**" {
            return true;
        }
        let mut wanted = self.pattern.trim_matches('/').split('/');
        let mut actual = path.trim_matches('/').split('/');
        loop {
            match (wanted.next(), actual.next()) {
                (Some("**"), _) => return true,
                (None, None) => return true,
                (Some(w), Some(a)) if is_wildcard(w) || w == a => {}
                _ => return false,
            }
        }
    }
}

fn is_wildcard(segment: &str) -> bool {
    segment == "*" || (segment.starts_with('{') && segment.ends_with('}'))
}

impl From<&str> for Route {
    fn from(text: &str) -> Self {
        Route::parse(text)
    }
}

impl From<String> for Route {
    fn from(text: String) -> Self {
        Route::parse(&text)
    }
}

impl From<Route> for String {
    fn from(route: Route) -> String {
        match route.method {
            Some(method) => format!("{method} {}", route.pattern),
            None => route.pattern,
        }
    }
}

impl std::fmt::Display for Route {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&String::from(self.clone()))
    }
}

/// How many matching requests a fault applies to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Times {
    /// The next `n` matching requests, then the fault is gone.
    Next(u32),
    /// Every matching request until [`crate::MockServer::clear_faults`].
    Always,
}

impl From<u32> for Times {
    fn from(n: u32) -> Self {
        Times::Next(n)
    }
}

/// When a dropped connection closes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DropWhen {
    /// Before the request is handled: nothing is applied, no response byte is sent.
    BeforeHandling,
    /// After the request is handled (the write is applied) but before any response byte.
    AfterHandling,
    /// After the request is handled, the status line, headers and half of the body are sent, then
    /// the socket closes.
    MidResponse,
    /// Part of the request body is read (its first chunk), then the socket closes; nothing applied.
    MidBody,
}

/// What a fault does to a matching request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum FaultAction {
    /// Answer `status` with the error envelope `code` instead of handling the request.
    Fail {
        status: u16,
        code: ErrorCode,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        retry_after_secs: Option<u64>,
    },
    /// 429 `rate_limited` with `Retry-After`.
    RateLimit { retry_after_secs: u64 },
    /// Wait before handling (stacks with the other faults).
    Delay { ms: u64 },
    /// Close the TCP connection.
    Drop { when: DropWhen },
}

/// A fault as scripted over HTTP: `{"route": "...", "kind": "...", ..., "times": n}`.
/// `times` absent or null means "always, until cleared".
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FaultSpec {
    pub route: Route,
    #[serde(flatten)]
    pub action: FaultAction,
    #[serde(default)]
    pub times: Option<u32>,
}

/// An installed fault with how often it is still to fire.
#[derive(Debug, Clone, Serialize)]
pub struct ActiveFault {
    pub id: u64,
    pub route: Route,
    #[serde(flatten)]
    pub action: FaultAction,
    /// `None` = always.
    pub remaining: Option<u32>,
    pub hits: u64,
}

/// What happens to one request: an optional wait, then at most one terminal fault.
#[derive(Debug, Default, Clone)]
pub struct Plan {
    pub delay: Duration,
    pub terminal: Option<FaultAction>,
    /// Human-readable names of the faults that fired, for the request log.
    pub fired: Vec<String>,
}

/// Which way a realtime frame travels through the mock.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    /// Server to client (replies and pushes).
    ToClient,
    /// Client to server.
    ToServer,
    /// Either way.
    #[default]
    Both,
}

impl Direction {
    fn covers(self, way: Direction) -> bool {
        self == Direction::Both || self == way
    }
}

/// What a frame fault does to a matching data frame (text or binary) of the realtime socket.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum FrameAction {
    /// Deliver it `ms` later (frames keep their order, so later ones wait behind it).
    Delay { ms: u64 },
    /// Never deliver it.
    Drop,
}

/// Which realtime frames a frame fault applies to; every field left out matches all.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct FrameFilter {
    #[serde(default)]
    pub direction: Direction,
    /// The JSON frame's `type` (e.g. `"state_update"`); binary frames never match a type.
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    pub message_type: Option<String>,
    /// Only the sockets of this player.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_id: Option<String>,
}

impl FrameFilter {
    pub fn direction(direction: Direction) -> Self {
        Self {
            direction,
            ..Self::default()
        }
    }

    /// Only frames whose JSON `type` is `message_type`.
    pub fn message_type(mut self, message_type: impl Into<String>) -> Self {
        self.message_type = Some(message_type.into());
        self
    }

    /// Only the sockets of the player `user_id`.
    pub fn user(mut self, user_id: impl Into<String>) -> Self {
        self.user_id = Some(user_id.into());
        self
    }
}

/// A frame fault as scripted over HTTP:
/// `{"kind":"drop","direction":"to_client","type":"state_update","user_id":"…","times":2}`.
/// `times` absent or null means "every matching frame, until cleared".
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FrameFaultSpec {
    #[serde(flatten)]
    pub filter: FrameFilter,
    #[serde(flatten)]
    pub action: FrameAction,
    #[serde(default)]
    pub times: Option<u32>,
}

/// An installed frame fault with how often it is still to fire.
#[derive(Debug, Clone, Serialize)]
pub struct ActiveFrameFault {
    pub id: u64,
    #[serde(flatten)]
    pub filter: FrameFilter,
    #[serde(flatten)]
    pub action: FrameAction,
    /// `None` = always.
    pub remaining: Option<u32>,
    pub hits: u64,
}

/// What happens to one realtime data frame.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct FramePlan {
    pub drop: bool,
    pub delay: Duration,
}

/// Route faults and frame faults share one id sequence, so one `remove` serves both.
#[derive(Debug, Default)]
pub struct Faults {
    next_id: u64,
    active: Vec<ActiveFault>,
    frames: Vec<ActiveFrameFault>,
}

impl Faults {
    pub fn add(&mut self, route: Route, action: FaultAction, times: Times) -> u64 {
        self.next_id += 1;
        let remaining = match times {
            Times::Next(n) => Some(n),
            Times::Always => None,
        };
        if remaining != Some(0) {
            self.active.push(ActiveFault {
                id: self.next_id,
                route,
                action,
                remaining,
                hits: 0,
            });
        }
        self.next_id
    }

    pub fn add_frame(&mut self, filter: FrameFilter, action: FrameAction, times: Times) -> u64 {
        self.next_id += 1;
        let remaining = match times {
            Times::Next(n) => Some(n),
            Times::Always => None,
        };
        if remaining != Some(0) {
            self.frames.push(ActiveFrameFault {
                id: self.next_id,
                filter,
                action,
                remaining,
                hits: 0,
            });
        }
        self.next_id
    }

    /// Forgets route faults and frame faults.
    pub fn clear(&mut self) {
        self.active.clear();
        self.frames.clear();
    }

    pub fn clear_frames(&mut self) {
        self.frames.clear();
    }

    /// Removes one fault (route or frame); false when it is unknown or already spent.
    pub fn remove(&mut self, id: u64) -> bool {
        let before = self.active.len() + self.frames.len();
        self.active.retain(|f| f.id != id);
        self.frames.retain(|f| f.id != id);
        self.active.len() + self.frames.len() != before
    }

    pub fn list_frames(&self) -> Vec<ActiveFrameFault> {
        self.frames.clone()
    }

    /// Consumes the frame faults that apply to one data frame going `way` on a socket of
    /// `user_id`: the first matching drop (in the order added) wins; otherwise every matching
    /// delay is applied, summed. `message_type` is only asked for when a fault filters on it.
    pub fn take_frame(
        &mut self,
        way: Direction,
        user_id: &str,
        message_type: impl FnOnce() -> Option<String>,
    ) -> FramePlan {
        if self.frames.is_empty() {
            return FramePlan::default();
        }
        let needs_type = self.frames.iter().any(|f| f.filter.message_type.is_some());
        let actual_type = if needs_type { message_type() } else { None };
        let matches = |filter: &FrameFilter| {
            filter.direction.covers(way)
                && filter.user_id.as_deref().is_none_or(|u| u == user_id)
                && filter
                    .message_type
                    .as_deref()
                    .is_none_or(|t| actual_type.as_deref() == Some(t))
        };
        let mut plan = FramePlan::default();
        let drop = self
            .frames
            .iter_mut()
            .find(|f| f.action == FrameAction::Drop && matches(&f.filter));
        if let Some(fault) = drop {
            plan.drop = true;
            fire(&mut fault.hits, &mut fault.remaining);
        } else {
            for fault in self.frames.iter_mut().filter(|f| matches(&f.filter)) {
                if let FrameAction::Delay { ms } = fault.action {
                    plan.delay += Duration::from_millis(ms);
                    fire(&mut fault.hits, &mut fault.remaining);
                }
            }
        }
        self.frames.retain(|f| f.remaining != Some(0));
        plan
    }

    pub fn list(&self) -> Vec<ActiveFault> {
        self.active.clone()
    }

    /// Consumes the faults that apply to this request: every matching delay (summed), then the
    /// first matching terminal fault in the order they were added.
    pub fn take(&mut self, method: &Method, path: &str) -> Plan {
        let mut plan = Plan::default();
        for fault in &mut self.active {
            if !fault.route.matches(method, path) {
                continue;
            }
            let is_delay = matches!(fault.action, FaultAction::Delay { .. });
            if !is_delay && plan.terminal.is_some() {
                continue;
            }
            match &fault.action {
                FaultAction::Delay { ms } => plan.delay += Duration::from_millis(*ms),
                other => plan.terminal = Some(other.clone()),
            }
            plan.fired.push(describe(&fault.action));
            fire(&mut fault.hits, &mut fault.remaining);
        }
        self.active.retain(|f| f.remaining != Some(0));
        plan
    }
}

fn fire(hits: &mut u64, remaining: &mut Option<u32>) {
    *hits += 1;
    if let Some(left) = remaining {
        *left -= 1;
    }
}

fn describe(action: &FaultAction) -> String {
    match action {
        FaultAction::Fail { status, code, .. } => format!("fail {status} {code}"),
        FaultAction::RateLimit { retry_after_secs } => {
            format!("rate_limit retry_after={retry_after_secs}s")
        }
        FaultAction::Delay { ms } => format!("delay {ms}ms"),
        FaultAction::Drop { when } => format!(
            "drop {}",
            serde_json::to_value(when)
                .ok()
                .and_then(|v| v.as_str().map(str::to_owned))
                .unwrap_or_default()
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_match_methods_and_wildcards() {
        let route = Route::parse("POST /api/v1/saves/*");
        assert!(route.matches(&Method::POST, "/api/v1/saves/me"));
        assert!(!route.matches(&Method::GET, "/api/v1/saves/me"));
        assert!(!route.matches(&Method::POST, "/api/v1/saves/me/slot1"));
        let route = Route::parse("/api/v1/saves/{user}/{slot}");
        assert!(route.matches(&Method::DELETE, "/api/v1/saves/me/slot1"));
        let route = Route::parse("/api/v1/auth/**");
        assert!(route.matches(&Method::PUT, "/api/v1/auth/profile"));
        assert!(!route.matches(&Method::GET, "/api/v1/saves/me"));
        assert!(Route::parse("*").matches(&Method::GET, "/anything/at/all"));
        assert_eq!(String::from(Route::parse("get  /x")), "GET /x");
    }

    #[test]
    fn faults_fire_the_scripted_number_of_times_in_order() {
        let mut faults = Faults::default();
        let fail = FaultAction::Fail {
            status: 503,
            code: ErrorCode::Unavailable,
            retry_after_secs: None,
        };
        faults.add("POST /a".into(), fail.clone(), Times::Next(2));
        faults.add("/a".into(), FaultAction::Delay { ms: 5 }, Times::Always);
        faults.add(
            "/a".into(),
            FaultAction::Drop {
                when: DropWhen::BeforeHandling,
            },
            1.into(),
        );
        let first = faults.take(&Method::POST, "/a");
        assert_eq!(first.terminal, Some(fail.clone()));
        assert_eq!(first.delay, Duration::from_millis(5));
        assert_eq!(faults.take(&Method::POST, "/a").terminal, Some(fail));
        assert!(matches!(
            faults.take(&Method::POST, "/a").terminal,
            Some(FaultAction::Drop { .. })
        ));
        let last = faults.take(&Method::POST, "/a");
        assert_eq!(last.terminal, None);
        assert_eq!(last.delay, Duration::from_millis(5));
        assert_eq!(faults.list().len(), 1);
    }

    #[test]
    fn frame_faults_match_direction_type_and_user() {
        let mut faults = Faults::default();
        let drop_updates = faults.add_frame(
            FrameFilter::direction(Direction::ToClient).message_type("state_update"),
            FrameAction::Drop,
            Times::Next(1),
        );
        faults.add_frame(
            FrameFilter::direction(Direction::ToServer).user("u1"),
            FrameAction::Delay { ms: 7 },
            Times::Always,
        );
        let state_update = || Some("state_update".to_owned());
        // Another direction or type: untouched.
        assert_eq!(
            faults.take_frame(Direction::ToClient, "u1", || Some("pong".into())),
            FramePlan::default()
        );
        let dropped = faults.take_frame(Direction::ToClient, "u2", state_update);
        assert!(dropped.drop);
        // Spent after one frame.
        assert!(
            !faults
                .take_frame(Direction::ToClient, "u2", state_update)
                .drop
        );
        assert!(faults.list_frames().iter().all(|f| f.id != drop_updates));
        let delayed = faults.take_frame(Direction::ToServer, "u1", || None);
        assert_eq!(delayed.delay, Duration::from_millis(7));
        assert_eq!(
            faults.take_frame(Direction::ToServer, "u2", || None),
            FramePlan::default()
        );
        assert_eq!(faults.list_frames()[0].hits, 1);
        let id = faults.list_frames()[0].id;
        assert!(faults.remove(id));
        assert!(faults.list_frames().is_empty());
    }

    #[test]
    fn frame_specs_parse_from_json() {
        let spec: FrameFaultSpec = serde_json::from_str(
            r#"{"kind":"drop","direction":"to_client","type":"state_update","times":2}"#,
        )
        .unwrap();
        assert_eq!(spec.action, FrameAction::Drop);
        assert_eq!(
            spec.filter,
            FrameFilter::direction(Direction::ToClient).message_type("state_update")
        );
        assert_eq!(spec.times, Some(2));
        let spec: FrameFaultSpec =
            serde_json::from_str(r#"{"kind":"delay","ms":250,"user_id":"u"}"#).unwrap();
        assert_eq!(spec.action, FrameAction::Delay { ms: 250 });
        assert_eq!(spec.filter, FrameFilter::default().user("u"));
        assert_eq!(spec.times, None);
    }

    #[test]
    fn specs_parse_from_json() {
        let spec: FaultSpec = serde_json::from_str(
            r#"{"route":"POST /api/v1/saves/*","kind":"fail","status":502,"code":"unavailable","times":3}"#,
        )
        .unwrap();
        assert_eq!(spec.times, Some(3));
        assert_eq!(spec.route, Route::parse("POST /api/v1/saves/*"));
        let spec: FaultSpec =
            serde_json::from_str(r#"{"route":"*","kind":"drop","when":"mid_body"}"#).unwrap();
        assert_eq!(
            spec.action,
            FaultAction::Drop {
                when: DropWhen::MidBody
            }
        );
        assert_eq!(spec.times, None);
    }
}
