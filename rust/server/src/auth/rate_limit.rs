//! Rate limits of the auth endpoints (token buckets from `governor`): one per client IP on every
//! auth endpoint; on login one per (account, IP), so one address cannot hammer an account; and
//! one per account (project + email) over all addresses. Login treats the per-account one as an
//! alarm, not a wall: while it is exhausted the account is under attack and a login must carry a
//! solved proof-of-work captcha, so a botnet spread over many IPs pays per guess while the owner
//! (from any address) still gets in. A 429 there would lock the owner out: a denial of service
//! anyone could trigger with ten wrong passwords. Password-reset requests still get a 429 from
//! the per-account bucket (it bounds mails to one inbox).
//!
//! The client IP is the TCP peer address. Behind a reverse proxy every player shares the proxy's
//! address; such deployments should raise `auth_per_ip_*` or rate limit at the proxy.

use std::net::{IpAddr, SocketAddr};
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{ConnectInfo, FromRequestParts};
use axum::http::request::Parts;
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};

use crate::app::AppState;
use crate::config::RateLimitConfig;
use crate::error::ApiError;

/// How often idle buckets are dropped so the key maps do not grow forever.
const PRUNE_INTERVAL: Duration = Duration::from_secs(60);

#[derive(Clone)]
pub struct RateLimits {
    inner: Option<Arc<Limiters>>,
}

struct Limiters {
    per_ip: DefaultKeyedRateLimiter<IpAddr>,
    per_account: DefaultKeyedRateLimiter<String>,
    per_account_address: DefaultKeyedRateLimiter<(String, IpAddr)>,
}

/// Whether a login may go ahead as usual.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LoginGate {
    Open,
    /// The account saw too many attempts from all addresses: a solved captcha is required.
    UnderAttack,
}

fn quota(per_minute: u32, burst: u32) -> Quota {
    let per_minute = NonZeroU32::new(per_minute.max(1)).expect("non-zero");
    let burst = NonZeroU32::new(burst.max(1)).expect("non-zero");
    Quota::per_minute(per_minute).allow_burst(burst)
}

fn check<K: std::hash::Hash + Eq + Clone>(
    limiter: &DefaultKeyedRateLimiter<K>,
    key: &K,
) -> Result<(), ApiError> {
    limiter.check_key(key).map_err(|not_until| {
        let wait = not_until.wait_time_from(DefaultClock::default().now());
        ApiError::rate_limited(wait.as_secs() + u64::from(wait.subsec_nanos() > 0))
    })
}

impl RateLimits {
    pub fn new(config: &RateLimitConfig) -> Self {
        if !config.enabled {
            return Self { inner: None };
        }
        let limiters = Arc::new(Limiters {
            per_ip: RateLimiter::keyed(quota(
                config.auth_per_ip_per_minute,
                config.auth_per_ip_burst,
            )),
            per_account: RateLimiter::keyed(quota(
                config.auth_per_account_per_minute,
                config.auth_per_account_burst,
            )),
            per_account_address: RateLimiter::keyed(quota(
                config.auth_per_account_per_minute,
                config.auth_per_account_burst,
            )),
        });
        let weak = Arc::downgrade(&limiters);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(PRUNE_INTERVAL);
            loop {
                tick.tick().await;
                let Some(limiters) = weak.upgrade() else {
                    break;
                };
                limiters.per_ip.retain_recent();
                limiters.per_account.retain_recent();
                limiters.per_account_address.retain_recent();
            }
        });
        Self {
            inner: Some(limiters),
        }
    }

    pub fn check_ip(&self, ip: IpAddr) -> Result<(), ApiError> {
        match &self.inner {
            Some(l) => check(&l.per_ip, &ip),
            None => Ok(()),
        }
    }

    /// `email_lower` must already be normalised so case variants share one bucket.
    pub fn check_account(&self, project_id: &str, email_lower: &str) -> Result<(), ApiError> {
        match &self.inner {
            Some(l) => check(&l.per_account, &format!("{project_id}\n{email_lower}")),
            None => Ok(()),
        }
    }

    /// A login attempt on (`project_id`, `email_lower`) from `ip`: 429 when this address tried
    /// this account too often, `UnderAttack` when all addresses together did.
    pub fn check_login(
        &self,
        project_id: &str,
        email_lower: &str,
        ip: Option<IpAddr>,
    ) -> Result<LoginGate, ApiError> {
        let Some(l) = &self.inner else {
            return Ok(LoginGate::Open);
        };
        let account = format!("{project_id}\n{email_lower}");
        if let Some(ip) = ip {
            check(&l.per_account_address, &(account.clone(), ip))?;
        }
        Ok(match l.per_account.check_key(&account) {
            Ok(()) => LoginGate::Open,
            Err(_) => LoginGate::UnderAttack,
        })
    }
}

/// Extractor every auth handler takes first: rejects with 429 before any other work when the
/// client IP is over its limit. Carries the IP (absent when served without connect info).
pub struct IpLimited(pub Option<IpAddr>);

impl FromRequestParts<AppState> for IpLimited {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let ip = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map(|ConnectInfo(addr)| addr.ip());
        if let Some(ip) = ip {
            state.auth.rate_limits.check_ip(ip)?;
        }
        Ok(IpLimited(ip))
    }
}
