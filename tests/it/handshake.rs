//! Before the upgrade (issue 9, findings 3 and 5): time limits on silent,
//! partial and idle HTTP connections, the handshake and connection caps,
//! accept backoff when out of file descriptors, and RFC 6455 checks of the
//! upgrade request. Each failed before: the sockets stayed open for good,
//! and malformed handshakes got 101.

use std::net::SocketAddr;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use chatd::metrics::RejectReason;

use crate::common::{connect, connect_raw, http_get, listening_addr, start, WAIT};

/// Reads until the server closes the socket; everything it sent.
async fn read_until_closed(stream: &mut TcpStream) -> String {
    let mut all = Vec::new();
    tokio::time::timeout(WAIT, stream.read_to_end(&mut all))
        .await
        .expect("the server closed the socket in time")
        .expect("read");
    String::from_utf8_lossy(&all).into_owned()
}

async fn raw_request(addr: SocketAddr, request: &str) -> String {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(request.as_bytes()).await.unwrap();
    read_until_closed(&mut s).await
}

#[tokio::test]
async fn silent_partial_and_idle_connections_are_dropped() {
    let server = start(&[
        "server.handshake_timeout=300ms",
        "server.http_idle_timeout=300ms",
    ]);
    let addr = server.addr();
    let started = Instant::now();
    let mut silent = TcpStream::connect(addr).await.unwrap();
    let mut partial = TcpStream::connect(addr).await.unwrap();
    partial
        .write_all(b"GET /ws HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    let mut idle = TcpStream::connect(addr).await.unwrap();
    idle.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    assert_eq!(read_until_closed(&mut silent).await, "");
    assert_eq!(read_until_closed(&mut partial).await, "");
    let answered = read_until_closed(&mut idle).await;
    assert!(answered.starts_with("HTTP/1.1 200"), "{answered}");
    assert!(started.elapsed() >= Duration::from_millis(300));
    let metrics = &server.node().metrics;
    assert_eq!(metrics.rejections(RejectReason::HandshakeTimeout), 3);
    // A WebSocket that upgrades in time is not affected by either limit.
    let mut c = connect(addr, "/ws/r").await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    c.chat(None, "still open").await;
    assert_eq!(c.recv_type("chat").await["data"]["content"], "still open");
    server.shutdown().await;
}

#[tokio::test]
async fn handshake_and_connection_caps() {
    // One shard: connections are accepted in the order they were made.
    let server = start(&[
        "server.shards=1",
        "server.max_handshakes=2",
        "server.max_connections=1",
    ]);
    let addr = server.addr();
    let _a = TcpStream::connect(addr).await.unwrap();
    let _b = TcpStream::connect(addr).await.unwrap();
    // The third is closed at once, long before the handshake timeout.
    let mut third = TcpStream::connect(addr).await.unwrap();
    let _ = third
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .await;
    let mut buf = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(3), third.read_to_end(&mut buf)).await;
    assert!(
        matches!(read, Ok(Ok(0)) | Ok(Err(_))),
        "refused at accept: {read:?}"
    );
    let metrics = server.node().metrics.clone();
    assert!(metrics.rejections(RejectReason::HandshakeLimit) >= 1);
    drop((_a, _b));
    crate::common::eventually("handshakes released", || {
        server
            .node()
            .handshakes
            .load(std::sync::atomic::Ordering::Acquire)
            == 0
    })
    .await;
    let _first = connect(addr, "/ws").await;
    let refused = tokio_tungstenite::connect_async(format!("ws://{addr}/ws")).await;
    match refused {
        Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => {
            assert_eq!(resp.status(), 503)
        }
        other => panic!("expected 503, got {other:?}"),
    }
    assert_eq!(metrics.rejections(RejectReason::MaxConnections), 1);
    server.shutdown().await;
}

#[tokio::test]
async fn malformed_upgrade_requests_get_400() {
    let server = start(&["server.http_idle_timeout=200ms"]);
    let addr = server.addr();
    let upgrade = |version: &str, host: bool, key: &str| {
        format!(
            "GET /ws HTTP/{version}\r\n{}Connection: Upgrade\r\nUpgrade: websocket\r\n\
             Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: {key}\r\n\r\n",
            if host { "Host: x\r\n" } else { "" }
        )
    };
    let good = "dGhlIHNhbXBsZSBub25jZQ==";
    for (request, reason) in [
        (upgrade("1.1", true, "abc"), "Sec-WebSocket-Key"),
        (upgrade("1.1", true, ""), "Sec-WebSocket-Key"),
        (upgrade("1.1", false, good), "Host"),
        (upgrade("1.0", true, good), "HTTP/1.1"),
    ] {
        let answer = raw_request(addr, &request).await;
        assert!(answer.contains(" 400 "), "{request}: {answer}");
        assert!(answer.contains(reason), "{request}: {answer}");
    }
    // The good one still upgrades.
    connect_raw(addr, "/ws").await;
    server.shutdown().await;
}

