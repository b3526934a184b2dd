//! The SDK's matchmaking against the real server on loopback, on SQLite and (with
//! `AETHEX_TEST_DATABASE_URL`) PostgreSQL: the seed's queue request from two and four clients ->
//! `match_found` -> each joins the room -> state with Godot types reaches the others only ->
//! leave; a party's members hear of their ticket.

mod common;

use std::f64::consts::FRAC_1_SQRT_2;

use aethex_protocol::ErrorCode;
use aethex_sdk::Value;
use common::*;

const MP: &str = "multiplayer";
const MM: &str = "multiplayer.matchmaking";

/// The seed's example request, as a game builds it.
fn seed_request() -> Value {
    Value::dict([
        ("mode", text("deathmatch")),
        ("region", text("us-east")),
        (
            "skill_range",
            Value::Array(vec![Value::Int(1000), Value::Int(1500)]),
        ),
    ])
}

/// A state with Godot types, keys sorted (the server's JSON map sorts object keys).
fn godot_state(health: i64) -> Value {
    Value::dict([
        ("color", Value::Color([0.25, 0.5, 0.75, 1.0])),
        ("health", Value::Int(health)),
        ("position", Value::Vector2([12.5, -3.25])),
        (
            "rotation",
            Value::Quaternion([0.0, FRAC_1_SQRT_2, 0.0, FRAC_1_SQRT_2]),
        ),
    ])
}

/// Sets `deathmatch` to four players per match, the way a game's backend does: with the server
/// key over HTTP.
async fn four_per_deathmatch(server: &RealServer) {
    let key = std::fs::read_to_string(server.data_dir.path().join("default-server-key"))
        .expect("the server wrote its default server key");
    let resp = reqwest::Client::new()
        .put(format!(
            "{}/api/v1/matchmaking/modes/deathmatch",
            server.url
        ))
        .header("Authorization", format!("ServerKey {}", key.trim()))
        .json(&serde_json::json!({"min_players": 4, "max_players": 4, "timeout_secs": 120}))
        .send()
        .await
        .unwrap();
    assert!(resp.status().is_success(), "{}", resp.status());
}

fn sorted(mut ids: Vec<String>) -> Vec<String> {
    ids.sort();
    ids
}

fn matched_ids(found: &Value) -> Vec<String> {
    sorted(
        list(found, "players")
            .iter()
            .map(|p| string(p, "user_id"))
            .collect(),
    )
}

/// Queues every player with the seed's request, waits for each one's `match_found`, joins the
/// room through the SDK, relays a state from each to the others and leaves; `ids` are the
/// players' user ids.
async fn queue_match_play_leave(players: &mut [Probe], ids: &[String]) {
    let mut tickets = Vec::new();
    for p in players.iter_mut() {
        let id = p
            .client
            .multiplayer()
            .matchmaking()
            .join_queue(seed_request());
        let ticket = p.ok(id).await.get("ticket").expect("a ticket").clone();
        assert_eq!(string(&ticket, "mode"), "deathmatch");
        assert_eq!(string(&ticket, "region"), "us-east");
        assert_eq!(
            ticket.get("skill_range"),
            Some(&Value::Array(vec![
                Value::Float(1000.0),
                Value::Float(1500.0)
            ]))
        );
        tickets.push(string(&ticket, "ticket_id"));
    }
    let mut room_id = None;
    for (p, ticket) in players.iter_mut().zip(&tickets) {
        let args = p.signal(MM, "match_found").await;
        let found = &args[0];
        assert_eq!(string(found, "ticket_id"), *ticket);
        assert_eq!(string(found, "mode"), "deathmatch");
        assert_eq!(matched_ids(found), sorted(ids.to_vec()));
        let room = string(found, "room_id");
        assert_eq!(room_id.get_or_insert_with(|| room.clone()), &room);
        // The ticket is gone once matched.
        let id = p
            .client
            .multiplayer()
            .matchmaking()
            .queue_status(ticket.clone());
        assert_eq!(p.err(id).await.code, ErrorCode::NotFound);
    }
    let room_id = room_id.unwrap();
    for p in players.iter_mut() {
        let id = p.client.multiplayer().join_room(room_id.clone());
        let room = p.ok(id).await;
        assert_eq!(string(&room, "room_id"), room_id);
        assert_eq!(
            p.client.multiplayer().current_room().as_deref(),
            Some(room_id.as_str())
        );
    }
    assert_eq!(
        string(
            &players[0].client.multiplayer().room(&room_id).unwrap(),
            "host"
        ),
        ids[0],
        "the first to join hosts"
    );

    // Each player's state reaches every other player, never the sender.
    for sender in 0..players.len() {
        let state = godot_state(sender as i64);
        let id = players[sender]
            .client
            .multiplayer()
            .send_state(state.clone(), None);
        players[sender].ok(id).await;
        for (n, p) in players.iter_mut().enumerate() {
            if n != sender {
                let args = p.signal(MP, "player_state_received").await;
                assert_eq!(args, vec![text(&ids[sender]), state.clone()]);
            }
        }
    }
    for p in players.iter_mut() {
        assert!(p.take_signals(MP, "player_state_received").is_empty());
    }

    // The last player leaves; everyone else hears it.
    let last = players.len() - 1;
    let id = players[last].client.multiplayer().leave_room(None);
    assert_eq!(string(&players[last].ok(id).await, "room_id"), room_id);
    assert_eq!(players[last].client.multiplayer().current_room(), None);
    for p in players[..last].iter_mut() {
        let mut left = p.signal(MP, "player_left").await;
        // Membership events other players caused before may come first.
        while left[1] != text(&ids[last]) {
            left = p.signal(MP, "player_left").await;
        }
        assert_eq!(left, vec![text(&room_id), text(&ids[last])]);
    }
}

