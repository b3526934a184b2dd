//! The SDK's chat against the real server on loopback, several clients at once, on SQLite and
//! (with `AETHEX_TEST_DATABASE_URL`) PostgreSQL: room chat as `message_received` with the body
//! filtered, direct messages and their history paged from both sides, blocks through the SDK's
//! social API.

mod common;

use aethex_protocol::ErrorCode;
use aethex_sdk::{RealtimeEncoding, Value};
use common::*;

const CHAT: &str = "social.chat";

/// The stored message a `send` completed with.
async fn sent(p: &mut Probe, channel: &str, body: &str, metadata: Option<Value>) -> Value {
    let id = p.client.chat().send(channel.into(), body.into(), metadata);
    p.ok(id).await.get("message").expect("a message").clone()
}

/// The next `message_received` signal's message.
async fn received(p: &mut Probe) -> Value {
    let mut args = p.signal(CHAT, "message_received").await;
    assert_eq!(args.len(), 1);
    args.remove(0)
}

/// Every message of `channel` as `p` reads it, walking the history `limit` at a time; also the
/// page sizes seen.
async fn walk_history(p: &mut Probe, channel: &str, limit: u32) -> (Vec<Value>, Vec<usize>) {
    let (mut messages, mut pages, mut cursor) = (Vec::new(), Vec::new(), None);
    loop {
        let id = p
            .client
            .chat()
            .history(channel.into(), cursor.take(), Some(limit));
        let page = p.ok(id).await;
        assert_eq!(string(&page, "channel"), channel);
        let batch = list(&page, "messages");
        pages.push(batch.len());
        messages.extend(batch);
        match page.get("next_cursor") {
            Some(Value::String(next)) => cursor = Some(next.clone()),
            None | Some(Value::Nil) => return (messages, pages),
            Some(other) => panic!("next_cursor is {other:?}"),
        }
    }
}

fn bodies(messages: &[Value]) -> Vec<String> {
    messages.iter().map(|m| string(m, "body")).collect()
}

#[tokio::test]
async fn room_chat_reaches_the_other_members_filtered_with_godot_metadata() {
    for backend in backends() {
        let server = RealServer::start_on(backend, |_| {}).await;
        let url = server.url.clone();
        let (mut a, a_id, _da) = player(&server, &url, "chat-room-a").await;
        let (mut b, _b_id, _db) = player(&server, &url, "chat-room-b").await;
        // c speaks MessagePack: chat and its metadata cross encodings intact.
        let dc = tempfile::tempdir().unwrap();
        let mut config = test_config(&url, &server.client_key, dc.path());
        config.realtime.encoding = RealtimeEncoding::MessagePack;
        let mut c = Probe::new(config);
        c.login_device("chat-room-c").await;
        let (mut outsider, _o_id, _do) = player(&server, &url, "chat-room-o").await;
        let room_id = room_with(&mut a, &mut [&mut b, &mut c]).await;
        let channel = format!("room:{room_id}");

        // Keys sorted: the server's JSON map sorts object keys.
        let metadata = Value::dict([("at", Value::Vector2([3.5, -1.0])), ("emote", text("wave"))]);
        let rude = "well fuck that, café";
        let message = sent(&mut a, &channel, rude, Some(metadata.clone())).await;
        let body = string(&message, "body");
        assert_ne!(body, rude, "the profanity filter starred it");
        assert!(body.starts_with("well ") && body.ends_with(" that, café") && body.contains('*'));
        assert_eq!(string(&message, "channel"), channel);
        assert_eq!(string(&message, "from"), a_id);
        assert_eq!(message.get("metadata"), Some(&metadata));
        assert!(!string(&message, "message_id").is_empty());
        assert!(int(&message, "sent_at") > 0);
        for p in [&mut b, &mut c] {
            assert_eq!(received(p).await, message);
        }

        // From the MessagePack side back to JSON.
        let from_c = sent(
            &mut c,
            &channel,
            "o/",
            Some(Value::Vector3([1.0, 2.0, 3.0])),
        )
        .await;
        assert_eq!(
            from_c.get("metadata"),
            Some(&Value::Vector3([1.0, 2.0, 3.0]))
        );
        assert_eq!(received(&mut a).await, from_c);
        assert_eq!(received(&mut b).await, from_c);

        // A marker from b: c sees it, a sees it, and a never heard its own message.
        let marker = sent(&mut b, &channel, "gg", None).await;
        assert_eq!(received(&mut c).await, marker);
        assert_eq!(received(&mut a).await, marker);
        assert!(a.take_signals(CHAT, "message_received").is_empty());
        assert!(b.take_signals(CHAT, "message_received").is_empty());

        // Not a member: refused, and nothing reaches the room.
        let id = outsider
            .client
            .chat()
            .send(channel.clone(), "let me in".into(), None);
        assert_eq!(outsider.err(id).await.code, ErrorCode::Forbidden);
        let id = outsider.client.chat().history(channel.clone(), None, None);
        assert_eq!(outsider.err(id).await.code, ErrorCode::Forbidden);
        let id = a.client.chat().send(channel.clone(), "   ".into(), None);
        assert_eq!(a.err(id).await.code, ErrorCode::InvalidRequest);

        let (history, _) = walk_history(&mut c, &channel, 10).await;
        assert_eq!(history, vec![marker, from_c, message]);
        assert!(outsider.take_signals(CHAT, "message_received").is_empty());
        drop((a, b, c, outsider));
        server.finish().await;
    }
}

