//! OAuth sign-in (Google, GitHub, Discord): authorization-code flow with PKCE (S256).
//!
//! 1. `POST /api/v1/auth/oauth/{provider}/start` builds the provider's authorize URL (the server
//!    holds the client id); the client opens it and receives `code` at its `redirect_uri`.
//! 2. `POST /api/v1/auth/oauth/{provider}` hands over `code` + `code_verifier`; the server
//!    exchanges them at the provider's token endpoint with its client secret, reads the user
//!    info, and signs in the account holding identity (provider, provider user id), creating it
//!    on first use. The verifier never leaves client and server, so a stolen code is useless.
//!
//! Provider accounts are never merged with existing accounts by email (that would let whoever
//! controls a provider account with a matching address take the account over); linking is an
//! explicit, signed-in `POST /api/v1/auth/link/oauth/{provider}`.

use std::time::Duration;

use aethex_protocol::auth::{
    AuthResponse, OAuthCodeRequest, OAuthStartRequest, OAuthStartResponse,
};
use aethex_protocol::ErrorCode;
use axum::extract::{Path, State};
use axum::Json;
use serde_json::Value;

use super::rate_limit::IpLimited;
use super::{sessions, users};
use crate::app::AppState;
use crate::caller::ClientProject;
use crate::config::OAuthProviderConfig;
use crate::error::{ApiError, ApiResult};
use crate::http::ApiJson;

/// How long a call to a provider may take before the sign-in fails with `unavailable`.
pub const PROVIDER_TIMEOUT: Duration = Duration::from_secs(10);

/// A configured provider with every endpoint resolved.
pub struct Provider {
    pub name: &'static str,
    client_id: String,
    client_secret: String,
    authorize_url: String,
    token_url: String,
    userinfo_url: String,
    scopes: Vec<String>,
}

/// What we keep of a provider's user info.
pub struct ProviderUser {
    /// The provider's stable user id.
    pub subject: String,
    pub username: Option<String>,
}

struct Defaults {
    authorize_url: &'static str,
    token_url: &'static str,
    userinfo_url: &'static str,
    scopes: &'static [&'static str],
}

fn defaults(name: &str) -> Option<(&'static str, Defaults)> {
    Some(match name {
        "google" => (
            "google",
            Defaults {
                authorize_url: "https://accounts.google.com/o/oauth2/v2/auth",
                token_url: "https://oauth2.googleapis.com/token",
                userinfo_url: "https://openidconnect.googleapis.com/v1/userinfo",
                scopes: &["openid", "email", "profile"],
            },
        ),
        "github" => (
            "github",
            Defaults {
                authorize_url: "https://github.com/login/oauth/authorize",
                token_url: "https://github.com/login/oauth/access_token",
                userinfo_url: "https://api.github.com/user",
                scopes: &["read:user"],
            },
        ),
        "discord" => (
            "discord",
            Defaults {
                authorize_url: "https://discord.com/oauth2/authorize",
                token_url: "https://discord.com/api/oauth2/token",
                userinfo_url: "https://discord.com/api/users/@me",
                scopes: &["identify"],
            },
        ),
        _ => return None,
    })
}

fn or_default(value: &str, default: &str) -> String {
    if value.is_empty() {
        default.to_owned()
    } else {
        value.to_owned()
    }
}

impl Provider {
    /// The provider named in the path: unknown or unconfigured is a 404 `not_found`.
    pub fn resolve(state: &AppState, name: &str) -> ApiResult<Self> {
        let (name, defaults) = defaults(name).ok_or_else(|| {
            ApiError::not_found(format!(
                "unknown OAuth provider {name:?}; supported: google, github, discord"
            ))
        })?;
        let config: Option<&OAuthProviderConfig> = match name {
            "google" => state.config.oauth.google.as_ref(),
            "github" => state.config.oauth.github.as_ref(),
            _ => state.config.oauth.discord.as_ref(),
        };
        let config = config.filter(|c| !c.client_id.is_empty()).ok_or_else(|| {
            ApiError::not_found(format!(
                "OAuth provider {name} is not configured on this server ([oauth.{name}] client_id)"
            ))
        })?;
        Ok(Self {
            name,
            client_id: config.client_id.clone(),
            client_secret: config.client_secret.clone(),
            authorize_url: or_default(&config.authorize_url, defaults.authorize_url),
            token_url: or_default(&config.token_url, defaults.token_url),
            userinfo_url: or_default(&config.userinfo_url, defaults.userinfo_url),
            scopes: if config.scopes.is_empty() {
                defaults.scopes.iter().map(|s| (*s).to_owned()).collect()
            } else {
                config.scopes.clone()
            },
        })
    }

