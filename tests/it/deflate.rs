//! permessage-deflate (RFC 7692) against the real server, with a raw client
//! that speaks it (the test WebSocket library does not): the offer and the
//! answer, a room's message compressed once and shared (byte-identical
//! frames for every compressing recipient, the same JSON as a plain client
//! gets), short messages left plain, compressed client messages read, and
//! bad compressed input closed without harm to anyone else.

use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress};
use serde_json::{json, Value};
use std::net::SocketAddr;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::common::{connect_room, start, WAIT};

const TAIL: [u8; 4] = [0, 0, 0xff, 0xff];

/// One frame as the server sent it.
struct Frame {
    first: u8,
    payload: Vec<u8>,
}

impl Frame {
    fn compressed(&self) -> bool {
        self.first & 0x40 != 0
    }

    fn opcode(&self) -> u8 {
        self.first & 0x0f
    }

    /// A text frame's JSON, inflated first if it came compressed.
    fn json(&self) -> Value {
        let text = if self.compressed() {
            inflate(&self.payload)
        } else {
            self.payload.clone()
        };
        serde_json::from_slice(&text).unwrap()
    }
}

/// A WebSocket client written for this test: a handshake with any
/// `Sec-WebSocket-Extensions`, masked frames out, raw frames in.
struct RawClient {
    stream: TcpStream,
    buf: Vec<u8>,
    /// The 101's head.
    head: String,
}

impl RawClient {
    async fn connect(addr: SocketAddr, path: &str, extensions: Option<&str>) -> RawClient {
        let mut stream = TcpStream::connect(addr).await.unwrap();
        let ext = extensions
            .map(|e| format!("Sec-WebSocket-Extensions: {e}\r\n"))
            .unwrap_or_default();
        let request = format!(
            "GET {path} HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n{ext}\r\n"
        );
        stream.write_all(request.as_bytes()).await.unwrap();
        let mut buf = Vec::new();
        let end = loop {
            if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            let mut chunk = [0u8; 4096];
            let n = tokio::time::timeout(WAIT, stream.read(&mut chunk))
                .await
                .expect("101 in time")
                .unwrap();
            assert!(n > 0, "closed before the 101");
            buf.extend_from_slice(&chunk[..n]);
        };
        let head = String::from_utf8(buf[..end].to_vec()).unwrap();
        assert!(head.starts_with("HTTP/1.1 101"), "{head}");
        RawClient {
            stream,
            buf: buf[end..].to_vec(),
            head,
        }
    }

    /// The 101's `Sec-WebSocket-Extensions`, if any.
    fn extensions(&self) -> Option<&str> {
        self.head.lines().find_map(|l| {
            let (name, value) = l.split_once(':')?;
            name.eq_ignore_ascii_case("sec-websocket-extensions")
                .then(|| value.trim())
        })
    }