#[tokio::test]
async fn direct_messages_and_their_history_page_from_both_sides() {
    for backend in backends() {
        let server = RealServer::start_on(backend, |_| {}).await;
        let url = server.url.clone();
        let (mut a, a_id, _da) = player(&server, &url, "chat-dm-a").await;
        let (mut b, b_id, _db) = player(&server, &url, "chat-dm-b").await;
        let (mut c, _c_id, _dc) = player(&server, &url, "chat-dm-c").await;
        let (to_b, to_a) = (format!("dm:{b_id}"), format!("dm:{a_id}"));
        // Live delivery needs the socket open; none of them made a realtime call yet.
        for p in [&mut a, &mut b, &mut c] {
            let id = p.client.multiplayer().connect();
            p.ok(id).await;
        }

        // Five messages alternating sides; each reaches the other as `dm:<sender>`.
        let mut stored = Vec::new();
        for n in 0..5 {
            let (sender, receiver, channel) = if n % 2 == 0 {
                (&mut a, &mut b, &to_b)
            } else {
                (&mut b, &mut a, &to_a)
            };
            let message = sent(sender, channel, &format!("dm {n}"), None).await;
            assert_eq!(string(&message, "channel"), *channel);
            let got = received(receiver).await;
            assert_eq!(string(&got, "message_id"), string(&message, "message_id"));
            assert_eq!(string(&got, "body"), format!("dm {n}"));
            let sender_id = string(&message, "from");
            assert_eq!(string(&got, "channel"), format!("dm:{sender_id}"));
            stored.push(message);
        }
        assert!(c.take_signals(CHAT, "message_received").is_empty());

        // Newest first, two per page: 2 + 2 + 1, the same messages from both sides.
        let newest_first: Vec<String> = (0..5).rev().map(|n| format!("dm {n}")).collect();
        let (from_a, pages) = walk_history(&mut a, &to_b, 2).await;
        assert_eq!(pages, vec![2, 2, 1]);
        assert_eq!(bodies(&from_a), newest_first);
        let (from_b, pages) = walk_history(&mut b, &to_a, 2).await;
        assert_eq!(pages, vec![2, 2, 1]);
        assert_eq!(bodies(&from_b), newest_first);
        let ids =
            |ms: &[Value]| -> Vec<String> { ms.iter().map(|m| string(m, "message_id")).collect() };
        assert_eq!(ids(&from_a), ids(&from_b));
        let mut sent_ids = ids(&stored);
        sent_ids.reverse();
        assert_eq!(ids(&from_a), sent_ids);
        let (all, pages) = walk_history(&mut b, &to_a, 50).await;
        assert_eq!((pages, bodies(&all)), (vec![5], newest_first));

        // A cursor from another conversation names no message of this one.
        let id = c.client.chat().send(to_a.clone(), "hi a".into(), None);
        let c_message = c.ok(id).await.get("message").unwrap().clone();
        let foreign = string(&c_message, "message_id");
        let id = a
            .client
            .chat()
            .history(to_b.clone(), Some(foreign), Some(2));
        assert_eq!(a.err(id).await.code, ErrorCode::NotFound);
        let id = c
            .client
            .chat()
            .send(format!("dm:{}", "no-such-player"), "?".into(), None);
        assert_eq!(c.err(id).await.code, ErrorCode::NotFound);
        let id = a.client.chat().history(to_b.clone(), None, Some(0));
        assert_eq!(a.err(id).await.code, ErrorCode::InvalidRequest);
        drop((a, b, c));
        server.finish().await;
    }
}

