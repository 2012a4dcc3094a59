//! Bursts and storms (issue 9, finding 2): a client that reads promptly is
//! never closed, whatever the shape of others' bursts, and receives
//! everything. Each test failed before reads got a budget and the send queue
//! judged slowness over time (every member was closed 1008).

use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use std::collections::HashSet;
use tokio_tungstenite::tungstenite::Message;

use chatd::metrics::{Metrics, RejectReason};

use crate::common::{connect, connect_room, eventually, start, Client, WAIT};

/// Reads until `want` chats whose content starts with `prefix` arrived;
/// panics on a Close or a timeout. Returns how many chats it saw.
async fn read_chats(mut c: Client, prefix: &'static str, want: usize) -> usize {
    let mut seen = 0;
    while seen < want {
        let msg = tokio::time::timeout(WAIT, c.ws.next())
            .await
            .unwrap_or_else(|_| panic!("timed out after {seen} of {want} chats"))
            .expect("stream ended")
            .expect("websocket error");
        match msg {
            Message::Text(t) => {
                let v: Value = serde_json::from_str(&t).unwrap();
                if v["type"] == "chat" && v["data"]["content"].as_str().unwrap().starts_with(prefix)
                {
                    seen += 1;
                }
            }
            Message::Close(f) => panic!("closed after {seen} of {want} chats: {f:?}"),
            _ => {}
        }
    }
    seen
}

/// The connections the node refused before their upgrade, by reason (the
/// ones it refused at all).
fn refusals(metrics: &Metrics) -> Vec<(RejectReason, u64)> {
    [
        RejectReason::MaxConnections,
        RejectReason::HandshakeLimit,
        RejectReason::PerAddressLimit,
        RejectReason::TooSlow,
        RejectReason::HandshakeTimeout,
    ]
    .into_iter()
    .map(|r| (r, metrics.rejections(r)))
    .filter(|&(_, n)| n > 0)
    .collect()
}

/// Queues every message in the client's write buffer, then writes them
/// together (one TCP write, as far as the buffer allows).
async fn send_in_one_write(c: &mut Client, msgs: impl IntoIterator<Item = Value>) {
    for m in msgs {
        c.ws.feed(Message::text(m.to_string())).await.unwrap();
    }
    c.ws.flush().await.unwrap();
}

