//! HTTP plumbing shared by every service: the JSON extractor with typed errors, the 404 fallback,
//! the request metrics layer, and the layers that keep bad input and the framework's own
//! rejections inside the documented error model (NUL characters, non-JSON errors, compressed
//! bodies, bodies left unread on a keep-alive connection).

use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::Instant;

use aethex_protocol::ErrorCode;
use async_compression::tokio::bufread::{BrotliDecoder, GzipDecoder, ZstdDecoder};
use axum::body::{Body, Bytes};
use axum::extract::rejection::{BytesRejection, JsonRejection};
use axum::extract::{FromRequest, MatchedPath, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use futures::{StreamExt, TryStreamExt};
use http_body::{Body as _, Frame, SizeHint};
use http_body_util::BodyExt;
use serde::de::value::MapAccessDeserializer;
use serde::de::{DeserializeOwned, Deserializer, MapAccess, Visitor};
use serde::{Deserialize, Serialize};
use std::marker::PhantomData;
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio_util::io::{ReaderStream, StreamReader};

use crate::error::{ApiError, ApiResult};

/// `axum::Json` whose rejections are `ApiError`s: garbage JSON is a 400 `invalid_request`
/// naming what is wrong, an oversized body a 413 `payload_too_large`, a body that is not
/// `application/json` a 415 `unsupported_media_type`. It is also where every JSON body is checked
/// for NUL characters (see [`reject_nul_in_fields`]).
pub struct ApiJson<T>(pub T);

impl<S, T> FromRequest<S> for ApiJson<T>
where
    T: DeserializeOwned + Serialize,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        if !is_json_content_type(req.headers()) {
            return Err(ApiError::new(
                ErrorCode::UnsupportedMediaType,
                "expected a request body with `Content-Type: application/json`",
            ));
        }
        let bytes = Bytes::from_request(req, state)
            .await
            .map_err(body_rejection_to_error)?;
        let value = match axum::Json::<ObjectBody<T>>::from_bytes(&bytes) {
            Ok(axum::Json(ObjectBody(value))) => value,
            Err(rejection) => return Err(json_rejection_to_error(rejection)),
        };
        reject_nul_in_fields(&bytes, &value)?;
        Ok(ApiJson(value))
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

/// A JSON body that may be left out (nothing, whitespace or `null` means `T::default()`), with the
/// same limits, errors and NUL check as [`ApiJson`].
pub struct ApiJsonOrDefault<T>(pub T);

impl<S, T> FromRequest<S> for ApiJsonOrDefault<T>
where
    T: DeserializeOwned + Serialize + Default,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let bytes = Bytes::from_request(req, state)
            .await
            .map_err(body_rejection_to_error)?;
        // No body, or JSON `null` (what a schema `Option<T>` body allows): the defaults.
        if bytes.iter().all(u8::is_ascii_whitespace) || bytes.trim_ascii() == b"null" {
            return Ok(ApiJsonOrDefault(T::default()));
        }
        let value = match axum::Json::<ObjectBody<T>>::from_bytes(&bytes) {
            Ok(axum::Json(ObjectBody(value))) => value,
            Err(rejection) => return Err(json_rejection_to_error(rejection)),
        };
        reject_nul_in_fields(&bytes, &value)?;
        Ok(ApiJsonOrDefault(value))
    }
}

/// `application/json` or `application/<something>+json`, as `axum::Json` accepts.
fn is_json_content_type(headers: &HeaderMap) -> bool {
    let Some(value) = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
    else {
        return false;
    };
    let essence = value
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    essence == "application/json"
        || essence
            .strip_prefix("application/")
            .is_some_and(|sub| sub.ends_with("+json"))
}

fn json_rejection_to_error(rejection: JsonRejection) -> ApiError {
    if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
        return payload_too_large();
    }
    ApiError::invalid(rejection.body_text())
}

fn body_rejection_to_error(rejection: BytesRejection) -> ApiError {
    match find_cause::<DecodeError>(&rejection) {
        Some(DecodeError::TooLarge) => payload_too_large(),
        Some(e @ DecodeError::Corrupt(_)) => ApiError::invalid(e.to_string()),
        None if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE => payload_too_large(),
        None => ApiError::invalid(rejection.body_text()),
    }
}

fn payload_too_large() -> ApiError {
    ApiError::new(ErrorCode::PayloadTooLarge, "request body is too large")
}

fn find_cause<'a, E: std::error::Error + 'static>(
    err: &'a (dyn std::error::Error + 'static),
) -> Option<&'a E> {
    let mut next = Some(err);
    while let Some(e) = next {
        if let Some(found) = e.downcast_ref::<E>() {
            return Some(found);
        }
        next = e.source();
    }
    None
}

