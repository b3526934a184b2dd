//! A realtime socket client for tests against any running server (in-process or a process).

use std::collections::BTreeMap;
use std::time::Duration;

use aethex_protocol::realtime::{ClientFrame, ServerFrame};
use futures::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::handshake::client::Request;
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
    /// The device it signed in with (signing it in again gives the same player).
    pub device: String,
}

/// How a socket's frames are encoded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Encoding {
    Json,
    /// Negotiated with `Sec-WebSocket-Protocol: aethex.msgpack`.
    MsgpackHeader,
    /// Asked for with `?encoding=msgpack`.
    MsgpackQuery,
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
        self.device(&format!("device-{}", uuid::Uuid::new_v4()))
            .await
    }

    /// Signs in (or back in) the device `device_id`.
    pub async fn device(&self, device_id: &str) -> Player {
        let resp = self
            .http
            .post(format!("{}/api/v1/auth/device", self.base))
            .header("X-AeThex-Key", &self.client_key)
            .json(&json!({ "device_id": device_id }))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200, "{}", resp.text().await.unwrap());
        let body: Value = resp.json().await.unwrap();
        Player {
            token: body["access_token"].as_str().unwrap().to_owned(),
            id: body["user"]["id"].as_str().unwrap().to_owned(),
            device: device_id.to_owned(),
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

    /// The upgrade request of the realtime socket, with `token` as the bearer token if any.
    pub fn socket_request(&self, token: Option<&str>, encoding: Encoding) -> Request {
        let query = if encoding == Encoding::MsgpackQuery {
            "?encoding=msgpack"
        } else {
            ""
        };
        let url = format!(
            "{}/api/v1/realtime{query}",
            self.base.replacen("http://", "ws://", 1)
        );
        let mut req = url.into_client_request().unwrap();
        let headers = req.headers_mut();
        headers.insert(
            "X-AeThex-Key",
            HeaderValue::from_str(&self.client_key).unwrap(),
        );
        if let Some(token) = token {
            headers.insert(
                "Authorization",
                HeaderValue::from_str(&format!("Bearer {token}")).unwrap(),
            );
        }
        if encoding == Encoding::MsgpackHeader {
            headers.insert(
                "Sec-WebSocket-Protocol",
                HeaderValue::from_static("aethex.msgpack"),
            );
        }
        req
    }

    /// Opens a socket of `player` speaking `encoding`; nothing is sent on it yet.
    pub async fn connect(&self, player: &Player, encoding: Encoding) -> Socket {
        let req = self.socket_request(Some(&player.token), encoding);
        let (ws, resp) = tokio_tungstenite::connect_async(req)
            .await
            .expect("upgrade");
        let protocol = resp.headers().get("Sec-WebSocket-Protocol");
        match encoding {
            Encoding::MsgpackHeader => assert_eq!(protocol.unwrap(), "aethex.msgpack"),
            _ => assert!(protocol.is_none()),
        }
        Socket {
            ws,
            id: player.id.clone(),
            token: player.token.clone(),
            device: player.device.clone(),
            encoding,
            seen: BTreeMap::new(),
            ignored: &[],
        }
    }

    /// A JSON socket of `player`, registered (its presence counted) when this returns.
    pub async fn socket(&self, player: &Player) -> Socket {
        let mut socket = self.connect(player, Encoding::Json).await;
        socket.nothing_pending().await;
        socket
    }
}

/// One player's socket.
pub struct Socket {
    pub ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
    /// The player it was opened for.
    pub id: String,
    pub token: String,
    pub device: String,
    pub encoding: Encoding,
    /// The highest room event `seq` seen per room: what a real client would resume from.
    pub seen: BTreeMap<String, u64>,
    /// Frame types `recv` passes over: pushes the test does not follow.
    pub ignored: &'static [&'static str],
}

impl Socket {
    /// The player it was opened for (as it is now: a test may sign it in again).
    pub fn player(&self) -> Player {
        Player {
            token: self.token.clone(),
            id: self.id.clone(),
            device: self.device.clone(),
        }
    }

    /// A new socket of the same player in place of this one (the old one is dropped without a
    /// close frame); what it saw is kept.
    pub async fn reconnect(&mut self, endpoint: &Endpoint) {
        self.ws = endpoint.connect(&self.player(), self.encoding).await.ws;
    }

