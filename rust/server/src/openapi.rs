//! The OpenAPI document at `/api/v1/openapi.json`: each service contributes its own part.

use std::collections::BTreeSet;

use utoipa::openapi::path::{Operation, PathItem};
use utoipa::openapi::schema::{AdditionalProperties, ArrayItems, ObjectBuilder, SchemaType, Type};
use utoipa::openapi::security::{ApiKey, ApiKeyValue, SecurityScheme};
use utoipa::openapi::{ContentBuilder, Ref, RefOr, Response, ResponseBuilder, Schema};
use utoipa::{Modify, OpenApi};

#[derive(OpenApi)]
#[openapi(
    info(
        title = "AeThex Cloud API",
        description = "Accounts, cloud saves and the other AeThex Cloud services. Player requests carry `X-AeThex-Key` and `Authorization: Bearer <access token>`; a game's servers use `Authorization: ServerKey <key>`."
    ),
    components(schemas(
        aethex_protocol::ErrorEnvelope,
        aethex_protocol::ApiErrorBody,
        aethex_protocol::ErrorCode
    ))
)]
struct CoreApi;

pub fn document() -> utoipa::openapi::OpenApi {
    let mut doc = CoreApi::openapi();
    doc.merge(crate::auth::AuthApi::openapi());
    doc.merge(crate::saves::SavesApi::openapi());
    doc.merge(crate::social::SocialApi::openapi());
    doc.merge(crate::realtime::RealtimeApi::openapi());
    doc.merge(crate::chat::ChatApi::openapi());
    doc.merge(crate::realtime::matchmaking::MatchmakingApi::openapi());
    doc.merge(crate::analytics::AnalyticsApi::openapi());
    // After the merges: these read every service's operations.
    KeySchemes.modify(&mut doc);
    SharedErrors.modify(&mut doc);
    PutBodiesWithoutId.modify(&mut doc);
    TextWithoutNul.modify(&mut doc);
    doc
}

/// Declares `client_key` and `server_key`, the schemes besides `bearer` that operations name.
struct KeySchemes;

impl Modify for KeySchemes {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "client_key",
            SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::with_description(
                aethex_protocol::CLIENT_KEY_HEADER,
                "The game's public client key; sent with every player request.",
            ))),
        );
        components.add_security_scheme(
            "server_key",
            SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::with_description(
                "Authorization",
                "`ServerKey <key>`: the game's secret server key, for its trusted servers.",
            ))),
        );
    }
}

/// The operations of one path (this API uses these methods only).
fn operations_mut(item: &mut PathItem) -> impl Iterator<Item = &mut Operation> {
    [
        &mut item.get,
        &mut item.put,
        &mut item.post,
        &mut item.delete,
        &mut item.patch,
    ]
    .into_iter()
    .flatten()
}

/// Adds the error answers every operation shares, derived from its security requirements, so no
/// annotation can forget one: 400 (malformed input), 401 (every operation needs a key), 403 (a
/// server key on a player operation, or a player on another's data), 404 (a server key naming an
/// unknown player), 413 (bodies are size limited), 429 (`/auth` is rate limited per address) and
/// 503 (storage unavailable). Answers an annotation already lists keep its more specific
/// description.
struct SharedErrors;

impl Modify for SharedErrors {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        for (path, item) in openapi.paths.paths.iter_mut() {
            for op in operations_mut(item) {
                let schemes = |name: &str| {
                    op.security.iter().flatten().any(|requirement| {
                        serde_json::to_value(requirement)
                            .is_ok_and(|value| value.get(name).is_some())
                    })
                };
                let (bearer, server_key) = (schemes("bearer"), schemes("server_key"));
                let mut errors = vec![
                    (400, "`invalid_request`: malformed or invalid input"),
                    (401, "`unauthorized`: missing or invalid key or token"),
                    (503, "`unavailable`: storage is busy or down; retry later"),
                ];
                if bearer {
                    errors.push((403, "`forbidden`: not allowed for this caller"));
                }
                if server_key {
                    errors.push((404, "`not_found`: no such player"));
                }
                if op.request_body.is_some() {
                    errors.push((413, "`payload_too_large`: the body exceeds its size limit"));
                    errors.push((
                        415,
                        "`unsupported_media_type`: the body is not `application/json`, or its \
                         `Content-Encoding` is not gzip, br or zstd",
                    ));
                }
                if path.starts_with("/api/v1/auth/") {
                    errors.push((429, "`rate_limited`: too many requests; see `Retry-After`"));
                }
                for (status, description) in errors {
                    op.responses
                        .responses
                        .entry(status.to_string())
                        .or_insert_with(|| error_response(description));
                }
            }
        }
    }
}

fn error_response(description: &str) -> RefOr<Response> {
    ResponseBuilder::new()
        .description(description)
        .content(
            "application/json",
            ContentBuilder::new()
                .schema(Some(Ref::from_schema_name("ErrorEnvelope")))
                .build(),
        )
        .into()
}

/// `PUT /…/{id}` takes the id from the path and ignores one in the body, so its body schema is
/// the shared definition without `id` (which `POST` requires).
struct PutBodiesWithoutId;

