//! OAuth sign-in for native games: PKCE (S256) + state, a one-shot loopback listener on
//! `127.0.0.1:<random port>` as the redirect URI, and the system browser (see `UrlOpener`).

use std::sync::Arc;
use std::time::Duration;

use aethex_protocol::auth::{OAuthCodeRequest, OAuthStartRequest, OAuthStartResponse};
use aethex_protocol::ErrorCode;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use reqwest::Method;
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use crate::client::Shared;
use crate::http::Request;
use crate::SdkError;

/// How long the player has to finish in the browser.
const BROWSER_TIMEOUT: Duration = Duration::from_secs(300);

fn random_token() -> String {
    URL_SAFE_NO_PAD.encode(rand::random::<[u8; 32]>())
}

/// Runs the browser part of the flow; returns what the sign-in/link endpoint needs.
pub(crate) async fn authorize(
    shared: &Arc<Shared>,
    provider: &str,
) -> Result<OAuthCodeRequest, SdkError> {
    if provider.is_empty() || !provider.bytes().all(|b| b.is_ascii_alphanumeric()) {
        return Err(SdkError::new(
            ErrorCode::InvalidRequest,
            "provider must be a name like google, github or discord",
        ));
    }
    let verifier = random_token();
    let challenge = URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()));
    let state = random_token();
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .map_err(|e| SdkError::new(ErrorCode::Network, format!("loopback listener: {e}")))?;
    let port = listener.local_addr().map_err(io_error)?.port();
    let redirect_uri = format!("http://127.0.0.1:{port}/callback");

    let start: OAuthStartResponse = shared
        .api
        .send(
            &Request::new(Method::POST, format!("/api/v1/auth/oauth/{provider}/start")).json(
                &OAuthStartRequest {
                    redirect_uri: redirect_uri.clone(),
                    code_challenge: challenge,
                    state: state.clone(),
                },
            ),
        )
        .await?
        .json()?;
    (shared.config.url_opener)(&start.authorize_url).map_err(|e| {
        SdkError::new(
            ErrorCode::Internal,
            format!("could not open the browser: {e}"),
        )
    })?;
    let code = tokio::time::timeout(BROWSER_TIMEOUT, receive_code(&listener, &state))
        .await
        .map_err(|_| SdkError::new(ErrorCode::Timeout, "the browser sign-in did not finish"))??;
    Ok(OAuthCodeRequest {
        code,
        code_verifier: verifier,
        redirect_uri,
    })
}

fn io_error(e: std::io::Error) -> SdkError {
    SdkError::new(ErrorCode::Network, e.to_string())
}

/// Waits for the provider's redirect; ignores stray requests (favicon, probes) until one carries
/// our `state`.
async fn receive_code(listener: &TcpListener, state: &str) -> Result<String, SdkError> {
    loop {
        let (mut socket, _) = listener.accept().await.map_err(io_error)?;
        let mut buf = vec![0u8; 8192];
        let mut len = 0;
        while len < buf.len() {
            let n = socket.read(&mut buf[len..]).await.map_err(io_error)?;
            if n == 0 {
                break;
            }
            len += n;
            if buf[..len].windows(4).any(|w| w == b"\r\n\r\n") {
                break;
            }
        }
        let head = String::from_utf8_lossy(&buf[..len]);
        let target = head
            .lines()
            .next()
            .and_then(|line| line.split_whitespace().nth(1))
            .unwrap_or("");
        let query = target.split_once('?').map_or("", |(_, q)| q);
        let params: Vec<(String, String)> = url_params(query);
        let get = |k: &str| params.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
        let outcome = match (get("state"), get("code"), get("error")) {
            (Some(s), _, _) if s != state => None,
            (Some(_), Some(code), _) => Some(Ok(code)),
            (Some(_), None, error) => Some(Err(SdkError::new(
                ErrorCode::InvalidCredentials,
                format!(
                    "the provider refused: {}",
                    error.unwrap_or_else(|| "no code".into())
                ),
            ))),
            (None, _, _) => None,
        };
        let page = match &outcome {
            Some(Ok(_)) => "Signed in. You can close this tab and return to the game.",
            Some(Err(_)) => "Sign-in failed. You can close this tab and return to the game.",
            None => "Waiting for sign-in...",
        };
        let response = format!(
            "HTTP/1.1 200 OK\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{page}",
            page.len()
        );
        let _ = socket.write_all(response.as_bytes()).await;
        let _ = socket.shutdown().await;
        if let Some(outcome) = outcome {
            return outcome;
        }
    }
}

fn url_params(query: &str) -> Vec<(String, String)> {
    query
        .split('&')
        .filter_map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            Some((percent_decode(k)?, percent_decode(v)?))
        })
        .collect()
}

fn percent_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => {
                let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_parameters_are_decoded() {
        let params = url_params("code=a%2Fb+c&state=xyz&empty=");
        assert_eq!(
            params,
            vec![
                ("code".into(), "a/b c".into()),
                ("state".into(), "xyz".into()),
                ("empty".into(), String::new())
            ]
        );
        assert_eq!(percent_decode("%zz"), None);
    }
}
