//! Chat over real loopback WebSockets and HTTP, on every backend: room, direct and group
//! channels, history pages, blocks and mutes, the profanity filter and the limits.

mod common;

use std::collections::HashSet;

use common::socket::{Encoding, Socket};
use common::{backends, expect_error, expect_status, Backend, TestServer};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

/// A server whose chat rate limit does not get in the way of tests sending many messages.
async fn start(backend: Backend) -> TestServer {
    TestServer::start_with(backend, |c| {
        c.chat.messages_per_minute = 1_000_000;
        c.chat.message_burst = 1_000_000;
        c.realtime.messages_per_second = 100_000;
        c.realtime.message_burst = 100_000;
    })
    .await
}

async fn player(s: &TestServer) -> Socket {
    let e = s.endpoint();
    e.connect(&e.device_player().await, Encoding::Json).await
}

/// Another socket of `c`'s player.
async fn second_socket(s: &TestServer, c: &Socket) -> Socket {
    s.endpoint().connect(&c.player(), Encoding::Json).await
}

/// The chat side of a player's socket.
trait Chatting {
    /// `send_message`; the reply frame (`message_sent` or `error`).
    async fn say(&mut self, channel: &str, body: &str) -> Value;
    /// `send_message` that must succeed; the stored message and its room seq.
    async fn said(&mut self, channel: &str, body: &str) -> (Value, Option<u64>);
    /// `send_message` that must fail: the error code.
    async fn refused(&mut self, channel: &str, body: &str) -> String;
    async fn history_frame(&mut self, channel: &str) -> Value;
    /// Joins `room_id`; the room's `seq`.
    async fn join_room(&mut self, room_id: &str) -> u64;
}

impl Chatting for Socket {
    async fn say(&mut self, channel: &str, body: &str) -> Value {
        self.send(json!({"type": "send_message", "cid": "say", "channel": channel, "body": body}))
            .await;
        let reply = self.recv().await;
        assert_eq!(reply["cid"], "say", "{reply}");
        reply
    }

    async fn said(&mut self, channel: &str, body: &str) -> (Value, Option<u64>) {
        let reply = self.say(channel, body).await;
        assert_eq!(reply["type"], "message_sent", "{reply}");
        (reply["message"].clone(), reply["seq"].as_u64())
    }

    async fn refused(&mut self, channel: &str, body: &str) -> String {
        let reply = self.say(channel, body).await;
        assert_eq!(reply["type"], "error", "{reply}");
        reply["error"]["code"].as_str().unwrap().to_owned()
    }

    async fn history_frame(&mut self, channel: &str) -> Value {
        self.send(json!({"type": "chat_history", "cid": "h", "channel": channel}))
            .await;
        self.recv().await
    }

    async fn join_room(&mut self, room_id: &str) -> u64 {
        self.send(json!({"type": "join_room", "room_id": room_id}))
            .await;
        self.recv_type("room_joined").await["room"]["seq"]
            .as_u64()
            .unwrap()
    }
}

/// A history page over HTTP.
async fn http_history(s: &TestServer, token: &str, channel: &str, query: &str) -> Value {
    let resp = s
        .player(
            Method::GET,
            &format!("/api/v1/chat/{channel}/messages{query}"),
            token,
        )
        .send()
        .await
        .unwrap();
    expect_status(resp, StatusCode::OK).await
}