impl Modify for PutBodiesWithoutId {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let schemas = openapi
            .components
            .as_ref()
            .map(|c| c.schemas.clone())
            .unwrap_or_default();
        for (path, item) in openapi.paths.paths.iter_mut() {
            let Some(op) = item.put.as_mut().filter(|_| path.ends_with("/{id}")) else {
                continue;
            };
            let Some(body) = op.request_body.as_mut() else {
                continue;
            };
            for content in body.content.values_mut() {
                let Some(RefOr::Ref(reference)) = &content.schema else {
                    continue;
                };
                let name = reference
                    .ref_location
                    .rsplit('/')
                    .next()
                    .unwrap_or_default();
                if let Some(RefOr::T(Schema::Object(object))) = schemas.get(name) {
                    let mut object = object.clone();
                    object.properties.remove("id");
                    object.required.retain(|field| field != "id");
                    content.schema = Some(RefOr::T(Schema::Object(object)));
                }
            }
        }
    }
}

/// The text rule of docs/api.md ("Text rules"): no text field, parameter or map key holds U+0000.
/// Stated as a pattern on every string that has none (the patterns already there allow printable
/// text only), so the document says what the server's one NUL check refuses. Free-form JSON
/// (`data`, `metadata`) has no string schema and stays unconstrained, as the server keeps it.
struct TextWithoutNul;

const NO_NUL_PATTERN: &str = r"^[^\x00]*$";

impl Modify for TextWithoutNul {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        // Only what requests carry: answers may quote the input back (a refused enum value in an
        // error message), and the rule is about what the server accepts.
        let mut request_schemas: Vec<&mut RefOr<Schema>> = Vec::new();
        for item in openapi.paths.paths.values_mut() {
            for op in operations_mut(item) {
                for parameter in op.parameters.iter_mut().flatten() {
                    request_schemas.extend(parameter.schema.as_mut());
                }
                if let Some(body) = op.request_body.as_mut() {
                    for content in body.content.values_mut() {
                        request_schemas.extend(content.schema.as_mut());
                    }
                }
            }
        }
        let mut named = BTreeSet::new();
        for schema in request_schemas {
            collect_refs(schema, &mut named);
            forbid_nul(schema);
        }
        let Some(components) = openapi.components.as_mut() else {
            return;
        };
        // Components named by those, and the components they name in turn.
        let mut pending: Vec<String> = named.iter().cloned().collect();
        while let Some(name) = pending.pop() {
            let mut found = BTreeSet::new();
            if let Some(schema) = components.schemas.get(&name) {
                collect_refs(schema, &mut found);
            }
            for name in found {
                if named.insert(name.clone()) {
                    pending.push(name);
                }
            }
        }
        for name in &named {
            if let Some(schema) = components.schemas.get_mut(name) {
                forbid_nul(schema);
            }
        }
    }
}

/// Adds the component names `schema` refers to (`#/components/schemas/NAME`) to `names`.
fn collect_refs(schema: &RefOr<Schema>, names: &mut BTreeSet<String>) {
    let schema = match schema {
        RefOr::Ref(reference) => {
            if let Some(name) = reference.ref_location.rsplit('/').next() {
                names.insert(name.to_owned());
            }
            return;
        }
        RefOr::T(schema) => schema,
    };
    match schema {
        Schema::Object(object) => {
            for property in object.properties.values() {
                collect_refs(property, names);
            }
            if let Some(AdditionalProperties::RefOr(values)) =
                object.additional_properties.as_deref()
            {
                collect_refs(values, names);
            }
        }
        Schema::Array(array) => {
            if let ArrayItems::RefOrSchema(items) = &array.items {
                collect_refs(items, names);
            }
        }
        Schema::OneOf(one_of) => one_of.items.iter().for_each(|s| collect_refs(s, names)),
        Schema::AllOf(all_of) => all_of.items.iter().for_each(|s| collect_refs(s, names)),
        Schema::AnyOf(any_of) => any_of.items.iter().for_each(|s| collect_refs(s, names)),
        _ => {}
    }
}

fn is_text(schema_type: &SchemaType) -> bool {
    match schema_type {
        SchemaType::Type(t) => *t == Type::String,
        SchemaType::Array(types) => types.contains(&Type::String),
        SchemaType::AnyValue => false,
    }
}

fn forbid_nul(schema: &mut RefOr<Schema>) {
    let RefOr::T(schema) = schema else {
        return;
    };
    match schema {
        Schema::Object(object) => {
            if is_text(&object.schema_type) && object.pattern.is_none() {
                object.pattern = Some(NO_NUL_PATTERN.to_owned());
            }
            object.properties.values_mut().for_each(forbid_nul);
            if let Some(AdditionalProperties::RefOr(values)) =
                object.additional_properties.as_deref_mut()
            {
                forbid_nul(values);
                // A typed map's keys are text fields too.
                object.property_names.get_or_insert_with(|| {
                    Box::new(
                        ObjectBuilder::new()
                            .schema_type(Type::String)
                            .pattern(Some(NO_NUL_PATTERN))
                            .into(),
                    )
                });
            }
        }
        Schema::Array(array) => {
            if let ArrayItems::RefOrSchema(items) = &mut array.items {
                forbid_nul(items);
            }
        }
        Schema::OneOf(one_of) => one_of.items.iter_mut().for_each(forbid_nul),
        Schema::AllOf(all_of) => all_of.items.iter_mut().for_each(forbid_nul),
        Schema::AnyOf(any_of) => any_of.items.iter_mut().for_each(forbid_nul),
        _ => {}
    }
}
