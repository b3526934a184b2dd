//! `Matchmaking`: tickets on the realtime socket. A formed match is pushed as `match_found`
//! (service `multiplayer.matchmaking`); the room already holds the players' seats, so the game
//! calls `join_room(match_info.room_id)`.

use std::sync::Arc;

use aethex_protocol::realtime::{ClientMessage, QueueRequest};

use super::{free_form, invalid, Realtime};
use crate::{RequestId, SdkError, Value};

#[derive(Clone)]
pub struct Matchmaking {
    realtime: Arc<Realtime>,
}

impl Matchmaking {
    pub(crate) fn new(realtime: Arc<Realtime>) -> Self {
        Self { realtime }
    }

    /// `request`: Dictionary `mode` (String), `region` (String), `skill_range` ([low, high]),
    /// optional `party` (Array of user ids) and `properties` (any value, handed to the other
    /// players in `match_found`). Completes with `{ticket: {ticket_id, mode, region,
    /// skill_range, effective_range, players, created_at, expires_at}}`.
    pub fn join_queue(&self, request: Value) -> RequestId {
        match queue_request(&request) {
            Ok(request) => self.realtime.call(ClientMessage::JoinQueue(request)),
            Err(e) => self.realtime.fail(e),
        }
    }

    /// Leaves one ticket, or all of the player's tickets when `None`. Completes with
    /// `{ticket_ids: [...]}`.
    pub fn leave_queue(&self, ticket_id: Option<String>) -> RequestId {
        self.realtime.call(ClientMessage::LeaveQueue { ticket_id })
    }

    /// Completes with `{ticket: {...}}` while the ticket waits.
    pub fn queue_status(&self, ticket_id: String) -> RequestId {
        self.realtime.call(ClientMessage::QueueStatus { ticket_id })
    }
}

fn text(value: Option<&Value>, name: &str) -> Result<String, SdkError> {
    match value {
        Some(Value::String(s) | Value::StringName(s)) => Ok(s.clone()),
        _ => Err(invalid(format!("join_queue needs `{name}` (String)"))),
    }
}

fn number(value: &Value) -> Option<f64> {
    match value {
        Value::Int(i) => Some(*i as f64),
        Value::Float(f) => Some(*f),
        _ => None,
    }
}

fn queue_request(request: &Value) -> Result<QueueRequest, SdkError> {
    if !matches!(request, Value::Dictionary(_)) {
        return Err(invalid("join_queue takes a Dictionary"));
    }
    let bad_range = || invalid("skill_range is [low, high]");
    let skill_range = match request.get("skill_range") {
        Some(Value::Array(items)) if items.len() == 2 => [
            number(&items[0]).ok_or_else(bad_range)?,
            number(&items[1]).ok_or_else(bad_range)?,
        ],
        Some(Value::Vector2([low, high])) => [*low, *high],
        Some(Value::Vector2i([low, high])) => [f64::from(*low), f64::from(*high)],
        Some(Value::PackedInt32Array(v)) if v.len() == 2 => [f64::from(v[0]), f64::from(v[1])],
        Some(Value::PackedInt64Array(v)) if v.len() == 2 => [v[0] as f64, v[1] as f64],
        Some(Value::PackedFloat64Array(v)) if v.len() == 2 => [v[0], v[1]],
        Some(Value::PackedFloat32Array(v)) if v.len() == 2 => [f64::from(v[0]), f64::from(v[1])],
        _ => return Err(bad_range()),
    };
    let party = match request.get("party") {
        None | Some(Value::Nil) => Vec::new(),
        Some(Value::PackedStringArray(ids)) => ids.clone(),
        Some(Value::Array(ids)) => ids
            .iter()
            .map(|id| match id {
                Value::String(s) | Value::StringName(s) => Ok(s.clone()),
                _ => Err(invalid("party is a list of user ids")),
            })
            .collect::<Result<_, _>>()?,
        Some(_) => return Err(invalid("party is a list of user ids")),
    };
    Ok(QueueRequest {
        mode: text(request.get("mode"), "mode")?,
        region: text(request.get("region"), "region")?,
        skill_range,
        party,
        properties: request
            .get("properties")
            .filter(|p| **p != Value::Nil)
            .map(free_form),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_seed_example_becomes_a_queue_request() {
        let request = Value::dict([
            ("mode", Value::String("deathmatch".into())),
            ("region", Value::String("us-east".into())),
            (
                "skill_range",
                Value::Array(vec![Value::Int(1000), Value::Int(1500)]),
            ),
        ]);
        let parsed = queue_request(&request).unwrap();
        assert_eq!(parsed.mode, "deathmatch");
        assert_eq!(parsed.region, "us-east");
        assert_eq!(parsed.skill_range, [1000.0, 1500.0]);
        assert!(parsed.party.is_empty() && parsed.properties.is_none());
        let no_region = Value::dict([("mode", Value::String("dm".into()))]);
        assert!(queue_request(&no_region).is_err());
    }
}