fn bodies(page: &Value) -> Vec<String> {
    page["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["body"].as_str().unwrap().to_owned())
        .collect()
}

async fn friend_action(s: &TestServer, token: &str, other: &str, action: &str) {
    let resp = s
        .player(
            Method::POST,
            &format!("/api/v1/friends/{other}/{action}"),
            token,
        )
        .send()
        .await
        .unwrap();
    expect_status(resp, StatusCode::OK).await;
}

#[tokio::test]
async fn room_chat_reaches_the_members_only_with_the_room_seq() {
    for backend in backends() {
        let s = start(backend).await;
        let mut a = player(&s).await;
        let mut b = player(&s).await;
        let mut outsider = player(&s).await;
        let room = a.create_room().await;
        let joined_seq = b.join_room(&room).await;
        a.recv_type("player_joined").await;
        let channel = format!("room:{room}");

        let (message, seq) = a.said(&channel, "hello room").await;
        assert_eq!(
            seq,
            Some(joined_seq + 1),
            "the message takes the room's next seq"
        );
        assert_eq!(message["channel"], channel.as_str());
        assert_eq!(message["from"], a.id.as_str());
        let received = b.recv_type("message_received").await;
        assert_eq!(received["seq"].as_u64(), seq);
        assert_eq!(received["message"], message);
        assert!(received.get("cid").is_none());
        a.nothing_pending().await;
        outsider.nothing_pending().await;

        // Room events and chat share one counter.
        b.send(json!({"type": "player_state_update", "room_id": room, "state": 1}))
            .await;
        assert_eq!(
            a.recv_type("state_update").await["updates"][0]["seq"].as_u64(),
            Some(joined_seq + 2)
        );

        assert_eq!(outsider.refused(&channel, "let me in").await, "forbidden");
        let refused = outsider.history_frame(&channel).await;
        assert_eq!(refused["error"]["code"], "forbidden", "{refused}");
        let resp = s
            .player(
                Method::GET,
                &format!("/api/v1/chat/{channel}/messages"),
                &outsider.token,
            )
            .send()
            .await
            .unwrap();
        expect_error(resp, StatusCode::FORBIDDEN, "forbidden").await;
        assert_eq!(
            outsider.refused("room:no-such-room", "hi").await,
            "forbidden"
        );

        let page = b.history_frame(&channel).await;
        assert_eq!(page["type"], "chat_history", "{page}");
        assert_eq!(page["channel"], channel.as_str());
        assert_eq!(page["messages"], json!([message]));
        assert!(page.get("next_cursor").is_none());
        assert_eq!(
            http_history(&s, &a.token, &channel, "").await["messages"],
            json!([message])
        );

        // A member who left reads and posts no more.
        b.send(json!({"type": "leave_room", "room_id": room})).await;
        b.recv_type("room_left").await;
        assert_eq!(b.refused(&channel, "bye").await, "forbidden");
        s.stop().await;
    }
}

#[tokio::test]
async fn direct_messages_reach_the_recipient_and_both_histories() {
    for backend in backends() {
        let s = start(backend).await;
        let mut a = player(&s).await;
        let mut b = player(&s).await;
        let mut c = player(&s).await;
        // A second socket of b gets the message too.
        let mut b2 = second_socket(&s, &b).await;

        let (sent, seq) = a.said(&format!("dm:{}", b.id), "psst").await;
        assert_eq!(seq, None);
        assert_eq!(sent["channel"], format!("dm:{}", b.id));
        for socket in [&mut b, &mut b2] {
            let received = socket.recv_type("message_received").await;
            assert!(received.get("seq").is_none());
            assert_eq!(received["message"]["channel"], format!("dm:{}", a.id));
            assert_eq!(received["message"]["message_id"], sent["message_id"]);
            assert_eq!(received["message"]["body"], "psst");
        }
        let (reply, _) = b.said(&format!("dm:{}", a.id), "what").await;
        assert_eq!(
            a.recv_type("message_received").await["message"]["message_id"],
            reply["message_id"]
        );
        c.nothing_pending().await;

        let from_a = http_history(&s, &a.token, &format!("dm:{}", b.id), "").await;
        assert_eq!(bodies(&from_a), ["what", "psst"]);
        assert!(from_a["messages"]
            .as_array()
            .unwrap()
            .iter()
            .all(|m| m["channel"] == format!("dm:{}", b.id)));
        let from_b = b.history_frame(&format!("dm:{}", a.id)).await;
        assert_eq!(bodies(&from_b), ["what", "psst"]);
        assert_eq!(from_b["messages"][1]["channel"], format!("dm:{}", a.id));
        // No one else reads the conversation: c's `dm:a` is c's own with a.
        assert_eq!(
            http_history(&s, &c.token, &format!("dm:{}", a.id), "").await["messages"],
            json!([])
        );
        assert_eq!(
            http_history(&s, &c.token, &format!("dm:{}", b.id), "").await["messages"],
            json!([])
        );

        assert_eq!(c.refused(&format!("dm:{}", c.id), "me").await, "forbidden");
        assert_eq!(
            c.refused("dm:0190aaaa-0000-7000-8000-000000000000", "?")
                .await,
            "not_found"
        );
        let resp = s
            .player(
                Method::GET,
                &format!("/api/v1/chat/dm:{}/messages", c.id),
                &c.token,
            )
            .send()
            .await
            .unwrap();
        expect_error(resp, StatusCode::FORBIDDEN, "forbidden").await;
        s.stop().await;
    }
}

#[tokio::test]
async fn group_channels_reach_the_group_members_only() {
    for backend in backends() {
        let s = start(backend).await;
        let mut owner = player(&s).await;
        let mut member = player(&s).await;
        let mut outsider = player(&s).await;
        let resp = s
            .player(Method::POST, "/api/v1/groups", &owner.token)
            .json(&json!({"name": "Chatters", "open": true, "max_members": 10}))
            .send()
            .await
            .unwrap();
        let group = expect_status(resp, StatusCode::OK).await;
        let group_id = group["id"].as_str().unwrap();
        let resp = s
            .player(
                Method::POST,
                &format!("/api/v1/groups/{group_id}/join"),
                &member.token,
            )
            .send()
            .await
            .unwrap();
        expect_status(resp, StatusCode::OK).await;
        let channel = format!("group:{group_id}");

        let (sent, seq) = owner.said(&channel, "clan meeting").await;
        assert_eq!(seq, None);
        let received = member.recv_type("message_received").await;
        assert_eq!(received["message"], sent);
        owner.nothing_pending().await;
        outsider.nothing_pending().await;
        member.said(&channel, "on my way").await;
        assert_eq!(
            owner.recv_type("message_received").await["message"]["body"],
            "on my way"
        );

        assert_eq!(outsider.refused(&channel, "hi").await, "forbidden");
        assert_eq!(
            outsider.history_frame(&channel).await["error"]["code"],
            "forbidden"
        );
        let resp = s
            .player(
                Method::GET,
                &format!("/api/v1/chat/{channel}/messages"),
                &outsider.token,
            )
            .send()
            .await
            .unwrap();
        expect_error(resp, StatusCode::FORBIDDEN, "forbidden").await;
        assert_eq!(
            bodies(&http_history(&s, &member.token, &channel, "").await),
            ["on my way", "clan meeting"]
        );
        s.stop().await;
    }
}

/// Walks every page of `channel` with `limit`; the ids in order.
async fn walk(s: &TestServer, token: &str, channel: &str, limit: u32) -> Vec<(i64, String)> {
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let query = match &cursor {
            Some(c) => format!("?limit={limit}&cursor={c}"),
            None => format!("?limit={limit}"),
        };
        let page = http_history(s, token, channel, &query).await;
        let messages = page["messages"].as_array().unwrap();
        assert!(messages.len() <= limit as usize);
        seen.extend(messages.iter().map(|m| {
            (
                m["sent_at"].as_i64().unwrap(),
                m["message_id"].as_str().unwrap().to_owned(),
            )
        }));
        match page["next_cursor"].as_str() {
            Some(next) => {
                assert_eq!(
                    messages.len(),
                    limit as usize,
                    "only the last page is short"
                );
                cursor = Some(next.to_owned());
            }
            None => return seen,
        }
    }
}