#[tokio::test]
async fn two_players_queue_match_join_relay_and_leave() {
    for backend in backends() {
        let server = RealServer::start_on(backend, |_| {}).await;
        let url = server.url.clone();
        let (a, a_id, _da) = player(&server, &url, "mm-two-a").await;
        let (b, b_id, _db) = player(&server, &url, "mm-two-b").await;
        let (mut outsider, _o_id, _do) = player(&server, &url, "mm-two-o").await;
        let mut players = [a, b];
        queue_match_play_leave(&mut players, &[a_id, b_id]).await;
        assert!(outsider.take_signals(MM, "match_found").is_empty());
        let id = outsider.client.multiplayer().list_rooms(None);
        assert!(list(&outsider.ok(id).await, "rooms").is_empty());
        drop((players, outsider));
        server.finish().await;
    }
}

#[tokio::test]
async fn four_players_queue_match_join_relay_and_leave() {
    for backend in backends() {
        let server = RealServer::start_on(backend, |_| {}).await;
        four_per_deathmatch(&server).await;
        let url = server.url.clone();
        let mut players = Vec::new();
        let mut ids = Vec::new();
        let mut dirs = Vec::new();
        for n in 0..4 {
            let (p, id, dir) = player(&server, &url, &format!("mm-four-{n}")).await;
            players.push(p);
            ids.push(id);
            dirs.push(dir);
        }
        queue_match_play_leave(&mut players, &ids).await;
        drop(players);
        server.finish().await;
    }
}

#[tokio::test]
async fn bad_requests_are_refused_and_a_ticket_can_be_left() {
    let server = RealServer::start().await;
    let url = server.url.clone();
    let (mut a, _a_id, _da) = player(&server, &url, "mm-bad-a").await;
    let mm = a.client.multiplayer().matchmaking().clone();
    // Refused by the SDK before anything is sent.
    let id = mm.join_queue(Value::dict([("mode", text("deathmatch"))]));
    assert_eq!(a.err(id).await.code, ErrorCode::InvalidRequest);
    // Refused by the server: an inverted range.
    let mut inverted = seed_request();
    if let Value::Dictionary(pairs) = &mut inverted {
        pairs[2].1 = Value::Vector2i([1500, 1000]);
    }
    let id = mm.join_queue(inverted);
    assert_eq!(a.err(id).await.code, ErrorCode::InvalidRequest);

    let id = mm.join_queue(seed_request());
    let ticket = string(a.ok(id).await.get("ticket").unwrap(), "ticket_id");
    let id = mm.queue_status(ticket.clone());
    assert_eq!(
        string(a.ok(id).await.get("ticket").unwrap(), "ticket_id"),
        ticket
    );
    let id = mm.join_queue(seed_request());
    assert_eq!(a.err(id).await.code, ErrorCode::Conflict, "one ticket each");
    let id = mm.leave_queue(None);
    assert_eq!(
        a.ok(id).await.get("ticket_ids"),
        Some(&Value::Array(vec![text(&ticket)]))
    );
    let id = mm.queue_status(ticket);
    assert_eq!(a.err(id).await.code, ErrorCode::NotFound);
    drop(a);
    server.finish().await;
}

