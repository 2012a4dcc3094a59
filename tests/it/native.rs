//! The chat-api protocol: URL forms, rooms, global messages, join/leave,
//! validation, ordering.

use futures_util::{SinkExt, StreamExt};
use serde_json::json;
use std::collections::HashMap;
use tokio_tungstenite::tungstenite::Message;

use crate::common::{connect, connect_room, start};

#[tokio::test]
async fn all_three_url_forms_join_the_room() {
    let server = start(&[]);
    let addr = server.addr();
    let mut by_path = connect_room(addr, "lobby").await;
    let mut by_query = connect(addr, "/api/chat-api/ws?room=lobby").await;
    assert_eq!(
        by_query.recv_type("system").await["data"]["event"],
        "joined"
    );
    let mut by_alias = connect(addr, "/ws/lobby").await;
    assert_eq!(
        by_alias.recv_type("system").await["data"]["event"],
        "joined"
    );

    by_path.chat(None, "hello lobby").await;
    let sender = by_path.id.clone();
    for client in [&mut by_path, &mut by_query, &mut by_alias] {
        let m = client.recv_type("chat").await;
        assert_eq!(m["room"], "lobby");
        assert_eq!(m["data"]["content"], "hello lobby");
        assert_eq!(m["from"], sender.as_str());
    }
    server.shutdown().await;
}

#[tokio::test]
async fn envelope_fields_are_assigned_by_the_server() {
    let server = start(&[]);
    let mut alice = connect(server.addr(), "/ws/r?client_id=alice").await;
    assert_eq!(alice.id, "alice");
    alice.recv_type("system").await;
    alice
        .send_json(json!({"type":"chat","id":"forged","from":"mallory","timestamp":"1999","data":{"content":"hi"}}))
        .await;
    let m = alice.recv_type("chat").await;
    assert_eq!(m["from"], "alice");
    assert_eq!(m["room"], "r");
    let id = uuid::Uuid::parse_str(m["id"].as_str().unwrap()).expect("id is a UUID");
    assert_eq!(id.get_version_num(), 7);
    let ts = m["timestamp"].as_str().unwrap();
    assert!(
        ts.ends_with('Z') && ts.len() == 24,
        "RFC 3339 UTC with ms: {ts}"
    );
    server.shutdown().await;
}

#[tokio::test]
async fn rooms_are_isolated() {
    let server = start(&[]);
    let addr = server.addr();
    let mut a = connect_room(addr, "a").await;
    let mut b = connect_room(addr, "b").await;
    a.chat(None, "only for a").await;
    b.chat(None, "only for b").await;
    assert_eq!(a.recv_type("chat").await["data"]["content"], "only for a");
    // b's first chat is its own: a's message never reached it.
    assert_eq!(b.recv_type("chat").await["data"]["content"], "only for b");
    server.shutdown().await;
}

#[tokio::test]
async fn roomless_chat_reaches_every_client() {
    let server = start(&[]);
    let addr = server.addr();
    let mut global = connect(addr, "/api/chat-api/ws").await;
    let mut in_room = connect_room(addr, "r1").await;
    let mut other = connect(addr, "/ws").await;
    global.chat(None, "hello everyone").await;
    for c in [&mut global, &mut in_room, &mut other] {
        let m = c.recv_type("chat").await;
        assert_eq!(m["data"]["content"], "hello everyone");
        assert!(
            m.get("room").is_none(),
            "global messages carry no room: {m}"
        );
    }
    server.shutdown().await;
}

#[tokio::test]
async fn join_leave_and_presence() {
    let server = start(&["limits.max_rooms_per_connection=2"]);
    let addr = server.addr();
    let mut watcher = connect_room(addr, "r").await;
    let mut c = connect(addr, "/ws").await;

    c.join("r").await;
    let online = watcher.recv_presence_from(&c.id).await;
    assert_eq!(online["data"]["status"], "online");
    assert_eq!(online["room"], "r");

    c.chat(Some("r"), "in r").await;
    assert_eq!(watcher.recv_type("chat").await["data"]["content"], "in r");
    assert_eq!(c.recv_type("chat").await["data"]["content"], "in r");

    c.join("s").await;
    c.send_json(json!({"type":"join","room":"t"})).await;
    let limit = c.recv_type("error").await;
    assert_eq!(limit["data"]["code"], "ROOM_LIMIT");

    c.send_json(json!({"type":"leave","room":"r"})).await;
    let left = c.recv_type("system").await;
    assert_eq!(
        (left["data"]["event"].as_str(), left["room"].as_str()),
        (Some("left"), Some("r"))
    );
    let offline = watcher.recv_presence_from(&c.id).await;
    assert_eq!(offline["data"]["status"], "offline");

    c.chat(Some("r"), "not a member now").await;
    assert_eq!(c.recv_type("error").await["data"]["code"], "NOT_MEMBER");
    c.send_json(json!({"type":"leave","room":"r"})).await;
    assert_eq!(c.recv_type("error").await["data"]["code"], "NOT_MEMBER");

    // The watcher got nothing from c after the leave; its next chat is its own.
    watcher.chat(None, "still here").await;
    assert_eq!(
        watcher.recv_type("chat").await["data"]["content"],
        "still here"
    );

    c.send_json(json!({"type":"ping"})).await;
    assert_eq!(c.recv_type("pong").await["type"], "pong");
    server.shutdown().await;
}

