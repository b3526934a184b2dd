//! `POST /api/v1/analytics/events`: validation, clock-skew correction, then the group-committed
//! writer (`store`).

use aethex_protocol::analytics::{
    AnalyticsEvent, IngestRequest, IngestResponse, MAX_CLIENT_TIME_MS, MAX_EVENTS_PER_BATCH,
    MAX_PROPERTIES, MAX_PROPERTIES_BYTES, MAX_PROPERTIES_DEPTH,
};
use aethex_protocol::{ErrorCode, ErrorEnvelope};
use axum::extract::State;
use axum::Json;
use serde_json::{json, Value};

use super::consent::has_consent;
use super::store::{EventRow, Ingest};
use crate::app::AppState;
use crate::caller::Player;
use crate::error::{ApiError, ApiResult};
use crate::http::ApiJson;

/// 1 to 64 of `A-Z a-z 0-9 _ . : -`, not starting with `.`, `:` or `-` (see `NAME_PATTERN`).
pub(super) fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b':' | b'-'))
        && name
            .bytes()
            .next()
            .is_some_and(|b| b.is_ascii_alphanumeric() || b == b'_')
}

/// 8 to 64 of `A-Z a-z 0-9 -` (see `EVENT_ID_PATTERN`).
fn valid_id(id: &str) -> bool {
    (8..=64).contains(&id.len()) && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
}

/// Nesting depth of a property value: a scalar is 0, an array or object one more than its
/// deepest member. Also refuses a container with more than `MAX_PROPERTIES` members.
fn depth(value: &Value) -> Result<usize, &'static str> {
    let members: Box<dyn Iterator<Item = &Value>> = match value {
        Value::Array(items) if items.len() > MAX_PROPERTIES => return Err("too many items"),
        Value::Object(map) if map.len() > MAX_PROPERTIES => return Err("too many keys"),
        Value::Array(items) => Box::new(items.iter()),
        Value::Object(map) => Box::new(map.values()),
        _ => return Ok(0),
    };
    let mut deepest = 0;
    for member in members {
        deepest = deepest.max(depth(member)?);
        if deepest >= MAX_PROPERTIES_DEPTH {
            return Err("nested too deep");
        }
    }
    Ok(deepest + 1)
}

fn invalid_event(index: usize, field: &str, message: String) -> ApiError {
    ApiError::invalid(format!("events[{index}].{field}: {message}"))
        .with_details(json!({ "index": index, "field": field }))
}

/// Checks one event and returns its `properties` as JSON text.
fn check_event(index: usize, event: &AnalyticsEvent) -> ApiResult<String> {
    if !valid_id(&event.id) {
        return Err(invalid_event(
            index,
            "id",
            "must be 8 to 64 of A-Z a-z 0-9 -".into(),
        ));
    }
    if !valid_id(&event.session_id) {
        return Err(invalid_event(
            index,
            "session_id",
            "must be 8 to 64 of A-Z a-z 0-9 -".into(),
        ));
    }
    if !valid_name(&event.name) {
        return Err(invalid_event(
            index,
            "name",
            "must be 1 to 64 of A-Z a-z 0-9 _ . : - starting with a letter, digit or _".into(),
        ));
    }
    if event.seq < 0 {
        return Err(invalid_event(index, "seq", "must be 0 or more".into()));
    }
    if !(0..=MAX_CLIENT_TIME_MS).contains(&event.client_time) {
        return Err(invalid_event(
            index,
            "client_time",
            format!("must be unix milliseconds from 0 to {MAX_CLIENT_TIME_MS}"),
        ));
    }
    let properties = Value::Object(event.properties.clone());
    depth(&properties).map_err(|problem| {
        invalid_event(
            index,
            "properties",
            format!(
                "{problem}: at most {MAX_PROPERTIES} keys or items per object or array and \
                 {MAX_PROPERTIES_DEPTH} levels of nesting"
            ),
        )
    })?;
    let text = properties.to_string();
    if text.len() > MAX_PROPERTIES_BYTES {
        return Err(ApiError::new(
            ErrorCode::PayloadTooLarge,
            format!(
                "events[{index}].properties is {} bytes; at most {MAX_PROPERTIES_BYTES} are allowed",
                text.len()
            ),
        )
        .with_details(json!({ "index": index, "field": "properties" })));
    }
    Ok(text)
}