#[tokio::test]
async fn history_pages_cover_250_messages_without_gaps_or_duplicates_even_while_inserting() {
    for backend in backends() {
        let s = start(backend).await;
        let mut a = player(&s).await;
        let b = player(&s).await;
        let channel = format!("dm:{}", b.id);
        let mut sent = Vec::new();
        for i in 0..250 {
            sent.push(
                a.said(&channel, &format!("m{i}")).await.0["message_id"]
                    .as_str()
                    .unwrap()
                    .to_owned(),
            );
        }
        let walked = walk(&s, &a.token, &channel, 100).await;
        let ids: Vec<String> = walked.iter().map(|(_, id)| id.clone()).collect();
        sent.reverse();
        assert_eq!(ids, sent, "newest first, each once");
        let first = http_history(&s, &a.token, &channel, "").await;
        assert_eq!(
            first["messages"].as_array().unwrap().len(),
            50,
            "default page"
        );
        assert_eq!(
            first["messages"][0]["message_id"].as_str(),
            Some(sent[0].as_str())
        );

        // Another player keeps posting while b walks the history page by page: every message
        // that existed before the walk shows up exactly once, in order.
        let mut writer = second_socket(&s, &b).await;
        let back = format!("dm:{}", a.id);
        let writer_channel = back.clone();
        let writing = tokio::spawn(async move {
            for i in 0..100 {
                writer.said(&writer_channel, &format!("late{i}")).await;
            }
        });
        let during = walk(&s, &b.token, &back, 7).await;
        writing.await.unwrap();
        let unique: HashSet<&String> = during.iter().map(|(_, id)| id).collect();
        assert_eq!(unique.len(), during.len(), "no duplicates");
        assert!(
            during.windows(2).all(|w| w[0] > w[1]),
            "strictly newest first"
        );
        for id in &sent {
            assert!(unique.contains(id), "{id} missing");
        }
        assert_eq!(walk(&s, &b.token, &back, 100).await.len(), 350);

        let resp = s
            .player(
                Method::GET,
                &format!("/api/v1/chat/{channel}/messages?cursor=no-such-message"),
                &a.token,
            )
            .send()
            .await
            .unwrap();
        expect_error(resp, StatusCode::NOT_FOUND, "not_found").await;
        for bad in ["?limit=0", "?limit=101", "?limit=x"] {
            let resp = s
                .player(
                    Method::GET,
                    &format!("/api/v1/chat/{channel}/messages{bad}"),
                    &a.token,
                )
                .send()
                .await
                .unwrap();
            expect_error(resp, StatusCode::BAD_REQUEST, "invalid_request").await;
        }
        let resp = s
            .player(Method::GET, "/api/v1/chat/lobby:1/messages", &a.token)
            .send()
            .await
            .unwrap();
        expect_error(resp, StatusCode::BAD_REQUEST, "invalid_request").await;
        s.stop().await;
    }
}