/// With the fd limit lowered, silent sockets used to lock out every new
/// client for good and the log got thousands of "accept failed" lines. Now
/// the silent ones time out, the accept loop backs off, logs once per
/// interval and counts, and the node serves again.
#[tokio::test]
async fn out_of_file_descriptors_backs_off_and_recovers() {
    let bin = env!("CARGO_BIN_EXE_chatd");
    let mut child = tokio::process::Command::new("sh")
        .args([
            "-c",
            &format!(
                "ulimit -n 64 && exec {bin} --host 127.0.0.1 --port 0 --set metrics.enabled=false \
                 --set server.shards=1 --set server.handshake_timeout=1s --log-level warn"
            ),
        ])
        .env("NO_COLOR", "1")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let addr = listening_addr(&mut child).await;
    let mut silent = Vec::new();
    for _ in 0..100 {
        silent.push(TcpStream::connect(addr).await.unwrap());
    }
    // Out of descriptors for a while, then the silent ones time out (1 s).
    tokio::time::sleep(Duration::from_secs(2)).await;
    drop(silent);
    let deadline = Instant::now() + WAIT;
    loop {
        let ok = tokio::time::timeout(Duration::from_secs(1), http_get(addr, "/healthz")).await;
        if matches!(ok, Ok((200, _))) {
            break;
        }
        assert!(Instant::now() < deadline, "the node never served again");
    }
    child.kill().await.unwrap();
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .await
        .unwrap();
    let warnings = stderr.matches("accept failed").count();
    assert!(
        (1..=3).contains(&warnings),
        "one warning per interval, got {warnings}:\n{stderr}"
    );
}

/// Reads what the server sends next onto `got`; it must send something.
async fn read_more(stream: &mut TcpStream, got: &mut Vec<u8>) {
    let mut buf = [0u8; 4096];
    let n = tokio::time::timeout(WAIT, stream.read(&mut buf))
        .await
        .expect("more from the server in time")
        .expect("read");
    assert!(n > 0, "closed early, after {got:?}");
    got.extend_from_slice(&buf[..n]);
}

/// Reads one HTTP response head (to the blank line) and returns it with the
/// bytes that came after it.
async fn read_head(stream: &mut TcpStream) -> (String, Vec<u8>) {
    let mut got = Vec::new();
    loop {
        if let Some(end) = got.windows(4).position(|w| w == b"\r\n\r\n") {
            let rest = got.split_off(end + 4);
            return (String::from_utf8_lossy(&got).into_owned(), rest);
        }
        read_more(stream, &mut got).await;
    }
}

/// The header and payload length of the unmasked server frame at the start
/// of `have` (under 64 KiB), once its header is there.
fn frame_size(have: &[u8]) -> Option<(usize, usize)> {
    match *have.get(1)? & 0x7f {
        127 => panic!("a frame over 64 KiB"),
        126 if have.len() >= 4 => Some((4, u16::from_be_bytes([have[2], have[3]]) as usize)),
        126 => None,
        len => Some((2, len as usize)),
    }
}

/// Reads server frames (unmasked, not fragmented; `have`: bytes already
/// read) until one with `opcode`, skipping others; returns its payload.
async fn read_frame(stream: &mut TcpStream, have: &mut Vec<u8>, opcode: u8) -> Vec<u8> {
    loop {
        while let Some((header, len)) = frame_size(have).filter(|(h, l)| have.len() >= h + l) {
            let frame: Vec<u8> = have.drain(..header + len).collect();
            if frame[0] & 0x0f == opcode {
                return frame[header..].to_vec();
            }
        }
        read_more(stream, have).await;
    }
}

/// A masked client Ping with `payload` (mask 0: the payload as is).
fn ping(payload: &[u8]) -> Vec<u8> {
    let mut frame = vec![0x89, 0x80 | payload.len() as u8, 0, 0, 0, 0];
    frame.extend_from_slice(payload);
    frame
}

fn upgrade_head(path: &str, extra: &str) -> String {
    format!(
        "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
         Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n{extra}\r\n"
    )
}

