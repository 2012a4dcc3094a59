//! Durable history on every store (SQLite, PostgreSQL, MySQL, Redis): acks
//! after commit, per-room `seq`, idempotent send, history pages over the
//! WebSocket and REST, recovery, retention, restarts and `kill -9`. Every
//! test runs against each backend, each with a database of its own (a file;
//! a database on the run's real PostgreSQL or MariaDB server on loopback; a
//! Redis server of its own).

use serde_json::{json, Value};
use std::path::PathBuf;

use crate::common::{
    chatd_command, connect_room, http_get, refused_start, spawn_chatd, start, Client,
};

/// A fresh database path in a temp directory of its own.
fn db_path(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("chatd-store-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir.join("chatd.db")
}

/// A fresh database for one test: an SQLite file, a database of its own on
/// the run's PostgreSQL or MariaDB server, or a Redis server of its own.
pub enum Db {
    Sqlite(PathBuf),
    Postgres(crate::pg_harness::PgDatabase),
    Mysql(crate::mysql_harness::MyDatabase),
    Redis(crate::redis_harness::Redis),
}

impl Db {
    pub fn sqlite(name: &str) -> Db {
        Db::Sqlite(db_path(name))
    }

    pub fn postgres(_name: &str) -> Db {
        Db::Postgres(crate::pg_harness::PgDatabase::create())
    }

    pub fn mysql(_name: &str) -> Db {
        Db::Mysql(crate::mysql_harness::MyDatabase::create())
    }

    pub fn redis(_name: &str) -> Db {
        crate::redis_harness::require_redis();
        Db::Redis(crate::redis_harness::Redis::start())
    }

    pub fn overrides(&self) -> [String; 2] {
        match self {
            Db::Sqlite(path) => store_overrides(path),
            Db::Postgres(pg) => [
                "store.backend=postgres".into(),
                format!("store.postgres.url={}", pg.url()),
            ],
            Db::Mysql(my) => [
                "store.backend=mysql".into(),
                format!("store.mysql.url={}", my.url()),
            ],
            Db::Redis(redis) => [
                "store.backend=redis".into(),
                format!("store.redis.url={}", redis.url()),
            ],
        }
    }
}

/// An SQLite test's directory goes with it (the servers' harnesses remove
/// their own).
impl Drop for Db {
    fn drop(&mut self) {
        if let Db::Sqlite(path) = self {
            if let Some(dir) = path.parent() {
                let _ = std::fs::remove_dir_all(dir);
            }
        }
    }
}

impl Db {
    /// Where uploaded files go with `files.backend: local` (beside the
    /// database, in the test's own temp directory).
    pub fn files_dir(&self) -> PathBuf {
        match self {
            Db::Sqlite(path) => path.with_file_name("files"),
            Db::Postgres(pg) => pg.dir().join("files"),
            Db::Mysql(my) => my.dir().join("files"),
            Db::Redis(redis) => redis.dir().join("files"),
        }
    }

    /// A server on this database with cheap password hashing (tests, not
    /// production parameters), plus `extra` settings.
    pub fn server(&self, extra: &[&str]) -> chatd::Server {
        let o = self.overrides();
        let files = format!("files.path={}", self.files_dir().display());
        let mut all = vec![
            o[0].as_str(),
            o[1].as_str(),
            "auth.argon2.memory_kib=1024",
            "auth.argon2.iterations=1",
            files.as_str(),
        ];
        all.extend_from_slice(extra);
        start(&all)
    }
}

/// Every store test, once per backend (`<test>::sqlite`, `<test>::postgres`,
/// `<test>::mysql`, `<test>::redis`).
macro_rules! on_every_store {
    ($($name:ident),* $(,)?) => {$(
        mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                super::$name(super::Db::sqlite).await
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() {
                super::$name(super::Db::postgres).await
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn mysql() {
                super::$name(super::Db::mysql).await
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn redis() {
                super::$name(super::Db::redis).await
            }
        }
    )*};
}

on_every_store!(
    acks_carry_seq_after_commit_and_history_pages_newest_first,
    a_retry_with_the_same_client_msg_id_is_acked_again_and_stored_once,
    a_restart_keeps_history_and_continues_seq,
    kill_9_after_acks_loses_no_acked_message,
    a_full_store_queue_answers_message_failed,
    join_with_since_seq_recovers_without_gap_or_duplicate_during_traffic,
    recovery_edges_nothing_missed_too_much_missed_and_no_store,
    retention_keeps_the_newest_and_recovery_says_what_is_gone,
);

fn store_overrides(path: &std::path::Path) -> [String; 2] {
    [
        "store.backend=sqlite".into(),
        format!("store.sqlite.path={}", path.display()),
    ]
}

/// A client with a fixed id in room `r`, so that a reconnect is the same
/// sender (idempotency is per sender).
async fn alice(addr: std::net::SocketAddr) -> Client {
    let mut c = crate::common::connect(addr, "/ws/r?client_id=alice").await;
    assert_eq!(c.recv_type("system").await["data"]["event"], "joined");
    c
}

/// Posts chats `m{n}` (client_msg_id `k{n}`) to room `r` for each `n`,
/// one at a time, each acked before the next.
async fn post_acked(c: &mut Client, ns: std::ops::RangeInclusive<u64>) {
    for n in ns {
        chat_with_id(c, "r", &format!("m{n}"), &format!("k{n}")).await;
        c.recv_type("ack").await;
    }
}

async fn chat_with_id(c: &mut Client, room: &str, content: &str, id: &str) {
    c.send_json(json!({"type":"chat","room":room,"client_msg_id":id,"data":{"content":content}}))
        .await;
}

async fn acks_carry_seq_after_commit_and_history_pages_newest_first(new_db: fn(&str) -> Db) {
    let db = new_db("acks");
    let overrides = db.overrides();
    let server = start(&[&overrides[0], &overrides[1]]);
    let mut a = connect_room(server.addr(), "r").await;
    let mut b = connect_room(server.addr(), "r").await;
    for n in 1..=15 {
        chat_with_id(&mut a, "r", &format!("m{n}"), &format!("id-{n}")).await;
        let ack = a.recv_type("ack").await;
        assert_eq!(ack["room"], "r");
        assert_eq!(ack["data"]["client_msg_id"], format!("id-{n}"));
        assert_eq!(ack["data"]["seq"], n);
        let live = b.recv_type("chat").await;
        assert_eq!(live["seq"], n, "live envelopes carry seq");
        assert_eq!(live["id"], ack["data"]["id"]);
        // The sender's own id for it travels with it (and is stored).
        assert_eq!(live["data"]["client_msg_id"], format!("id-{n}"));
    }
    // Over the WebSocket: default limit 10, newest first, then the page before.
    b.send_json(json!({"type":"history","room":"r"})).await;
    let page = b.recv_type("history").await;
    let seqs: Vec<u64> = page["data"]["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["seq"].as_u64().unwrap())
        .collect();
    assert_eq!(seqs, (6..=15).rev().collect::<Vec<_>>());
    assert_eq!(page["data"]["messages"][0]["data"]["content"], "m15");
    assert_eq!(
        page["data"]["messages"][0]["data"]["client_msg_id"],
        "id-15"
    );
    b.send_json(json!({"type":"history","room":"r","data":{"before_seq":6,"limit":100}}))
        .await;
    let older = b.recv_type("history").await;
    assert_eq!(older["data"]["messages"].as_array().unwrap().len(), 5);
    b.send_json(json!({"type":"history","room":"r","data":{"limit":101}}))
        .await;
    let refused = b.recv_type("error").await;
    assert_eq!(refused["data"]["code"], "VALIDATION");
    // Over REST, the same envelopes.
    let (status, body) = http_get(server.addr(), "/api/chat-api/rooms/r/messages?limit=3").await;
    assert_eq!(status, 200, "{body}");
    let rest: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(rest["room"], "r");
    assert_eq!(rest["messages"][0], page["data"]["messages"][0]);
    assert_eq!(rest["messages"].as_array().unwrap().len(), 3);
    let (status, body) = http_get(server.addr(), "/api/chat-api/rooms/r/messages?limit=101").await;
    assert_eq!(status, 400, "{body}");
    let (status, _) = http_get(server.addr(), "/api/chat-api/rooms/r/messages?before_seq=x").await;
    assert_eq!(status, 400);
    let store = &server.node().metrics.store;
    assert_eq!(store.stored.get(), 15);
    assert_eq!(store.errors.get(), 0);
    server.shutdown().await;
}

async fn a_retry_with_the_same_client_msg_id_is_acked_again_and_stored_once(
    new_db: fn(&str) -> Db,
) {
    let db = new_db("retry");
    let overrides = db.overrides();
    let server = start(&[&overrides[0], &overrides[1]]);
    let mut a = alice(server.addr()).await;
    let mut b = connect_room(server.addr(), "r").await;
    chat_with_id(&mut a, "r", "once", "k1").await;
    let first = a.recv_type("ack").await;
    chat_with_id(&mut a, "r", "once", "k1").await;
    // Twice in one group too (no wait between).
    chat_with_id(&mut a, "r", "twice", "k2").await;
    chat_with_id(&mut a, "r", "twice", "k2").await;
    let again = a.recv_type("ack").await;
    assert_eq!(again["data"], first["data"], "the original ack");
    let k2a = a.recv_type("ack").await;
    let k2b = a.recv_type("ack").await;
    assert_eq!(k2a["data"], k2b["data"]);
    assert_eq!(k2a["data"]["seq"], 2);
    // The other member got each message once.
    assert_eq!(b.recv_type("chat").await["data"]["content"], "once");
    assert_eq!(b.recv_type("chat").await["data"]["content"], "twice");
    // After a reconnect, still the original.
    a.close().await;
    let mut a = alice(server.addr()).await;
    chat_with_id(&mut a, "r", "once", "k1").await;
    assert_eq!(a.recv_type("ack").await["data"], first["data"]);
    let (_, body) = http_get(server.addr(), "/api/chat-api/rooms/r/messages").await;
    let rest: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(rest["messages"].as_array().unwrap().len(), 2);
    server.shutdown().await;
}

async fn a_restart_keeps_history_and_continues_seq(new_db: fn(&str) -> Db) {
    let db = new_db("restart");
    let overrides = db.overrides();
    let server = start(&[&overrides[0], &overrides[1]]);
    let mut a = alice(server.addr()).await;
    for n in 1..=3 {
        chat_with_id(&mut a, "r", &format!("before {n}"), &format!("b{n}")).await;
        a.recv_type("ack").await;
    }
    server.shutdown().await;
    let server = start(&[&overrides[0], &overrides[1]]);
    let mut a = alice(server.addr()).await;
    chat_with_id(&mut a, "r", "after", "a1").await;
    assert_eq!(a.recv_type("ack").await["data"]["seq"], 4);
    // A retry from before the restart is still recognised.
    chat_with_id(&mut a, "r", "before 2", "b2").await;
    assert_eq!(a.recv_type("ack").await["data"]["seq"], 2);
    let (_, body) = http_get(server.addr(), "/api/chat-api/rooms/r/messages").await;
    let rest: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(rest["messages"].as_array().unwrap().len(), 4);
    server.shutdown().await;
}

/// The real binary, killed with SIGKILL right after the last ack: every
/// acked message is in the history after a restart.
async fn kill_9_after_acks_loses_no_acked_message(new_db: fn(&str) -> Db) {
    const N: usize = 200;
    let db = new_db("kill9");
    let overrides = db.overrides();
    let start_binary = || {
        let mut cmd = chatd_command();
        cmd.args(["--set", &overrides[0], "--set", &overrides[1]]);
        cmd
    };
    let (mut child, addr) = spawn_chatd(&mut start_binary()).await;
    let mut a = connect_room(addr, "r").await;
    for n in 0..N {
        chat_with_id(&mut a, "r", &format!("m{n}"), &format!("k{n}")).await;
    }
    for _ in 0..N {
        a.recv_type("ack").await;
    }
    child.start_kill().unwrap();
    child.wait().await.unwrap();
    let (_child, addr) = spawn_chatd(&mut start_binary()).await;
    let mut seen = 0;
    let mut before = String::new();
    loop {
        let (status, body) = http_get(
            addr,
            &format!("/api/chat-api/rooms/r/messages?limit=100{before}"),
        )
        .await;
        assert_eq!(status, 200, "{body}");
        let page: Value = serde_json::from_str(&body).unwrap();
        let messages = page["messages"].as_array().unwrap();
        if messages.is_empty() {
            break;
        }
        seen += messages.len();
        let oldest = messages.last().unwrap()["seq"].as_u64().unwrap();
        before = format!("&before_seq={oldest}");
    }
    assert_eq!(seen, N);
}

/// A store queue of 1 and 50 chats in one write: every chat is answered,
/// either acked or refused with MESSAGE_FAILED (never silence).
async fn a_full_store_queue_answers_message_failed(new_db: fn(&str) -> Db) {
    use futures_util::SinkExt;
    let db = new_db("full");
    let overrides = db.overrides();
    let server = start(&[&overrides[0], &overrides[1], "store.max_pending=1"]);
    let mut a = alice(server.addr()).await;
    for n in 0..50 {
        let chat = json!({"type":"chat","room":"r","client_msg_id":format!("f{n}"),"data":{"content":"x"}});
        a.ws.feed(tokio_tungstenite::tungstenite::Message::text(
            chat.to_string(),
        ))
        .await
        .unwrap();
    }
    a.ws.flush().await.unwrap();
    let (mut acked, mut failed) = (0, 0);
    while acked + failed < 50 {
        let m = a.recv().await;
        match m["type"].as_str() {
            Some("ack") => acked += 1,
            Some("error") => {
                assert_eq!(m["data"]["code"], "MESSAGE_FAILED", "{m}");
                assert!(m["data"]["client_msg_id"].is_string(), "{m}");
                failed += 1;
            }
            _ => {}
        }
    }
    assert!(failed > 0, "the queue of 1 overflowed");
    assert!(acked > 0);
    let store = &server.node().metrics.store;
    assert_eq!((store.stored.get(), store.errors.get()), (acked, failed));
    server.shutdown().await;
}

/// With no store settings at all, the binary keeps history in SQLite at
/// `data/chatd.db` under its working directory, and a restart keeps it.
#[tokio::test]
async fn the_default_store_is_an_sqlite_file_in_data() {
    let dir = std::env::temp_dir().join(format!("chatd-store-{}-default", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let binary = || {
        let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_chatd"));
        cmd.current_dir(&dir);
        cmd
    };
    let (mut child, addr) = spawn_chatd(&mut binary()).await;
    let mut a = alice(addr).await;
    post_acked(&mut a, 1..=3).await;
    child.start_kill().unwrap();
    child.wait().await.unwrap();
    assert!(dir.join("data/chatd.db").is_file());
    let (mut child, addr) = spawn_chatd(&mut binary()).await;
    let (status, body) = http_get(addr, "/api/chat-api/rooms/r/messages").await;
    assert_eq!(status, 200, "{body}");
    let page: Value = serde_json::from_str(&body).unwrap();
    let seqs: Vec<u64> = page["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["seq"].as_u64().unwrap())
        .collect();
    assert_eq!(seqs, [3, 2, 1]);
    child.start_kill().unwrap();
    child.wait().await.unwrap();
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn an_unreachable_postgres_stops_the_start_naming_the_key() {
    let url = format!(
        "store.postgres.url=postgres://postgres@127.0.0.1:{}/postgres",
        crate::redis_harness::free_port()
    );
    let stderr = refused_start(
        tokio::process::Command::new(env!("CARGO_BIN_EXE_chatd"))
            .args(["--port", "0", "--set", "metrics.enabled=false"])
            .args(["--set", "store.backend=postgres", "--set", &url]),
    )
    .await;
    assert!(stderr.contains("store.postgres.url"), "{stderr}");
}

#[tokio::test]
async fn an_unusable_database_path_stops_the_start_naming_the_key() {
    // A directory where the file should be.
    let dir = std::env::temp_dir().join(format!("chatd-store-{}-isdir", std::process::id()));
    std::fs::create_dir_all(dir.join("chatd.db")).unwrap();
    let stderr = refused_start(
        tokio::process::Command::new(env!("CARGO_BIN_EXE_chatd"))
            .args(["--port", "0", "--set", "metrics.enabled=false"])
            .args(["--set", "store.backend=sqlite", "--set"])
            .arg(format!(
                "store.sqlite.path={}",
                dir.join("chatd.db").display()
            )),
    )
    .await;
    assert!(stderr.contains("store.sqlite.path"), "{stderr}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// A member joins with `since_seq` while another keeps posting: it gets
/// exactly the messages after `since_seq`, in order, then the live ones, with
/// no gap and no duplicate.
async fn join_with_since_seq_recovers_without_gap_or_duplicate_during_traffic(
    new_db: fn(&str) -> Db,
) {
    use futures_util::SinkExt;
    const TOTAL: u64 = 300;
    let db = new_db("recover");
    let overrides = db.overrides();
    let server = start(&[&overrides[0], &overrides[1]]);
    let addr = server.addr();
    let mut sender = alice(addr).await;
    post_acked(&mut sender, 1..=30).await;
    let sending = tokio::spawn(async move {
        for n in 31..=TOTAL {
            let chat = json!({"type":"chat","room":"r","data":{"content":format!("m{n}")}});
            sender
                .ws
                .send(tokio_tungstenite::tungstenite::Message::text(
                    chat.to_string(),
                ))
                .await
                .unwrap();
            if n % 10 == 0 {
                tokio::time::sleep(std::time::Duration::from_millis(2)).await;
            }
        }
        sender
    });
    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    let mut late = crate::common::connect(addr, "/ws/r?since_seq=10").await;
    let mut seqs = Vec::new();
    let mut recovered = None;
    while seqs.last() != Some(&TOTAL) {
        let m = late.recv().await;
        match m["type"].as_str() {
            Some("chat") => seqs.push(m["seq"].as_u64().unwrap()),
            Some("system") if m["data"]["event"] == "recovered" => {
                recovered = Some((m["data"]["recovered"].clone(), seqs.len()))
            }
            _ => {}
        }
    }
    assert_eq!(
        seqs,
        (11..=TOTAL).collect::<Vec<_>>(),
        "no gap, no duplicate"
    );
    let (complete, at) = recovered.expect("a recovered message");
    assert_eq!(complete, true);
    assert!(at >= 20, "the catch-up (11..=30 at least) came before it");
    sending.await.unwrap().close().await;
    server.shutdown().await;
}

async fn recovery_edges_nothing_missed_too_much_missed_and_no_store(new_db: fn(&str) -> Db) {
    let db = new_db("edges");
    let overrides = db.overrides();
    let server = start(&[&overrides[0], &overrides[1], "store.max_recover=5"]);
    let mut a = alice(server.addr()).await;
    post_acked(&mut a, 1..=10).await;
    let mut b = crate::common::connect(server.addr(), "/ws").await;
    // Up to date: nothing to replay.
    b.send_json(json!({"type":"join","room":"r","data":{"since_seq":10}}))
        .await;
    let done = b.recv_type("system").await;
    let done = if done["data"]["event"] == "joined" {
        b.recv_type("system").await
    } else {
        done
    };
    assert_eq!(done["data"]["event"], "recovered");
    assert_eq!(done["data"]["recovered"], true);
    // More missed than store.max_recover: not replayed; page the history.
    let mut c = crate::common::connect(server.addr(), "/ws").await;
    c.send_json(json!({"type":"join","room":"r","data":{"since_seq":0}}))
        .await;
    loop {
        let m = c.recv().await;
        assert_ne!(m["type"], "chat", "nothing replayed: {m}");
        if m["data"]["event"] == "recovered" {
            assert_eq!(m["data"]["recovered"], false);
            assert_eq!(m["data"]["oldest_seq"], 1);
            break;
        }
    }
    server.shutdown().await;
    // No store: joined, then recovered:false.
    let plain = start(&[]);
    let mut d = crate::common::connect(plain.addr(), "/ws/r?since_seq=3").await;
    assert_eq!(d.recv_type("system").await["data"]["event"], "joined");
    let m = d.recv_type("system").await;
    assert_eq!(
        (
            m["data"]["event"].as_str(),
            m["data"]["recovered"].as_bool()
        ),
        (Some("recovered"), Some(false))
    );
    plain.shutdown().await;
}

/// How many of room `r`'s messages the newest history page holds.
async fn kept(addr: std::net::SocketAddr) -> usize {
    let (_, body) = http_get(addr, "/api/chat-api/rooms/r/messages").await;
    let page: Value = serde_json::from_str(&body).unwrap();
    page["messages"].as_array().unwrap().len()
}

/// Retention: per room only the newest `max_messages` stay, and old ones go
/// (but a room's newest message always stays, so its numbering continues).
/// A catch-up from before what is kept says so.
async fn retention_keeps_the_newest_and_recovery_says_what_is_gone(new_db: fn(&str) -> Db) {
    let db = new_db("retention");
    let overrides = db.overrides();
    let server = start(&[
        &overrides[0],
        &overrides[1],
        "store.retention.max_messages=3",
        "store.retention.interval=50ms",
    ]);
    let mut a = alice(server.addr()).await;
    post_acked(&mut a, 1..=6).await;
    let addr = server.addr();
    crate::common::eventually_async("only 3 kept", || async { kept(addr).await == 3 }).await;
    let mut b = crate::common::connect(server.addr(), "/ws/r?since_seq=1").await;
    let m = loop {
        let m = b.recv_type("system").await;
        if m["data"]["event"] == "recovered" {
            break m;
        }
    };
    assert_eq!(m["data"]["recovered"], false);
    assert_eq!(m["data"]["oldest_seq"], 4);
    chat_with_id(&mut a, "r", "m7", "k7").await;
    assert_eq!(a.recv_type("ack").await["data"]["seq"], 7);
    server.shutdown().await;

    // By age: everything but each room's newest message.
    let db = new_db("retention-age");
    let overrides = db.overrides();
    let server = start(&[
        &overrides[0],
        &overrides[1],
        "store.retention.max_age=300ms",
        "store.retention.interval=50ms",
    ]);
    let mut a = alice(server.addr()).await;
    post_acked(&mut a, 1..=3).await;
    let addr = server.addr();
    crate::common::eventually_async("aged out", || async { kept(addr).await == 1 }).await;
    server.shutdown().await;
    let server = start(&[&overrides[0], &overrides[1]]);
    let mut a = alice(server.addr()).await;
    chat_with_id(&mut a, "r", "m4", "k4").await;
    assert_eq!(
        a.recv_type("ack").await["data"]["seq"],
        4,
        "numbering continues"
    );
    server.shutdown().await;
}
