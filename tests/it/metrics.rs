//! `/metrics` read over HTTP: exact values after scripted sequences.

use serde_json::json;
use std::collections::HashMap;
use std::net::SocketAddr;

use crate::common::{
    connect, connect_raw, connect_small_buffer, eventually, http_get, start, Client,
};

/// Every sample of the exposition, keyed as written (`name{labels}`).
pub async fn scrape(addr: SocketAddr) -> HashMap<String, f64> {
    let (status, body) = http_get(addr, "/metrics").await;
    assert_eq!(status, 200);
    body.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(|l| {
            let (k, v) = l.rsplit_once(' ').expect("sample line");
            (k.to_owned(), v.parse().expect("numeric sample"))
        })
        .collect()
}

/// Asserts exact values; names every mismatch at once.
pub fn expect(samples: &HashMap<String, f64>, expected: &[(&str, f64)]) {
    let wrong: Vec<String> = expected
        .iter()
        .filter(|(k, v)| samples.get(*k) != Some(v))
        .map(|(k, v)| format!("{k}: expected {v}, got {:?}", samples.get(*k)))
        .collect();
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

/// Counts a received text message's frame bytes as the server counts them.
fn frame_len(payload: usize) -> usize {
    payload + if payload < 126 { 2 } else { 4 }
}

struct Tally {
    bytes: usize,
}

impl Tally {
    async fn recv(&mut self, c: &mut Client) -> serde_json::Value {
        let v = c.recv().await;
        self.bytes += frame_len(v.to_string().len());
        v
    }
}

#[tokio::test]
async fn exact_counts_through_messages_errors_closes_and_a_slow_consumer() {
    let server = start(&[
        "limits.queue_messages=16",
        "limits.slow_consumer_timeout=200ms",
    ]);
    let m = server.metrics_addr().expect("metrics on");
    let mut out = Tally { bytes: 0 };

    // A: connected + joined + its own presence. B: the same, its presence to both.
    let mut a = connect_raw(server.addr(), "/ws/r?client_id=a").await;
    for _ in 0..3 {
        out.recv(&mut a).await;
    }
    let mut b = connect_raw(server.addr(), "/ws/r?client_id=b").await;
    for _ in 0..3 {
        out.recv(&mut b).await;
    }
    assert_eq!(out.recv(&mut a).await["from"], "b", "b's presence");

    let mut sent_bytes = 0;
    for n in 0..3 {
        let text = json!({"type":"chat","data":{"content":format!("m{n}")}}).to_string();
        sent_bytes += text.len();
        a.send_text(&text).await;
    }
    for _ in 0..3 {
        out.recv(&mut a).await;
        out.recv(&mut b).await;
    }
    a.send_text("{bad").await;
    sent_bytes += 4;
    assert_eq!(out.recv(&mut a).await["type"], "error");
    b.close().await;
    assert_eq!(out.recv(&mut a).await["data"]["status"], "offline");

    let node = server.node().clone();
    eventually("b gone", || node.metrics.connected.get() == 1).await;
    expect(
        &scrape(m).await,
        &[
            ("websocket_connected_clients", 1.0),
            ("websocket_connections_total", 2.0),
            ("websocket_messages_total{direction=\"in\"}", 4.0),
            ("websocket_bytes_total{direction=\"in\"}", sent_bytes as f64),
            // 3 + 3 greetings and presences, b's presence to a, 3 chats to 2, 1 error, b offline to a.
            ("websocket_messages_total{direction=\"out\"}", 15.0),
            ("websocket_bytes_total{direction=\"out\"}", out.bytes as f64),
            (
                "websocket_disconnections_total{reason=\"client_close\"}",
                1.0,
            ),
            ("websocket_disconnections_total{reason=\"error\"}", 0.0),
            ("chatd_rooms", 1.0),
            // Presence a and b online, 3 chats, b offline; replies bypass the broker.
            ("chatd_broker_publishes_total", 6.0),
        ],
    );

    // A client that never reads, in a room flooded by another.
    let mut stalled = connect_small_buffer(server.addr(), "/ws/flood").await;
    let mut flooder = connect(server.addr(), "/ws/flood").await;
    flooder.recv_type("system").await;
    let body = "y".repeat(16 * 1024);
    const FLOOD: usize = 400;
    for n in 0..FLOOD {
        flooder.chat(None, &format!("{n}:{body}")).await;
        flooder.recv_type("chat").await;
    }
    // Slowness is judged over time: it stays stalled past the timeout.
    tokio::time::sleep(std::time::Duration::from_millis(400)).await;
    assert_eq!(stalled.expect_close().await, 1008);
    eventually("stalled gone", || node.metrics.connected.get() == 2).await;
    a.close().await;
    flooder.close().await;
    eventually("all gone", || node.metrics.connected.get() == 0).await;
    let s = scrape(m).await;
    expect(
        &s,
        &[
            ("websocket_connected_clients", 0.0),
            ("websocket_connections_total", 4.0),
            (
                "websocket_messages_total{direction=\"in\"}",
                4.0 + FLOOD as f64,
            ),
            (
                "websocket_disconnections_total{reason=\"client_close\"}",
                3.0,
            ),
            (
                "websocket_disconnections_total{reason=\"slow_consumer\"}",
                1.0,
            ),
            ("websocket_disconnections_total{reason=\"error\"}", 0.0),
            ("websocket_disconnections_total{reason=\"timeout\"}", 0.0),
            ("chatd_slow_consumer_closes_total", 1.0),
            ("chatd_rooms", 0.0),
        ],
    );
    assert!(s["chatd_fanout_latency_seconds_count"] > 0.0);
    assert!(s["chatd_send_queue_depth_count"] > 0.0);
    assert!(s["process_resident_memory_bytes"] > 0.0);
    assert!(s["process_open_fds"] > 0.0);
    assert!(s
        .keys()
        .any(|k| k.starts_with("chatd_build_info{") && k.contains("version=\"0.1.0\"")));
    server.shutdown().await;
}

/// A client whose socket stops taking data while its queue still has room:
/// the write makes no progress, the connection ends as an error.
#[tokio::test]
async fn a_stuck_write_is_counted_as_an_error() {
    let server = start(&[
        "limits.queue_messages=100000",
        "limits.queue_bytes=1073741824",
        "limits.write_timeout=300ms",
    ]);
    let node = server.node().clone();
    // Kept open (and never read) until the end.
    let _stuck = connect_small_buffer(server.addr(), "/ws/big").await;
    let mut sender = connect(server.addr(), "/ws/big").await;
    sender.recv_type("system").await;
    let body = "w".repeat(60 * 1024);
    let mut sent = 0;
    while node
        .metrics
        .disconnections(chatd::metrics::DisconnectReason::Error)
        == 0
    {
        assert!(sent < 2000, "the stuck write was never detected");
        sender.chat(None, &body).await;
        sender.recv_type("chat").await;
        sent += 1;
        if sent % 50 == 0 {
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
    }
    eventually("stuck one gone", || node.metrics.connected.get() == 1).await;
    expect(
        &scrape(server.metrics_addr().unwrap()).await,
        &[
            ("websocket_connected_clients", 1.0),
            ("websocket_disconnections_total{reason=\"error\"}", 1.0),
            (
                "websocket_disconnections_total{reason=\"slow_consumer\"}",
                0.0,
            ),
            ("chatd_slow_consumer_closes_total", 0.0),
        ],
    );
    server.shutdown().await;
}