/// chatd answers plain upgrades itself and leaves the rest to hyper: both
/// must upgrade the same way. A head in pieces, a head with the client's
/// first frame right behind it (read ahead), and a head too long for chatd's
/// own reader (hyper's path) each get the 101 with the right accept key,
/// then the greeting, then a Pong for the Ping sent with the head.
#[tokio::test]
async fn upgrades_in_pieces_with_frames_behind_and_too_long_for_the_own_reader() {
    let server = start(&[]);
    let addr = server.addr();
    let long = format!("X-Pad: {}\r\n", "p".repeat(OWN_HEAD_LIMIT + 100));
    for (what, head) in [
        ("in pieces", upgrade_head("/ws/r", "")),
        ("frame behind", upgrade_head("/ws/r", "")),
        ("too long", upgrade_head("/ws/r", &long)),
    ] {
        let mut s = TcpStream::connect(addr).await.unwrap();
        let mut bytes = head.into_bytes();
        if what == "in pieces" {
            for piece in bytes.chunks(40) {
                s.write_all(piece).await.unwrap();
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            s.write_all(&ping(b"hi")).await.unwrap();
        } else {
            bytes.extend_from_slice(&ping(b"hi"));
            s.write_all(&bytes).await.unwrap();
        }
        let (head, mut rest) = read_head(&mut s).await;
        assert!(head.starts_with("HTTP/1.1 101 "), "{what}: {head}");
        // RFC 6455 §1.3's example key and answer.
        assert!(
            head.to_ascii_lowercase()
                .contains("sec-websocket-accept: s3pplmbitxaq9kygzzhzrbk+xoo="),
            "{what}: {head}"
        );
        let greeting = read_frame(&mut s, &mut rest, 0x1).await;
        assert!(
            String::from_utf8_lossy(&greeting).contains("connected"),
            "{what}"
        );
        assert_eq!(read_frame(&mut s, &mut rest, 0xA).await, b"hi", "{what}");
    }
    server.shutdown().await;
}

/// The longest head chatd reads itself (README, "The upgrade request").
const OWN_HEAD_LIMIT: usize = 8 * 1024;

/// Reads a response with a `content-length` body: head, body, and what
/// came after.
async fn read_response(stream: &mut TcpStream) -> (String, String, Vec<u8>) {
    let (head, mut rest) = read_head(stream).await;
    let length: usize = head
        .lines()
        .find_map(|l| {
            l.to_ascii_lowercase()
                .strip_prefix("content-length: ")
                .map(str::to_owned)
        })
        .expect("a content-length")
        .parse()
        .unwrap();
    while rest.len() < length {
        read_more(stream, &mut rest).await;
    }
    let after = rest.split_off(length);
    (head, String::from_utf8_lossy(&rest).into_owned(), after)
}

/// A refused upgrade that chatd answered itself leaves the connection open
/// for the next requests, which hyper serves (keep-alive as before): a
/// plain request, then an upgrade (hyper's 101, held back and sent with the
/// greeting).
#[tokio::test]
async fn a_refused_upgrade_keeps_the_connection_for_the_next_request() {
    let server = start(&[]);
    let addr = server.addr();
    let mut s = TcpStream::connect(addr).await.unwrap();
    let refused = upgrade_head("/ws?client_id=not%20valid", "");
    s.write_all(refused.as_bytes()).await.unwrap();
    let (head, body, _) = read_response(&mut s).await;
    assert!(head.starts_with("HTTP/1.1 400 Bad Request"), "{head}");
    assert!(body.contains("invalid client_id"), "{body}");
    s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let (head, body, _) = read_response(&mut s).await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert_eq!(body, r#"{"status":"ok"}"#);
    let mut upgrade = upgrade_head("/ws/r", "").into_bytes();
    upgrade.extend_from_slice(&ping(b"again"));
    s.write_all(&upgrade).await.unwrap();
    let (head, mut rest) = read_head(&mut s).await;
    assert!(head.starts_with("HTTP/1.1 101 "), "{head}");
    let greeting = read_frame(&mut s, &mut rest, 0x1).await;
    assert!(String::from_utf8_lossy(&greeting).contains("connected"));
    assert_eq!(read_frame(&mut s, &mut rest, 0xA).await, b"again");
    server.shutdown().await;
}

/// Bytes that are not HTTP (a TLS ClientHello on the plain port) are
/// refused with 400 (and the socket closed) long before the handshake
/// timeout, although they hold no line end for the head reader to wait for.
#[tokio::test]
async fn garbage_without_a_line_end_is_refused_at_once() {
    // Longer than `read_until_closed` waits.
    let server = start(&["server.handshake_timeout=1h"]);
    let answer = raw_request(server.addr(), "\x16\x03\x01\x02\x00\x01\x00\x01\x03\x03").await;
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    server.shutdown().await;
}
