//! Scale-out through Redis: several chatd processes on one Redis (and on a
//! Redis Cluster), ordering, outages, subscription bookkeeping.

use futures_util::{SinkExt, StreamExt};
use serde_json::json;
use std::collections::HashMap;
use std::time::Duration;
use tokio_tungstenite::tungstenite::Message;

use crate::common::{connect, connect_room, http_get, WAIT};
use crate::redis_harness::{
    free_port, numsub, require_redis, two_ready_nodes, wait_numsub, Chatd, Redis,
};

#[tokio::test]
async fn two_nodes_share_rooms_and_global_messages_and_keep_rooms_apart() {
    require_redis();
    let redis = Redis::start();
    let (n1, n2) = two_ready_nodes(&redis.url(), &[]).await;
    let mut a = connect_room(n1.addr, "r").await;
    let mut b = connect_room(n2.addr, "r").await;
    let mut c = connect_room(n2.addr, "other").await;
    let mut g = connect(n1.addr, "/ws").await;
    wait_numsub(&redis, "chatd:room:r", false, 2).await;

    a.chat(None, "from node 1").await;
    assert_eq!(b.recv_type("chat").await["data"]["content"], "from node 1");
    assert_eq!(a.recv_type("chat").await["data"]["content"], "from node 1");
    b.chat(None, "from node 2").await;
    assert_eq!(a.recv_type("chat").await["data"]["content"], "from node 2");
    assert_eq!(b.recv_type("chat").await["data"]["content"], "from node 2");

    g.chat(None, "to everyone").await;
    for client in [&mut a, &mut b, &mut g] {
        assert_eq!(
            client.recv_type("chat").await["data"]["content"],
            "to everyone"
        );
    }
    // c saw neither room message: its first chat is the global one.
    assert_eq!(c.recv_type("chat").await["data"]["content"], "to everyone");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_every_client_sees_one_order_per_room() {
    require_redis();
    const PER_NODE: usize = 50;
    const MESSAGES: usize = 20;
    const ROOMS: usize = 2;
    let redis = Redis::start();
    let mut nodes = Vec::new();
    for _ in 0..3 {
        nodes.push(Chatd::start(&redis.url(), &["limits.queue_messages=8192"]).await);
    }
    for n in &nodes {
        n.wait_ready().await;
    }
    let mut clients = Vec::new();
    for (i, node) in nodes.iter().enumerate() {
        for j in 0..PER_NODE {
            let id = i * PER_NODE + j;
            clients.push((
                id,
                connect_room(node.addr, &format!("room{}", id % ROOMS)).await,
            ));
        }
    }
    for r in 0..ROOMS {
        wait_numsub(&redis, &format!("chatd:room:room{r}"), false, 3).await;
    }
    let per_room = (3 * PER_NODE / ROOMS) * MESSAGES;
    let mut tasks = Vec::new();
    for (id, client) in clients {
        tasks.push(tokio::spawn(async move {
            let (mut sink, mut stream) = client.ws.split();
            let send = tokio::spawn(async move {
                for n in 0..MESSAGES {
                    let msg = json!({"type":"chat","data":{"content":format!("{id}:{n}")}});
                    sink.send(Message::text(msg.to_string())).await.unwrap();
                }
                sink
            });
            let mut seen = Vec::with_capacity(per_room);
            while seen.len() < per_room {
                let msg = tokio::time::timeout(WAIT, stream.next())
                    .await
                    .expect("in time")
                    .unwrap()
                    .unwrap();
                let Message::Text(t) = msg else { continue };
                let v: serde_json::Value = serde_json::from_str(&t).unwrap();
                if v["type"] == "chat" {
                    seen.push(v["data"]["content"].as_str().unwrap().to_owned());
                }
            }
            drop(send.await.unwrap());
            (id % ROOMS, seen)
        }));
    }
    let mut order: HashMap<usize, Vec<String>> = HashMap::new();
    for t in tasks {
        let (room, seen) = t.await.unwrap();
        match order.get(&room) {
            None => {
                order.insert(room, seen);
            }
            Some(first) => assert!(
                *first == seen,
                "two clients of room{room} saw different orders"
            ),
        }
    }
    assert_eq!(order.len(), ROOMS);
}

#[tokio::test]
async fn redis_outage_fails_publishes_then_recovers() {
    require_redis();
    let mut redis = Redis::start();
    let (n1, n2) = two_ready_nodes(&redis.url(), &[]).await;
    let mut a = connect_room(n1.addr, "r").await;
    let mut b = connect_room(n2.addr, "r").await;
    wait_numsub(&redis, "chatd:room:r", false, 2).await;

    redis.kill();
    // Once the node notices, a publish gets MESSAGE_FAILED (never silence).
    let deadline = tokio::time::Instant::now() + WAIT;
    let failed = loop {
        assert!(
            tokio::time::Instant::now() < deadline,
            "no MESSAGE_FAILED during the outage"
        );
        a.chat(None, "during outage").await;
        let m = tokio::time::timeout(Duration::from_millis(300), a.recv_type("error")).await;
        if let Ok(m) = m {
            break m;
        }
    };
    assert_eq!(failed["data"]["code"], "MESSAGE_FAILED");
    // The same body, key order included, on every call.
    for _ in 0..5 {
        let (status, body) = http_get(n1.addr, "/readyz").await;
        assert_eq!(status, 503);
        assert_eq!(
            body,
            r#"{"status":"not ready","reason":"broker not connected"}"#
        );
    }

    redis.restart();
    n1.wait_ready().await;
    n2.wait_ready().await;
    wait_numsub(&redis, "chatd:room:r", false, 2).await;
    a.chat(None, "after recovery").await;
    loop {
        let m = b.recv_type("chat").await;
        if m["data"]["content"] == "after recovery" {
            break;
        }
    }
}

/// Regression (issue 9, finding 4): a message accepted while Redis looked
/// healthy and then lost with the connection used to vanish silently. Redis
/// is frozen (its socket stays open, PUBLISH times out) and then killed, so
/// the message is certainly never published: its sender must be told.
#[tokio::test]
async fn a_message_lost_after_acceptance_is_reported_to_its_sender() {
    require_redis();
    let mut redis = Redis::start();
    let node = Chatd::start(
        &redis.url(),
        &[
            "broker.redis.connect_timeout=300ms",
            "broker.redis.health_interval=30s",
        ],
    )
    .await;
    node.wait_ready().await;
    let mut a = connect_room(node.addr, "r").await;
    wait_numsub(&redis, "chatd:room:r", false, 1).await;
    redis.freeze();
    a.send_json(json!({"type":"chat","room":"r","client_msg_id":"lost-1","data":{"content":"x"}}))
        .await;
    let failed = a.recv_type("error").await;
    redis.kill();
    assert_eq!(failed["data"]["code"], "MESSAGE_FAILED", "{failed}");
    assert_eq!(failed["data"]["client_msg_id"], "lost-1", "{failed}");
    let delivered = tokio::time::timeout(Duration::from_millis(500), a.recv_type("chat")).await;
    assert!(delivered.is_err(), "the lost message was not delivered");
}

#[tokio::test]
async fn a_node_starts_without_redis_and_joins_when_it_appears() {
    require_redis();
    let port = free_port();
    let node = Chatd::start(&format!("redis://127.0.0.1:{port}"), &[]).await;
    let (status, body) = http_get(node.addr, "/readyz").await;
    assert_eq!(
        (status, body.contains("broker not connected")),
        (503, true),
        "{body}"
    );
    assert_eq!(http_get(node.addr, "/healthz").await.0, 200);
    let mut a = connect_room(node.addr, "r").await;
    a.chat(None, "too early").await;
    assert_eq!(a.recv_type("error").await["data"]["code"], "MESSAGE_FAILED");

    let redis = Redis::start_on(port, false);
    node.wait_ready().await;
    wait_numsub(&redis, "chatd:room:r", false, 1).await;
    a.chat(None, "now it works").await;
    assert_eq!(a.recv_type("chat").await["data"]["content"], "now it works");
}

#[tokio::test]
async fn a_node_unsubscribes_when_its_last_member_leaves() {
    require_redis();
    let redis = Redis::start();
    let node = Chatd::start(&redis.url(), &[]).await;
    node.wait_ready().await;
    let mut a = connect_room(node.addr, "temp").await;
    let b = connect_room(node.addr, "temp").await;
    wait_numsub(&redis, "chatd:room:temp", false, 1).await;
    a.send_json(json!({"type":"leave","room":"temp"})).await;
    a.recv_type("system").await;
    assert_eq!(
        numsub(&redis, "chatd:room:temp", false),
        1,
        "b is still a member"
    );
    b.close().await;
    wait_numsub(&redis, "chatd:room:temp", false, 0).await;
    a.join("temp").await;
    wait_numsub(&redis, "chatd:room:temp", false, 1).await;
    a.close().await;
    wait_numsub(&redis, "chatd:room:temp", false, 0).await;
}

#[tokio::test]
async fn a_redis_cluster_carries_rooms_through_sharded_pubsub() {
    require_redis();
    let ports = [free_port(), free_port(), free_port()];
    let shards: Vec<Redis> = ports.iter().map(|&p| Redis::start_on(p, true)).collect();
    let mut create = std::process::Command::new("redis-cli");
    create.args(["--cluster", "create"]);
    for p in ports {
        create.arg(format!("127.0.0.1:{p}"));
    }
    let out = create
        .args(["--cluster-replicas", "0", "--cluster-yes"])
        .output()
        .expect("redis-cli runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let deadline = std::time::Instant::now() + WAIT;
    while !shards.iter().all(|s| {
        s.cli(&["CLUSTER", "INFO"])
            .is_some_and(|i| i.contains("cluster_state:ok"))
    }) {
        assert!(
            std::time::Instant::now() < deadline,
            "cluster never became ok"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let url = shards[0].url();
    let (n1, n2) = two_ready_nodes(&url, &["broker.redis.cluster=true"]).await;
    for room in ["alpha", "beta", "gamma", "delta"] {
        let mut a = connect_room(n1.addr, room).await;
        let mut b = connect_room(n2.addr, room).await;
        let channel = format!("chatd:room:{room}");
        // SHARDNUMSUB answers for the slots of the node asked; sum over all.
        let subs = || {
            shards
                .iter()
                .map(|s| numsub(s, &channel, true))
                .sum::<u64>()
        };
        let deadline = tokio::time::Instant::now() + WAIT;
        while subs() != 2 {
            assert!(
                tokio::time::Instant::now() < deadline,
                "{channel} never had 2 shard subscribers"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        a.chat(None, &format!("hello {room}")).await;
        assert_eq!(
            b.recv_type("chat").await["data"]["content"],
            format!("hello {room}")
        );
        b.chat(None, "back").await;
        assert_eq!(
            a.recv_type("chat").await["data"]["content"],
            format!("hello {room}")
        );
        assert_eq!(a.recv_type("chat").await["data"]["content"], "back");
        a.close().await;
        b.close().await;
        let deadline = tokio::time::Instant::now() + WAIT;
        while subs() != 0 {
            assert!(
                tokio::time::Instant::now() < deadline,
                "{channel} still subscribed after everyone left"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// Shutdown waits for what is still on its way through Redis: every message
/// the node accepted reaches every client before its Close 1001, even when
/// Redis holds the publishes back for a while.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_delivers_what_is_still_in_redis() {
    require_redis();
    const MESSAGES: usize = 300;
    let redis = Redis::start();
    let url = format!("broker.redis.url={}", redis.url());
    // The receivers read only once shutdown began and then get all 300 at
    // once: their queues must hold them.
    let server = crate::common::start(&[&url, "limits.queue_messages=1000"]);
    let node = server.node().clone();
    crate::common::eventually("broker ready", || node.broker.is_ready()).await;
    let mut receivers = Vec::new();
    for _ in 0..3 {
        receivers.push(connect_room(server.addr(), "r").await);
    }
    let mut sender = connect_room(server.addr(), "r").await;
    wait_numsub(&redis, "chatd:room:r", false, 1).await;
    // Redis holds every PUBLISH for a second: the messages are accepted by
    // the node but not back yet when shutdown begins.
    assert_eq!(
        redis.cli(&["CLIENT", "PAUSE", "1000", "WRITE"]).as_deref(),
        Some("OK")
    );
    for n in 0..MESSAGES {
        sender.chat(None, &n.to_string()).await;
    }
    crate::common::eventually("all read", || {
        node.metrics.messages_in.get() == MESSAGES as u64
    })
    .await;
    let shutdown = tokio::spawn(server.shutdown());
    for mut r in receivers {
        for n in 0..MESSAGES {
            assert_eq!(r.recv_type("chat").await["data"]["content"], n.to_string());
        }
        assert_eq!(r.expect_close().await, 1001);
    }
    assert!(shutdown.await.unwrap().drained);
}
