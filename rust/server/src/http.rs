//! HTTP plumbing shared by every service: the JSON extractor with typed errors, the 404 fallback
//! and the request metrics layer.

use std::time::Instant;

use axum::extract::rejection::JsonRejection;
use axum::extract::{FromRequest, MatchedPath, Request};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::Response;
use serde::de::value::MapAccessDeserializer;
use serde::de::{DeserializeOwned, MapAccess, Visitor};
use serde::{Deserialize, Deserializer};
use std::marker::PhantomData;

use crate::error::ApiError;

/// `axum::Json` whose rejections are `ApiError`s: garbage JSON is a 400 `invalid_request`
/// naming what is wrong, an oversized body a 413 `payload_too_large`.
pub struct ApiJson<T>(pub T);

impl<S, T> FromRequest<S> for ApiJson<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        match axum::Json::<ObjectBody<T>>::from_request(req, state).await {
            Ok(axum::Json(ObjectBody(value))) => Ok(ApiJson(value)),
            Err(rejection) => Err(json_rejection_to_error(rejection)),
        }
    }
}

/// A request body that must be a JSON object. Serde lets a struct be read from an array too
/// (`[]` fills every defaulted field), which no schema of ours allows.
struct ObjectBody<T>(T);

impl<'de, T: Deserialize<'de>> Deserialize<'de> for ObjectBody<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct ObjectVisitor<T>(PhantomData<T>);

        impl<'de, T: Deserialize<'de>> Visitor<'de> for ObjectVisitor<T> {
            type Value = T;

            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a JSON object")
            }

            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<T, A::Error> {
                T::deserialize(MapAccessDeserializer::new(map))
            }
        }

        deserializer
            .deserialize_map(ObjectVisitor(PhantomData))
            .map(ObjectBody)
    }
}

/// Parses a raw body as a JSON object into `T`, refusing other JSON values like [`ApiJson`].
pub fn object_from_slice<T: DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice::<ObjectBody<T>>(body)
        .map(|ObjectBody(value)| value)
        .map_err(|e| ApiError::invalid(format!("invalid JSON body: {e}")))
}

fn json_rejection_to_error(rejection: JsonRejection) -> ApiError {
    if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
        return ApiError::new(
            aethex_protocol::ErrorCode::PayloadTooLarge,
            "request body is too large",
        );
    }
    ApiError::invalid(rejection.body_text())
}

pub async fn not_found_fallback() -> ApiError {
    ApiError::not_found("no such endpoint")
}

/// Counts requests and their latency per route template (never per raw path: ids would explode
/// the label set).
pub async fn record_metrics(req: Request, next: Next) -> Response {
    let started = Instant::now();
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_else(|| "unmatched".to_owned());
    let method = req.method().to_string();
    let response = next.run(req).await;
    let status = response.status().as_u16().to_string();
    metrics::counter!("aethex_http_requests_total", "method" => method.clone(), "route" => route.clone(), "status" => status).increment(1);
    metrics::histogram!("aethex_http_request_duration_seconds", "method" => method, "route" => route)
        .record(started.elapsed().as_secs_f64());
    response
}
