//! Two (or three) `aethex-server` processes on one PostgreSQL schema and NATS act as one service:
//! presence and pushes cross nodes, leaderboards stay correct with writes on both, rooms and
//! matchmaking serve players on any node, a node that stops or dies takes its players' presence
//! with it (and hands matchmaking to the next node), a remote member resumes on any node, and a
//! dead node's rooms are adopted by another where its clients resume.
//!
//! Runs when both `AETHEX_TEST_NATS_URL` and `AETHEX_TEST_DATABASE_URL` are set (`.ci/run` sets
//! both); each test uses its own schema and its own NATS subject prefix, so runs never meet.

mod common;

use std::process::Stdio;
use std::time::{Duration, Instant};

use common::socket::{Endpoint, Player, Socket};
use reqwest::Method;
use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, BufReader};

const BIN: &str = env!("CARGO_BIN_EXE_aethex-server");
/// Short heartbeats so a killed node is noticed within the test's patience, with a timeout that
/// a node of a busy 2-core machine still meets (a node taken for gone drops its players), and a
/// resume grace well above it (as the defaults are) but short enough to wait out.
const CONFIG: &str = "[rate_limit]\nenabled = false\n[cluster]\nheartbeat_ms = 250\n\
    node_timeout_ms = 3000\n[realtime]\nresume_grace_secs = 6\n";

/// `(NATS URL, PostgreSQL URL)`, or `None` with a note when the suite is off.
fn settings() -> Option<(String, String)> {
    let get = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
    match (get("AETHEX_TEST_NATS_URL"), get("AETHEX_TEST_DATABASE_URL")) {
        (Some(nats), Some(pg)) => Some((nats, pg)),
        _ => {
            println!(
                "skipped: the two-node tests need AETHEX_TEST_NATS_URL and AETHEX_TEST_DATABASE_URL"
            );
            None
        }
    }
}

/// One running node; killed when dropped.
struct Node {
    child: tokio::process::Child,
    e: Endpoint,
    _data_dir: tempfile::TempDir,
}

/// The nodes' shared settings: one database schema, one subject prefix, one config file.
struct Cluster {
    nats_url: String,
    db_url: String,
    schema: String,
    prefix: String,
    dir: tempfile::TempDir,
    client_key: Option<String>,
    server_key: Option<String>,
}

impl Cluster {
    async fn new(nats_url: String) -> Self {
        let (db_url, schema) = common::fresh_pg_schema().await;
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("aethex.toml"), CONFIG).unwrap();
        Self {
            nats_url,
            db_url,
            schema,
            prefix: format!("test{}", uuid::Uuid::new_v4().simple()),
            dir,
            client_key: None,
            server_key: None,
        }
    }

    /// Starts a node and waits until it listens. The first one creates the game's keys.
    async fn node(&mut self) -> Node {
        let data_dir = tempfile::tempdir().unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut child = tokio::process::Command::new(BIN)
            .arg("--config")
            .arg(self.dir.path().join("aethex.toml"))
            .arg("--data-dir")
            .arg(data_dir.path())
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .args(["--database-url", &self.db_url])
            .args(["--nats-url", &self.nats_url])
            .args(["--nats-subject-prefix", &self.prefix])
            .env_remove("AETHEX_BLOB_STORE")
            .env("RUST_LOG", "warn,aethex_server::realtime::matchmaking=info")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let listening = tokio::time::timeout(Duration::from_secs(60), async {
            while let Some(line) = lines.next_line().await.unwrap() {
                if line.contains("listening on") {
                    return;
                }
            }
            panic!("the node exited before listening");
        });
        listening.await.expect("the node listens in time");
        // Keep reading so the node never blocks on a full pipe; its log shows with a failure
        // (the test's output is captured and printed only then).
        tokio::spawn(async move {
            while let Ok(Some(line)) = lines.next_line().await {
                println!("[node :{port}] {line}");
            }
        });
        if self.client_key.is_none() {
            let read = |name: &str| {
                std::fs::read_to_string(data_dir.path().join(name))
                    .unwrap()
                    .trim()
                    .to_owned()
            };
            self.client_key = Some(read("default-project-key"));
            self.server_key = Some(read("default-server-key"));
        }
        Node {
            child,
            e: Endpoint::new(
                format!("http://127.0.0.1:{port}"),
                self.client_key.clone().unwrap(),
            ),
            _data_dir: data_dir,
        }
    }

    fn admin(&self, node: &Node, method: Method, path: &str) -> reqwest::RequestBuilder {
        node.e
            .http
            .request(method, format!("{}{path}", node.e.base))
            .header(
                "Authorization",
                format!("ServerKey {}", self.server_key.as_ref().unwrap()),
            )
    }

    /// `N` nodes of a new cluster, or `None` (with a note) when the suite is off.
    async fn start<const N: usize>() -> Option<(Self, [Node; N])> {
        let (nats, _) = settings()?;
        let mut cluster = Self::new(nats).await;
        let mut nodes = Vec::with_capacity(N);
        for _ in 0..N {
            nodes.push(cluster.node().await);
        }
        Some((cluster, nodes.try_into().ok()?))
    }

    /// Stops `nodes` cleanly, then drops the cluster's schema.
    async fn finish<const N: usize>(self, nodes: [Node; N]) {
        for node in nodes {
            node.stop().await;
        }
        common::drop_pg_schema(&self.schema).await;
    }
}

impl Node {
    /// SIGTERM: a clean stop, which says goodbye to the other nodes.
    async fn stop(mut self) {
        let pid = self.child.id().unwrap().to_string();
        let status = std::process::Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap();
        assert!(status.success());
        tokio::time::timeout(Duration::from_secs(20), self.child.wait())
            .await
            .expect("the node stops on SIGTERM")
            .unwrap();
    }

    /// SIGKILL: the node dies without a word.
    async fn kill(mut self) {
        self.child.kill().await.unwrap();
    }
}

/// Befriends `a` and `b` (asked on `asked_on`, accepted on `b`'s node) while `b` is connected;
/// `b` is told both times.
async fn befriend(asked_on: &Endpoint, b_node: &Endpoint, a: &Player, b: &Player, bs: &mut Socket) {
    asked_on.friend_action(a, b, "request").await;
    bs.recv_type("friends_updated").await;
    b_node.friend_action(b, a, "accept").await;
    bs.recv_type("friends_updated").await;
}

