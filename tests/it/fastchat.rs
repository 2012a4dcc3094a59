//! The FastChat dialect: every flow of its spec with the exact JSON shapes,
//! its validation, rate limits and origin check, and a FastChat user talking
//! to a native client through the same conversation.

use serde_json::{json, Value};
use std::net::SocketAddr;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

use crate::common::{connect, connect_raw, http_json, Client};
use crate::store::Db;

fn server(db: &Db, extra: &[&str]) -> chatd::Server {
    db.server(extra)
}

fn db() -> Db {
    Db::sqlite(&format!("fastchat-{}", uuid::Uuid::new_v4()))
}

fn v4() -> String {
    uuid::Uuid::new_v4().to_string()
}

/// The next message of `kind` (skipping others).
async fn next(c: &mut Client, kind: &str) -> Value {
    c.recv_type(kind).await
}

/// Connects and says HELLO: HELLO_ACK, then PRESENCE.
async fn hello(addr: SocketAddr, id: &str, name: &str) -> Client {
    let mut c = connect_raw(addr, "/fastchat/ws").await;
    c.send_json(json!({"type":"HELLO","data":{"user_id":id,"display_name":name}}))
        .await;
    let ack = c.recv().await;
    assert_eq!(
        ack,
        json!({"type":"HELLO_ACK","data":{"user_id":id,"status":"connected"}})
    );
    c
}

