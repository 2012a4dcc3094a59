//! Accounts across nodes: two chatd processes on one PostgreSQL and one
//! Redis. A removal from a group, notifications and server publishes reach
//! the other node at once; a node killed with `kill -9` takes its users
//! offline within the presence lease.

use serde_json::{json, Value};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use crate::common::{connect, http_json, Client};
use crate::redis_harness::{require_redis, two_ready_nodes, Chatd, Redis};

const SECRET: &str = "nodes-test-secret-nodes-test-secret-x";

/// Settings every node of a test shares.
fn settings(pg_url: &str) -> Vec<String> {
    vec![
        "store.backend=postgres".into(),
        format!("store.postgres.url={pg_url}"),
        format!("auth.jwt_secret={SECRET}"),
        "auth.argon2.memory_kib=1024".into(),
        "auth.argon2.iterations=1".into(),
        "presence.lease=3s".into(),
        "api.keys=[\"node-key\"]".into(),
    ]
}

async fn user(addr: SocketAddr, name: &str) -> (String, String) {
    crate::common::register_and_login(addr, name, "password-1").await
}

/// A user's WebSocket (greeting and notification channel consumed).
async fn ws(addr: SocketAddr, token: &str) -> Client {
    let mut c = connect(addr, &format!("/ws?token={token}")).await;
    assert_eq!(c.recv_type("system").await["data"]["event"], "joined");
    c
}

/// Two nodes on one Redis and one PostgreSQL database (kept while the
/// returned handles live).
async fn two_nodes() -> ((Redis, crate::pg_harness::PgDatabase), Chatd, Chatd) {
    require_redis();
    let redis = Redis::start();
    let pg = crate::pg_harness::PgDatabase::create();
    let settings = settings(&pg.url());
    let extra: Vec<&str> = settings.iter().map(String::as_str).collect();
    let (n1, n2) = two_ready_nodes(&redis.url(), &extra).await;
    ((redis, pg), n1, n2)
}