#[utoipa::path(
    post,
    path = "/api/v1/analytics/events",
    tag = "analytics",
    security(("client_key" = [], "bearer" = [])),
    request_body(content = IngestRequest, description = "May be sent with `Content-Encoding: zstd` (or gzip, br)"),
    responses(
        (status = 200, description = "Stored; events already stored before are counted as duplicates", body = IngestResponse),
        (status = 400, description = "A malformed event (`details.index` and `details.field` name it); nothing is stored", body = ErrorEnvelope),
        (status = 403, description = "`consent_required`: the player has not consented, or revoked", body = ErrorEnvelope),
        (status = 413, description = "The body, or one event's properties, is too large; nothing is stored", body = ErrorEnvelope),
    )
)]
pub async fn ingest(
    State(state): State<AppState>,
    player: Player,
    ApiJson(req): ApiJson<IngestRequest>,
) -> ApiResult<Json<IngestResponse>> {
    // Before validating: a player without consent learns that first, whatever they sent.
    if !has_consent(&state, &player.user_id).await? {
        return Err(consent_required());
    }
    if req.events.is_empty() || req.events.len() > MAX_EVENTS_PER_BATCH {
        return Err(ApiError::invalid(format!(
            "send 1 to {MAX_EVENTS_PER_BATCH} events per request"
        )));
    }
    if !(0..=MAX_CLIENT_TIME_MS).contains(&req.sent_at) {
        return Err(ApiError::invalid(format!(
            "sent_at must be unix milliseconds from 0 to {MAX_CLIENT_TIME_MS}"
        )));
    }
    let server_time = state.clock.now_ms();
    // The player's clock may be off by anything; the batch's send time against our receive
    // time measures by how much (plus the upload's latency, which is small beside a wrong
    // clock). An event cannot have happened after we received it, nor before 1970.
    let skew = server_time - req.sent_at;
    let mut events = Vec::with_capacity(req.events.len());
    for (index, event) in req.events.into_iter().enumerate() {
        let properties = check_event(index, &event)?;
        events.push(EventRow {
            event_time: (event.client_time + skew).clamp(0, server_time),
            event_id: event.id,
            kind: event.kind,
            name: event.name,
            session_id: event.session_id,
            seq: event.seq,
            properties,
            value: event.value,
            client_time: event.client_time,
            server_time,
        });
    }
    let ingested = state
        .analytics
        .writer
        .ingest(Ingest {
            project_id: player.project.id.clone(),
            user_id: player.user_id,
            events,
        })
        .await?;
    Ok(Json(IngestResponse {
        accepted: ingested.accepted,
        duplicates: ingested.duplicates,
    }))
}

pub fn consent_required() -> ApiError {
    ApiError::new(
        ErrorCode::ConsentRequired,
        "the player has not consented to analytics (PUT /api/v1/analytics/consent)",
    )
}

/// The OpenAPI schema of `AnalyticsEvent.properties`, exactly what `check_event` accepts apart
/// from the serialized size (a 413): an object of at most 64 members whose values nest at most
/// `MAX_PROPERTIES_DEPTH` levels in all, each array or object holding at most 64 members.
pub fn properties_schema() -> utoipa::openapi::RefOr<utoipa::openapi::Schema> {
    use utoipa::openapi::schema::{AnyOfBuilder, ArrayBuilder, ObjectBuilder, SchemaType, Type};
    fn value(levels: usize) -> utoipa::openapi::RefOr<utoipa::openapi::Schema> {
        let scalar = ObjectBuilder::new().schema_type(SchemaType::Array(vec![
            Type::String,
            Type::Number,
            Type::Boolean,
            Type::Null,
        ]));
        if levels == 0 {
            return scalar.into();
        }
        AnyOfBuilder::new()
            .item(scalar)
            .item(
                ArrayBuilder::new()
                    .items(value(levels - 1))
                    .max_items(Some(MAX_PROPERTIES)),
            )
            .item(
                ObjectBuilder::new()
                    .schema_type(Type::Object)
                    .additional_properties(Some(value(levels - 1)))
                    .max_properties(Some(MAX_PROPERTIES)),
            )
            .into()
    }
    ObjectBuilder::new()
        .schema_type(Type::Object)
        .description(Some(
            "Any JSON object: at most 64 members per object or array, 4 levels of nesting in \
             all, 8 KiB serialized (more is a 413).",
        ))
        .additional_properties(Some(value(MAX_PROPERTIES_DEPTH - 1)))
        .max_properties(Some(MAX_PROPERTIES))
        .into()
}

/// Replaces the derived (unconstrained) `properties` schema of `AnalyticsEvent`.
pub struct PropertiesSchema;

impl utoipa::Modify for PropertiesSchema {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::{RefOr, Schema};
        let Some(components) = openapi.components.as_mut() else {
            return;
        };
        if let Some(RefOr::T(Schema::Object(event))) = components.schemas.get_mut("AnalyticsEvent")
        {
            event
                .properties
                .insert("properties".to_owned(), properties_schema());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Map;

    #[test]
    fn depth_counts_levels_and_bounds_members() {
        assert_eq!(depth(&json!(1)), Ok(0));
        assert_eq!(depth(&json!({"a": 1})), Ok(1));
        assert_eq!(depth(&json!({"a": {"b": [1]}})), Ok(3));
        assert_eq!(depth(&json!({"a": {"b": [{"c": 1}]}})), Ok(4));
        assert!(depth(&json!({"a": {"b": [{"c": [1]}]}})).is_err());
        let wide: Map<String, Value> = (0..=MAX_PROPERTIES)
            .map(|i| (format!("k{i}"), json!(i)))
            .collect();
        assert!(depth(&Value::Object(wide)).is_err());
    }

    #[test]
    fn names_and_ids_follow_their_patterns() {
        let name = regex::Regex::new(aethex_protocol::analytics::NAME_PATTERN).unwrap();
        let id = regex::Regex::new(aethex_protocol::analytics::EVENT_ID_PATTERN).unwrap();
        for sample in [
            "a",
            "level_completed",
            "ui:open",
            "_x.y-z",
            ".a",
            "-a",
            "",
            "a b",
            "é",
        ] {
            assert_eq!(valid_name(sample), name.is_match(sample), "{sample:?}");
        }
        let long = "a".repeat(65);
        assert_eq!(valid_name(&long), name.is_match(&long));
        for sample in [
            "0193c0de-aaaa-7bbb-8ccc-123456789abc",
            "short",
            "abcdefgh",
            "abc_defgh",
        ] {
            assert_eq!(valid_id(sample), id.is_match(sample), "{sample:?}");
        }
    }
}