#[tokio::test]
async fn party_members_hear_of_their_ticket_and_of_its_end() {
    for backend in backends() {
        // Four per match: a party of two waits in the queue.
        let server = RealServer::start_on(backend, |_| {}).await;
        four_per_deathmatch(&server).await;
        let url = server.url.clone();
        let (mut a, a_id, _da) = player(&server, &url, "mm-party-a").await;
        let (mut b, b_id, _db) = player(&server, &url, "mm-party-b").await;
        let id = a.client.social().friends().send_request(b_id.clone());
        a.ok(id).await;
        let id = b.client.social().friends().accept(a_id.clone());
        b.ok(id).await;
        // A party member must be on the socket to hear `match_found`.
        let id = b.client.multiplayer().connect();
        b.ok(id).await;

        let mut request = seed_request();
        if let Value::Dictionary(pairs) = &mut request {
            pairs.push((text("party"), Value::Array(vec![text(&b_id)])));
        }
        let id = a.client.multiplayer().matchmaking().join_queue(request);
        let ticket = a.ok(id).await.get("ticket").unwrap().clone();
        assert_eq!(
            ticket.get("players"),
            Some(&Value::Array(vec![text(&a_id), text(&b_id)]))
        );
        let told = b.signal(MM, "queue_joined").await;
        assert_eq!(told, vec![ticket.clone()]);
        let ticket_id = string(&ticket, "ticket_id");
        let id = b
            .client
            .multiplayer()
            .matchmaking()
            .queue_status(ticket_id.clone());
        b.ok(id).await;

        // b leaves: the whole ticket ends and a is told.
        let id = b.client.multiplayer().matchmaking().leave_queue(None);
        assert_eq!(
            b.ok(id).await.get("ticket_ids"),
            Some(&Value::Array(vec![text(&ticket_id)]))
        );
        assert_eq!(
            a.signal(MM, "queue_left").await,
            vec![Value::PackedStringArray(vec![ticket_id.clone()])]
        );
        let id = a.client.multiplayer().matchmaking().queue_status(ticket_id);
        assert_eq!(a.err(id).await.code, ErrorCode::NotFound);
        drop((a, b));
        server.finish().await;
    }
}

#[tokio::test]
async fn ticket_properties_with_godot_types_reach_the_other_players() {
    let server = RealServer::start().await;
    let url = server.url.clone();
    let (mut a, a_id, _da) = player(&server, &url, "mm-props-a").await;
    let (mut b, b_id, _db) = player(&server, &url, "mm-props-b").await;
    // Keys sorted: the server's JSON map sorts object keys.
    let properties = Value::dict([
        ("role", text("tank")),
        ("spawn", Value::Vector2([4.0, -2.5])),
    ]);
    let mut request = seed_request();
    if let Value::Dictionary(pairs) = &mut request {
        pairs.push((text("properties"), properties.clone()));
    }
    let id = a.client.multiplayer().matchmaking().join_queue(request);
    a.ok(id).await;
    let id = b
        .client
        .multiplayer()
        .matchmaking()
        .join_queue(seed_request());
    b.ok(id).await;
    for p in [&mut a, &mut b] {
        let found = p.signal(MM, "match_found").await.remove(0);
        let players = list(&found, "players");
        let of = |user: &str| {
            players
                .iter()
                .find(|m| string(m, "user_id") == user)
                .unwrap()
                .clone()
        };
        assert_eq!(of(&a_id).get("properties"), Some(&properties));
        assert!(matches!(
            of(&b_id).get("properties"),
            None | Some(Value::Nil)
        ));
    }
    drop((a, b));
    server.finish().await;
}