    pub fn authorize_url(&self, req: &OAuthStartRequest) -> ApiResult<String> {
        let mut url = url::Url::parse(&self.authorize_url)
            .map_err(|e| ApiError::internal(format!("oauth.{}.authorize_url: {e}", self.name)))?;
        url.query_pairs_mut()
            .append_pair("response_type", "code")
            .append_pair("client_id", &self.client_id)
            .append_pair("redirect_uri", &req.redirect_uri)
            .append_pair("scope", &self.scopes.join(" "))
            .append_pair("state", &req.state)
            .append_pair("code_challenge", &req.code_challenge)
            .append_pair("code_challenge_method", "S256");
        Ok(url.into())
    }

    /// Exchanges the code (with the PKCE verifier) and reads who signed in.
    pub async fn exchange(
        &self,
        http: &reqwest::Client,
        req: &OAuthCodeRequest,
    ) -> ApiResult<ProviderUser> {
        validate_redirect_uri(&req.redirect_uri)?;
        if req.code.is_empty() || req.code.len() > 2048 {
            return Err(ApiError::invalid("code must be 1 to 2048 characters"));
        }
        validate_pkce_value("code_verifier", &req.code_verifier)?;
        let unreachable = |e: reqwest::Error| {
            tracing::warn!(provider = self.name, error = %e, "OAuth provider unreachable");
            ApiError::new(
                ErrorCode::Unavailable,
                format!("{} could not be reached", self.name),
            )
        };
        let response = http
            .post(&self.token_url)
            .header(reqwest::header::ACCEPT, "application/json")
            .form(&[
                ("grant_type", "authorization_code"),
                ("code", req.code.as_str()),
                ("redirect_uri", req.redirect_uri.as_str()),
                ("client_id", self.client_id.as_str()),
                ("client_secret", self.client_secret.as_str()),
                ("code_verifier", req.code_verifier.as_str()),
            ])
            .send()
            .await
            .map_err(unreachable)?;
        let status = response.status();
        let body: Value = response.json().await.unwrap_or(Value::Null);
        // GitHub answers errors with 200 and an `error` field.
        let access_token = body["access_token"]
            .as_str()
            .filter(|_| status.is_success());
        let Some(access_token) = access_token else {
            let reason = body["error"].as_str().unwrap_or("rejected");
            return Err(ApiError::unauthorized(format!(
                "{} rejected the authorization code ({reason})",
                self.name
            )));
        };
        let info = http
            .get(&self.userinfo_url)
            .bearer_auth(access_token)
            .header(reqwest::header::ACCEPT, "application/json")
            .header(reqwest::header::USER_AGENT, "aethex-cloud")
            .send()
            .await
            .map_err(unreachable)?;
        if !info.status().is_success() {
            return Err(ApiError::new(
                ErrorCode::Unavailable,
                format!(
                    "{} user info failed with status {}",
                    self.name,
                    info.status()
                ),
            ));
        }
        let info: Value = info.json().await.map_err(unreachable)?;
        self.parse_user(&info)
    }

    fn parse_user(&self, info: &Value) -> ApiResult<ProviderUser> {
        let (id_field, name_fields): (&str, &[&str]) = match self.name {
            "google" => ("sub", &["name", "given_name"]),
            "github" => ("id", &["login"]),
            _ => ("id", &["username"]),
        };
        // GitHub's id is a number, the others' strings.
        let subject = match &info[id_field] {
            Value::String(s) if !s.is_empty() => s.clone(),
            Value::Number(n) => n.to_string(),
            _ => {
                return Err(ApiError::new(
                    ErrorCode::Unavailable,
                    format!("{} user info has no {id_field:?}", self.name),
                ))
            }
        };
        let username = name_fields
            .iter()
            .find_map(|f| info[*f].as_str())
            .map(sanitize_username);
        Ok(ProviderUser { subject, username })
    }
}

/// A provider display name turned into a valid username (it may still be taken).
fn sanitize_username(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_alphanumeric() || matches!(c, '_' | '-' | '.') {
                c
            } else {
                '_'
            }
        })
        .take(32)
        .collect()
}

fn validate_redirect_uri(uri: &str) -> ApiResult<()> {
    // Custom schemes (`com.example.game:/callback`) are fine: the provider checks the URI
    // against the ones registered for the client.
    let ok = uri.len() <= 2048 && url::Url::parse(uri).is_ok();
    if !ok {
        return Err(ApiError::invalid("redirect_uri must be an absolute URL"));
    }
    Ok(())
}