async fn online(addr: SocketAddr, id: &str) -> bool {
    let (_, users) = http_json(addr, "GET", "/api/chat-api/users", None, None).await;
    let users: Vec<Value> = users.as_array().unwrap().clone();
    users.iter().any(|u| u["id"] == id && u["online"] == true)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn removal_notifications_and_server_publish_cross_nodes_at_once() {
    let ((redis, _pg), n1, n2) = two_nodes().await;
    let (_, alice_token) = user(n1.addr, "alice").await;
    let (bob, bob_token) = user(n2.addr, "bob").await;
    // Bob on both nodes; alice on node 1.
    let mut b1 = ws(n1.addr, &bob_token).await;
    let mut b2 = ws(n2.addr, &bob_token).await;
    let (_, group) = http_json(
        n1.addr,
        "POST",
        "/api/chat-api/groups",
        Some(&alice_token),
        Some(json!({"name":"g"})),
    )
    .await;
    let id = group["id"].as_str().unwrap().to_owned();
    let members = format!("/api/chat-api/groups/{id}/members");
    let (status, _) = http_json(
        n1.addr,
        "POST",
        &members,
        Some(&alice_token),
        Some(json!({"user_id":bob})),
    )
    .await;
    assert_eq!(status, 200);
    for b in [&mut b1, &mut b2] {
        assert_eq!(
            b.recv_type("notification").await["data"]["event"],
            "group_added"
        );
    }
    let mut a = ws(n1.addr, &alice_token).await;
    a.join(&id).await;
    b2.join(&id).await;
    crate::common::eventually_async("both nodes subscribed", || async {
        redis
            .cli(&["PUBSUB", "NUMSUB", &format!("chatd:room:{id}")])
            .unwrap_or_default()
            .lines()
            .nth(1)
            == Some("2")
    })
    .await;
    a.chat(Some(&id), "before").await;
    assert_eq!(b2.recv_type("chat").await["data"]["content"], "before");
    // Removed on node 1's REST: bob on node 2 is told and hears no more.
    let (status, _) = http_json(
        n1.addr,
        "DELETE",
        &format!("{members}/{bob}"),
        Some(&alice_token),
        None,
    )
    .await;
    assert_eq!(status, 204);
    let removed = b2.recv_type("system").await;
    assert_eq!(removed["data"]["event"], "removed", "{removed}");
    a.chat(Some(&id), "after").await;
    a.recv_type("chat").await;
    b2.send_json(json!({"type":"ping"})).await;
    loop {
        let m = b2.recv().await;
        if m["type"] == "chat" {
            panic!("a removed member got {m}");
        }
        if m["type"] == "pong" {
            break;
        }
    }
    // A server publish on node 2 reaches a room on node 1, and is stored.
    let mut news = connect(n1.addr, "/ws/news").await;
    news.recv_type("system").await;
    crate::common::eventually_async("news subscribed", || async {
        redis
            .cli(&["PUBSUB", "NUMSUB", "chatd:room:news"])
            .unwrap_or_default()
            .lines()
            .nth(1)
            == Some("1")
    })
    .await;
    let publish = json!({"room":"news","type":"chat","data":{"content":"from the backend"}});
    let (status, _) = http_json(
        n2.addr,
        "POST",
        "/api/chat-api/server/publish",
        Some("node-key"),
        Some(publish),
    )
    .await;
    assert_eq!(status, 202);
    assert_eq!(
        news.recv_type("chat").await["data"]["content"],
        "from the backend"
    );
    let (_, page) = http_json(
        n1.addr,
        "GET",
        "/api/chat-api/rooms/news/messages",
        None,
        None,
    )
    .await;
    assert_eq!(page["messages"][0]["data"]["content"], "from the backend");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_killed_with_kill_9_takes_its_users_offline_within_the_lease() {
    require_redis();
    let redis = Redis::start();
    let pg = crate::pg_harness::PgDatabase::create();
    let settings = settings(&pg.url());
    let extra: Vec<&str> = settings.iter().map(String::as_str).collect();
    let n1 = Chatd::start(&redis.url(), &extra).await;
    let n2 = Chatd::start(&redis.url(), &extra).await;
    n1.wait_ready().await;
    n2.wait_ready().await;
    let (_, alice_token) = user(n1.addr, "alice").await;
    let (bob, bob_token) = user(n2.addr, "bob").await;
    let mut a = ws(n1.addr, &alice_token).await;
    a.join("lobby").await;
    let mut b = ws(n2.addr, &bob_token).await;
    b.join("lobby").await;
    crate::common::eventually_async("node 1 sees bob online", || online(n1.addr, &bob)).await;
    n2.kill_9().await;
    let killed = Instant::now();
    // Presence offline for bob in the room alice shares with him.
    loop {
        let m = a.recv().await;
        if m["type"] == "presence" && m["from"] == bob.as_str() && m["data"]["status"] == "offline"
        {
            break;
        }
    }
    assert!(!online(n1.addr, &bob).await);
    // The requirement itself (not a speed measurement): within the lease.
    let took = killed.elapsed();
    assert!(
        took < Duration::from_secs(3),
        "offline after {took:?} (lease 3s)"
    );
    drop(b);
}

/// A password change on one node closes the user's sockets on every node
/// (4001): they were opened with the tokens it revoked.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_password_change_closes_the_user_s_sockets_on_every_node() {
    let (_servers, n1, n2) = two_nodes().await;
    let (_, token) = user(n1.addr, "carol").await;
    let (_, other) = user(n1.addr, "dave").await;
    let mut here = ws(n1.addr, &token).await;
    let mut there = ws(n2.addr, &token).await;
    let mut bystander = ws(n2.addr, &other).await;
    let body = json!({"old_password":"password-1","new_password":"password-2"});
    let (status, _) = http_json(
        n1.addr,
        "POST",
        "/api/chat-api/me/password",
        Some(&token),
        Some(body),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(here.expect_close().await, 4001);
    assert_eq!(there.expect_close().await, 4001);
    // Another user's socket stays.
    bystander.send_json(json!({"type":"join","room":"r"})).await;
    assert_eq!(
        bystander.recv_type("system").await["data"]["event"],
        "joined"
    );
}

/// Logging out on one node closes that session's sockets on every node
/// (4001), and only that session's: the user's other login goes on there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_logout_closes_that_session_s_sockets_on_every_node() {
    let (_servers, n1, n2) = two_nodes().await;
    let (_, token) = user(n1.addr, "erin").await;
    let body = json!({"username":"erin","password":"password-1"});
    let (status, second) = http_json(
        n2.addr,
        "POST",
        "/api/chat-api/auth/login",
        None,
        Some(body),
    )
    .await;
    assert_eq!(status, 200, "{second}");
    let second = second["token"].as_str().unwrap().to_owned();
    let mut there = ws(n2.addr, &token).await;
    let mut other_session = ws(n2.addr, &second).await;
    let (status, _) = http_json(
        n1.addr,
        "POST",
        "/api/chat-api/auth/logout",
        Some(&token),
        None,
    )
    .await;
    assert_eq!(status, 204);
    assert_eq!(there.expect_close().await, 4001);
    other_session
        .send_json(json!({"type":"join","room":"r"}))
        .await;
    assert_eq!(
        other_session.recv_type("system").await["data"]["event"],
        "joined"
    );
    let (status, _) = http_json(n2.addr, "GET", "/api/chat-api/me", Some(&token), None).await;
    assert_eq!(status, 401, "the other node refuses the token too");
}