#[tokio::test]
async fn presence_and_pushes_cross_nodes() {
    let Some((cluster, [n1, n2])) = Cluster::start().await else {
        return;
    };
    let (a, b) = (n1.e.device_player().await, n2.e.device_player().await);

    // A friend request made on node 1 reaches B's socket on node 2, and the accept made on
    // node 2 reaches A's socket on node 1.
    let mut bs = n2.e.socket(&b).await;
    let mut a0 = n1.e.socket(&a).await;
    befriend(&n1.e, &n2.e, &a, &b, &mut bs).await;
    a0.recv_type("friends_updated").await;
    a0.recv_type("friends_updated").await;
    a0.close().await;
    assert_eq!(bs.presence_changed(&a.id).await, "offline");

    let mut a1 = n1.e.socket(&a).await;
    assert_eq!(bs.presence_changed(&a.id).await, "online");
    assert_eq!(n2.e.presence_of(&b, &a).await, "online");
    let room = a1.create_room().await;
    assert_eq!(bs.presence_changed(&a.id).await, "in_match");
    assert_eq!(n2.e.presence_of(&b, &a).await, "in_match");

    // A second device on node 2: A is online until both sockets are gone.
    let a2 = n2.e.socket(&a).await;
    a1.leave_room(&room).await;
    assert_eq!(bs.presence_changed(&a.id).await, "online");
    a1.close().await;
    // Sockets in between: nothing happens to A's status while its node-2 socket is open.
    bs.nothing_pending().await;
    assert_eq!(n1.e.presence_of(&b, &a).await, "online");
    a2.close().await;
    assert_eq!(bs.presence_changed(&a.id).await, "offline");
    assert_eq!(n1.e.presence_of(&b, &a).await, "offline");
    assert_eq!(n2.e.presence_of(&b, &a).await, "offline");

    // Removing on node 2 pushes to A's socket on node 1.
    let mut a1 = n1.e.socket(&a).await;
    assert_eq!(bs.presence_changed(&a.id).await, "online");
    n2.e.friend_action(&b, &a, "remove").await;
    a1.recv_type("friends_updated").await;
    bs.recv_type("friends_updated").await;
    a1.close().await;
    // No longer friends: B hears nothing of A going offline.
    tokio::time::sleep(Duration::from_millis(300)).await;
    bs.nothing_pending().await;

    cluster.finish([n1, n2]).await;
}

#[tokio::test]
async fn a_node_that_stops_or_dies_takes_its_players_presence_along() {
    let Some((mut cluster, [n1, n2])) = Cluster::start().await else {
        return;
    };
    let (a, b) = (n1.e.device_player().await, n2.e.device_player().await);
    let mut bs = n2.e.socket(&b).await;
    befriend(&n1.e, &n2.e, &a, &b, &mut bs).await;

    let _a1 = n1.e.socket(&a).await;
    assert_eq!(bs.presence_changed(&a.id).await, "online");
    n1.stop().await;
    assert_eq!(bs.presence_changed(&a.id).await, "offline");

    // A node started later learns who is online from the others, and they from it.
    let n3 = cluster.node().await;
    until_equal("B as A sees it on node 3", &json!("online"), async || {
        json!(n3.e.presence_of(&a, &b).await)
    })
    .await;
    let _a3 = n3.e.socket(&a).await;
    assert_eq!(bs.presence_changed(&a.id).await, "online");
    n3.kill().await;
    // Silent for node_timeout_ms: its players are dropped.
    assert_eq!(bs.presence_changed(&a.id).await, "offline");
    assert_eq!(n2.e.presence_of(&b, &a).await, "offline");

    cluster.finish([n2]).await;
}

