//! HTTP to the API: client key and bearer headers, typed errors from `{"error":{...}}`,
//! `network` / `timeout` for transport failures, and bounded retries with exponential backoff and
//! jitter for retryable codes (honouring `Retry-After` on 429/503).

use std::time::Duration;

use aethex_protocol::{ErrorCode, ErrorEnvelope};
use bytes::Bytes;
use rand::Rng;
use reqwest::header::{HeaderMap, HeaderValue, CONTENT_ENCODING, CONTENT_TYPE, RETRY_AFTER};
use reqwest::Method;

use crate::codec::plain_from_json;
use crate::{RetryConfig, SdkError};

pub(crate) enum Body {
    Json(Vec<u8>),
    /// JSON compressed with zstd, sent with `Content-Encoding: zstd`.
    Zstd(Vec<u8>),
}

pub(crate) struct Request {
    pub method: Method,
    pub path: String,
    pub body: Option<Body>,
    pub token: Option<String>,
    /// Whether sending the request twice is harmless (reads, idempotent writes, saves guarded by
    /// `base_version`): such requests are retried on every retryable failure. Others only when
    /// the server cannot have acted on them: the connection was never made, or it answered
    /// 429/503.
    pub retry: bool,
    pub headers: Vec<(&'static str, String)>,
}

impl Request {
    pub fn new(method: Method, path: impl Into<String>) -> Self {
        Self {
            method,
            path: path.into(),
            body: None,
            token: None,
            retry: true,
            headers: Vec::new(),
        }
    }

    pub fn json<T: serde::Serialize>(mut self, body: &T) -> Self {
        self.body = Some(Body::Json(
            serde_json::to_vec(body).expect("bodies serialize"),
        ));
        self
    }

