//! A bus outage loses no acked message: two chatd nodes on one Redis, a
//! member of room `r` on each, Redis killed while chats go on and started
//! again. Every chat the sender got an `ack` for reaches every member
//! exactly once and in `seq` order, with nothing sent after Redis is back:
//! this node's members at once (they do not need Redis to hear their own
//! node), the other node's once Redis is back (from the shared store's
//! catch-up, or from the sender's node publishing again what the bus did
//! not carry, whichever comes first; with a store of each node's own, only
//! the latter).

use serde_json::json;
use std::collections::BTreeSet;
use std::time::Duration;

use crate::common::{connect_room, Client, WAIT};
use crate::redis_harness::{require_redis, wait_numsub, Chatd, Redis};

/// PostgreSQL keeps the history: chats sent while Redis is down are stored
/// and acked, and must still reach both nodes' members.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acked_chats_reach_every_member_through_a_bus_outage_on_postgres() {
    require_redis();
    let pg = crate::pg_harness::PgDatabase::create();
    let url = format!("store.postgres.url={}", pg.url());
    let mut redis = Redis::start();
    let extra = ["store.backend=postgres", url.as_str()];
    let n1 = Chatd::start(&redis.url(), &extra).await;
    let n2 = Chatd::start(&redis.url(), &extra).await;
    outage(&mut redis, (n1, n2), true, Rejoin::Together).await;
}

/// `REDIS_URL` alone (no store named): history in the same Redis, shared
/// by both nodes. While Redis is down nothing can be stored, so nothing is
/// acked; what was acked just before the kill still reaches everyone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acked_chats_reach_every_member_through_a_bus_outage_with_redis_alone() {
    require_redis();
    let mut redis = Redis::start_durable();
    let files = redis.dir().join("files");
    let files = format!("files.path={}", files.display());
    let n1 = default_node(&redis.url(), &files).await;
    let n2 = default_node(&redis.url(), &files).await;
    outage(&mut redis, (n1, n2), false, Rejoin::Together).await;
}

/// Each node keeps its own SQLite file (no shared store, so no catch-up):
/// what the sender's node acked while Redis was down reaches the other
/// node only because that node publishes it again once Redis is back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acked_chats_reach_every_member_through_a_bus_outage_on_each_node_s_own_store() {
    require_redis();
    let mut redis = Redis::start();
    let nodes = nodes_with_own_sqlite(&redis).await;
    outage(&mut redis, nodes, true, Rejoin::Together).await;
}

/// Two nodes on `redis`, each with an SQLite file of its own.
async fn nodes_with_own_sqlite(redis: &Redis) -> (Chatd, Chatd) {
    let node = |n: u32| {
        let path = redis.dir().join(format!("node{n}.db"));
        let url = redis.url();
        async move {
            let store = format!("store.sqlite.path={}", path.display());
            Chatd::start(&url, &["store.backend=sqlite", store.as_str()]).await
        }
    };
    (node(1).await, node(2).await)
}

/// As above, but the other node comes back a second after the sender's
/// node has published what it acked again: it was not subscribed to hear
/// that publish. Regression: it never got those chats (seen in full runs,
/// where a loaded machine made one node's reconnect lag); now it announces
/// its return and the sender's node publishes them once more.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_that_reconnects_late_still_gets_what_another_acked_meanwhile() {
    require_redis();
    let mut redis = Redis::start();
    let nodes = nodes_with_own_sqlite(&redis).await;
    outage(&mut redis, nodes, true, Rejoin::FarNodeLater).await;
}

/// How the nodes come back after Redis restarts.
#[derive(Clone, Copy, PartialEq)]
enum Rejoin {
    /// Each as soon as its health check sees Redis.
    Together,
    /// The far node (n2) is stopped over the restart and a second after
    /// it, so the sender's node is back and publishing first.
    FarNodeLater,
}

/// A node configured only by `REDIS_URL` (the test harness's other nodes
/// name `store.backend=none`).
async fn default_node(redis_url: &str, files: &str) -> Chatd {
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_chatd"));
    cmd.args(["--log-level", "warn"])
        .args(["--set", "broker.redis.health_interval=100ms"])
        .args(["--set", files])
        .env("REDIS_URL", redis_url);
    let (child, addr) = crate::common::spawn_chatd(&mut cmd).await;
    Chatd::from_child(child, addr)
}