#[tokio::test]
async fn blocked_and_muted_players_messages_are_never_shown() {
    for backend in backends() {
        let s = start(backend).await;
        let mut a = player(&s).await;
        let mut b = player(&s).await;
        let mut c = player(&s).await;
        let room = a.create_room().await;
        b.join_room(&room).await;
        c.join_room(&room).await;
        a.recv_type("player_joined").await;
        a.recv_type("player_joined").await;
        b.recv_type("player_joined").await;
        let channel = format!("room:{room}");
        a.said(&channel, "before the block").await;
        b.recv_type("message_received").await;
        c.recv_type("message_received").await;

        // b blocks a: neither sees the other's messages, live or in history.
        friend_action(&s, &b.token, &a.id, "block").await;
        // Both friend lists changed.
        a.recv_type("friends_updated").await;
        b.recv_type("friends_updated").await;
        a.said(&channel, "a after").await;
        assert_eq!(
            c.recv_type("message_received").await["message"]["body"],
            "a after"
        );
        b.nothing_pending().await;
        b.said(&channel, "b after").await;
        assert_eq!(
            c.recv_type("message_received").await["message"]["body"],
            "b after"
        );
        a.nothing_pending().await;
        assert_eq!(
            bodies(&http_history(&s, &b.token, &channel, "").await),
            ["b after"]
        );
        assert_eq!(
            bodies(&http_history(&s, &a.token, &channel, "").await),
            ["a after", "before the block"]
        );
        assert_eq!(
            bodies(&http_history(&s, &c.token, &channel, "").await),
            ["b after", "a after", "before the block"]
        );
        // Direct messages across a block are refused, each side with its own answer.
        assert_eq!(a.refused(&format!("dm:{}", b.id), "hey").await, "forbidden");
        assert_eq!(b.refused(&format!("dm:{}", a.id), "hey").await, "conflict");
        friend_action(&s, &b.token, &a.id, "unblock").await;
        a.recv_type("friends_updated").await;
        b.recv_type("friends_updated").await;
        b.said(&format!("dm:{}", a.id), "sorry").await;
        a.recv_type("message_received").await;
        assert_eq!(
            bodies(&http_history(&s, &b.token, &channel, "").await),
            ["b after", "a after", "before the block"],
            "history shows them again once unblocked"
        );

        // c mutes a: a's messages vanish for c alone.
        let resp = s
            .player(
                Method::PUT,
                &format!("/api/v1/chat/mutes/{}", a.id),
                &c.token,
            )
            .send()
            .await
            .unwrap();
        let muted = expect_status(resp, StatusCode::OK).await;
        assert_eq!(muted["user_id"], a.id.as_str());
        let resp = s
            .player(Method::GET, "/api/v1/chat/mutes", &c.token)
            .send()
            .await
            .unwrap();
        assert_eq!(
            expect_status(resp, StatusCode::OK).await["mutes"],
            json!([muted])
        );
        a.said(&channel, "muted words").await;
        assert_eq!(
            b.recv_type("message_received").await["message"]["body"],
            "muted words"
        );
        c.nothing_pending().await;
        assert_eq!(
            bodies(&http_history(&s, &c.token, &channel, "").await),
            ["b after"]
        );
        // The muter may still message the muted player, who may answer unseen.
        c.said(&format!("dm:{}", a.id), "quiet please").await;
        a.recv_type("message_received").await;
        a.said(&format!("dm:{}", c.id), "no").await;
        c.nothing_pending().await;

        let resp = s
            .player(
                Method::DELETE,
                &format!("/api/v1/chat/mutes/{}", a.id),
                &c.token,
            )
            .send()
            .await
            .unwrap();
        expect_status(resp, StatusCode::NO_CONTENT).await;
        assert_eq!(
            bodies(&http_history(&s, &c.token, &channel, "").await),
            ["muted words", "b after", "a after", "before the block"]
        );
        a.said(&channel, "heard again").await;
        b.recv_type("message_received").await;
        assert_eq!(
            c.recv_type("message_received").await["message"]["body"],
            "heard again"
        );

        let resp = s
            .player(
                Method::PUT,
                &format!("/api/v1/chat/mutes/{}", c.id),
                &c.token,
            )
            .send()
            .await
            .unwrap();
        expect_error(resp, StatusCode::FORBIDDEN, "forbidden").await;
        let resp = s
            .player(Method::PUT, "/api/v1/chat/mutes/nobody", &c.token)
            .send()
            .await
            .unwrap();
        expect_error(resp, StatusCode::NOT_FOUND, "not_found").await;
        let resp = s
            .admin(Method::GET, "/api/v1/chat/mutes")
            .send()
            .await
            .unwrap();
        expect_error(resp, StatusCode::FORBIDDEN, "forbidden").await;
        s.stop().await;
    }
}