/// PRESENCE messages until one lists `id` online.
async fn presence_with(c: &mut Client, id: &str) -> Value {
    loop {
        let p = next(c, "PRESENCE").await;
        let users = p["data"]["users"].as_array().unwrap();
        if users
            .iter()
            .any(|u| u["user_id"] == id && u["online"] == true)
        {
            return p;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hello_open_chat_messages_typing_and_ping() {
    let db = db();
    let s = server(&db, &[]);
    let addr = s.addr();
    let (ann, ben) = (v4(), v4());
    let mut a = hello(addr, &ann, "Ann <b>A</b>").await;
    let p = presence_with(&mut a, &ann).await;
    let me = p["data"]["users"]
        .as_array()
        .unwrap()
        .iter()
        .find(|u| u["user_id"] == ann.as_str())
        .unwrap()
        .clone();
    assert_eq!(
        me,
        json!({"user_id":ann,"display_name":"Ann A","online":true}),
        "tags stripped"
    );
    let mut b = hello(addr, &ben, "Ben").await;
    // PRESENCE to everyone: Ann hears that Ben came.
    presence_with(&mut a, &ben).await;
    // OPEN_CHAT: CHAT_OPENED to both sides.
    a.send_json(
        json!({"type":"OPEN_CHAT","data":{"target_user_id":ben,"target_display_name":"Ben"}}),
    )
    .await;
    let opened = next(&mut a, "CHAT_OPENED").await;
    let chat = opened["data"]["chat_id"].as_str().unwrap().to_owned();
    assert_eq!(
        opened["data"],
        json!({"chat_id":chat,"participants":[ann,ben],"target_user_id":ben,"target_display_name":"Ben"})
    );
    let theirs = next(&mut b, "CHAT_OPENED").await;
    assert_eq!(
        theirs["data"],
        json!({"chat_id":chat,"participants":[ben,ann],"target_user_id":ann,"target_display_name":"Ann A"})
    );
    // MSG: MSG_ACK to the sender, MSG to the target.
    a.send_json(json!({"type":"MSG","data":{"to":ben,"content":"hello <script>x()</script>Ben","message_id":"m-1"}})).await;
    let ack = next(&mut a, "MSG_ACK").await;
    assert_eq!(
        ack,
        json!({"type":"MSG_ACK","data":{"message_id":"m-1","status":"delivered"}})
    );
    let msg = next(&mut b, "MSG").await;
    assert_eq!(
        (msg["data"]["from"].as_str(), msg["data"]["to"].as_str()),
        (Some(ann.as_str()), Some(ben.as_str()))
    );
    assert_eq!(msg["data"]["content"], "hello Ben");
    // The id the sender chose reaches the target (chatd's own beside it),
    // so the sender can match the target's MSG_ACK to what it sent.
    assert_eq!(msg["data"]["message_id"], "m-1");
    let own = msg["data"]["id"].as_str().unwrap();
    assert!(own.len() == 36 && own != "m-1", "{msg}");
    assert!(msg["data"]["timestamp"].as_str().unwrap().ends_with('Z'));
    // The target acknowledges; accepted silently.
    b.send_json(json!({"type":"MSG_ACK","data":{"message_id":msg["data"]["message_id"]}}))
        .await;
    // TYPING relayed to the partner, not back to the typist.
    b.send_json(json!({"type":"TYPING","data":{"is_typing":true}}))
        .await;
    assert_eq!(
        next(&mut a, "TYPING").await["data"],
        json!({"user_id":ben,"is_typing":true})
    );
    b.send_json(json!({"type":"TYPING","data":{"is_typing":false}}))
        .await;
    assert_eq!(
        next(&mut a, "TYPING").await["data"],
        json!({"user_id":ben,"is_typing":false})
    );
    // PING → PONG with a timestamp; and the sender never got its own MSG or TYPING.
    a.send_json(json!({"type":"PING","data":{}})).await;
    loop {
        let m = a.recv().await;
        assert_ne!(m["type"], "MSG", "{m}");
        if m["type"] == "PONG" {
            assert!(m["data"]["timestamp"].as_str().unwrap().ends_with('Z'));
            break;
        }
    }
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_validation_and_rate_limits() {
    let db = db();
    let s = server(&db, &["fastchat.rate_limit.messages_per_minute=2"]);
    let addr = s.addr();
    let code = |m: &Value| m["data"]["code"].as_str().unwrap().to_owned();
    let mut c = connect_raw(addr, "/fastchat/ws").await;
    c.send_json(json!({"type":"MSG","data":{"to":v4(),"content":"x"}}))
        .await;
    assert_eq!(code(&next(&mut c, "ERROR").await), "UNAUTHORIZED");
    c.send_json(json!({"type":"HELLO","data":{"user_id":"not-a-uuid","display_name":"Ann"}}))
        .await;
    assert_eq!(code(&next(&mut c, "ERROR").await), "VALIDATION");
    c.send_json(json!({"type":"HELLO","data":{"user_id":v4(),"display_name":"An"}}))
        .await;
    let e = next(&mut c, "ERROR").await;
    assert_eq!(code(&e), "VALIDATION");
    assert!(e["data"]["message"].is_string() && e["data"]["details"].is_object());
    let ann = v4();
    c.send_json(json!({"type":"HELLO","data":{"user_id":ann,"display_name":"Ann"}}))
        .await;
    next(&mut c, "HELLO_ACK").await;
    c.send_json(json!({"type":"OPEN_CHAT","data":{"target_user_id":v4()}}))
        .await;
    assert_eq!(code(&next(&mut c, "ERROR").await), "USER_NOT_FOUND");
    let ben = v4();
    c.send_json(json!({"type":"MSG","data":{"to":ben,"content":"x"}}))
        .await;
    assert_eq!(code(&next(&mut c, "ERROR").await), "CHAT_NOT_OPENED");
    let _b = hello(addr, &ben, "Ben").await;
    c.send_json(json!({"type":"OPEN_CHAT","data":{"target_user_id":ben}}))
        .await;
    next(&mut c, "CHAT_OPENED").await;
    c.send_json(json!({"type":"MSG","data":{"to":ben,"content":"y".repeat(1001)}}))
        .await;
    assert_eq!(code(&next(&mut c, "ERROR").await), "VALIDATION");
    for n in 0..2 {
        c.send_json(json!({"type":"MSG","data":{"to":ben,"content":format!("m{n}")}}))
            .await;
        next(&mut c, "MSG_ACK").await;
    }
    c.send_json(json!({"type":"MSG","data":{"to":ben,"content":"one too many"}}))
        .await;
    let limited = next(&mut c, "ERROR").await;
    assert_eq!(code(&limited), "RATE_LIMITED");
    assert!(
        limited["data"]["details"]["retry_after_ms"]
            .as_u64()
            .unwrap()
            > 1000,
        "{limited}"
    );
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn origins_subprotocol_and_a_native_partner() {
    let db = db();
    let s = server(
        &db,
        &["fastchat.allowed_origins=[\"https://chat.example\"]"],
    );
    let addr = s.addr();
    let mut refused = format!("ws://{addr}/fastchat/ws")
        .into_client_request()
        .unwrap();
    refused
        .headers_mut()
        .insert("Origin", "https://evil.example".parse().unwrap());
    match tokio_tungstenite::connect_async(refused).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => assert_eq!(resp.status(), 403),
        other => panic!("origin not refused: {other:?}"),
    }
    let mut ok = format!("ws://{addr}/ws").into_client_request().unwrap();
    ok.headers_mut()
        .insert("Origin", "https://chat.example".parse().unwrap());
    ok.headers_mut()
        .insert("Sec-WebSocket-Protocol", "fastchat".parse().unwrap());
    let (ws, resp) = tokio_tungstenite::connect_async(ok).await.unwrap();
    assert_eq!(resp.headers()["sec-websocket-protocol"], "fastchat");
    let mut fc = Client {
        ws,
        id: String::new(),
    };
    let ann = v4();
    fc.send_json(json!({"type":"HELLO","data":{"user_id":ann,"display_name":"Ann"}}))
        .await;
    next(&mut fc, "HELLO_ACK").await;
    // A native user, registered over REST, in the same conversation.
    let (nina, token) = crate::common::register_and_login(addr, "nina", "password-1").await;
    let token = token.as_str();
    let (_, dm) = http_json(
        addr,
        "POST",
        &format!("/api/chat-api/dm/{ann}"),
        Some(token),
        None,
    )
    .await;
    let room = dm["id"].as_str().unwrap().to_owned();
    let mut native = connect(addr, &format!("/ws/{room}?token={token}")).await;
    native.recv_type("system").await;
    fc.send_json(json!({"type":"OPEN_CHAT","data":{"target_user_id":nina}}))
        .await;
    assert_eq!(
        next(&mut fc, "CHAT_OPENED").await["data"]["chat_id"],
        room.as_str()
    );
    fc.send_json(json!({"type":"MSG","data":{"to":nina,"content":"hi Nina"}}))
        .await;
    let got = native.recv_type("chat").await;
    assert_eq!(
        (got["from"].as_str(), got["data"]["content"].as_str()),
        (Some(ann.as_str()), Some("hi Nina"))
    );
    native.chat(Some(&room), "hi Ann").await;
    let back = next(&mut fc, "MSG").await;
    assert_eq!(
        (
            back["data"]["from"].as_str(),
            back["data"]["content"].as_str()
        ),
        (Some(nina.as_str()), Some("hi Ann"))
    );
    // Nobody may HELLO as a user with a password without their token (it
    // would read their conversations); with it, they may.
    let fastchat_ws = |query: String| {
        let mut r = format!("ws://{addr}/fastchat/ws{query}")
            .into_client_request()
            .unwrap();
        r.headers_mut()
            .insert("Origin", "https://chat.example".parse().unwrap());
        r
    };
    let (ws, _) = tokio_tungstenite::connect_async(fastchat_ws(String::new()))
        .await
        .unwrap();
    let mut thief = Client {
        ws,
        id: String::new(),
    };
    thief
        .send_json(json!({"type":"HELLO","data":{"user_id":nina,"display_name":"Nina"}}))
        .await;
    assert_eq!(
        next(&mut thief, "ERROR").await["data"]["code"],
        "UNAUTHORIZED"
    );
    let (ws, _) = tokio_tungstenite::connect_async(fastchat_ws(format!("?token={token}")))
        .await
        .unwrap();
    let mut real = Client {
        ws,
        id: String::new(),
    };
    real.send_json(json!({"type":"HELLO","data":{"user_id":nina,"display_name":"Nina"}}))
        .await;
    next(&mut real, "HELLO_ACK").await;
    s.shutdown().await;
}

/// A FastChat connection silent for longer than `fastchat.idle_timeout` is
/// closed (4000), while one that PINGs stays and a native connection keeps
/// the native limit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_fastchat_connection_is_closed_after_its_own_idle_timeout() {
    let db = db();
    let s = server(
        &db,
        &[
            "fastchat.idle_timeout=600ms",
            "heartbeat.ping_interval=20s",
            "heartbeat.idle_timeout=60s",
        ],
    );
    let addr = s.addr();
    let mut silent = hello(addr, &v4(), "Sil").await;
    let mut pinging = hello(addr, &v4(), "Pia").await;
    let mut native = connect(addr, "/ws").await;
    let started = tokio::time::Instant::now();
    let pinger = tokio::spawn(async move {
        for _ in 0..8 {
            pinging.send_json(json!({"type":"PING","data":{}})).await;
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        }
        pinging
    });
    assert_eq!(silent.expect_close().await, 4000);
    assert!(started.elapsed() >= std::time::Duration::from_millis(500));
    let mut pinging = pinger.await.unwrap();
    // Still open: it answers.
    pinging.send_json(json!({"type":"PING","data":{}})).await;
    next(&mut pinging, "PONG").await;
    native.send_json(json!({"type":"join","room":"r"})).await;
    assert_eq!(native.recv_type("system").await["data"]["event"], "joined");
    s.shutdown().await;
}

on_every_store!(a_target_s_msg_ack_is_recorded_as_its_delivery);

/// A target's MSG_ACK (by the `message_id` its MSG carried: the sender's,
/// or one chatd gave a MSG without) raises that user's delivery receipt in
/// the conversation to the message's `seq`, in the store; never lowers it.
async fn a_target_s_msg_ack_is_recorded_as_its_delivery(new_db: fn(&str) -> Db) {
    let db = new_db("fastchat-receipts");
    let s = db.server(&[]);
    let addr = s.addr();
    let (nina, token) = crate::common::register_and_login(addr, "nina", "password-1").await;
    let mut target = connect_raw(addr, &format!("/fastchat/ws?token={token}")).await;
    target
        .send_json(json!({"type":"HELLO","data":{"user_id":nina,"display_name":"Nina"}}))
        .await;
    next(&mut target, "HELLO_ACK").await;
    let ann = v4();
    let mut sender = hello(addr, &ann, "Ann").await;
    sender
        .send_json(json!({"type":"OPEN_CHAT","data":{"target_user_id":nina}}))
        .await;
    let room = next(&mut sender, "CHAT_OPENED").await["data"]["chat_id"]
        .as_str()
        .unwrap()
        .to_owned();
    next(&mut target, "CHAT_OPENED").await;
    sender
        .send_json(json!({"type":"MSG","data":{"to":nina,"content":"one","message_id":"m-1"}}))
        .await;
    sender
        .send_json(json!({"type":"MSG","data":{"to":nina,"content":"two"}}))
        .await;
    let first = next(&mut target, "MSG").await;
    let second = next(&mut target, "MSG").await;
    assert_eq!(first["data"]["message_id"], "m-1");
    // A MSG without a message_id was given one; the sender's ack names it.
    let given = second["data"]["message_id"].as_str().unwrap().to_owned();
    assert!(
        given.len() == 36 && given != second["data"]["id"],
        "{second}"
    );
    next(&mut sender, "MSG_ACK").await;
    assert_eq!(
        next(&mut sender, "MSG_ACK").await["data"]["message_id"],
        given
    );

    let receipts = |expected: Value| {
        let (room, token) = (room.clone(), token.clone());
        async move {
            let path = format!("/api/chat-api/rooms/{room}/receipts");
            let deadline = tokio::time::Instant::now() + crate::common::WAIT;
            loop {
                let (status, body) = http_json(addr, "GET", &path, Some(&token), None).await;
                assert_eq!(status, 200, "{body}");
                if body["receipts"] == expected {
                    return;
                }
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "receipts stayed {body}, not {expected}"
                );
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            }
        }
    };
    receipts(json!([])).await;
    target
        .send_json(json!({"type":"MSG_ACK","data":{"message_id":"m-1","status":"delivered"}}))
        .await;
    receipts(json!([{"user_id":nina,"delivered_seq":1}])).await;
    target
        .send_json(json!({"type":"MSG_ACK","data":{"message_id":given}}))
        .await;
    receipts(json!([{"user_id":nina,"delivered_seq":2}])).await;
    // An older or unknown message changes nothing; no id is refused.
    for id in ["m-1", "never-sent"] {
        target
            .send_json(json!({"type":"MSG_ACK","data":{"message_id":id}}))
            .await;
    }
    target.send_json(json!({"type":"MSG_ACK","data":{}})).await;
    assert_eq!(
        next(&mut target, "ERROR").await["data"]["code"],
        "VALIDATION"
    );
    receipts(json!([{"user_id":nina,"delivered_seq":2}])).await;
    // Only the conversation's members may read them.
    let (_, other) = crate::common::register_and_login(addr, "otto", "password-1").await;
    let path = format!("/api/chat-api/rooms/{room}/receipts");
    assert_eq!(
        http_json(addr, "GET", &path, Some(&other), None).await.0,
        403
    );
    s.shutdown().await;
}