    /// Sends `frame` in the socket's encoding; for MessagePack through the protocol type, as a
    /// MessagePack client library would build it.
    pub async fn send(&mut self, frame: Value) {
        let message = match self.encoding {
            Encoding::Json => Message::text(frame.to_string()),
            _ => {
                let typed: ClientFrame = serde_json::from_value(frame).unwrap();
                Message::binary(rmp_serde::to_vec_named(&typed).unwrap())
            }
        };
        self.ws.send(message).await.unwrap();
    }

    pub async fn send_typed(&mut self, frame: ClientFrame) {
        let message = match self.encoding {
            Encoding::Json => Message::text(serde_json::to_string(&frame).unwrap()),
            _ => Message::binary(rmp_serde::to_vec_named(&frame).unwrap()),
        };
        self.ws.send(message).await.unwrap();
    }

    /// Sends `text` as it is.
    pub async fn send_text(&mut self, text: &str) {
        self.ws.send(Message::text(text)).await.unwrap();
    }

    /// Sends `message` as it is, ignoring a failure: the server may already have closed the
    /// socket of a misbehaving client.
    pub async fn send_raw(&mut self, message: Message) {
        let _ = self.ws.send(message).await;
    }

    /// The next frame within `wait`, as JSON whatever the encoding (MessagePack frames are read
    /// as the protocol type first: bytes fields are MessagePack binaries, base64 once in JSON).
    pub async fn try_recv(&mut self, wait: Duration) -> Option<Value> {
        loop {
            let msg = tokio::time::timeout(wait, self.ws.next())
                .await
                .ok()?
                .expect("socket open")
                .expect("no socket error");
            let frame: Value = match (msg, self.encoding) {
                (Message::Text(text), Encoding::Json) => {
                    serde_json::from_str(text.as_str()).unwrap()
                }
                (Message::Binary(bytes), Encoding::MsgpackHeader | Encoding::MsgpackQuery) => {
                    let typed: ServerFrame = rmp_serde::from_slice(&bytes).unwrap();
                    serde_json::to_value(typed).unwrap()
                }
                (Message::Close(frame), _) => panic!("closed: {frame:?}"),
                (Message::Ping(_) | Message::Pong(_), _) => continue,
                (other, _) => panic!("a frame in the wrong encoding: {other:?}"),
            };
            if frame["type"]
                .as_str()
                .is_some_and(|kind| self.ignored.contains(&kind))
            {
                continue;
            }
            self.note_seq(&frame);
            return Some(frame);
        }
    }

    fn note_seq(&mut self, frame: &Value) {
        let mut seqs = vec![];
        if let Some(room) = frame.get("room") {
            seqs.push((room["room_id"].clone(), room["seq"].clone()));
        }
        if let Some(seq) = frame.get("seq") {
            seqs.push((frame["room_id"].clone(), seq.clone()));
        }
        for entry in frame["updates"].as_array().into_iter().flatten() {
            seqs.push((frame["room_id"].clone(), entry["seq"].clone()));
        }
        for (room, seq) in seqs {
            if let (Some(room), Some(seq)) = (room.as_str(), seq.as_u64()) {
                let seen = self.seen.entry(room.to_owned()).or_default();
                *seen = (*seen).max(seq);
            }
        }
    }

    /// The next frame.
    pub async fn recv(&mut self) -> Value {
        self.try_recv(WAIT).await.expect("a frame in time")
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

    /// The close code the server ends the socket with, skipping frames before it.
    pub async fn close_code(&mut self) -> Option<u16> {
        loop {
            match tokio::time::timeout(WAIT, self.ws.next())
                .await
                .expect("closed in time")
            {
                Some(Ok(Message::Close(frame))) => return frame.map(|f| f.code.into()),
                Some(Ok(_)) => continue,
                Some(Err(_)) | None => return None,
            }
        }
    }

    /// Closes cleanly and waits for the server's close.
    pub async fn close(mut self) {
        let _ = self.ws.close(None).await;
        while let Ok(Some(Ok(_))) = tokio::time::timeout(WAIT, self.ws.next()).await {}
    }
}