/// Top-level members of a request body that hold free-form JSON, stored as JSON text with every
/// string escaped (a save's `data`, the `metadata` of saves and scores, a profile's
/// `preferences`): any JSON string is allowed inside them, U+0000 included.
const FREE_FORM_FIELDS: [&str; 3] = ["data", "metadata", "preferences"];

/// Refuses a body whose fields the server reads hold U+0000 (it ends up in SQL text, which
/// PostgreSQL refuses). Only what was deserialized counts: members the server does not know are
/// ignored like the rest of an unknown member, so the check agrees with the OpenAPI document.
fn reject_nul_in_fields<T: Serialize>(body: &[u8], value: &T) -> ApiResult<()> {
    // JSON cannot hold a raw NUL inside a string (the parse refused it already); the only way in
    // is the escape, so bodies without that text need no walk.
    if !body.windows(6).any(|w| w.eq_ignore_ascii_case(b"\\u0000")) {
        return Ok(());
    }
    let read = serde_json::to_value(value).map_err(ApiError::internal)?;
    let found = match &read {
        serde_json::Value::Object(members) => members.iter().any(|(key, member)| {
            key.contains('\0') || (!FREE_FORM_FIELDS.contains(&key.as_str()) && holds_nul(member))
        }),
        other => holds_nul(other),
    };
    if found {
        return Err(ApiError::invalid(
            "text fields must not contain the NUL character (U+0000)",
        ));
    }
    Ok(())
}

fn holds_nul(value: &serde_json::Value) -> bool {
    match value {
        serde_json::Value::String(text) => text.contains('\0'),
        serde_json::Value::Array(items) => items.iter().any(holds_nul),
        serde_json::Value::Object(members) => members
            .iter()
            .any(|(key, member)| key.contains('\0') || holds_nul(member)),
        _ => false,
    }
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

/// Refuses a URL whose path or query holds U+0000 once percent-decoded. `%00` is the only way
/// to write it (a raw NUL is not valid in a request line, and nothing is decoded twice), so the
/// raw text is checked before any handler or extractor sees it.
pub async fn reject_nul_in_url(req: Request, next: Next) -> Response {
    let uri = req.uri();
    let has_nul = |text: &str| text.contains("%00");
    if has_nul(uri.path()) || uri.query().is_some_and(has_nul) {
        return ApiError::invalid("the URL must not contain the NUL character (%00)")
            .into_response();
    }
    next.run(req).await
}

/// Turns every error answer that is not already JSON (axum's own rejections: 405, path and query
/// extraction failures, 415, 413 ...) into the documented `{"error": ...}` body.
pub async fn json_errors(req: Request, next: Next) -> Response {
    let response = next.run(req).await;
    let status = response.status();
    let is_json = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if status.as_u16() < 400 || is_json {
        return response;
    }
    let (mut parts, body) = response.into_parts();
    // Framework rejections are one short line of text; anything else gets the status's reason.
    let message = axum::body::to_bytes(body, 4096)
        .await
        .ok()
        .and_then(|b| String::from_utf8(b.to_vec()).ok())
        .map(|t| t.trim().to_owned())
        .filter(|t| !t.is_empty())
        .unwrap_or_else(|| status.canonical_reason().unwrap_or("error").to_owned());
    let code = match status.as_u16() {
        401 => ErrorCode::Unauthorized,
        403 => ErrorCode::Forbidden,
        404 => ErrorCode::NotFound,
        405 => ErrorCode::MethodNotAllowed,
        409 => ErrorCode::Conflict,
        413 => ErrorCode::PayloadTooLarge,
        415 => ErrorCode::UnsupportedMediaType,
        429 => ErrorCode::RateLimited,
        503 => ErrorCode::Unavailable,
        500.. => ErrorCode::Internal,
        _ => ErrorCode::InvalidRequest,
    };
    let mut mapped = ApiError::new(code, message).into_response();
    for name in [header::ALLOW, header::RETRY_AFTER] {
        if let Some(value) = parts.headers.remove(&name) {
            mapped.headers_mut().insert(name, value);
        }
    }
    mapped
}

/// zstd window cap: 8 MiB, the most RFC 9659 lets an HTTP zstd encoder ask for. Without it a
/// frame header alone makes the decoder allocate up to 128 MiB.
const ZSTD_WINDOW_LOG_MAX: u32 = 23;

/// Why a compressed request body could not be decoded.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    /// It expands past the largest body limit, or asks for a window over the cap.
    #[error("request body is too large")]
    TooLarge,
    #[error("request body is not valid {0}")]
    Corrupt(&'static str),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ContentEncoding {
    Gzip,
    Brotli,
    Zstd,
}

impl ContentEncoding {
    fn name(self) -> &'static str {
        match self {
            ContentEncoding::Gzip => "gzip",
            ContentEncoding::Brotli => "br",
            ContentEncoding::Zstd => "zstd",
        }
    }
}