/// RFC 7636: verifiers and S256 challenges are 43 to 128 unreserved characters.
fn validate_pkce_value(field: &str, value: &str) -> ApiResult<()> {
    let ok = (43..=128).contains(&value.len())
        && value
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_' | '~'));
    if !ok {
        return Err(ApiError::invalid(format!(
            "{field} must be 43 to 128 characters of [A-Za-z0-9-._~] (RFC 7636)"
        )));
    }
    Ok(())
}

#[utoipa::path(
    post,
    path = "/api/v1/auth/oauth/{provider}/start",
    tag = "auth",
    security(("client_key" = [])),
    request_body = OAuthStartRequest,
    params(
        ("provider" = String, Path, description = "google, github or discord"),
    ),
    responses(
        (status = 200, description = "The URL to open in the player's browser", body = OAuthStartResponse),
        (status = 400, description = "Invalid redirect_uri, code_challenge or state", body = aethex_protocol::ErrorEnvelope),
        (status = 404, description = "Unknown or unconfigured provider", body = aethex_protocol::ErrorEnvelope),
    )
)]
pub async fn start(
    _limit: IpLimited,
    State(state): State<AppState>,
    ClientProject(_project): ClientProject,
    Path(provider): Path<String>,
    ApiJson(req): ApiJson<OAuthStartRequest>,
) -> ApiResult<Json<OAuthStartResponse>> {
    let provider = Provider::resolve(&state, &provider)?;
    validate_redirect_uri(&req.redirect_uri)?;
    validate_pkce_value("code_challenge", &req.code_challenge)?;
    if req.state.is_empty() || req.state.len() > 512 {
        return Err(ApiError::invalid("state must be 1 to 512 characters"));
    }
    Ok(Json(OAuthStartResponse {
        authorize_url: provider.authorize_url(&req)?,
    }))
}

#[utoipa::path(
    post,
    path = "/api/v1/auth/oauth/{provider}",
    tag = "auth",
    security(("client_key" = [])),
    request_body = OAuthCodeRequest,
    params(
        ("provider" = String, Path, description = "google, github or discord"),
    ),
    responses(
        (status = 200, description = "Signed in (account created on first use)", body = AuthResponse),
        (status = 401, description = "The provider rejected the code or verifier", body = aethex_protocol::ErrorEnvelope),
        (status = 404, description = "Unknown or unconfigured provider", body = aethex_protocol::ErrorEnvelope),
        (status = 503, description = "The provider could not be reached", body = aethex_protocol::ErrorEnvelope),
    )
)]
pub async fn sign_in(
    _limit: IpLimited,
    State(state): State<AppState>,
    ClientProject(project): ClientProject,
    Path(provider): Path<String>,
    ApiJson(req): ApiJson<OAuthCodeRequest>,
) -> ApiResult<Json<AuthResponse>> {
    let provider = Provider::resolve(&state, &provider)?;
    let who = provider.exchange(&state.auth.http, &req).await?;
    let now = state.clock.now_ms();
    let mut tx = state.db.write.begin().await?;
    let user_id =
        match users::find_by_identity(&mut tx, &project.id, provider.name, &who.subject).await? {
            Some(id) => id,
            None => {
                let provided = who.username.as_deref().map(users::normalize_username);
                let username = match provided {
                    Some(name)
                        if users::validate_username(&name).is_ok()
                            && !users::username_taken(&mut *tx, &project.id, &name).await? =>
                    {
                        name
                    }
                    _ => free_generated_username(&state, &mut tx, &project.id).await?,
                };
                let id = users::insert(&mut tx, &project.id, &username, now).await?;
                users::add_identity(&mut tx, &project.id, provider.name, &who.subject, &id, now)
                    .await?;
                id
            }
        };
    let (session_id, refresh) =
        sessions::create(&mut tx, &state, &project.id, &user_id, now).await?;
    let user = users::load(&mut tx, &user_id).await?;
    tx.commit().await?;
    Ok(Json(sessions::auth_response(
        &state,
        &project.id,
        user,
        session_id,
        refresh,
        now,
    )?))
}

/// A generated name no account holds yet. Checked before the insert: on PostgreSQL a failed
/// insert would abort the sign-in's transaction.
async fn free_generated_username(
    state: &AppState,
    conn: &mut sqlx::AnyConnection,
    project_id: &str,
) -> ApiResult<String> {
    for _ in 0..users::MAX_GENERATED_NAME_ATTEMPTS {
        let name = state.auth.username_generator.next_name();
        if !users::username_taken(&mut *conn, project_id, &name).await? {
            return Ok(name);
        }
    }
    Err(ApiError::internal("no free generated username"))
}