#[tokio::test]
async fn the_profanity_filter_is_on_by_default_and_set_per_project() {
    for backend in backends() {
        let s = start(backend).await;
        let mut a = player(&s).await;
        let mut b = player(&s).await;
        let channel = format!("dm:{}", b.id);
        let rude = "well fuck that, café";
        let (sent, _) = a.said(&channel, rude).await;
        let body = sent["body"].as_str().unwrap();
        assert_ne!(body, rude);
        assert!(body.contains('*') && body.starts_with("well ") && body.ends_with(" that, café"));
        assert_eq!(body.chars().count(), rude.chars().count());
        assert_eq!(
            b.recv_type("message_received").await["message"]["body"],
            body
        );
        assert_eq!(a.said(&channel, "déjà vu").await.0["body"], "déjà vu");

        let resp = s
            .admin(Method::GET, "/api/v1/chat/settings")
            .send()
            .await
            .unwrap();
        assert_eq!(
            expect_status(resp, StatusCode::OK).await,
            json!({"profanity_filter": true})
        );
        let resp = s
            .player(Method::PUT, "/api/v1/chat/settings", &a.token)
            .json(&json!({"profanity_filter": false}))
            .send()
            .await
            .unwrap();
        expect_error(resp, StatusCode::FORBIDDEN, "forbidden").await;
        let resp = s
            .admin(Method::PUT, "/api/v1/chat/settings")
            .json(&json!({"profanity_filter": false}))
            .send()
            .await
            .unwrap();
        expect_status(resp, StatusCode::OK).await;
        let resp = s
            .admin(Method::GET, "/api/v1/chat/settings")
            .send()
            .await
            .unwrap();
        assert_eq!(
            expect_status(resp, StatusCode::OK).await,
            json!({"profanity_filter": false})
        );
        assert_eq!(a.said(&channel, rude).await.0["body"], rude);
        assert_eq!(
            bodies(&http_history(&s, &b.token, &format!("dm:{}", a.id), "").await)[0],
            rude
        );
        s.stop().await;
    }
}

#[tokio::test]
async fn sending_is_rate_limited_per_player_and_bodies_are_checked() {
    for backend in backends() {
        let s = TestServer::start_with(backend, |c| {
            c.chat.messages_per_minute = 1;
            c.chat.message_burst = 3;
            c.chat.max_body_chars = 20;
        })
        .await;
        let mut a = player(&s).await;
        let mut b = player(&s).await;
        let channel = format!("dm:{}", b.id);

        // Refused bodies are checked before the limit and cost nothing.
        for (body, code) in [
            ("", "invalid_request"),
            ("  \n ", "invalid_request"),
            ("nul\0byte", "invalid_request"),
            ("x".repeat(21).as_str(), "payload_too_large"),
        ] {
            assert_eq!(a.refused(&channel, body).await, code, "{body:?}");
        }
        a.send(
            json!({"type": "send_message", "cid": 1, "channel": channel, "body": "m",
            "metadata": {"blob": "y".repeat(5000)}}),
        )
        .await;
        assert_eq!(a.recv().await["error"]["code"], "payload_too_large");
        assert_eq!(a.refused("lobby:x", "hi").await, "invalid_request");

        a.said(&channel, &"é".repeat(20)).await;
        a.send(
            json!({"type": "send_message", "cid": "m", "channel": channel, "body": "2",
            "metadata": {"emote": "wave"}}),
        )
        .await;
        assert_eq!(
            a.recv().await["message"]["metadata"],
            json!({"emote": "wave"})
        );
        a.said(&channel, "3").await;
        let limited = a.say(&channel, "4").await;
        assert_eq!(limited["error"]["code"], "rate_limited", "{limited}");
        assert!(
            limited["error"]["details"]["retry_after_ms"]
                .as_u64()
                .unwrap()
                > 0
        );
        // Per player: a second socket shares the bucket; other players have their own.
        let mut a2 = second_socket(&s, &a).await;
        assert_eq!(a2.refused(&channel, "5").await, "rate_limited");
        for _ in 0..3 {
            b.recv_type("message_received").await;
        }
        b.said(&format!("dm:{}", a.id), "fine").await;
        s.stop().await;
    }
}

