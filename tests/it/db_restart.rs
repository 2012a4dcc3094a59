//! The database restarts under traffic: the store connects again by itself.
//! While the database is away, chats get `MESSAGE_FAILED` and `/readyz`
//! answers 503 `store not connected`; within seconds of it being back, chats
//! are acked again and `/readyz` is 200; nothing that was acked is lost.
//! On each server store: PostgreSQL, MariaDB, and the Redis store (a Redis
//! that keeps its data, as one holding history must).

use serde_json::{json, Value};
use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::time::Duration;

use crate::common::{connect_room, http_get, Client, WAIT};
use crate::mysql_harness::Mariadb;
use crate::pg_harness::Postgres;
use crate::redis_harness::{require_redis, Redis};

enum Database {
    Postgres(Postgres),
    Mariadb(Mariadb),
    Redis(Redis),
}

impl Database {
    fn settings(&self) -> Vec<String> {
        match self {
            Database::Postgres(pg) => vec![
                "store.backend=postgres".into(),
                format!("store.postgres.url={}", pg.url()),
            ],
            Database::Mariadb(my) => vec![
                "store.backend=mysql".into(),
                format!("store.mysql.url={}", my.url()),
            ],
            Database::Redis(redis) => vec![
                "store.backend=redis".into(),
                format!("store.redis.url={}", redis.url()),
            ],
        }
    }

    fn stop(&mut self) {
        match self {
            Database::Postgres(pg) => pg.stop(),
            Database::Mariadb(my) => my.stop(),
            Database::Redis(redis) => redis.kill(),
        }
    }

    fn start_again(&mut self) {
        match self {
            Database::Postgres(pg) => pg.start_again(),
            Database::Mariadb(my) => my.start_again(),
            Database::Redis(redis) => redis.start_again(),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_postgres_restart_under_traffic_is_survived() {
    restart_under_traffic(Database::Postgres(Postgres::start())).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mariadb_restart_under_traffic_is_survived() {
    restart_under_traffic(Database::Mariadb(Mariadb::start())).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_store_restart_under_traffic_is_survived() {
    require_redis();
    restart_under_traffic(Database::Redis(Redis::start_durable())).await;
}

/// `/readyz`'s status, until it is `want` (10 s at most).
async fn ready_becomes(addr: SocketAddr, want: u16) -> String {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let (status, body) = http_get(addr, "/readyz").await;
        if status == want {
            return body;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "/readyz stayed {status} {body}, never {want}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Sends chat `k{n}` and reads until it is answered: its `seq` if acked.
async fn chat(c: &mut Client, n: u32) -> Option<u64> {
    let id = format!("k{n}");
    c.send_json(json!({"type":"chat","room":"r","client_msg_id":id,"data":{"content":id}}))
        .await;
    loop {
        let m = c.recv().await;
        let about_it = m["data"]["client_msg_id"] == id.as_str();
        match m["type"].as_str() {
            Some("ack") if about_it => return Some(m["data"]["seq"].as_u64().unwrap()),
            Some("error") if about_it => {
                assert_eq!(m["data"]["code"], "MESSAGE_FAILED", "{m}");
                return None;
            }
            _ => {}
        }
    }
}

async fn restart_under_traffic(mut db: Database) {
    let settings = db.settings();
    let refs: Vec<&str> = settings.iter().map(String::as_str).collect();
    let server = crate::common::start(&refs);
    let addr = server.addr();
    let mut sender = connect_room(addr, "r").await;
    let mut acked = BTreeSet::new();
    let mut n = 0;
    for _ in 0..20 {
        n += 1;
        acked.insert(chat(&mut sender, n).await.expect("acked while up"));
    }
    db.stop();
    // Chats fail (never hang), and readiness says why.
    let body = ready_becomes(addr, 503).await;
    assert!(body.contains("store not connected"), "{body}");
    for _ in 0..5 {
        n += 1;
        if let Some(seq) = chat(&mut sender, n).await {
            acked.insert(seq);
        }
    }
    db.start_again();
    let back = tokio::time::Instant::now();
    ready_becomes(addr, 200).await;
    // Acked again within seconds of the database being back.
    loop {
        n += 1;
        if let Some(seq) = chat(&mut sender, n).await {
            acked.insert(seq);
            break;
        }
        assert!(back.elapsed() < WAIT, "no chat acked after the restart");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for _ in 0..10 {
        n += 1;
        acked.insert(chat(&mut sender, n).await.expect("acked once back"));
    }
    // Nothing acked is lost: every acked seq is in the history.
    let (status, body) = http_get(addr, "/api/chat-api/rooms/r/messages?limit=100").await;
    assert_eq!(status, 200, "{body}");
    let page: Value = serde_json::from_str(&body).unwrap();
    let stored: BTreeSet<u64> = page["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["seq"].as_u64().unwrap())
        .collect();
    let lost: Vec<_> = acked.difference(&stored).collect();
    assert!(lost.is_empty(), "acked and lost: {lost:?}");
    let samples = crate::metrics::scrape(server.metrics_addr().unwrap()).await;
    assert!(
        samples
            .get("chatd_store_reconnects_total")
            .copied()
            .unwrap_or(0.0)
            >= 1.0
    );
    server.shutdown().await;
}