/// Sends chats `from..to` to `r`, each with its own `client_msg_id`,
/// `gap` apart.
async fn send(c: &mut Client, from: u32, to: u32, gap: Duration) {
    for n in from..to {
        let id = format!("k{n}");
        c.send_json(json!({"type":"chat","room":"r","client_msg_id":id,"data":{"content":id}}))
            .await;
        tokio::time::sleep(gap).await;
    }
}

async fn outage(
    redis: &mut Redis,
    (n1, n2): (Chatd, Chatd),
    acked_while_down: bool,
    rejoin: Rejoin,
) {
    // (Under a loaded machine a node's reconnect and catch-up can take a
    // few seconds: every member is given WAIT per message after that.)
    const BEFORE: u32 = 30;
    const DURING: u32 = 20;
    n1.wait_ready().await;
    n2.wait_ready().await;
    let mut near = connect_room(n1.addr, "r").await;
    let mut far = connect_room(n2.addr, "r").await;
    let mut sender = connect_room(n1.addr, "r").await;
    wait_numsub(redis, "chatd:room:r", false, 2).await;

    // The kill lands while the last chats before it are on their way.
    send(&mut sender, 0, BEFORE, Duration::from_millis(2)).await;
    redis.kill();
    send(
        &mut sender,
        BEFORE,
        BEFORE + DURING,
        Duration::from_millis(50),
    )
    .await;
    if rejoin == Rejoin::FarNodeLater {
        n2.pause();
    }
    redis.restart();
    if rejoin == Rejoin::FarNodeLater {
        tokio::time::sleep(Duration::from_secs(1)).await;
        n2.resume();
    }
    // Nothing is sent from now on: what was acked must arrive by itself.

    // Every chat is answered once: an ack (stored) or MESSAGE_FAILED.
    let total = (BEFORE + DURING) as usize;
    let mut acked = BTreeSet::new();
    let mut failed = 0;
    let mut heard_by_sender = Vec::new();
    while acked.len() + failed < total {
        let m = sender.recv().await;
        match m["type"].as_str() {
            Some("ack") => {
                assert!(acked.insert(m["data"]["seq"].as_u64().unwrap()), "{m}");
            }
            Some("error") => {
                assert_eq!(m["data"]["code"], "MESSAGE_FAILED", "{m}");
                failed += 1;
            }
            Some("chat") => heard_by_sender.push(m["seq"].as_u64().unwrap()),
            _ => {}
        }
    }
    if acked_while_down {
        assert_eq!(failed, 0, "a store that stayed up acks every chat");
    }
    let last = *acked.last().expect("chats were acked");

    for (who, client, mut seqs) in [
        ("the sender", &mut sender, heard_by_sender),
        ("the sender's node", &mut near, Vec::new()),
        ("the other node", &mut far, Vec::new()),
    ] {
        while seqs.last().is_none_or(|&s| s < last) {
            let Some(m) = client.recv_within(WAIT).await else {
                panic!("{who} stopped at {seqs:?}; acked {acked:?}");
            };
            if m["type"] == "chat" {
                seqs.push(m["seq"].as_u64().unwrap());
            }
        }
        // Nothing more (a duplicate would come now).
        let quiet = tokio::time::Instant::now() + Duration::from_millis(500);
        while let Some(m) = client
            .recv_within(quiet - tokio::time::Instant::now())
            .await
        {
            if m["type"] == "chat" {
                seqs.push(m["seq"].as_u64().unwrap());
            }
        }
        assert!(
            seqs.windows(2).all(|w| w[0] < w[1]),
            "{who}: once each, in seq order: {seqs:?}"
        );
        let heard: BTreeSet<u64> = seqs.into_iter().collect();
        let missing: Vec<_> = acked.difference(&heard).collect();
        assert!(
            missing.is_empty(),
            "{who} never got acked chats {missing:?}"
        );
    }
}