#[tokio::test]
async fn a_blocked_players_messages_never_arrive() {
    for backend in backends() {
        let server = RealServer::start_on(backend, |_| {}).await;
        let url = server.url.clone();
        let (mut a, a_id, _da) = player(&server, &url, "chat-block-a").await;
        let (mut b, b_id, _db) = player(&server, &url, "chat-block-b").await;
        let (mut c, _c_id, _dc) = player(&server, &url, "chat-block-c").await;
        let room_id = room_with(&mut a, &mut [&mut b, &mut c]).await;
        let channel = format!("room:{room_id}");
        let before = sent(&mut a, &channel, "before the block", None).await;
        assert_eq!(received(&mut b).await, before);
        assert_eq!(received(&mut c).await, before);

        let id = b.client.social().friends().block(a_id.clone());
        b.ok(id).await;

        // Neither side hears the other; c hears both. c's marker after each tells that
        // nothing else was on its way.
        let from_a = sent(&mut a, &channel, "a after", None).await;
        assert_eq!(received(&mut c).await, from_a);
        let from_b = sent(&mut b, &channel, "b after", None).await;
        assert_eq!(received(&mut c).await, from_b);
        let marker = sent(&mut c, &channel, "marker", None).await;
        assert_eq!(received(&mut a).await, marker);
        assert_eq!(received(&mut b).await, marker);
        assert!(a.take_signals(CHAT, "message_received").is_empty());
        assert!(b.take_signals(CHAT, "message_received").is_empty());

        // History hides the blocked side's messages, those from before the block too.
        let (seen_by_b, _) = walk_history(&mut b, &channel, 10).await;
        assert_eq!(bodies(&seen_by_b), ["marker", "b after"]);
        let (seen_by_a, _) = walk_history(&mut a, &channel, 10).await;
        assert_eq!(
            bodies(&seen_by_a),
            ["marker", "a after", "before the block"]
        );
        let (seen_by_c, _) = walk_history(&mut c, &channel, 10).await;
        assert_eq!(
            bodies(&seen_by_c),
            ["marker", "b after", "a after", "before the block"]
        );

        // Direct messages across the block are refused, each side with its own answer.
        let id = a
            .client
            .chat()
            .send(format!("dm:{b_id}"), "hello?".into(), None);
        assert_eq!(a.err(id).await.code, ErrorCode::Forbidden);
        let id = b
            .client
            .chat()
            .send(format!("dm:{a_id}"), "hello?".into(), None);
        assert_eq!(b.err(id).await.code, ErrorCode::Conflict);

        // Unblocked: live delivery and history come back.
        let id = b.client.social().friends().unblock(a_id.clone());
        b.ok(id).await;
        let again = sent(&mut a, &channel, "again", None).await;
        assert_eq!(received(&mut b).await, again);
        let (seen_by_b, _) = walk_history(&mut b, &channel, 10).await;
        assert_eq!(
            bodies(&seen_by_b),
            ["again", "marker", "b after", "a after", "before the block"]
        );
        drop((a, b, c));
        server.finish().await;
    }
}