    pub fn no_retry(mut self) -> Self {
        self.retry = false;
        self
    }
}

pub(crate) struct Reply {
    pub status: u16,
    pub body: Bytes,
}

impl Reply {
    pub fn json<T: serde::de::DeserializeOwned>(&self) -> Result<T, SdkError> {
        serde_json::from_slice(&self.body).map_err(|e| {
            SdkError::new(
                ErrorCode::Internal,
                format!("unexpected answer from the server: {e}"),
            )
        })
    }
}

pub(crate) struct Api {
    client: reqwest::Client,
    base: String,
    client_key: HeaderValue,
    retry: RetryConfig,
}

/// A failed attempt and how long the server asked us to wait.
struct Failure {
    error: SdkError,
    retry_after: Option<Duration>,
    /// The server may have received (and acted on) the request.
    maybe_applied: bool,
}

impl Api {
    pub fn new(
        base: &str,
        client_key: &str,
        timeout: Duration,
        retry: RetryConfig,
    ) -> Result<Self, SdkError> {
        let client = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout.min(Duration::from_secs(10)))
            .user_agent(concat!("aethex-sdk/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| SdkError::new(ErrorCode::InvalidRequest, e.to_string()))?;
        let client_key = HeaderValue::from_str(client_key).map_err(|_| {
            SdkError::new(
                ErrorCode::InvalidRequest,
                "client key is not a valid header",
            )
        })?;
        Ok(Self {
            client,
            base: base.trim_end_matches('/').to_owned(),
            client_key,
            retry,
        })
    }

    /// Sends with retries; a non-2xx/304 answer is an `Err` carrying the server's code.
    pub async fn send(&self, request: &Request) -> Result<Reply, SdkError> {
        let mut attempt = 1;
        loop {
            match self.attempt(request).await {
                Ok(reply) => return Ok(reply),
                Err(failure) => {
                    let safe = request.retry || !failure.maybe_applied;
                    let retryable = safe && failure.error.code.is_retryable();
                    if !retryable || attempt >= self.retry.max_attempts {
                        return Err(failure.error);
                    }
                    let delay = failure
                        .retry_after
                        .map(|d| d.min(self.retry.max_delay))
                        .unwrap_or_else(|| backoff(&self.retry, attempt, &mut rand::thread_rng()));
                    tracing::debug!(code = %failure.error.code, attempt, ?delay, path = %request.path, "retrying");
                    tokio::time::sleep(delay).await;
                    attempt += 1;
                }
            }
        }
    }

    async fn attempt(&self, request: &Request) -> Result<Reply, Failure> {
        let mut builder = self
            .client
            .request(
                request.method.clone(),
                format!("{}{}", self.base, request.path),
            )
            .header("X-AeThex-Key", self.client_key.clone());
        if let Some(token) = &request.token {
            builder = builder.bearer_auth(token);
        }
        for (name, value) in &request.headers {
            builder = builder.header(*name, value);
        }
        builder = match &request.body {
            None => builder,
            Some(Body::Json(bytes)) => builder
                .header(CONTENT_TYPE, "application/json")
                .body(bytes.clone()),
            Some(Body::Zstd(bytes)) => builder
                .header(CONTENT_TYPE, "application/json")
                .header(CONTENT_ENCODING, "zstd")
                .body(bytes.clone()),
        };
        let response = builder.send().await.map_err(transport)?;
        let status = response.status().as_u16();
        let retry_after = retry_after(response.headers());
        let body = response.bytes().await.map_err(transport)?;
        if status < 400 {
            return Ok(Reply { status, body });
        }
        let error = match serde_json::from_slice::<ErrorEnvelope>(&body) {
            Ok(envelope) => SdkError {
                code: envelope.error.code,
                message: envelope.error.message,
                status,
                details: envelope.error.details.as_ref().map(plain_from_json),
            },
            Err(_) => SdkError {
                code: match status {
                    401 => ErrorCode::Unauthorized,
                    404 => ErrorCode::NotFound,
                    429 => ErrorCode::RateLimited,
                    503 => ErrorCode::Unavailable,
                    s if s >= 500 => ErrorCode::Internal,
                    _ => ErrorCode::InvalidRequest,
                },
                message: format!("HTTP {status}"),
                status,
                details: None,
            },
        };
        let maybe_applied = !matches!(status, 429 | 503);
        Err(Failure {
            error,
            retry_after,
            maybe_applied,
        })
    }
}

fn transport(e: reqwest::Error) -> Failure {
    let code = if e.is_timeout() {
        ErrorCode::Timeout
    } else {
        ErrorCode::Network
    };
    Failure {
        error: SdkError::new(code, format!("{e}")),
        retry_after: None,
        maybe_applied: !e.is_connect(),
    }
}

fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    headers
        .get(RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim()
        .parse::<u64>()
        .ok()
        .map(Duration::from_secs)
}

/// Delay before attempt `attempt + 1`: `base * 2^(attempt-1)`, capped, with "equal jitter"
/// (uniform in the upper half) so clients that failed together do not retry together.
pub(crate) fn backoff(config: &RetryConfig, attempt: u32, rng: &mut impl Rng) -> Duration {
    let exp = config
        .base_delay
        .saturating_mul(1u32 << (attempt.saturating_sub(1)).min(16));
    let ceiling = exp.min(config.max_delay);
    let half = ceiling / 2;
    half + ceiling.saturating_sub(half).mul_f64(rng.gen::<f64>())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_with_jitter_and_is_capped() {
        let config = RetryConfig {
            max_attempts: 10,
            base_delay: Duration::from_millis(100),
            max_delay: Duration::from_secs(1),
        };
        let mut rng = rand::thread_rng();
        for attempt in 1..=12 {
            let ceiling =
                (Duration::from_millis(100) * 2u32.pow(attempt - 1)).min(config.max_delay);
            let mut seen = Vec::new();
            for _ in 0..200 {
                let d = backoff(&config, attempt, &mut rng);
                assert!(d >= ceiling / 2 && d <= ceiling, "attempt {attempt}: {d:?}");
                seen.push(d);
            }
            seen.sort();
            seen.dedup();
            assert!(seen.len() > 10, "jitter spreads delays: {seen:?}");
        }
        // Huge attempt numbers do not overflow.
        assert!(backoff(&config, u32::MAX, &mut rng) <= config.max_delay);
    }
}
