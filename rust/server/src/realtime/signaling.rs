//! `GET /api/v1/realtime/ice`: the STUN and TURN servers a player's WebRTC connections use, with
//! TURN credentials in coturn's shared-secret REST scheme (`use-auth-secret`): the username is
//! `expiry:user_id` and the password base64(HMAC-SHA1(secret, username)), so the TURN server
//! checks them with the shared secret alone and no per-player state lives anywhere.

use aethex_protocol::signaling::{IceConfig, IceServer, ICE_PATH};
use aethex_protocol::ErrorEnvelope;
use axum::extract::State;
use axum::Json;
use base64::Engine as _;
use hmac::{Hmac, Mac};
use sha1::Sha1;

use crate::app::AppState;
use crate::caller::Player;
use crate::config::IceConfig as IceSettings;

#[utoipa::path(
    get,
    path = ICE_PATH,
    tag = "realtime",
    security(("client_key" = [], "bearer" = [])),
    responses(
        (status = 200, description = "STUN and TURN servers for the caller's peer-to-peer connections, TURN with credentials valid until `expires_at`", body = IceConfig),
        (status = 401, description = "No or unknown key, invalid or expired token", body = ErrorEnvelope),
        (status = 403, description = "A server key: TURN credentials are issued to players", body = ErrorEnvelope),
    )
)]
pub async fn ice_config(State(state): State<AppState>, player: Player) -> Json<IceConfig> {
    let now_secs = state.clock.now_ms().div_euclid(1000);
    Json(ice_servers(&state.config.ice, &player.user_id, now_secs))
}

/// The ICE servers for `user_id` at `now_secs` (Unix seconds).
pub fn ice_servers(settings: &IceSettings, user_id: &str, now_secs: i64) -> IceConfig {
    let mut ice_servers = Vec::new();
    if !settings.stun_urls.is_empty() {
        ice_servers.push(IceServer {
            urls: settings.stun_urls.clone(),
            username: None,
            credential: None,
        });
    }
    let mut expires_at = None;
    if let (false, Some(secret)) = (settings.turn_urls.is_empty(), &settings.turn_secret) {
        let expiry = now_secs.saturating_add_unsigned(settings.turn_credential_ttl_secs);
        let (username, credential) = turn_credentials(secret, user_id, expiry);
        ice_servers.push(IceServer {
            urls: settings.turn_urls.clone(),
            username: Some(username),
            credential: Some(credential),
        });
        expires_at = Some(expiry);
    }
    IceConfig {
        ice_servers,
        expires_at,
    }
}

/// coturn's REST credentials for `user_id` until `expiry` (Unix seconds).
pub fn turn_credentials(secret: &str, user_id: &str, expiry: i64) -> (String, String) {
    let username = format!("{expiry}:{user_id}");
    let mut mac =
        Hmac::<Sha1>::new_from_slice(secret.as_bytes()).expect("HMAC takes keys of any length");
    mac.update(username.as_bytes());
    let credential = base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes());
    (username, credential)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_match_coturns_rest_scheme() {
        // Computed independently: printf '1700000000:u1' | openssl dgst -sha1 -hmac s3cret -binary | base64
        let (username, credential) = turn_credentials("s3cret", "u1", 1_700_000_000);
        assert_eq!(username, "1700000000:u1");
        assert_eq!(credential, "4UcptkFZVgURM7k6kAX3uCsw7gE=");
    }

    #[test]
    fn turn_needs_urls_and_a_secret() {
        let mut settings = IceSettings {
            stun_urls: vec!["stun:127.0.0.1:3478".into()],
            ..IceSettings::default()
        };
        let only_stun = ice_servers(&settings, "u1", 100);
        assert_eq!(only_stun.ice_servers.len(), 1);
        assert_eq!(only_stun.expires_at, None);
        settings.turn_urls = vec!["turn:127.0.0.1:3478?transport=udp".into()];
        assert_eq!(ice_servers(&settings, "u1", 100).ice_servers.len(), 1);
        settings.turn_secret = Some("s".into());
        settings.turn_credential_ttl_secs = 60;
        let both = ice_servers(&settings, "u1", 100);
        assert_eq!(both.expires_at, Some(160));
        assert_eq!(both.ice_servers[1].username.as_deref(), Some("160:u1"));
    }
}