/// Sends every request at the same moment (a barrier releases them together), each on its own
/// connection; the statuses and bodies in request order.
async fn fire(requests: Vec<reqwest::RequestBuilder>) -> Vec<(StatusCode, Value)> {
    let barrier = std::sync::Arc::new(tokio::sync::Barrier::new(requests.len()));
    let tasks: Vec<_> = requests
        .into_iter()
        .map(|request| {
            let barrier = barrier.clone();
            tokio::spawn(async move {
                let request = request.build().unwrap();
                barrier.wait().await;
                let resp = reqwest::Client::new().execute(request).await.unwrap();
                let status = resp.status();
                let text = resp.text().await.unwrap();
                (
                    status,
                    serde_json::from_str(&text).unwrap_or(Value::String(text)),
                )
            })
        })
        .collect();
    let mut out = Vec::with_capacity(tasks.len());
    for task in tasks {
        out.push(task.await.unwrap());
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_mutes_keep_one_row_per_pair_and_the_cap() {
    for backend in backends() {
        let s = TestServer::start_with(backend, |c| c.chat.max_mutes = 3).await;
        let muter = s.device_player().await;
        let token = muter["access_token"].as_str().unwrap().to_owned();
        let mut others = Vec::new();
        for _ in 0..20 {
            others.push(
                s.device_player().await["user"]["id"]
                    .as_str()
                    .unwrap()
                    .to_owned(),
            );
        }
        let mute =
            |other: &str| s.player(Method::PUT, &format!("/api/v1/chat/mutes/{other}"), &token);

        // The same mute many times at once: one row, every answer the same mute.
        let answers = fire((0..12).map(|_| mute(&others[0])).collect()).await;
        let stamps: HashSet<Option<i64>> = answers
            .iter()
            .map(|(status, body)| {
                assert_eq!(*status, StatusCode::OK, "{body}");
                body["muted_at"].as_i64()
            })
            .collect();
        assert_eq!(stamps.len(), 1);

        // Nineteen different mutes at once with room for two more: exactly two win.
        let answers = fire(others[1..].iter().map(|o| mute(o)).collect()).await;
        let won = answers
            .iter()
            .filter(|(status, _)| *status == StatusCode::OK)
            .count();
        for (status, body) in &answers {
            assert!(
                *status == StatusCode::OK
                    || (*status == StatusCode::CONFLICT && body["error"]["code"] == "conflict"),
                "{status}: {body}"
            );
        }
        assert_eq!(won, 2);
        let resp = s
            .player(Method::GET, "/api/v1/chat/mutes", &token)
            .send()
            .await
            .unwrap();
        assert_eq!(
            expect_status(resp, StatusCode::OK).await["mutes"]
                .as_array()
                .unwrap()
                .len(),
            3
        );
        s.stop().await;
    }
}

#[tokio::test]
async fn the_chat_endpoints_are_in_the_openapi_document() {
    let s = TestServer::start(Backend::Sqlite).await;
    let doc = s.openapi_document().await;
    for (path, method) in [
        ("/api/v1/chat/{channel}/messages", "get"),
        ("/api/v1/chat/mutes", "get"),
        ("/api/v1/chat/mutes/{user_id}", "put"),
        ("/api/v1/chat/mutes/{user_id}", "delete"),
        ("/api/v1/chat/settings", "get"),
        ("/api/v1/chat/settings", "put"),
    ] {
        assert!(doc["paths"][path][method].is_object(), "{method} {path}");
    }
    s.stop().await;
}