/// Polls `read` until it returns `want` (other nodes learn of a write a moment after it).
async fn until_equal(what: &str, want: &Value, mut read: impl AsyncFnMut() -> Value) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let got = read().await;
        if &got == want {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: still {got}, expected {want}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn leaderboards_stay_correct_with_writes_on_both_nodes() {
    let Some((cluster, [n1, n2])) = Cluster::start().await else {
        return;
    };

    let resp = cluster
        .admin(&n1, Method::PUT, "/api/v1/leaderboards/kills")
        .json(&json!({"id": "kills", "operator": "increment", "sort_order": "desc"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200, "{}", resp.text().await.unwrap());
    // Defined on node 1, known on node 2.
    until_equal("the board on node 2", &json!(200), async || {
        json!(cluster
            .admin(&n2, Method::GET, "/api/v1/leaderboards/kills")
            .send()
            .await
            .unwrap()
            .status()
            .as_u16())
    })
    .await;

    let mut players = Vec::new();
    for _ in 0..4 {
        players.push(n1.e.device_player().await);
    }
    // Every player scores 1 point per round, several rounds, on both nodes at once; player i
    // also plays i extra rounds, so the final order is known.
    let mut writes = Vec::new();
    for (i, p) in players.iter().enumerate() {
        for round in 0..(6 + i) {
            let node = if round % 2 == 0 { &n1 } else { &n2 };
            let req = node
                .e
                .player(Method::POST, "/api/v1/leaderboards/kills/scores", p)
                .json(&json!({"score": 1}));
            writes.push(async move { req.send().await.unwrap().status().as_u16() });
        }
    }
    for status in futures::future::join_all(writes).await {
        assert_eq!(status, 200);
    }

    let want: Vec<Value> = players
        .iter()
        .enumerate()
        .rev()
        .enumerate()
        .map(|(rank, (i, p))| json!({"rank": rank + 1, "user_id": p.id, "score": 6 + i}))
        .collect();
    let want = json!(want);
    for node in [&n1, &n2] {
        until_equal("the ranking", &want, async || {
            let page: Value = cluster
                .admin(node, Method::GET, "/api/v1/leaderboards/kills?limit=10")
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            json!(page["entries"]
                .as_array()
                .unwrap()
                .iter()
                .map(|e| json!({"rank": e["rank"], "user_id": e["user_id"], "score": e["score"]}))
                .collect::<Vec<_>>())
        })
        .await;
        // A player's own rank comes from the same index.
        let rank: Value = node
            .e
            .player(
                Method::GET,
                &format!("/api/v1/leaderboards/kills/ranks/{}", players[0].id),
                &players[0],
            )
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(rank["rank"], 4, "{rank}");
        assert_eq!(rank["score"], 6, "{rank}");
    }

    cluster.finish([n1, n2]).await;
}

#[tokio::test]
async fn players_on_two_nodes_share_a_room() {
    let Some((cluster, [n1, n2])) = Cluster::start().await else {
        return;
    };
    let (a, b, c) = (
        n1.e.device_player().await,
        n2.e.device_player().await,
        n2.e.device_player().await,
    );
    let mut as_ = n1.e.socket(&a).await;
    let mut bs = n2.e.socket(&b).await;
    let mut cs = n2.e.socket(&c).await;

    let room = as_.create_room().await;
    bs.send(json!({"type": "join_room", "room_id": room, "cid": 1}))
        .await;
    let joined = bs.recv_type("room_joined").await;
    assert_eq!(joined["cid"], 1);
    assert_eq!(joined["room"]["host"], a.id.as_str());
    let members: Vec<&str> = joined["room"]["members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["user_id"].as_str().unwrap())
        .collect();
    assert_eq!(members, [a.id.as_str(), b.id.as_str()]);
    let seen = as_.recv_type("player_joined").await;
    assert_eq!(seen["member"]["user_id"], b.id.as_str());

    // State both ways, the sender not echoed.
    bs.send(json!({"type": "player_state_update", "room_id": room, "state": {"x": 1}}))
        .await;
    let update = as_.recv_type("state_update").await;
    assert_eq!(update["updates"][0]["from"], b.id.as_str());
    assert_eq!(update["updates"][0]["state"], json!({"x": 1}));
    as_.send(json!({"type": "player_state_update", "room_id": room, "state": {"y": 2}}))
        .await;
    let update = bs.recv_type("state_update").await;
    assert_eq!(update["updates"][0]["from"], a.id.as_str());
    assert_eq!(update["updates"][0]["state"], json!({"y": 2}));
    bs.nothing_pending().await;

    // A private room by its join code, from the other node.
    cs.send(json!({"type": "create_room", "properties": {"private": true}}))
        .await;
    let private = cs.recv_type("room_joined").await["room"].clone();
    let code = private["join_code"].as_str().unwrap();
    as_.send(json!({"type": "join_room", "join_code": code}))
        .await;
    let joined = as_.recv_type("room_joined").await;
    assert_eq!(joined["room"]["room_id"], private["room_id"]);
    cs.recv_type("player_joined").await;

    // A room no node has.
    bs.send(json!({"type": "join_room", "room_id": "no-such-room", "cid": 2}))
        .await;
    let refused = bs.recv_type("error").await;
    assert_eq!(refused["cid"], 2);
    assert_eq!(refused["error"]["code"], "not_found");

    // Leaving from node 2 reaches the room on node 1.
    bs.send(json!({"type": "leave_room", "room_id": room}))
        .await;
    bs.recv_type("room_left").await;
    let left = as_.recv_type("player_left").await;
    assert_eq!(left["user_id"], b.id.as_str());

    // A node that stops: its players' seats in the other node's rooms wait out the grace
    // period (their clients would reconnect elsewhere), and its rooms are adopted by the node
    // left, so A stays in C's room while C's seat waits too.
    bs.send(json!({"type": "join_room", "room_id": room})).await;
    bs.recv_type("room_joined").await;
    as_.recv_type("player_joined").await;
    drop((bs, cs));
    n2.stop().await;
    // After the grace period: B leaves A's room, C leaves its room and A hosts it. The rooms'
    // events in either order.
    let mut seen = Vec::new();
    for _ in 0..3 {
        let frame = as_.recv().await;
        let who = &frame[if frame["type"] == "host_changed" {
            "host"
        } else {
            "user_id"
        }];
        seen.push(json!([frame["type"], frame["room_id"], who]));
    }
    let private_events: Vec<&Value> = seen.iter().filter(|e| e[1] == private["room_id"]).collect();
    assert_eq!(
        private_events,
        [
            &json!(["player_left", private["room_id"], c.id]),
            &json!(["host_changed", private["room_id"], a.id])
        ]
    );
    assert!(
        seen.contains(&json!(["player_left", room, b.id])),
        "{seen:?}"
    );
    // C's room lives on node 1 now, A in it.
    as_.send(
        json!({"type": "player_state_update", "room_id": private["room_id"],
        "state": {"z": 1}, "echo": true}),
    )
    .await;
    let echoed = as_.recv_type("state_update").await;
    assert_eq!(echoed["updates"][0]["from"], a.id.as_str());
    as_.nothing_pending().await;

    cluster.finish([n1]).await;
}

#[tokio::test]
async fn signals_cross_nodes_between_members_only() {
    let Some((cluster, [n1, n2])) = Cluster::start().await else {
        return;
    };
    let (a, b, c) = (
        n1.e.device_player().await,
        n2.e.device_player().await,
        n2.e.device_player().await,
    );
    let mut as_ = n1.e.socket(&a).await;
    let mut bs = n2.e.socket(&b).await;
    let mut cs = n2.e.socket(&c).await;
    let room = as_.create_room().await;
    bs.send(json!({"type": "join_room", "room_id": room})).await;
    bs.recv_type("room_joined").await;
    as_.recv_type("player_joined").await;

    // Home to remote and back.
    as_.send(json!({"type": "signal", "room_id": room, "to": b.id,
        "signal": {"kind": "offer", "sdp": "from-a"}}))
        .await;
    let got = bs.recv_type("signal").await;
    assert_eq!(
        (got["from"].clone(), got["signal"]["sdp"].clone()),
        (json!(a.id), json!("from-a"))
    );
    bs.send(json!({"type": "signal", "room_id": room, "to": a.id,
        "signal": {"kind": "answer", "sdp": "from-b"}}))
        .await;
    let got = as_.recv_type("signal").await;
    assert_eq!(
        (got["from"].clone(), got["signal"]["kind"].clone()),
        (json!(b.id), json!("answer"))
    );
    // A remote member addressing a non-member gets the home node's error.
    bs.send(
        json!({"type": "signal", "cid": 7, "room_id": room, "to": c.id,
        "signal": {"kind": "fallback"}}),
    )
    .await;
    let refused = bs.recv_type("error").await;
    assert_eq!(
        (refused["cid"].clone(), refused["error"]["code"].clone()),
        (json!(7), json!("not_found"))
    );
    // A non-member on the other node is refused.
    cs.send(
        json!({"type": "signal", "cid": 8, "room_id": room, "to": a.id,
        "signal": {"kind": "offer", "sdp": "x"}}),
    )
    .await;
    assert_eq!(cs.recv_type("error").await["error"]["code"], "forbidden");
    as_.nothing_pending().await;
    bs.nothing_pending().await;

    drop((as_, bs, cs));
    cluster.finish([n1, n2]).await;
}

/// Sends `join_queue` for `mode` (unconfigured: the server's defaults, two players a match)
/// until it is not refused as `unavailable` (the matchmaker may be changing). Returns the ticket
/// and, when `completes`, the `match_found` this ticket completed, which across nodes may come
/// before the answer.
async fn join_queue(s: &mut Socket, mode: &str, completes: bool) -> (Value, Option<Value>) {
    'submit: loop {
        s.send(
            json!({"type": "join_queue", "cid": "q", "mode": mode, "region": "eu",
            "skill_range": [1000, 1100]}),
        )
        .await;
        let (mut ticket, mut found) = (None, None);
        while ticket.is_none() || (completes && found.is_none()) {
            let frame = s.recv().await;
            match frame["type"].as_str() {
                Some("queue_joined") if frame["cid"] == "q" => {
                    ticket = Some(frame["ticket"].clone());
                }
                Some("match_found") if completes => found = Some(frame),
                Some("error") if frame["error"]["code"] == "unavailable" => {
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    continue 'submit;
                }
                _ => panic!("unexpected {frame}"),
            }
        }
        return (ticket.unwrap(), found);
    }
}

fn id_of(ticket: &Value) -> &str {
    ticket["ticket_id"].as_str().unwrap()
}

fn players_of(found: &Value) -> Vec<String> {
    let mut ids: Vec<String> = found["players"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["user_id"].as_str().unwrap().to_owned())
        .collect();
    ids.sort();
    ids
}

fn pair(a: &Player, b: &Player) -> Vec<String> {
    let mut ids = vec![a.id.clone(), b.id.clone()];
    ids.sort();
    ids
}

/// Joins a matched room; returns its members' user ids.
async fn join_match(s: &mut Socket, room_id: &str) -> Value {
    s.send(json!({"type": "join_room", "cid": "j", "room_id": room_id}))
        .await;
    let joined = s.recv_type("room_joined").await;
    assert_eq!(joined["cid"], "j");
    joined["room"].clone()
}

#[tokio::test]
async fn players_on_two_nodes_match_and_share_the_room() {
    let Some((cluster, [n1, n2])) = Cluster::start().await else {
        return;
    };
    // The first node has the lowest id: it is the matchmaker.
    let (a, b, c) = (
        n1.e.device_player().await,
        n2.e.device_player().await,
        n2.e.device_player().await,
    );
    let mut as_ = n1.e.socket(&a).await;
    let mut bs = n2.e.socket(&b).await;
    let mut cs = n2.e.socket(&c).await;

    // Queued on the other node: the answers are the ones a single node gives.
    let (ticket_b, _) = join_queue(&mut bs, "duel", false).await;
    assert_eq!(ticket_b["players"], json!([b.id]));
    bs.send(json!({"type": "queue_status", "cid": "st", "ticket_id": id_of(&ticket_b)}))
        .await;
    let status = bs.recv_type("ticket_status").await;
    assert_eq!(status["cid"], "st");
    assert_eq!(status["ticket"]["ticket_id"], ticket_b["ticket_id"]);
    assert_eq!(status["ticket"]["created_at"], ticket_b["created_at"]);
    bs.send(
        json!({"type": "join_queue", "cid": "again", "mode": "duel", "region": "eu",
        "skill_range": [0, 1]}),
    )
    .await;
    let refused = bs.recv_type("error").await;
    assert_eq!(
        (&refused["cid"], &refused["error"]["code"]),
        (&json!("again"), &json!("conflict"))
    );
    cs.send(json!({"type": "queue_status", "cid": "x", "ticket_id": id_of(&ticket_b)}))
        .await;
    assert_eq!(cs.recv_type("error").await["error"]["code"], "not_found");

    let (ticket_a, found_a) = join_queue(&mut as_, "duel", true).await;
    let found_a = found_a.unwrap();
    let found_b = bs.recv_type("match_found").await;
    assert_eq!(found_a["ticket_id"], ticket_a["ticket_id"]);
    assert_eq!(found_b["ticket_id"], ticket_b["ticket_id"]);
    assert_eq!(found_a["room_id"], found_b["room_id"]);
    assert_eq!(players_of(&found_a), pair(&a, &b));
    assert_eq!(found_a["players"], found_b["players"]);
    let room_id = found_a["room_id"].as_str().unwrap();
    // Matched: the ticket is gone on every node.
    bs.send(json!({"type": "queue_status", "cid": "gone", "ticket_id": id_of(&ticket_b)}))
        .await;
    assert_eq!(bs.recv_type("error").await["error"]["code"], "not_found");

    // The room (on the matchmaker) is reserved: an outsider on the other node is refused, the
    // matched player there gets in.
    cs.send(json!({"type": "join_room", "cid": "out", "room_id": room_id}))
        .await;
    let refused = cs.recv_type("error").await;
    assert_eq!(
        (&refused["cid"], &refused["error"]["code"]),
        (&json!("out"), &json!("not_found"))
    );
    join_match(&mut as_, room_id).await;
    let room = join_match(&mut bs, room_id).await;
    assert_eq!(room["members"].as_array().unwrap().len(), 2);
    as_.recv_type("player_joined").await;

    bs.send(json!({"type": "player_state_update", "room_id": room_id, "state": {"x": 1}}))
        .await;
    let update = as_.recv_type("state_update").await;
    assert_eq!(update["updates"][0]["from"], b.id.as_str());
    assert_eq!(update["updates"][0]["state"], json!({"x": 1}));
    as_.send(json!({"type": "player_state_update", "room_id": room_id, "state": {"y": 2}}))
        .await;
    let update = bs.recv_type("state_update").await;
    assert_eq!(update["updates"][0]["from"], a.id.as_str());
    assert_eq!(update["updates"][0]["state"], json!({"y": 2}));
    cs.nothing_pending().await;

    cluster.finish([n1, n2]).await;
}

/// The next frame of `kind`, past the pushes befriending brings.
async fn recv_skipping_social(s: &mut Socket, kind: &str) -> Value {
    let frame = next_skipping_social(s).await;
    assert_eq!(frame["type"], kind, "{frame}");
    frame
}

/// The next frame but the pushes befriending brings (`friends_updated`, `presence_changed`),
/// which cross nodes at their own pace.
async fn next_skipping_social(s: &mut Socket) -> Value {
    loop {
        let frame = s.recv().await;
        if frame["type"] != "presence_changed" && frame["type"] != "friends_updated" {
            return frame;
        }
    }
}

#[tokio::test]
async fn a_party_member_leaving_on_a_third_node_ends_the_ticket() {
    let Some((cluster, [n1, n2, n3])) = Cluster::start().await else {
        return;
    };
    // Node 1 matches; A queues on node 2 with P, whose socket is on node 3, for a trio.
    let rules = json!({"min_players": 3, "max_players": 3, "timeout_secs": 60,
        "widen_per_sec": 0, "max_widen": 0});
    let resp = cluster
        .admin(&n1, Method::PUT, "/api/v1/matchmaking/modes/trio")
        .json(&rules)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200, "{}", resp.text().await.unwrap());
    let (a, p) = (n2.e.device_player().await, n3.e.device_player().await);
    let mut as_ = n2.e.socket(&a).await;
    let mut ps = n3.e.socket(&p).await;
    befriend(&n3.e, &n2.e, &p, &a, &mut as_).await;
    let ticket = loop {
        as_.send(
            json!({"type": "join_queue", "cid": "q", "mode": "trio", "region": "eu",
            "skill_range": [1, 2], "party": [p.id]}),
        )
        .await;
        let answer = next_skipping_social(&mut as_).await;
        match answer["type"].as_str() {
            Some("queue_joined") => break answer["ticket"].clone(),
            _ => {
                // The matchmaker may still be settling, or P not yet seen online on node 2.
                assert_eq!(answer["type"], "error", "{answer}");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    };
    let told = recv_skipping_social(&mut ps, "queue_joined").await;
    assert_eq!(told["ticket"]["ticket_id"], ticket["ticket_id"]);

    ps.close().await;
    let left = recv_skipping_social(&mut as_, "queue_left").await;
    assert_eq!(left["ticket_ids"], json!([id_of(&ticket)]));
    as_.send(json!({"type": "queue_status", "cid": "st", "ticket_id": id_of(&ticket)}))
        .await;
    let status = recv_skipping_social(&mut as_, "error").await;
    assert_eq!(status["error"]["code"], "not_found", "{status}");

    cluster.finish([n1, n2, n3]).await;
}

#[tokio::test]
async fn leaving_closing_and_timing_out_on_another_node_than_the_matchmaker() {
    let Some((cluster, [n1, n2])) = Cluster::start().await else {
        return;
    };
    for (mode, rules) in [
        (
            "trio",
            json!({"min_players": 3, "max_players": 3, "timeout_secs": 60,
            "widen_per_sec": 0, "max_widen": 0}),
        ),
        (
            "brief",
            json!({"min_players": 2, "max_players": 2, "timeout_secs": 1,
            "widen_per_sec": 0, "max_widen": 0}),
        ),
    ] {
        let resp = cluster
            .admin(
                &n1,
                Method::PUT,
                &format!("/api/v1/matchmaking/modes/{mode}"),
            )
            .json(&rules)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200, "{}", resp.text().await.unwrap());
    }
    let (a, c, d) = (
        n2.e.device_player().await,
        n2.e.device_player().await,
        n1.e.device_player().await,
    );
    let (mut as_, mut cs, mut ds) = (
        n2.e.socket(&a).await,
        n2.e.socket(&c).await,
        n1.e.socket(&d).await,
    );

    // leave_queue on node 2 takes the ticket out of the matchmaker's pool on node 1.
    let (ticket_a, _) = join_queue(&mut as_, "duel", false).await;
    as_.send(json!({"type": "leave_queue", "cid": "wrong", "ticket_id": "no-such-ticket"}))
        .await;
    let refused = as_.recv_type("error").await;
    assert_eq!(
        (&refused["cid"], &refused["error"]["code"]),
        (&json!("wrong"), &json!("not_found"))
    );
    as_.send(json!({"type": "leave_queue", "cid": "l", "ticket_id": id_of(&ticket_a)}))
        .await;
    let left = as_.recv_type("queue_left").await;
    assert_eq!(left["cid"], "l");
    assert_eq!(left["ticket_ids"], json!([id_of(&ticket_a)]));
    // C would match A's older ticket if it were still queued; it matches D.
    join_queue(&mut cs, "duel", false).await;
    let (_, found_d) = join_queue(&mut ds, "duel", true).await;
    assert_eq!(players_of(&found_d.unwrap()), pair(&c, &d));
    assert_eq!(players_of(&cs.recv_type("match_found").await), pair(&c, &d));

    // A party ticket submitted on node 2 with a member on node 1: the member hears of it, and
    // of its end when the submitter's socket closes.
    let (e, h) = (n2.e.device_player().await, n1.e.device_player().await);
    let mut hs = n1.e.socket(&h).await;
    let mut es = n2.e.socket(&e).await;
    n2.e.befriend(&e, &h).await;
    es.send(
        json!({"type": "join_queue", "cid": "p", "mode": "trio", "region": "eu",
        "skill_range": [0, 10], "party": [h.id]}),
    )
    .await;
    let ticket_e = recv_skipping_social(&mut es, "queue_joined").await["ticket"].clone();
    assert_eq!(ticket_e["players"], json!([e.id, h.id]));
    let told = recv_skipping_social(&mut hs, "queue_joined").await;
    assert_eq!(told["ticket"]["ticket_id"], ticket_e["ticket_id"]);
    es.close().await;
    let left = recv_skipping_social(&mut hs, "queue_left").await;
    assert_eq!(left["ticket_ids"], json!([id_of(&ticket_e)]));

    // A mode configured on node 1 times out in 1 s; the timeout reaches node 2.
    let (ticket_a, _) = join_queue(&mut as_, "brief", false).await;
    let timeout = as_.recv_type("matchmaking_timeout").await;
    assert_eq!(timeout["ticket_id"], ticket_a["ticket_id"]);

    cluster.finish([n1, n2]).await;
}

#[tokio::test]
async fn queued_tickets_outlive_a_matchmaker_that_stops_or_dies() {
    let Some((cluster, [n1, n2, n3])) = Cluster::start().await else {
        return;
    };
    let mut sockets = Vec::new();
    for _ in 0..4 {
        let p = n3.e.device_player().await;
        sockets.push((n3.e.socket(&p).await, p));
    }
    let [(mut as_, a), (mut bs, b), (mut cs, c), (mut ds, d)] =
        <[_; 4]>::try_from(sockets).ok().unwrap();

    // A's ticket goes from node 3 to node 1, the matchmaker, which stops: node 3 hands it to
    // node 2, the next lowest id, with its original enqueue time.
    let (ticket_a, _) = join_queue(&mut as_, "duel", false).await;
    n1.stop().await;
    let times = |t: &Value| json!([t["ticket_id"], t["created_at"], t["expires_at"]]);
    until_equal(
        "A's ticket as the new matchmaker has it",
        &times(&ticket_a),
        async || {
            as_.send(json!({"type": "queue_status", "cid": "st", "ticket_id": id_of(&ticket_a)}))
                .await;
            let frame = as_.recv().await;
            match frame["type"].as_str() {
                Some("ticket_status") => times(&frame["ticket"]),
                _ => frame,
            }
        },
    )
    .await;
    let (_, found_b) = join_queue(&mut bs, "duel", true).await;
    let found_b = found_b.unwrap();
    assert_eq!(players_of(&found_b), pair(&a, &b));
    let found_a = as_.recv_type("match_found").await;
    assert_eq!(found_a["ticket_id"], ticket_a["ticket_id"]);
    assert_eq!(found_a["room_id"], found_b["room_id"]);
    // The room is on node 2; both players join it from node 3.
    let room_id = found_a["room_id"].as_str().unwrap();
    join_match(&mut as_, room_id).await;
    join_match(&mut bs, room_id).await;

    // Node 2 dies without a word: once it is taken for gone, node 3 matches, C's ticket with it.
    let (ticket_c, _) = join_queue(&mut cs, "duel", false).await;
    n2.kill().await;
    let (_, found_d) = join_queue(&mut ds, "duel", true).await;
    assert_eq!(players_of(&found_d.unwrap()), pair(&c, &d));
    let found_c = cs.recv_type("match_found").await;
    assert_eq!(found_c["ticket_id"], ticket_c["ticket_id"]);
    join_match(&mut cs, found_c["room_id"].as_str().unwrap()).await;

    cluster.finish([n3]).await;
}

/// Joins `room` (on whichever node holds it) and returns the room as joined.
async fn join(socket: &mut Socket, room: &str) -> Value {
    socket
        .send(json!({"type": "join_room", "room_id": room}))
        .await;
    socket.recv_type("room_joined").await["room"].clone()
}

/// `send_message` on `channel` with `cid`; the answer (`message_sent` or `error`).
async fn say(socket: &mut Socket, channel: &str, body: &str, cid: u64) -> Value {
    socket
        .send(json!({"type": "send_message", "cid": cid, "channel": channel, "body": body}))
        .await;
    let answer = socket.recv().await;
    assert_eq!(answer["cid"], cid, "{answer}");
    answer
}

/// Message ids of a history page read over HTTP on `node`, newest first.
async fn history_ids(node: &Endpoint, reader: &Player, channel: &str) -> Vec<String> {
    let resp = node
        .player(
            Method::GET,
            &format!("/api/v1/chat/{channel}/messages"),
            reader,
        )
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200, "{}", resp.text().await.unwrap());
    let page: Value = resp.json().await.unwrap();
    page["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["message_id"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn room_chat_from_a_member_on_another_node() {
    let Some((cluster, [n1, n2])) = Cluster::start().await else {
        return;
    };
    // A hosts on node 1 with D beside it; B and C are on node 2.
    let (a, b, c, d) = (
        n1.e.device_player().await,
        n2.e.device_player().await,
        n2.e.device_player().await,
        n1.e.device_player().await,
    );
    let (mut as_, mut bs, mut cs, mut ds) = (
        n1.e.socket(&a).await,
        n2.e.socket(&b).await,
        n2.e.socket(&c).await,
        n1.e.socket(&d).await,
    );
    let room = as_.create_room().await;
    let channel = format!("room:{room}");
    join(&mut bs, &room).await;
    join(&mut cs, &room).await;
    join(&mut ds, &room).await;
    for _ in 0..3 {
        as_.recv_type("player_joined").await;
    }
    for _ in 0..2 {
        bs.recv_type("player_joined").await;
    }
    cs.recv_type("player_joined").await;

    // B (node 2) speaks in the room on node 1: everyone else, on both nodes, hears it once.
    let sent = say(&mut bs, &channel, "hello from node 2", 5).await;
    assert_eq!(sent["type"], "message_sent", "{sent}");
    let message = &sent["message"];
    assert_eq!(message["from"], b.id.as_str());
    assert_eq!(message["channel"], channel.as_str());
    let seq = sent["seq"]
        .as_u64()
        .expect("a room message takes the room's seq");
    for s in [&mut as_, &mut cs, &mut ds] {
        let got = s.recv_type("message_received").await;
        assert_eq!(&got["message"], message);
        assert_eq!(got["seq"], seq);
        s.nothing_pending().await;
    }
    bs.nothing_pending().await;

    // Stored once, readable on either node, by a member of either node.
    let id = message["message_id"].as_str().unwrap().to_owned();
    for (node, reader) in [(&n1.e, &a), (&n2.e, &a), (&n1.e, &b), (&n2.e, &c)] {
        assert_eq!(history_ids(node, reader, &channel).await, [id.as_str()]);
    }
    bs.send(json!({"type": "chat_history", "cid": 6, "channel": channel}))
        .await;
    let page = bs.recv_type("chat_history").await;
    assert_eq!(page["messages"][0]["message_id"], id.as_str());

    // The home node's rules apply: a bad body is refused with its code, and A muting B hides B.
    let refused = say(&mut bs, &channel, "   ", 7).await;
    assert_eq!(refused["type"], "error", "{refused}");
    assert_eq!(refused["error"]["code"], "invalid_request");
    let resp =
        n1.e.player(Method::PUT, &format!("/api/v1/chat/mutes/{}", b.id), &a)
            .send()
            .await
            .unwrap();
    assert_eq!(resp.status(), 200, "{}", resp.text().await.unwrap());
    let sent = say(&mut bs, &channel, "A does not hear this", 8).await;
    assert_eq!(sent["type"], "message_sent", "{sent}");
    for s in [&mut cs, &mut ds] {
        let got = s.recv_type("message_received").await;
        assert_eq!(got["message"]["body"], "A does not hear this");
    }
    as_.nothing_pending().await;

    // A player of node 2 who is not in the room is refused there.
    let mut es = n2.e.socket(&n2.e.device_player().await).await;
    let refused = say(&mut es, &channel, "let me in", 9).await;
    assert_eq!(refused["error"]["code"], "forbidden", "{refused}");

    // The rate limit (a burst of 10 a minute) is the home node's, answered with the frame's cid.
    let mut limited = None;
    for cid in 10..30 {
        let answer = say(&mut bs, &channel, "spam", cid).await;
        if answer["type"] == "error" {
            limited = Some(answer);
            break;
        }
    }
    let limited = limited.expect("the rate limit stops B");
    assert_eq!(limited["error"]["code"], "rate_limited", "{limited}");
    assert!(limited["error"]["details"]["retry_after_ms"]
        .as_u64()
        .is_some());

    cluster.finish([n1, n2]).await;
}

/// Room ids of a `room_list` (or `GET /api/v1/rooms` answer).
fn room_ids(list: &Value) -> Vec<String> {
    list["rooms"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["room_id"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn the_lobby_lists_the_rooms_of_every_node() {
    let Some((cluster, [n1, n2])) = Cluster::start().await else {
        return;
    };
    let (a, b) = (n1.e.device_player().await, n2.e.device_player().await);
    let (mut as_, mut bs) = (n1.e.socket(&a).await, n2.e.socket(&b).await);

    // Created alternately on both nodes: the listing is oldest first whichever node holds them.
    let mut rooms = Vec::new();
    for (i, label) in ["ranked", "casual", "ranked", "ranked", "casual"]
        .iter()
        .enumerate()
    {
        let s = if i % 2 == 0 { &mut as_ } else { &mut bs };
        s.send(json!({"type": "create_room", "properties": {"labels": [label]}}))
            .await;
        let room = s.recv_type("room_joined").await["room"]["room_id"]
            .as_str()
            .unwrap()
            .to_owned();
        rooms.push((room, *label));
        // Creation times are in milliseconds: keep them apart so the order is the creation's.
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // Private rooms are not listed, wherever they are.
    bs.send(json!({"type": "create_room", "properties": {"private": true}}))
        .await;
    bs.recv_type("room_joined").await;

    let all: Vec<String> = rooms.iter().map(|(r, _)| r.clone()).collect();
    let ranked: Vec<String> = rooms
        .iter()
        .filter(|(_, l)| *l == "ranked")
        .map(|(r, _)| r.clone())
        .collect();
    for (s, node) in [(&mut as_, &n1), (&mut bs, &n2)] {
        s.send(json!({"type": "list_rooms", "cid": 1})).await;
        let list = s.recv_type("room_list").await;
        assert_eq!(room_ids(&list), all, "{list}");
        // Summaries come from the node that holds the room.
        assert_eq!(list["rooms"][1]["host"], b.id.as_str());
        assert_eq!(list["rooms"][1]["labels"], json!(["casual"]));
        s.send(json!({"type": "list_rooms", "cid": 2, "label": "ranked"}))
            .await;
        assert_eq!(room_ids(&s.recv_type("room_list").await), ranked);

        for (query, want) in [("", &all), ("?label=ranked", &ranked)] {
            let resp = cluster
                .admin(node, Method::GET, &format!("/api/v1/rooms{query}"))
                .send()
                .await
                .unwrap();
            assert_eq!(resp.status(), 200);
            assert_eq!(&room_ids(&resp.json().await.unwrap()), want);
        }
    }

    // Pages across the merge: a cursor from one node works on the other, and stays valid when
    // the room it ends on closes.
    as_.send(json!({"type": "list_rooms", "cid": 3, "limit": 2}))
        .await;
    let page = as_.recv_type("room_list").await;
    assert_eq!(room_ids(&page), all[..2]);
    let cursor = page["next_cursor"].as_str().unwrap().to_owned();
    bs.leave_room(&rooms[1].0).await;
    bs.send(json!({"type": "list_rooms", "cid": 4, "limit": 2, "cursor": cursor}))
        .await;
    let page = bs.recv_type("room_list").await;
    assert_eq!(room_ids(&page), all[2..4]);
    let cursor = page["next_cursor"].as_str().unwrap().to_owned();
    let last: Value = cluster
        .admin(
            &n1,
            Method::GET,
            &format!("/api/v1/rooms?limit=2&cursor={cursor}"),
        )
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(room_ids(&last), all[4..]);
    assert!(last.get("next_cursor").is_none(), "{last}");
    // With a filter, one room a page.
    let mut paged = Vec::new();
    let mut query = "label=ranked&limit=1".to_owned();
    loop {
        let page: Value = cluster
            .admin(&n2, Method::GET, &format!("/api/v1/rooms?{query}"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        paged.extend(room_ids(&page));
        match page["next_cursor"].as_str() {
            Some(cursor) => query = format!("label=ranked&limit=1&cursor={cursor}"),
            None => break,
        }
    }
    assert_eq!(paged, ranked);
    // The closed room is gone from every node's listing.
    let without: Vec<String> = all.iter().filter(|r| **r != rooms[1].0).cloned().collect();
    as_.send(json!({"type": "list_rooms", "cid": 5})).await;
    assert_eq!(room_ids(&as_.recv_type("room_list").await), without);
    for bad in ["cursor=nonsense", "cursor=12.a%20b", "limit=0", "limit=101"] {
        let resp = cluster
            .admin(&n1, Method::GET, &format!("/api/v1/rooms?{bad}"))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 400, "{bad}");
    }
    as_.send(json!({"type": "list_rooms", "cid": 6, "cursor": "x"}))
        .await;
    let refused = as_.recv_type("error").await;
    assert_eq!(
        (&refused["cid"], &refused["error"]["code"]),
        (&json!(6), &json!("invalid_request"))
    );

    // A node that stopped is not asked any more, and node 1 adopts its public room (failover),
    // so node 1 alone lists the same rooms once it has.
    drop(bs);
    n2.stop().await;
    until_equal("node 1's listing", &json!(without), async || {
        as_.send(json!({"type": "list_rooms", "cid": 7})).await;
        json!(room_ids(&as_.recv_type("room_list").await))
    })
    .await;

    cluster.finish([n1]).await;
}

#[tokio::test]
async fn a_broadcast_reaches_each_member_on_another_node_once_in_order() {
    let Some((cluster, [n1, n2])) = Cluster::start().await else {
        return;
    };
    let a = n1.e.device_player().await;
    let mut as_ = n1.e.socket(&a).await;
    let room = as_.create_room().await;
    // Three members on node 2 in A's room on node 1.
    let mut members = Vec::new();
    for _ in 0..3 {
        let player = n2.e.device_player().await;
        let mut s = n2.e.socket(&player).await;
        join(&mut s, &room).await;
        as_.recv_type("player_joined").await;
        for (_, earlier) in &mut members {
            let earlier: &mut Socket = earlier;
            earlier.recv_type("player_joined").await;
        }
        members.push((player, s));
    }

    const UPDATES: u64 = 40;
    for i in 0..UPDATES {
        as_.send(json!({"type": "player_state_update", "room_id": room, "state": {"i": i}}))
            .await;
    }
    // One member also relays: the others get its update among A's, each once.
    members[0]
        .1
        .send(json!({"type": "player_state_update", "room_id": room, "state": {"from_b": true}}))
        .await;
    for (n, (_, s)) in members.iter_mut().enumerate() {
        let mut seen = Vec::new();
        let mut from_member = 0;
        let mut last_seq = 0;
        let want_from_member = usize::from(n != 0);
        while seen.len() < UPDATES as usize || from_member < want_from_member {
            let update = s.recv_type("state_update").await;
            for entry in update["updates"].as_array().unwrap() {
                let seq = entry["seq"].as_u64().unwrap();
                assert!(seq > last_seq, "seq {seq} after {last_seq}");
                last_seq = seq;
                if entry["from"] == a.id.as_str() {
                    seen.push(entry["state"]["i"].as_u64().unwrap());
                } else {
                    from_member += 1;
                }
            }
        }
        assert_eq!(seen, (0..UPDATES).collect::<Vec<_>>());
        assert_eq!(from_member, want_from_member);
        s.nothing_pending().await;
    }
    let update = as_.recv_type("state_update").await;
    assert_eq!(update["updates"][0]["state"], json!({"from_b": true}));

    cluster.finish([n1, n2]).await;
}

#[tokio::test]
async fn voice_reaches_members_on_another_node() {
    let Some((cluster, [n1, n2])) = Cluster::start().await else {
        return;
    };
    let (a, b, c) = (
        n1.e.device_player().await,
        n2.e.device_player().await,
        n2.e.device_player().await,
    );
    let mut as_ = n1.e.socket(&a).await;
    let mut bs = n2.e.socket(&b).await;
    let mut cs = n2.e.socket(&c).await;
    let room = as_.create_room().await;
    join(&mut bs, &room).await;
    as_.recv_type("player_joined").await;
    join(&mut cs, &room).await;
    as_.recv_type("player_joined").await;
    bs.recv_type("player_joined").await;

    // Home node to members elsewhere, and a member elsewhere to the home node and to its own
    // node's member (through the home node), in order, untouched, without a seq.
    for i in 0..5u8 {
        as_.send(json!({"type": "voice_frame", "room_id": room, "data": [i, 255]}))
            .await;
    }
    for s in [&mut bs, &mut cs] {
        for i in 0..5u8 {
            let got = s.recv_type("voice_received").await;
            assert_eq!(got["from"], a.id.as_str());
            assert!(got.get("seq").is_none(), "{got}");
            use base64::Engine as _;
            let data = base64::engine::general_purpose::STANDARD
                .decode(got["data"].as_str().unwrap())
                .unwrap();
            assert_eq!(data, [i, 255]);
        }
    }
    bs.send(json!({"type": "voice_frame", "room_id": room, "data": "AQ=="}))
        .await;
    assert_eq!(as_.recv_type("voice_received").await["from"], b.id.as_str());
    assert_eq!(cs.recv_type("voice_received").await["from"], b.id.as_str());

    // Key messages: targeted, with the room's seq.
    bs.send(json!({"type": "voice_key", "room_id": room, "data": "Ag==", "targets": [a.id]}))
        .await;
    let key = as_.recv_type("voice_key_received").await;
    assert_eq!(
        (key["from"].as_str(), key["data"].as_str()),
        (Some(b.id.as_str()), Some("Ag=="))
    );
    assert!(key["seq"].as_u64().is_some(), "{key}");
    cs.nothing_pending().await;
    as_.nothing_pending().await;
    bs.nothing_pending().await;

    cluster.finish([n1, n2]).await;
}

/// The highest room `seq` in a frame (an event's, a `state_update`'s last entry's, a room's).
fn seq_of(frame: &Value) -> u64 {
    [
        &frame["seq"],
        &frame["room"]["seq"],
        &frame["updates"]
            .as_array()
            .and_then(|u| u.last())
            .cloned()
            .unwrap_or_default()["seq"],
    ]
    .iter()
    .find_map(|v| v.as_u64())
    .unwrap_or(0)
}

/// Receives a frame of `kind` and raises `seen` (the client's last `seq` of the room) to it.
async fn recv_seen(socket: &mut Socket, kind: &str, seen: &mut u64) -> Value {
    let frame = socket.recv_type(kind).await;
    *seen = (*seen).max(seq_of(&frame));
    frame
}

/// Sends `resume` for one room: the frames replayed before `resumed`, and `resumed`'s room.
async fn resume(socket: &mut Socket, room: &str, seen: u64) -> (Vec<Value>, Value) {
    socket
        .send(json!({"type": "resume", "cid": "r", "rooms": {room: seen}}))
        .await;
    let mut replayed = Vec::new();
    loop {
        let frame = socket.recv().await;
        if frame["type"] == "resumed" {
            assert_eq!(frame["cid"], "r", "{frame}");
            assert_eq!(frame["lost"], json!([]), "{frame}");
            assert_eq!(frame["rooms"].as_array().unwrap().len(), 1, "{frame}");
            return (replayed, frame["rooms"][0].clone());
        }
        replayed.push(frame);
    }
}

fn state_of(room: &str, value: Value) -> Value {
    json!({"type": "player_state_update", "room_id": room, "state": value})
}

/// The states in `frames` (all `state_update`s), in order.
fn states(frames: &[Value]) -> Vec<Value> {
    frames
        .iter()
        .flat_map(|f| {
            assert_eq!(f["type"], "state_update", "{f}");
            f["updates"].as_array().unwrap().clone()
        })
        .map(|u| u["state"].clone())
        .collect()
}

/// `(user id, peer id)` of a room's members, oldest first.
fn seats(room: &Value) -> Vec<(String, u64)> {
    room["members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            (
                m["user_id"].as_str().unwrap().to_owned(),
                m["peer_id"].as_u64().unwrap(),
            )
        })
        .collect()
}

#[tokio::test]
async fn a_remote_member_resumes_on_any_node_within_the_grace_period() {
    let Some((cluster, [n1, n2])) = Cluster::start().await else {
        return;
    };
    let (a, b) = (n1.e.device_player().await, n2.e.device_player().await);
    let mut as_ = n1.e.socket(&a).await;
    let mut bs = n2.e.socket(&b).await;
    let room = as_.create_room().await;
    let mut b_seen = 0;
    bs.send(json!({"type": "join_room", "room_id": room})).await;
    let joined = recv_seen(&mut bs, "room_joined", &mut b_seen).await;
    let seated = seats(&joined["room"]);
    as_.recv_type("player_joined").await;

    // B's socket on node 2 drops: its seat in the room on node 1 waits, A sees nothing.
    bs.close().await;
    as_.nothing_pending().await;
    as_.send(state_of(&room, json!({"n": 1}))).await;
    as_.send(state_of(&room, json!({"n": 2}))).await;
    as_.nothing_pending().await;

    // Back on node 1, the room's home: the missed updates, then the same seat.
    let mut b1 = n1.e.socket(&b).await;
    let (replayed, resumed) = resume(&mut b1, &room, b_seen).await;
    assert_eq!(states(&replayed), [json!({"n": 1}), json!({"n": 2})]);
    assert_eq!(resumed["complete"], true);
    assert_eq!(seats(&resumed["room"]), seated);
    assert_eq!(resumed["room"]["host"], a.id.as_str());
    b_seen = seq_of(&resumed);
    as_.send(state_of(&room, json!({"n": 3}))).await;
    recv_seen(&mut b1, "state_update", &mut b_seen).await;

    // Drops again, comes back on node 2: the resume is forwarded to node 1.
    b1.close().await;
    as_.send(state_of(&room, json!({"n": 4}))).await;
    as_.nothing_pending().await;
    let mut b2 = n2.e.socket(&b).await;
    let (replayed, resumed) = resume(&mut b2, &room, b_seen).await;
    assert_eq!(states(&replayed), [json!({"n": 4})]);
    assert_eq!(resumed["complete"], true);
    assert_eq!(seats(&resumed["room"]), seated);

    // And takes part again from node 2, both ways.
    b2.send(state_of(&room, json!({"from": "b"}))).await;
    let update = as_.recv_type("state_update").await;
    assert_eq!(update["updates"][0]["from"], b.id.as_str());
    as_.send(state_of(&room, json!({"n": 5}))).await;
    assert_eq!(
        states(&[b2.recv_type("state_update").await]),
        [json!({"n": 5})]
    );
    b2.nothing_pending().await;
    as_.nothing_pending().await;

    // Gone for good: after the grace period A sees B leave.
    b2.close().await;
    let left = as_.recv_type("player_left").await;
    assert_eq!(left["user_id"], b.id.as_str());

    cluster.finish([n1, n2]).await;
}

#[tokio::test]
async fn a_dead_nodes_rooms_are_adopted_and_its_clients_resume_on_another_node() {
    let Some((cluster, [n1, n2, n3])) = Cluster::start().await else {
        return;
    };
    // H hosts on node 1 with P; Q is on node 2, R on node 3.
    let h = n1.e.device_player().await;
    let p = n1.e.device_player().await;
    let q = n2.e.device_player().await;
    let r = n3.e.device_player().await;
    let mut hs = n1.e.socket(&h).await;
    let mut ps = n1.e.socket(&p).await;
    let mut qs = n2.e.socket(&q).await;
    let mut rs = n3.e.socket(&r).await;
    let mut h_seen = 0;
    hs.send(json!({"type": "create_room", "properties": {"private": true}}))
        .await;
    let created = recv_seen(&mut hs, "room_joined", &mut h_seen).await;
    let room = created["room"]["room_id"].as_str().unwrap().to_owned();
    let code = created["room"]["join_code"].as_str().unwrap().to_owned();
    let mut others = [&mut ps, &mut qs, &mut rs];
    for i in 0..others.len() {
        others[i]
            .send(json!({"type": "join_room", "join_code": code}))
            .await;
        others[i].recv_type("room_joined").await;
        recv_seen(&mut hs, "player_joined", &mut h_seen).await;
        for earlier in others[..i].iter_mut() {
            earlier.recv_type("player_joined").await;
        }
    }
    qs.send(state_of(&room, json!({"q": 1}))).await;
    recv_seen(&mut hs, "state_update", &mut h_seen).await;
    for s in [&mut ps, &mut rs] {
        s.recv_type("state_update").await;
    }
    // H's view before the crash; the replicas went out with the joins (give them a moment).
    hs.send(json!({"type": "resume", "cid": "view", "rooms": {&room: h_seen}}))
        .await;
    let before = hs.recv_type("resumed").await["rooms"][0]["room"].clone();
    tokio::time::sleep(Duration::from_millis(500)).await;

    // Node 1 dies. H reconnects to node 2 and resumes: same seat, same peer ids, still host.
    drop((hs, ps));
    n1.kill().await;
    let mut h2 = n2.e.socket(&h).await;
    let (replayed, resumed) = resume(&mut h2, &room, h_seen).await;
    assert_eq!(replayed, Vec::<Value>::new());
    assert_eq!(
        resumed["complete"], false,
        "what node 1 sent last may be lost"
    );
    assert_eq!(seats(&resumed["room"]), seats(&before));
    assert_eq!(resumed["room"]["host"], h.id.as_str());
    assert_eq!(resumed["room"]["join_code"], code.as_str());
    assert!(seq_of(&resumed) > h_seen, "{resumed}");

    // State flows again between the members on nodes 2 and 3, whichever adopted the room.
    h2.send(state_of(&room, json!({"h": 1}))).await;
    for s in [&mut qs, &mut rs] {
        let update = s.recv_type("state_update").await;
        assert_eq!(update["updates"][0]["from"], h.id.as_str());
        assert!(seq_of(&update) > h_seen, "{update}");
    }
    rs.send(state_of(&room, json!({"r": 1}))).await;
    for s in [&mut h2, &mut qs] {
        let update = s.recv_type("state_update").await;
        assert_eq!(update["updates"][0]["from"], r.id.as_str());
    }
    qs.send(state_of(&room, json!({"q": 2}))).await;
    for s in [&mut h2, &mut rs] {
        let update = s.recv_type("state_update").await;
        assert_eq!(update["updates"][0]["from"], q.id.as_str());
    }
    // A newcomer joins the adopted room by its code from node 3.
    let s = n3.e.device_player().await;
    let mut ss = n3.e.socket(&s).await;
    ss.send(json!({"type": "join_room", "join_code": code}))
        .await;
    let joined = ss.recv_type("room_joined").await;
    assert_eq!(joined["room"]["host"], h.id.as_str());
    for m in [&mut h2, &mut qs, &mut rs] {
        m.recv_type("player_joined").await;
    }

    // P never came back: after the grace period everyone sees it leave (H stays host).
    for m in [&mut h2, &mut qs, &mut rs, &mut ss] {
        let left = m.recv_type("player_left").await;
        assert_eq!(left["user_id"], p.id.as_str());
        m.nothing_pending().await;
    }

    cluster.finish([n2, n3]).await;
}