#[tokio::test]
async fn bad_input_gets_validation_errors_and_the_connection_keeps_working() {
    let server = start(&[]);
    let mut c = connect_room(server.addr(), "r").await;
    let cases: [(&str, &str); 7] = [
        ("{not json", "malformed JSON"),
        (r#"{"room":"r"}"#, "missing field \"type\""),
        (r#"{"type":"dance"}"#, "unknown type"),
        (r#"{"type":"chat","data":{}}"#, "data.content"),
        (r#"{"type":"chat","data":{"content":""}}"#, "data.content"),
        (r#"{"type":"join","room":"no spaces"}"#, "invalid room name"),
        (r#"{"type":"join"}"#, "needs a \"room\""),
    ];
    for (input, expected) in cases {
        c.send_text(input).await;
        let err = c.recv_type("error").await;
        assert_eq!(err["data"]["code"], "VALIDATION", "{input}");
        let message = err["data"]["message"].as_str().unwrap();
        assert!(message.contains(expected), "{input}: {message}");
    }
    c.ws.send(Message::binary(vec![1u8, 2, 3])).await.unwrap();
    assert_eq!(c.recv_type("error").await["data"]["code"], "UNSUPPORTED");
    c.chat(None, "still works").await;
    assert_eq!(c.recv_type("chat").await["data"]["content"], "still works");
    server.shutdown().await;
}

/// Regression (issue 9, finding 1): each of these frames overflowed a shard's
/// stack and aborted the whole process.
#[tokio::test]
async fn deeply_nested_json_is_refused_and_the_node_lives_on() {
    let server = start(&[]);
    let mut c = connect_room(server.addr(), "lobby").await;
    let mut other = connect_room(server.addr(), "lobby").await;
    let balanced = format!("{}{}", "[".repeat(10_000), "]".repeat(10_000));
    let in_data = format!(
        r#"{{"type":"chat","data":{{"content":"x","d":{}}}}}"#,
        "[".repeat(9_500)
    );
    let in_unknown = format!(r#"{{"type":"ping","u":{}}}"#, "[".repeat(9_500));
    for input in [
        "[".repeat(9_500),
        balanced,
        in_data,
        in_unknown,
        "{\"\":".repeat(12_000),
    ] {
        c.send_text(&input).await;
        let err = c.recv_type("error").await;
        assert_eq!(err["data"]["code"], "VALIDATION");
        assert_eq!(err["data"]["message"], "JSON nested deeper than 32 levels");
    }
    c.chat(Some("lobby"), "still here").await;
    assert_eq!(
        other.recv_type("chat").await["data"]["content"],
        "still here"
    );
    server.shutdown().await;
}

/// Error texts are short, stable and human: no parser excerpts, no tabs or
/// newlines, and valid JSON of the wrong shape is not called malformed.
#[tokio::test]
async fn validation_messages_are_short_and_stable() {
    let server = start(&[]);
    let mut c = connect(server.addr(), "/ws").await;
    let cases = [
        ("\n\n\tnot json\n\t", "malformed JSON at line 3, column 5"),
        (
            "[1,2]",
            "expected a JSON object with string fields type, room, client_msg_id and data.content",
        ),
        (
            r#"{"type":5}"#,
            "expected a JSON object with string fields type, room, client_msg_id and data.content",
        ),
    ];
    for (input, expected) in cases {
        c.send_text(input).await;
        let err = c.recv_type("error").await;
        assert_eq!(err["data"]["message"], expected, "{input:?}");
    }
    server.shutdown().await;
}

#[tokio::test]
async fn bad_names_in_the_url_are_refused_before_upgrade() {
    let server = start(&[]);
    let addr = server.addr();
    let long = "x".repeat(65);
    for path in [
        format!("/ws/{long}"),
        "/ws?room=a%20b".to_string(),
        "/ws?client_id=bad%20id".to_string(),
    ] {
        let err = tokio_tungstenite::connect_async(format!("ws://{addr}{path}"))
            .await
            .expect_err(&path);
        match err {
            tokio_tungstenite::tungstenite::Error::Http(resp) => {
                assert_eq!(resp.status(), 400, "{path}")
            }
            other => panic!("{path}: expected HTTP 400, got {other}"),
        }
    }
    server.shutdown().await;
}

/// 200 clients in 10 rooms of 20, each sending 50 messages: every member
/// gets every message of its room exactly once, each sender's in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_message_exactly_once_in_per_sender_order() {
    const CLIENTS: usize = 200;
    const ROOMS: usize = 10;
    const PER_CLIENT: usize = 50;
    // 200 test clients share two threads of a debug build and can fall behind
    // by more than the default 256 messages; this test is about delivery and
    // order, so the queue is deeper (the bound has its own test in lifecycle.rs).
    let server = start(&["limits.queue_messages=4096"]);
    let addr = server.addr();
    let mut clients = Vec::new();
    for i in 0..CLIENTS {
        clients.push(connect_room(addr, &format!("room{}", i % ROOMS)).await);
    }
    // Every member is in; now everyone sends and reads at once.
    let mut tasks = Vec::new();
    for (i, c) in clients.into_iter().enumerate() {
        tasks.push(tokio::spawn(async move {
            let room = format!("room{}", i % ROOMS);
            let (mut sink, mut stream) = c.ws.split();
            let sender = tokio::spawn(async move {
                for n in 0..PER_CLIENT {
                    let msg =
                        json!({"type":"chat","room":room,"data":{"content":format!("{i}:{n}")}});
                    sink.send(Message::text(msg.to_string())).await.unwrap();
                }
                sink
            });
            let expected = (CLIENTS / ROOMS) * PER_CLIENT;
            let mut next: HashMap<usize, usize> = HashMap::new();
            let mut got = 0;
            while got < expected {
                let msg = tokio::time::timeout(crate::common::WAIT, stream.next())
                    .await
                    .expect("in time");
                let msg = msg
                    .unwrap_or_else(|| panic!("client {i}: stream ended"))
                    .expect("websocket error");
                let t = match msg {
                    Message::Text(t) => t,
                    Message::Close(frame) => panic!("client {i}: closed by the server: {frame:?}"),
                    _ => continue,
                };
                let v: serde_json::Value = serde_json::from_str(&t).unwrap();
                if v["type"] != "chat" {
                    continue;
                }
                assert_eq!(v["room"].as_str().unwrap(), format!("room{}", i % ROOMS));
                let content = v["data"]["content"].as_str().unwrap();
                let (from, n) = content
                    .split_once(':')
                    .unwrap_or_else(|| panic!("client {i}: unexpected {v}"));
                let (from, n): (usize, usize) = (from.parse().unwrap(), n.parse().unwrap());
                assert_eq!(from % ROOMS, i % ROOMS, "message from another room");
                let want = next.entry(from).or_insert(0);
                assert_eq!(
                    n, *want,
                    "client {i}: sender {from} out of order or duplicated"
                );
                *want += 1;
                got += 1;
            }
            assert!(next.values().all(|&n| n == PER_CLIENT));
            drop(sender.await.unwrap());
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    assert_eq!(
        server
            .node()
            .metrics
            .disconnections(chatd::metrics::DisconnectReason::SlowConsumer),
        0
    );
    server.shutdown().await;
}

/// `typing` goes to the room's members on every shard and is never stored;
/// per-user rate limits hold across a user's connections and say when to
/// retry.
#[tokio::test]
async fn typing_is_relayed_and_chats_and_typing_are_rate_limited_per_user() {
    let server = start(&[
        "limits.rate.messages_per_minute=2",
        "limits.rate.typing_per_minute=1",
    ]);
    let addr = server.addr();
    let mut a = connect(addr, "/ws/r?client_id=ann").await;
    a.recv_type("system").await;
    let mut a2 = connect(addr, "/ws/r?client_id=ann").await;
    a2.recv_type("system").await;
    let mut b = connect(addr, "/ws/r?client_id=ben").await;
    b.recv_type("system").await;
    a.send_json(json!({"type":"typing","room":"r"})).await;
    let t = b.recv_type("typing").await;
    assert_eq!(
        (t["from"].as_str(), t["room"].as_str()),
        (Some("ann"), Some("r"))
    );
    a.send_json(json!({"type":"typing","room":"r"})).await;
    let limited = a.recv_type("error").await;
    assert_eq!(limited["data"]["code"], "RATE_LIMITED");
    assert!(
        limited["data"]["retry_after_ms"].as_u64().unwrap() > 1000,
        "{limited}"
    );
    a.send_json(json!({"type":"typing","room":"elsewhere"}))
        .await;
    assert_eq!(a.recv_type("error").await["data"]["code"], "NOT_MEMBER");
    // Two chats per minute for ann, whichever connection sends them.
    a.chat(Some("r"), "one").await;
    a2.chat(Some("r"), "two").await;
    // (From two connections, maybe on two shards: in either order.)
    let mut got = Vec::new();
    for _ in 0..2 {
        got.push(b.recv_type("chat").await["data"]["content"].clone());
    }
    got.sort_by_key(|v| v.to_string());
    assert_eq!(got, [json!("one"), json!("two")]);
    a2.send_json(json!({"type":"chat","room":"r","client_msg_id":"k3","data":{"content":"three"}}))
        .await;
    let limited = a2.recv_type("error").await;
    assert_eq!(limited["data"]["code"], "RATE_LIMITED");
    assert_eq!(limited["data"]["client_msg_id"], "k3");
    // Ben has his own budget.
    b.chat(Some("r"), "ben's").await;
    assert_eq!(b.recv_type("chat").await["data"]["content"], "ben's");
    server.shutdown().await;
}
