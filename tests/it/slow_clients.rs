//! Stalled and trickling HTTP requests lock nobody out: requests whose
//! body never comes (or comes a byte a second), from one address, while an
//! innocent client from another address registers, logs in and chats. The
//! attacker's connections beyond `server.max_connections_per_ip` are closed
//! at accept, requests in progress do not hold the upgrades' handshake
//! budget, and a request that moves less than `server.min_transfer_rate`
//! over `server.transfer_timeout` loses its connection.

use serde_json::json;
use std::net::SocketAddr;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

use crate::common::{connect, register_and_login, WAIT};
use crate::store::Db;

/// A connection from `from` (another loopback address than the innocent
/// client's 127.0.0.1).
async fn connect_from(from: &str, to: SocketAddr) -> Option<TcpStream> {
    let socket = TcpSocket::new_v4().ok()?;
    socket.bind(format!("{from}:0").parse().unwrap()).ok()?;
    socket.connect(to).await.ok()
}

/// A login whose body (1,000 bytes announced) stops after one byte.
async fn stalled_login(from: &str, to: SocketAddr) -> Option<TcpStream> {
    let mut s = connect_from(from, to).await?;
    let head = format!(
        "POST /api/chat-api/auth/login HTTP/1.1\r\nHost: {to}\r\n\
         Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n{{"
    );
    s.write_all(head.as_bytes()).await.ok()?;
    Some(s)
}

/// An upload that sends one byte a second.
fn trickling_upload(from: &'static str, to: SocketAddr) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let Some(mut s) = connect_from(from, to).await else {
            return;
        };
        let head = format!(
            "POST /api/chat-api/files?name=slow.bin HTTP/1.1\r\nHost: {to}\r\n\
             Content-Length: 100000\r\n\r\n"
        );
        if s.write_all(head.as_bytes()).await.is_err() {
            return;
        }
        for _ in 0..30 {
            if s.write_all(b"x").await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    })
}

/// What an innocent client does meanwhile: register, log in, connect,
/// chat, and get its ack.
async fn innocent_client(addr: SocketAddr, name: &str) {
    let (_, token) = register_and_login(addr, name, "password-1").await;
    let mut c = connect(addr, &format!("/ws/r?token={token}")).await;
    c.send_json(json!({"type":"chat","room":"r","client_msg_id":"k","data":{"content":"hi"}}))
        .await;
    assert_eq!(c.recv_type("ack").await["data"]["client_msg_id"], "k");
}

/// Whether the server closed `s` (EOF or reset) within `limit`.
async fn closed_within(s: &mut TcpStream, limit: Duration) -> bool {
    let mut buf = [0u8; 4096];
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        match tokio::time::timeout_at(deadline, s.read(&mut buf)).await {
            Err(_) => return false,
            Ok(Ok(0)) | Ok(Err(_)) => return true,
            // An answer (408 or the like) first: read on to the close.
            Ok(Ok(_)) => continue,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_stalled_requests_from_one_address_lock_nobody_out() {
    let db = Db::sqlite(&format!("slow-{}", uuid::Uuid::new_v4()));
    let s = db.server(&["server.transfer_timeout=1s"]);
    let addr = s.addr();
    let mut held = Vec::new();
    for _ in 0..1030 {
        if let Some(c) = stalled_login("127.0.0.2", addr).await {
            held.push(c);
        }
    }
    let uploads: Vec<_> = (0..20)
        .map(|_| trickling_upload("127.0.0.2", addr))
        .collect();
    // While the attack holds its sockets, an innocent client gets through.
    innocent_client(addr, "innocent").await;
    // Beyond the address's bound, the attacker was closed at accept...
    let samples = crate::metrics::scrape(s.metrics_addr().unwrap()).await;
    let refused = samples
        .get("chatd_rejected_connections_total{reason=\"per_address_limit\"}")
        .copied()
        .unwrap_or(0.0);
    assert!(refused >= 1030.0 - 256.0, "refused at accept: {refused}");
    // ...and what it kept is closed once it fails to move its bytes.
    let mut still_open = 0;
    for c in held.iter_mut().take(50) {
        if !closed_within(c, WAIT).await {
            still_open += 1;
        }
    }
    assert_eq!(still_open, 0, "stalled requests kept their connections");
    innocent_client(addr, "second").await;
    for u in uploads {
        u.abort();
    }
    s.shutdown().await;
}

/// With no bound per address, requests in progress still do not fill the
/// budget of connections in their handshake (they counted against it until
/// they ended, and a stalled body never ended).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_in_progress_do_not_hold_the_handshake_budget() {
    let db = Db::sqlite(&format!("slow-budget-{}", uuid::Uuid::new_v4()));
    let s = db.server(&[
        "server.max_connections_per_ip=0",
        "server.max_handshakes=32",
        "server.transfer_timeout=20s",
    ]);
    let addr = s.addr();
    let mut held = Vec::new();
    for _ in 0..64 {
        held.push(stalled_login("127.0.0.2", addr).await.expect("connects"));
    }
    // Each stalled request's head is in: the budget is free again.
    let node = s.node().clone();
    crate::common::eventually("the stalled requests leave the handshake budget", || {
        node.handshakes.load(std::sync::atomic::Ordering::Acquire) == 0
    })
    .await;
    innocent_client(addr, "innocent").await;
    drop(held);
    s.shutdown().await;
}