/// Decodes `body` as it streams, yielding at most `limit` bytes: the decoder is never asked for
/// more than `limit + 1`, and that extra byte turns into [`DecodeError::TooLarge`]. The route's
/// own (smaller or equal) limit is enforced by the extractor that reads the result.
pub fn decoded_body(encoding: ContentEncoding, body: Body, limit: usize) -> Body {
    let compressed = StreamReader::new(TryStreamExt::map_err(
        body.into_data_stream(),
        std::io::Error::other,
    ));
    let decoder: Pin<Box<dyn AsyncRead + Send>> = match encoding {
        ContentEncoding::Gzip => {
            let mut d = GzipDecoder::new(compressed);
            d.multiple_members(true);
            Box::pin(d)
        }
        ContentEncoding::Brotli => Box::pin(BrotliDecoder::new(compressed)),
        ContentEncoding::Zstd => {
            let mut d = ZstdDecoder::with_params(
                compressed,
                &[async_compression::zstd::DParameter::window_log_max(
                    ZSTD_WINDOW_LOG_MAX,
                )],
            );
            d.multiple_members(true);
            Box::pin(d)
        }
    };
    let mut total = 0usize;
    let chunks =
        ReaderStream::with_capacity(decoder.take(limit as u64 + 1), 64 * 1024).map(move |chunk| {
            let chunk = chunk.map_err(|e| classify_decode_error(encoding, e))?;
            total += chunk.len();
            if total > limit {
                return Err(DecodeError::TooLarge);
            }
            Ok(chunk)
        });
    Body::from_stream(chunks)
}

fn classify_decode_error(encoding: ContentEncoding, e: std::io::Error) -> DecodeError {
    let window_too_large = e
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<zstd::Error>())
        .is_some_and(|z| {
            z.is(
                zstd::zstd_safe::zstd_sys::ZSTD_ErrorCode::ZSTD_error_frameParameter_windowTooLarge,
            )
        });
    if window_too_large {
        DecodeError::TooLarge
    } else {
        DecodeError::Corrupt(encoding.name())
    }
}

/// Request decompression (gzip, br, zstd), bounded by `limit` decoded bytes; any other
/// `Content-Encoding` is a 415 `unsupported_media_type`.
pub async fn decompress_request(State(limit): State<usize>, req: Request, next: Next) -> Response {
    let Some(value) = req.headers().get(header::CONTENT_ENCODING) else {
        return next.run(req).await;
    };
    let encoding = match value
        .to_str()
        .map(|v| v.trim().to_ascii_lowercase())
        .as_deref()
    {
        Ok("identity") => None,
        Ok("gzip" | "x-gzip") => Some(ContentEncoding::Gzip),
        Ok("br") => Some(ContentEncoding::Brotli),
        Ok("zstd") => Some(ContentEncoding::Zstd),
        _ => {
            return ApiError::new(
                ErrorCode::UnsupportedMediaType,
                "Content-Encoding must be gzip, br, zstd or identity",
            )
            .into_response()
        }
    };
    let (mut parts, body) = req.into_parts();
    parts.headers.remove(header::CONTENT_ENCODING);
    let body = match encoding {
        None => body,
        Some(encoding) => {
            parts.headers.remove(header::CONTENT_LENGTH);
            decoded_body(encoding, body, limit)
        }
    };
    next.run(Request::from_parts(parts, body)).await
}

/// Most unread request body drained after an answer so the connection can serve the next
/// request; a bigger remainder closes the connection instead.
const MAX_DRAIN_BYTES: u64 = 1024 * 1024;

