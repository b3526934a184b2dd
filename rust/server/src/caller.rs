//! Who is asking. Every endpoint takes one of these extractors, so none can forget the check:
//!
//! - [`ClientProject`]: `X-AeThex-Key` names the game; for endpoints used before sign-in.
//! - [`Player`]: a signed-in player (`Authorization: Bearer <access token>` plus the client key of
//!   the same project).
//! - [`Caller`]: a player or one of the game's trusted servers (`Authorization: ServerKey …`).

use std::sync::Arc;

use aethex_protocol::{CLIENT_KEY_HEADER, SERVER_KEY_SCHEME};
use axum::extract::FromRequestParts;
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;

use crate::app::AppState;
use crate::error::ApiError;
use crate::projects::Project;

#[derive(Debug, Clone)]
pub struct ClientProject(pub Arc<Project>);

#[derive(Debug, Clone)]
pub struct Player {
    pub project: Arc<Project>,
    pub user_id: String,
    /// The session (refresh-token family) this access token belongs to.
    pub session_id: String,
}

#[derive(Debug, Clone)]
pub enum Caller {
    Player(Player),
    Server(Arc<Project>),
}

impl Caller {
    pub fn project(&self) -> &Arc<Project> {
        match self {
            Caller::Player(p) => &p.project,
            Caller::Server(project) => project,
        }
    }

    /// Resolves a `{user_id}` path segment (`me` = the caller) and enforces ownership: a player
    /// reaches only their own id (403 otherwise); a server key reaches any id, and the service
    /// checks the user belongs to its project.
    pub fn target_user(&self, path_user_id: &str) -> Result<String, ApiError> {
        match (self, path_user_id) {
            (Caller::Player(p), "me") => Ok(p.user_id.clone()),
            (Caller::Player(p), id) if id == p.user_id => Ok(p.user_id.clone()),
            (Caller::Player(_), _) => Err(ApiError::forbidden(
                "players may only access their own data",
            )),
            // Not found rather than invalid: for a server key, `me` names no player.
            (Caller::Server(_), "me") => Err(ApiError::not_found(
                "`me` needs a player token; a server key must name the user id",
            )),
            (Caller::Server(_), id) => Ok(id.to_owned()),
        }
    }
}

fn header_str<'a>(parts: &'a Parts, name: &str) -> Result<Option<&'a str>, ApiError> {
    parts
        .headers
        .get(name)
        .map(|v| {
            v.to_str()
                .map_err(|_| ApiError::unauthorized(format!("header {name} is not valid text")))
        })
        .transpose()
}

async fn client_project(parts: &Parts, state: &AppState) -> Result<Arc<Project>, ApiError> {
    let key = header_str(parts, CLIENT_KEY_HEADER)?.ok_or_else(|| {
        ApiError::unauthorized("missing X-AeThex-Key header (the game's client key)")
    })?;
    project_by_client_key(state, key).await
}

/// The project a client key names (401 `unauthorized` for an unknown one).
pub async fn project_by_client_key(state: &AppState, key: &str) -> Result<Arc<Project>, ApiError> {
    state
        .projects
        .by_client_key(key.trim())
        .await?
        .ok_or_else(|| ApiError::unauthorized("unknown client key"))
}

enum Credentials<'a> {
    Bearer(&'a str),
    ServerKey(&'a str),
}

fn credentials(parts: &Parts) -> Result<Option<Credentials<'_>>, ApiError> {
    let Some(value) = header_str(parts, AUTHORIZATION.as_str())? else {
        return Ok(None);
    };
    let (scheme, rest) = value
        .split_once(' ')
        .ok_or_else(|| ApiError::unauthorized("malformed Authorization header"))?;
    let rest = rest.trim();
    if scheme.eq_ignore_ascii_case("bearer") {
        Ok(Some(Credentials::Bearer(rest)))
    } else if scheme.eq_ignore_ascii_case(SERVER_KEY_SCHEME) {
        Ok(Some(Credentials::ServerKey(rest)))
    } else {
        Err(ApiError::unauthorized(format!(
            "unsupported Authorization scheme {scheme:?}"
        )))
    }
}

async fn player(parts: &Parts, state: &AppState, token: &str) -> Result<Player, ApiError> {
    let project = client_project(parts, state).await?;
    Ok(verify_player(state, project, token).await?.0)
}

/// Checks an access token against the project its client key named; also returns the token's
/// expiry (unix seconds) for connections that outlive one request.
pub async fn verify_player(
    state: &AppState,
    project: Arc<Project>,
    token: &str,
) -> Result<(Player, i64), ApiError> {
    let claims = state.tokens.verify(token, state.clock.now_ms()).await?;
    if claims.pid != project.id {
        return Err(ApiError::unauthorized(
            "access token belongs to another project than the client key",
        ));
    }
    if state.auth.is_session_revoked(&claims.sid) {
        return Err(ApiError::unauthorized("session has been signed out"));
    }
    let player = Player {
        project,
        user_id: claims.sub,
        session_id: claims.sid,
    };
    Ok((player, claims.exp))
}

async fn server_project(state: &AppState, key: &str) -> Result<Arc<Project>, ApiError> {
    state
        .projects
        .by_server_key(key)
        .await?
        .ok_or_else(|| ApiError::unauthorized("unknown server key"))
}

impl FromRequestParts<AppState> for ClientProject {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        Ok(ClientProject(client_project(parts, state).await?))
    }
}

impl FromRequestParts<AppState> for Player {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        match credentials(parts)? {
            Some(Credentials::Bearer(token)) => player(parts, state, token).await,
            Some(Credentials::ServerKey(_)) => Err(ApiError::forbidden(
                "this endpoint is for players; a server key cannot act as one",
            )),
            None => Err(ApiError::unauthorized(
                "missing Authorization: Bearer <access token>",
            )),
        }
    }
}

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        match credentials(parts)? {
            Some(Credentials::Bearer(token)) => {
                Ok(Caller::Player(player(parts, state, token).await?))
            }
            Some(Credentials::ServerKey(key)) => {
                Ok(Caller::Server(server_project(state, key).await?))
            }
            None => Err(ApiError::unauthorized(
                "missing Authorization: Bearer <access token> or ServerKey <key>",
            )),
        }
    }
}