    async fn fill(&mut self, want: usize) {
        while self.buf.len() < want {
            let mut chunk = [0u8; 65536];
            let n = tokio::time::timeout(WAIT, self.stream.read(&mut chunk))
                .await
                .expect("a frame in time")
                .unwrap();
            assert!(n > 0, "connection closed");
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }

    async fn frame(&mut self) -> Frame {
        self.fill(2).await;
        let (first, len7) = (self.buf[0], self.buf[1] & 0x7f);
        assert_eq!(self.buf[1] & 0x80, 0, "server frames are unmasked");
        let (len, header) = match len7 {
            126 => {
                self.fill(4).await;
                (u16::from_be_bytes([self.buf[2], self.buf[3]]) as usize, 4)
            }
            127 => {
                self.fill(10).await;
                let len = u64::from_be_bytes(self.buf[2..10].try_into().unwrap());
                (len as usize, 10)
            }
            n => (n as usize, 2),
        };
        self.fill(header + len).await;
        let payload = self.buf[header..header + len].to_vec();
        self.buf.drain(..header + len);
        Frame { first, payload }
    }

    /// The next message of `kind` (skipping presence and the like), with
    /// its frame.
    async fn recv_type(&mut self, kind: &str) -> (Frame, Value) {
        loop {
            let f = self.frame().await;
            if f.opcode() != 1 {
                continue;
            }
            let v = f.json();
            if v["type"] == kind {
                return (f, v);
            }
        }
    }

    /// Sends one masked frame.
    async fn send(&mut self, first: u8, payload: &[u8]) {
        let mask = [0x11u8, 0x22, 0x33, 0x44];
        let mut out = vec![first];
        match payload.len() {
            n if n < 126 => out.push(0x80 | n as u8),
            n if n <= 0xffff => {
                out.push(0x80 | 126);
                out.extend_from_slice(&(n as u16).to_be_bytes());
            }
            n => {
                out.push(0x80 | 127);
                out.extend_from_slice(&(n as u64).to_be_bytes());
            }
        }
        out.extend_from_slice(&mask);
        out.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
        self.stream.write_all(&out).await.unwrap();
    }

    /// A text message, compressed (RSV1) as permessage-deflate sends it.
    async fn send_compressed(&mut self, text: &str) {
        self.send(0x80 | 0x40 | 0x1, &deflate(text.as_bytes()))
            .await;
    }

    /// Reads until the server's Close; its code.
    async fn close_code(&mut self) -> u16 {
        loop {
            let f = self.frame().await;
            if f.opcode() == 8 {
                return u16::from_be_bytes([f.payload[0], f.payload[1]]);
            }
        }
    }
}

fn inflate(data: &[u8]) -> Vec<u8> {
    let mut d = Decompress::new(false);
    let mut input = data.to_vec();
    input.extend_from_slice(&TAIL);
    let mut out = Vec::with_capacity(input.len() * 20 + 1024);
    d.decompress_vec(&input, &mut out, FlushDecompress::Sync)
        .unwrap();
    assert_eq!(d.total_in() as usize, input.len(), "inflated in one go");
    out
}

fn deflate(data: &[u8]) -> Vec<u8> {
    let mut c = Compress::new(Compression::default(), false);
    let mut out = Vec::with_capacity(data.len() + 64);
    c.compress_vec(data, &mut out, FlushCompress::Sync).unwrap();
    assert!(out.ends_with(&TAIL));
    out.truncate(out.len() - 4);
    out
}

const OFFER: &str = "permessage-deflate; client_max_window_bits";

/// Joins `room` over a raw client (the native protocol's URL room).
async fn raw_in_room(addr: SocketAddr, room: &str, offer: Option<&str>) -> RawClient {
    let mut c = RawClient::connect(addr, &format!("/api/chat-api/ws/{room}"), offer).await;
    loop {
        let (_, m) = c.recv_type("system").await;
        if m["data"]["event"] == "joined" {
            return c;
        }
    }
}

#[tokio::test]
async fn the_offer_is_answered_or_declined() {
    let server = start(&[]);
    let addr = server.addr();
    let c = RawClient::connect(addr, "/ws", Some(OFFER)).await;
    assert_eq!(
        c.extensions(),
        Some("permessage-deflate; server_no_context_takeover; client_no_context_takeover")
    );
    let c = RawClient::connect(
        addr,
        "/ws",
        Some("permessage-deflate; server_max_window_bits=7, permessage-deflate; server_max_window_bits=10"),
    )
    .await;
    assert_eq!(
        c.extensions(),
        Some("permessage-deflate; server_no_context_takeover; client_no_context_takeover; server_max_window_bits=10")
    );
    // Nothing acceptable, or nothing offered: no extension, still a 101.
    let c = RawClient::connect(addr, "/ws", Some("permessage-deflate; bogus")).await;
    assert_eq!(c.extensions(), None);
    let c = RawClient::connect(addr, "/ws", None).await;
    assert_eq!(c.extensions(), None);
    server.shutdown().await;

    let server = start(&["server.deflate.enabled=false"]);
    let c = RawClient::connect(server.addr(), "/ws", Some(OFFER)).await;
    assert_eq!(c.extensions(), None);
    server.shutdown().await;
}

#[tokio::test]
async fn a_room_message_is_compressed_once_for_every_compressing_member() {
    let server = start(&["server.deflate.threshold=200"]);
    let addr = server.addr();
    let mut a = raw_in_room(addr, "deflate", Some(OFFER)).await;
    let mut b = raw_in_room(addr, "deflate", Some(OFFER)).await;
    let mut plain = connect_room(addr, "deflate").await;
    let mut sender = connect_room(addr, "deflate").await;

    let long = "the quick brown fox jumps over the lazy dog; ".repeat(20);
    sender.chat(Some("deflate"), &long).await;
    let expected = plain.recv_type("chat").await;
    let (fa, va) = a.recv_type("chat").await;
    let (fb, vb) = b.recv_type("chat").await;
    assert!(fa.compressed() && fb.compressed());
    // One compression shared: the very same bytes to both.
    assert_eq!(fa.payload, fb.payload);
    assert!(fa.payload.len() * 4 < long.len(), "{}", fa.payload.len());
    assert_eq!(va, expected);
    assert_eq!(vb, expected);

    // Under the threshold: plain, for everyone.
    sender.chat(Some("deflate"), "short").await;
    let (fa, va) = a.recv_type("chat").await;
    assert!(!fa.compressed());
    assert_eq!(va["data"]["content"], "short");
    let (fb, _) = b.recv_type("chat").await;
    assert!(!fb.compressed());
    server.shutdown().await;
}

#[tokio::test]
async fn compressed_client_messages_are_read() {
    let server = start(&[]);
    let addr = server.addr();
    let mut c = raw_in_room(addr, "zin", Some(OFFER)).await;
    let mut watcher = connect_room(addr, "zin").await;
    let body = "compressed by the client ".repeat(10);
    let chat = json!({"type": "chat", "room": "zin", "data": {"content": body}});
    c.send_compressed(&chat.to_string()).await;
    assert_eq!(watcher.recv_type("chat").await["data"]["content"], body);
    // Fragmented: RSV1 on the first frame only.
    let chat = json!({"type": "chat", "room": "zin", "data": {"content": "in two frames"}});
    let z = deflate(chat.to_string().as_bytes());
    let (one, two) = z.split_at(z.len() / 2);
    c.send(0x40 | 0x1, one).await;
    c.send(0x80, two).await;
    assert_eq!(
        watcher.recv_type("chat").await["data"]["content"],
        "in two frames"
    );
    server.shutdown().await;
}

#[tokio::test]
async fn bad_compressed_input_closes_only_its_connection() {
    let server = start(&["limits.max_message_size=4096"]);
    let addr = server.addr();
    let mut watcher = connect_room(addr, "bad").await;
    let mut sender = connect_room(addr, "bad").await;

    // A bomb: 40 bytes that inflate to a megabyte, over the 4 KiB limit.
    let mut bomb = raw_in_room(addr, "bad", Some(OFFER)).await;
    let z = deflate(&vec![b' '; 1 << 20]);
    assert!(z.len() < 2048);
    bomb.send(0x80 | 0x40 | 0x1, &z).await;
    assert_eq!(bomb.close_code().await, 1009);

    // Not deflate data at all.
    let mut garbage = raw_in_room(addr, "bad", Some(OFFER)).await;
    garbage.send(0x80 | 0x40 | 0x1, &[0xff; 32]).await;
    assert_eq!(garbage.close_code().await, 1002);

    // RSV1 on a connection that did not negotiate, and on a control frame.
    let mut unasked = raw_in_room(addr, "bad", None).await;
    unasked.send_compressed("{}").await;
    assert_eq!(unasked.close_code().await, 1002);
    let mut control = raw_in_room(addr, "bad", Some(OFFER)).await;
    control.send(0x80 | 0x40 | 0x9, b"").await;
    assert_eq!(control.close_code().await, 1002);

    // Everyone else is untouched.
    sender.chat(Some("bad"), "still here").await;
    assert_eq!(
        watcher.recv_type("chat").await["data"]["content"],
        "still here"
    );
    server.shutdown().await;
}

/// The dialects share the fan-out: a FastChat client that negotiated
/// compression gets the roster (PRESENCE, over the threshold with two
/// users) compressed, and it inflates to what a plain FastChat client gets.
#[tokio::test]
async fn a_dialect_s_broadcasts_are_compressed_too() {
    let db = crate::store::Db::sqlite(&format!("deflate-fastchat-{}", uuid::Uuid::new_v4()));
    let server = db.server(&[]);
    let addr = server.addr();
    let mut z = RawClient::connect(addr, "/fastchat/ws", Some(OFFER)).await;
    assert!(z.extensions().is_some());
    let (ann, ben) = (
        uuid::Uuid::new_v4().to_string(),
        uuid::Uuid::new_v4().to_string(),
    );
    let hello = |id: &str, name: &str| {
        json!({"type":"HELLO","data":{"user_id":id,"display_name":name}}).to_string()
    };
    z.send(0x81, hello(&ann, "Ann").as_bytes()).await;
    let (_, ack) = z.recv_type("HELLO_ACK").await;
    assert_eq!(ack["data"]["status"], "connected");
    let mut plain = crate::common::connect_raw(addr, "/fastchat/ws").await;
    plain.send_text(&hello(&ben, "Ben")).await;
    // Both get the roster listing both users once Ben is in.
    let both = |v: &Value| v["data"]["users"].as_array().is_some_and(|u| u.len() == 2);
    let (frame, roster) = loop {
        let (f, v) = z.recv_type("PRESENCE").await;
        if both(&v) {
            break (f, v);
        }
    };
    assert!(frame.compressed(), "{roster}");
    let theirs = loop {
        let v = plain.recv_type("PRESENCE").await;
        if both(&v) {
            break v;
        }
    };
    assert_eq!(roster, theirs);
    server.shutdown().await;
}
