//! Several nodes sharing one history: two chatd processes on one database
//! (PostgreSQL, MariaDB, or the Redis they also use as their bus) and one
//! Redis. One sequence per room for both nodes, and every client on either
//! node gets the room's messages in `seq` order, with no gap and no
//! duplicate, also a client that catches up while both nodes keep sending.

use futures_util::SinkExt;
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message;

use crate::common::{connect, connect_room, Client};
use crate::redis_harness::{require_redis, two_ready_nodes, wait_numsub, Redis};

/// Sends `count` chats to room `r` without waiting for anything (so the
/// two nodes' groups interleave), then returns the client.
fn send_many(mut c: Client, tag: &'static str, count: u64) -> tokio::task::JoinHandle<Client> {
    tokio::spawn(async move {
        for n in 0..count {
            let chat = json!({"type":"chat","room":"r","data":{"content":format!("{tag}{n}")}});
            c.ws.send(Message::text(chat.to_string())).await.unwrap();
            if n % 10 == 0 {
                tokio::time::sleep(std::time::Duration::from_millis(2)).await;
            }
        }
        c
    })
}

/// The `seq`s of the chats `c` receives until it has `last` (and, with
/// `recovering`, the `recovered` message), and where `recovered` came, with
/// its value.
async fn chats_until(
    c: &mut Client,
    last: u64,
    recovering: bool,
) -> (Vec<u64>, Option<(usize, Value)>) {
    let mut seqs = Vec::new();
    let mut recovered = None;
    while seqs.last() != Some(&last) || (recovering && recovered.is_none()) {
        let m = c.recv().await;
        match m["type"].as_str() {
            Some("chat") => seqs.push(m["seq"].as_u64().expect("a stored chat has seq")),
            Some("system") if m["data"]["event"] == "recovered" => {
                recovered = Some((seqs.len(), m["data"]["recovered"].clone()))
            }
            _ => {}
        }
    }
    (seqs, recovered)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_on_one_postgres_and_redis_deliver_a_room_in_one_seq_order() {
    let pg = crate::pg_harness::PgDatabase::create();
    let url = format!("store.postgres.url={}", pg.url());
    two_nodes_deliver_a_room_in_one_seq_order(&["store.backend=postgres", &url]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_on_one_mariadb_and_redis_deliver_a_room_in_one_seq_order() {
    let my = crate::mysql_harness::MyDatabase::create();
    let url = format!("store.mysql.url={}", my.url());
    two_nodes_deliver_a_room_in_one_seq_order(&["store.backend=mysql", &url]).await;
}

/// The Redis store on the bus's own Redis (its default).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_on_one_redis_store_and_bus_deliver_a_room_in_one_seq_order() {
    two_nodes_deliver_a_room_in_one_seq_order(&["store.backend=redis"]).await;
}

async fn two_nodes_deliver_a_room_in_one_seq_order(store: &[&str]) {
    const EACH: u64 = 200;
    require_redis();
    let redis = Redis::start();
    let (n1, n2) = two_ready_nodes(&redis.url(), store).await;
    let mut watchers = vec![
        connect_room(n1.addr, "r").await,
        connect_room(n1.addr, "r").await,
        connect_room(n2.addr, "r").await,
        connect_room(n2.addr, "r").await,
    ];
    let s1 = connect_room(n1.addr, "r").await;
    let s2 = connect_room(n2.addr, "r").await;
    wait_numsub(&redis, "chatd:room:r", false, 2).await;

    let sending = [send_many(s1, "a", EACH), send_many(s2, "b", EACH)];
    // A client that joins node 2 mid-traffic and catches up from seq 0.
    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    let mut late = connect(n2.addr, "/ws/r?since_seq=0").await;

    let all: Vec<u64> = (1..=2 * EACH).collect();
    for w in &mut watchers {
        let (seqs, _) = chats_until(w, 2 * EACH, false).await;
        assert_eq!(seqs, all, "one order on both nodes, no gap, no duplicate");
    }
    let (seqs, recovered) = chats_until(&mut late, 2 * EACH, true).await;
    assert_eq!(
        seqs, all,
        "the catch-up and live traffic join without a gap"
    );
    let (_, complete) = recovered.expect("a recovered message");
    assert_eq!(complete, true);
    for s in sending {
        let mut sender = s.await.unwrap();
        // Each sender's acks: one per message, each with a seq of its own.
        let mut acked = Vec::new();
        while acked.len() < EACH as usize {
            let m = sender.recv().await;
            if m["type"] == "ack" {
                acked.push(m["data"]["seq"].as_u64().unwrap());
            }
        }
        assert!(acked.windows(2).all(|w| w[0] < w[1]), "{acked:?}");
    }
}
