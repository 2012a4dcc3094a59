//! Guessing passwords and making accounts are bounded (`auth.throttle`):
//! failed logins per account and per address, new accounts per address
//! (REST, the demo, FastChat), answered `429 RATE_LIMITED` with
//! `Retry-After` before any password is hashed, while an innocent client
//! from another address logs in as usual; and the password-hash queue is
//! bounded (`503` at once beyond it, not a wait that grows).

use serde_json::{json, Value};
use std::net::SocketAddr;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpSocket;

use crate::common::{connect_raw, http_json, register_and_login, WAIT};
use crate::store::Db;

/// One JSON request from the loopback address `from`: (status, the
/// `Retry-After` header, the body).
async fn post_from(
    from: &str,
    addr: SocketAddr,
    path: &str,
    body: Value,
) -> (u16, Option<u64>, Value) {
    let socket = TcpSocket::new_v4().unwrap();
    socket.bind(format!("{from}:0").parse().unwrap()).unwrap();
    let mut s = socket.connect(addr).await.unwrap();
    let body = body.to_string();
    let req = format!(
        "POST {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).await.unwrap();
    let mut raw = String::new();
    tokio::time::timeout(WAIT, s.read_to_string(&mut raw))
        .await
        .expect("an answer in time")
        .unwrap();
    let (head, body) = raw.split_once("\r\n\r\n").expect("a whole answer");
    let status = head.split(' ').nth(1).unwrap().parse().unwrap();
    let retry = head
        .lines()
        .find_map(|l| {
            l.to_ascii_lowercase()
                .strip_prefix("retry-after: ")
                .map(str::to_owned)
        })
        .map(|v| v.trim().parse().unwrap());
    (
        status,
        retry,
        serde_json::from_str(body).unwrap_or(Value::Null),
    )
}

fn server(db: &Db, extra: &[&str]) -> chatd::Server {
    db.server(extra)
}

fn db(name: &str) -> Db {
    Db::sqlite(&format!("throttle-{name}-{}", uuid::Uuid::new_v4()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_logins_are_throttled_per_account_and_per_address() {
    let db = db("login");
    let s = server(&db, &[]);
    let addr = s.addr();
    register_and_login(addr, "target", "password-1").await;
    register_and_login(addr, "bystander", "password-2").await;
    let login = |name: &str, password: &str| json!({"username":name,"password":password});
    let path = "/api/chat-api/auth/login";
    // Per account: ten wrong passwords are answered 401, then 429 at once.
    let mut answers = Vec::new();
    for _ in 0..14 {
        let (status, retry, body) =
            post_from("127.0.0.2", addr, path, login("target", "wrong-pass")).await;
        if status == 429 {
            assert_eq!(body["error"]["code"], "RATE_LIMITED", "{body}");
            assert!(
                retry.is_some_and(|s| (1..=60).contains(&s)),
                "Retry-After {retry:?}"
            );
        }
        answers.push(status);
    }
    assert_eq!(answers, [[401; 10].as_slice(), &[429; 4]].concat());
    // Meanwhile another user, from another address, logs in as usual.
    let (status, _) = http_json(
        addr,
        "POST",
        path,
        None,
        Some(login("bystander", "password-2")),
    )
    .await;
    assert_eq!(status, 200);
    // Per address: thirty failures over many names, then 429 for any name.
    // (The bucket refills at 30 a minute: on a slow machine the attempts
    // themselves take long enough to earn one more now and then.)
    let started = std::time::Instant::now();
    let mut refused_at = None;
    for n in 0..40 {
        let name = format!("nobody{n}");
        let (status, _, _) = post_from("127.0.0.3", addr, path, login(&name, "wrong-pass")).await;
        if status == 429 {
            refused_at = Some(n);
            break;
        }
        assert_eq!(status, 401);
    }
    let refilled = (started.elapsed().as_secs_f64() / 2.0).ceil() as usize;
    let refused_at = refused_at.expect("the address is throttled");
    assert!(
        (30..=30 + refilled).contains(&refused_at),
        "refused after {refused_at} failures (30, plus {refilled} refilled meanwhile)"
    );
    let (status, _, _) = post_from("127.0.0.3", addr, path, login("bystander", "password-2")).await;
    assert_eq!(status, 429, "the address is throttled for every name");
    let samples = crate::metrics::scrape(s.metrics_addr().unwrap()).await;
    assert!(samples["chatd_auth_throttled_total"] >= 6.0);
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn new_accounts_are_throttled_per_address_on_rest_and_fastchat() {
    let db = db("accounts");
    let s = server(&db, &["auth.throttle.accounts_per_address=5"]);
    let addr = s.addr();
    let path = "/api/chat-api/auth/register";
    let mut statuses = Vec::new();
    for n in 0..7 {
        let body =
            json!({"username":format!("user{n}"),"password":"password-1","display_name":"U"});
        statuses.push(post_from("127.0.0.2", addr, path, body).await.0);
    }
    assert_eq!(statuses, [201, 201, 201, 201, 201, 429, 429]);
    // From another address: not affected.
    register_and_login(addr, "elsewhere", "password-1").await;
    // FastChat: a new user per HELLO is a new account too (from this
    // address: 127.0.0.1 has used one of five).
    let mut limited = None;
    for n in 0..6 {
        let mut c = connect_raw(addr, "/fastchat/ws").await;
        let id = uuid::Uuid::new_v4().to_string();
        c.send_json(json!({"type":"HELLO","data":{"user_id":id,"display_name":"Fcu"}}))
            .await;
        let answer = c.recv().await;
        if answer["type"] == "ERROR" {
            assert_eq!(answer["data"]["code"], "RATE_LIMITED", "{answer}");
            assert!(
                answer["data"]["details"]["retry_after_ms"]
                    .as_u64()
                    .unwrap()
                    > 0
            );
            limited = Some(n);
            break;
        }
        assert_eq!(answer["type"], "HELLO_ACK", "{answer}");
    }
    assert_eq!(limited, Some(4));
    s.shutdown().await;
}

/// One identity per connection: a second HELLO naming another user is
/// refused (it also escaped the first one's rate limit).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fastchat_connection_keeps_the_identity_of_its_first_hello() {
    let db = db("identity");
    let s = server(&db, &[]);
    let mut c = connect_raw(s.addr(), "/fastchat/ws").await;
    let (first, second) = (
        uuid::Uuid::new_v4().to_string(),
        uuid::Uuid::new_v4().to_string(),
    );
    c.send_json(json!({"type":"HELLO","data":{"user_id":first,"display_name":"One"}}))
        .await;
    assert_eq!(
        c.recv_type("HELLO_ACK").await["data"]["user_id"],
        first.as_str()
    );
    c.send_json(json!({"type":"HELLO","data":{"user_id":second,"display_name":"Two"}}))
        .await;
    assert_eq!(c.recv_type("ERROR").await["data"]["code"], "UNAUTHORIZED");
    // The same id again is harmless.
    c.send_json(json!({"type":"HELLO","data":{"user_id":first,"display_name":"One"}}))
        .await;
    assert_eq!(
        c.recv_type("HELLO_ACK").await["data"]["user_id"],
        first.as_str()
    );
    s.shutdown().await;
}

/// With one hash at a time and none waiting, a burst of logins gets `503`
/// at once for what does not fit, never a queue that grows.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_password_hash_queue_is_bounded() {
    let db = db("queue");
    let s = server(
        &db,
        &["auth.argon2.max_concurrent=1", "auth.argon2.max_waiting=0"],
    );
    let addr = s.addr();
    register_and_login(addr, "busy", "password-1").await;
    let logins: Vec<_> = (0..12)
        .map(|_| {
            tokio::spawn(async move {
                let body = json!({"username":"busy","password":"password-1"});
                http_json(addr, "POST", "/api/chat-api/auth/login", None, Some(body)).await
            })
        })
        .collect();
    let mut statuses = Vec::new();
    for l in logins {
        let (status, body) = l.await.unwrap();
        if status == 503 {
            assert_eq!(body["error"]["code"], "UNAVAILABLE", "{body}");
        }
        statuses.push(status);
    }
    assert!(
        statuses.iter().all(|s| [200, 503].contains(s)),
        "{statuses:?}"
    );
    assert!(
        statuses.contains(&200) && statuses.contains(&503),
        "{statuses:?}"
    );
    let samples = crate::metrics::scrape(s.metrics_addr().unwrap()).await;
    assert!(samples["chatd_auth_hash_queue_full_total"] >= 1.0);
    s.shutdown().await;
}