/// 20 readers and a sender on `path`; the sender writes 300 chats (to
/// `room`, or room-less) in one write; everyone gets all 300, nobody closed.
async fn burst_reaches_everyone(path: &str, room: Option<&str>) {
    const BURST: usize = 300;
    let server = start(&[]);
    let mut members = Vec::new();
    for _ in 0..20 {
        members.push(connect(server.addr(), path).await);
    }
    let mut sender = connect(server.addr(), path).await;
    if let Some(room) = room {
        // The URL joined them: take each one's `joined` first.
        for m in members.iter_mut().chain([&mut sender]) {
            assert_eq!(m.recv_type("system").await["room"], room);
        }
    }
    let readers: Vec<_> = members
        .into_iter()
        .map(|m| tokio::spawn(read_chats(m, "b", BURST)))
        .collect();
    let chats = (0..BURST).map(|n| {
        let mut chat = json!({"type":"chat","data":{"content":format!("b{n}")}});
        if let Some(room) = room {
            chat["room"] = room.into();
        }
        chat
    });
    send_in_one_write(&mut sender, chats).await;
    for r in readers {
        assert_eq!(r.await.unwrap(), BURST);
    }
    assert_eq!(read_chats(sender, "b", BURST).await, BURST);
    assert_eq!(server.node().metrics.slow_consumer_closes.get(), 0);
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_300_chat_burst_reaches_a_20_member_room_and_nobody_is_closed() {
    burst_reaches_everyone("/ws/r", Some("r")).await;
}

/// A room-less chat goes to every native client of the node.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_roomless_burst_reaches_every_native_client() {
    burst_reaches_everyone("/ws", None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn join_leave_pairs_in_one_write_do_not_kick_members() {
    let server = start(&[]);
    let mut members = Vec::new();
    for _ in 0..20 {
        members.push(connect_room(server.addr(), "r").await);
    }
    let mut churner = connect(server.addr(), "/ws").await;
    let readers: Vec<_> = members
        .into_iter()
        .map(|m| tokio::spawn(read_chats(m, "after", 1)))
        .collect();
    let pairs = (0..150).flat_map(|_| {
        [
            json!({"type":"join","room":"r"}),
            json!({"type":"leave","room":"r"}),
        ]
    });
    send_in_one_write(&mut churner, pairs).await;
    churner.join("r").await;
    churner.chat(Some("r"), "after the churn").await;
    for r in readers {
        assert_eq!(r.await.unwrap(), 1);
    }
    assert_eq!(server.node().metrics.slow_consumer_closes.get(), 0);
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_pipelined_requests_get_every_reply() {
    let server = start(&[]);
    let mut c = connect(server.addr(), "/ws").await;
    let joins = (0..1000).map(|n| json!({"type":"join","room":format!("j{n}")}));
    send_in_one_write(&mut c, joins).await;
    let pings = (0..1000).map(|_| json!({"type":"ping"}));
    send_in_one_write(&mut c, pings).await;
    let (mut joined, mut limited, mut pongs) = (0, 0, 0);
    while pongs < 1000 {
        let m = c.recv().await;
        match (m["type"].as_str().unwrap(), m["data"]["code"].as_str()) {
            ("system", _) if m["data"]["event"] == "joined" => joined += 1,
            ("error", Some("ROOM_LIMIT")) => limited += 1,
            ("pong", _) => pongs += 1,
            _ => {}
        }
    }
    // limits.max_rooms_per_connection is 100.
    assert_eq!((joined, limited, pongs), (100, 900, 1000));
    server.shutdown().await;
}

/// 2,000 clients connect into one room at once while 5 members are already
/// in it: every one gets its 101 and greeting, nobody is closed, and a chat
/// sent after the storm reaches all of them. Presence is coalesced per room
/// (limits.presence_per_second), so the storm is not 2,000² messages.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_join_storm_of_2000_into_one_room_closes_nobody() {
    const STORM: usize = 2000;
    // The 2,000 connect at once, and this process writes their requests
    // only after making most of the connects: meanwhile the server holds
    // them accepted without a request, in its handshake budget. Measured on
    // an idle machine, a budget of 768 refused up to 294 of them at
    // accept; the default 1,024 did so in CI. That budget is
    // handshake::handshake_and_connection_caps' subject; this test's is
    // the room, so it gives the budget room for the whole storm.
    let server = start(&["server.max_handshakes=4096"]);
    let addr = server.addr();
    let mut early = Vec::new();
    for _ in 0..5 {
        early.push(connect_room(addr, "storm").await);
    }
    let early: Vec<_> = early
        .into_iter()
        .map(|c| tokio::spawn(read_chats(c, "after", 1)))
        .collect();
    let storm = futures_util::future::join_all((0..STORM).map(|_| {
        tokio::spawn(async move {
            let c = connect_room(addr, "storm").await;
            let id = c.id.clone();
            (id, tokio::spawn(read_chats(c, "after", 1)))
        })
    }))
    .await;
    let mut ids = HashSet::new();
    let mut readers = Vec::new();
    let mut failed = Vec::new();
    for joined in storm {
        match joined {
            Ok((id, reader)) => {
                ids.insert(id);
                readers.push(reader);
            }
            Err(e) => failed.push(e.to_string()),
        }
    }
    let metrics = &server.node().metrics;
    assert!(
        failed.is_empty(),
        "{} of {STORM} clients did not get their 101, greeting and join (first: {}); \
         refused at accept: {:?}",
        failed.len(),
        failed[0],
        refusals(metrics)
    );
    assert_eq!(ids.len(), STORM);
    let mut sender = connect_room(addr, "storm").await;
    sender.chat(Some("storm"), "after the storm").await;
    for r in early.into_iter().chain(readers) {
        assert_eq!(r.await.unwrap(), 1);
    }
    assert_eq!(metrics.slow_consumer_closes.get(), 0);
    assert!(
        metrics.presence_coalesced.get() > 0,
        "the storm was over the presence budget"
    );
    // Its window's summary goes out when the window ends.
    eventually("the storm's presence summary", || {
        metrics.presence_summaries.get() > 0
    })
    .await;
    server.shutdown().await;
}

/// Joins and leaves over `limits.presence_per_second` are not dropped: the
/// rest of the second's changes reach the room in one summary, each
/// client's latest status (a client that joined and left again: offline).
#[tokio::test]
async fn presence_over_the_budget_arrives_in_one_summary() {
    let server = start(&["server.shards=1", "limits.presence_per_second=2"]);
    let addr = server.addr();
    // The watcher's own join is the window's first announcement.
    let mut watcher = connect_room(addr, "crowd").await;
    let mut crowd = Vec::new();
    for _ in 0..6 {
        crowd.push(connect_room(addr, "crowd").await);
    }
    let gone = crowd.pop().unwrap();
    let gone_id = gone.id.clone();
    gone.close().await;
    let mut online: HashSet<String> = HashSet::new();
    let mut offline: HashSet<String> = HashSet::new();
    let summary = loop {
        let m = watcher.recv_type("presence").await;
        if m["data"]["online"].is_array() {
            break m;
        }
        assert_eq!(m["data"]["status"], "online", "{m}");
        online.insert(m["from"].as_str().unwrap().to_owned());
    };
    assert!(summary.get("from").is_none(), "{summary}");
    assert_eq!(summary["data"]["more"], 0);
    let names = |key: &str| -> Vec<String> {
        summary["data"][key]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap().to_owned())
            .collect()
    };
    online.extend(names("online"));
    offline.extend(names("offline"));
    // One change announced on its own (the watcher's took the other), four
    // coalesced online, the one that left coalesced as offline.
    assert_eq!(names("online").len(), 4, "{summary}");
    assert_eq!(names("offline"), vec![gone_id.clone()], "{summary}");
    for c in &crowd {
        assert!(online.contains(&c.id), "{} announced", c.id);
    }
    assert!(!online.contains(&gone_id) || offline.contains(&gone_id));
    let metrics = &server.node().metrics;
    assert_eq!(metrics.presence_coalesced.get(), 6);
    assert_eq!(metrics.presence_summaries.get(), 1);
    server.shutdown().await;
}
