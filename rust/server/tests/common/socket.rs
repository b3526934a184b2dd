//! A realtime socket client for tests against any running server (in-process or a process).

use std::time::Duration;

use futures::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// Longest wait for a frame that must come.
pub const WAIT: Duration = Duration::from_secs(10);

/// Where a server is and the game's client key.
#[derive(Clone)]
pub struct Endpoint {
    pub base: String,
    pub client_key: String,
    pub http: reqwest::Client,
}

/// A signed-in player.
#[derive(Clone)]
pub struct Player {
    pub token: String,
    pub id: String,
}

impl Endpoint {
    pub fn new(base: String, client_key: String) -> Self {
        Self {
            base,
            client_key,
            http: reqwest::Client::new(),
        }
    }

    /// Signs in a fresh anonymous player.
    pub async fn device_player(&self) -> Player {
        let resp = self
            .http
            .post(format!("{}/api/v1/auth/device", self.base))
            .header("X-AeThex-Key", &self.client_key)
            .json(&json!({ "device_id": format!("device-{}", uuid::Uuid::new_v4()) }))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200, "{}", resp.text().await.unwrap());
        let body: Value = resp.json().await.unwrap();
        Player {
            token: body["access_token"].as_str().unwrap().to_owned(),
            id: body["user"]["id"].as_str().unwrap().to_owned(),
        }
    }

    /// A request as `player`.
    pub fn player(
        &self,
        method: reqwest::Method,
        path: &str,
        player: &Player,
    ) -> reqwest::RequestBuilder {
        self.http
            .request(method, format!("{}{path}", self.base))
            .header("X-AeThex-Key", &self.client_key)
            .bearer_auth(&player.token)
    }

    /// Runs a friend action (`request`, `accept`, `remove`, `block`, ...) and returns the state.
    pub async fn friend_action(&self, me: &Player, other: &Player, action: &str) -> Value {
        let resp = self
            .player(
                reqwest::Method::POST,
                &format!("/api/v1/friends/{}/{action}", other.id),
                me,
            )
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200, "{}", resp.text().await.unwrap());
        resp.json::<Value>().await.unwrap()["state"].clone()
    }

    /// Makes `a` and `b` friends.
    pub async fn befriend(&self, a: &Player, b: &Player) {
        self.friend_action(a, b, "request").await;
        self.friend_action(b, a, "accept").await;
    }

    /// The presence `viewer`'s friend list shows for `friend`.
    pub async fn presence_of(&self, viewer: &Player, friend: &Player) -> String {
        let resp = self
            .player(reqwest::Method::GET, "/api/v1/friends", viewer)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
        let list: Value = resp.json().await.unwrap();
        list["friends"]
            .as_array()
            .unwrap()
            .iter()
            .find(|f| f["user_id"] == friend.id.as_str())
            .unwrap_or_else(|| panic!("{} is not in the list {list}", friend.id))["presence"]
            .as_str()
            .unwrap()
            .to_owned()
    }

    pub async fn socket(&self, player: &Player) -> Socket {
        let url = format!(
            "{}/api/v1/realtime",
            self.base.replacen("http://", "ws://", 1)
        );
        let mut req = url.into_client_request().unwrap();
        req.headers_mut().insert(
            "X-AeThex-Key",
            HeaderValue::from_str(&self.client_key).unwrap(),
        );
        req.headers_mut().insert(
            "Authorization",
            HeaderValue::from_str(&format!("Bearer {}", player.token)).unwrap(),
        );
        let (ws, _) = tokio_tungstenite::connect_async(req)
            .await
            .expect("upgrade");
        let mut socket = Socket { ws };
        // Registered (and its presence counted) once it answers.
        socket.nothing_pending().await;
        socket
    }
}

pub struct Socket {
    ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
}

impl Socket {
    pub async fn send(&mut self, frame: Value) {
        self.ws
            .send(Message::text(frame.to_string()))
            .await
            .unwrap();
    }

    /// The next JSON frame.
    pub async fn recv(&mut self) -> Value {
        loop {
            let msg = tokio::time::timeout(WAIT, self.ws.next())
                .await
                .expect("a frame in time")
                .expect("socket open")
                .expect("no socket error");
            match msg {
                Message::Text(text) => return serde_json::from_str(text.as_str()).unwrap(),
                Message::Close(frame) => panic!("closed: {frame:?}"),
                _ => continue,
            }
        }
    }

    pub async fn recv_type(&mut self, kind: &str) -> Value {
        let frame = self.recv().await;
        assert_eq!(frame["type"], kind, "{frame}");
        frame
    }

    /// The next `presence_changed`, asserted to be about `user_id`; returns its status.
    pub async fn presence_changed(&mut self, user_id: &str) -> String {
        let frame = self.recv_type("presence_changed").await;
        assert_eq!(frame["user_id"], user_id, "{frame}");
        assert!(frame["at"].as_i64().is_some_and(|at| at > 0), "{frame}");
        frame["status"].as_str().unwrap().to_owned()
    }

    /// Asserts nothing but `pong` arrives before the pong to a fresh ping: everything the
    /// server queued for this socket before now has been read.
    pub async fn nothing_pending(&mut self) {
        self.send(json!({"type": "ping", "cid": "barrier"})).await;
        let frame = self.recv().await;
        assert_eq!(frame, json!({"type": "pong", "cid": "barrier"}));
    }

    /// Creates a room and returns its id.
    pub async fn create_room(&mut self) -> String {
        self.send(json!({"type": "create_room", "properties": {}}))
            .await;
        self.recv_type("room_joined").await["room"]["room_id"]
            .as_str()
            .unwrap()
            .to_owned()
    }

    pub async fn leave_room(&mut self, room_id: &str) {
        self.send(json!({"type": "leave_room", "room_id": room_id}))
            .await;
        self.recv_type("room_left").await;
    }

    /// Closes cleanly and waits for the server's close.
    pub async fn close(mut self) {
        let _ = self.ws.close(None).await;
        while let Ok(Some(Ok(_))) = tokio::time::timeout(WAIT, self.ws.next()).await {}
    }
}