/// Keeps keep-alive connections usable after an answer given before the body was read (a 401
/// from the auth check, a 404 ...). hyper cannot reuse a connection with unread body bytes: it
/// closes it, racing a next request the client may already have sent, which then gets no
/// answer. Here the rest of the body (up to [`MAX_DRAIN_BYTES`]) is read before the answer goes
/// out; a bigger rest gets `Connection: close` so the client knows not to reuse it.
pub async fn drain_unread_body(req: Request, next: Next) -> Response {
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let chunked = req.headers().contains_key(header::TRANSFER_ENCODING);
    if declared.unwrap_or(0) == 0 && !chunked {
        return next.run(req).await;
    }
    let (parts, body) = req.into_parts();
    let shared = SharedBody(Arc::new(Mutex::new(body)));
    let mut response = next
        .run(Request::from_parts(parts, Body::new(shared.clone())))
        .await;
    let mut rest = std::mem::replace(
        &mut *shared.0.lock().unwrap_or_else(PoisonError::into_inner),
        Body::empty(),
    );
    let drained = match declared {
        Some(len) if len > MAX_DRAIN_BYTES && !rest.is_end_stream() => false,
        _ => drain(&mut rest, MAX_DRAIN_BYTES).await,
    };
    if !drained {
        response
            .headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    response
}

/// Reads `body` to its end; false when more than `max` bytes remain or it fails.
async fn drain(body: &mut Body, max: u64) -> bool {
    let mut left = max;
    while !body.is_end_stream() {
        match body.frame().await {
            None => return true,
            Some(Ok(frame)) => {
                let len = frame.data_ref().map_or(0, |d| d.len() as u64);
                match left.checked_sub(len) {
                    Some(l) => left = l,
                    None => return false,
                }
            }
            Some(Err(_)) => return false,
        }
    }
    true
}

/// A request body the handler reads while the drain layer keeps a handle on what is left.
#[derive(Clone)]
struct SharedBody(Arc<Mutex<Body>>);

impl SharedBody {
    fn lock(&self) -> std::sync::MutexGuard<'_, Body> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl http_body::Body for SharedBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        Pin::new(&mut *self.lock()).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.lock().is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.lock().size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_bounded_decoder_stops_after_limit_plus_one_byte() {
        let bomb = zstd::encode_all(&vec![0u8; 33 * 1024 * 1024][..], 3).unwrap();
        assert!(bomb.len() < 4096);
        let limit = 100_000;
        let mut body = decoded_body(ContentEncoding::Zstd, Body::from(bomb), limit);
        let mut decoded = 0;
        let err = loop {
            match body.frame().await {
                Some(Ok(frame)) => decoded += frame.into_data().unwrap().len(),
                Some(Err(e)) => break e,
                None => panic!("a bomb decoded to the end"),
            }
        };
        assert!(decoded <= limit, "{decoded} bytes handed out");
        assert!(matches!(
            find_cause::<DecodeError>(&err),
            Some(DecodeError::TooLarge)
        ));
    }

    #[tokio::test]
    async fn frames_asking_for_a_large_window_are_refused_unread() {
        let mut enc = zstd::stream::Encoder::new(Vec::new(), 3).unwrap();
        enc.set_parameter(zstd::stream::raw::CParameter::WindowLog(25))
            .unwrap();
        std::io::Write::write_all(&mut enc, &vec![7u8; 20 * 1024 * 1024]).unwrap();
        let frame = enc.finish().unwrap();
        let body = decoded_body(ContentEncoding::Zstd, Body::from(frame), usize::MAX / 2);
        let err = axum::body::to_bytes(body, usize::MAX).await.unwrap_err();
        assert!(matches!(
            find_cause::<DecodeError>(&err),
            Some(DecodeError::TooLarge)
        ));
    }

    #[test]
    fn nul_check_covers_the_fields_read_except_free_form_json() {
        let nul = |body: &str| {
            let value: serde_json::Value = serde_json::from_str(body).unwrap();
            reject_nul_in_fields(body.as_bytes(), &value).is_err()
        };
        assert!(nul(r#"{"a":"x\u0000y"}"#));
        assert!(nul(r#"{"a":["ok",{"k\u0000":1}]}"#));
        assert!(!nul(r#"{"a":"x\\u0000y"}"#), "escaped backslash, then text");
        assert!(!nul(
            r#"{"data":{"k\u0000":"\u0000"},"metadata":["\u0000"]}"#
        ));
        assert!(
            nul(r#"{"x":{"data":"\u0000"}}"#),
            "free-form only at the top level"
        );

        #[derive(serde::Serialize, serde::Deserialize)]
        struct Named {
            name: String,
        }
        let named = |body: &str| {
            let value: Named = serde_json::from_str(body).unwrap();
            reject_nul_in_fields(body.as_bytes(), &value).is_err()
        };
        assert!(named(r#"{"name":"a\u0000b"}"#));
        assert!(
            !named(r#"{"name":"ok","junk\u0000":"\u0000"}"#),
            "members the server does not read are ignored"
        );
    }
}
