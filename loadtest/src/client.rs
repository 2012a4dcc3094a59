//! The load generator's WebSocket client, written for speed: a plain
//! HTTP/1.1 upgrade, then frames read straight from a reused buffer (no
//! allocation per message), so one generator core can take several hundred
//! thousand deliveries a second. Messages carry their intended send time.

use anyhow::{bail, Context};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::OnceLock;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;

static EPOCH: OnceLock<Instant> = OnceLock::new();

/// Nanoseconds since the generator's start, on the monotonic clock.
pub fn now_ns() -> u64 {
    EPOCH.get_or_init(Instant::now).elapsed().as_nanos() as u64
}

pub fn at_ns(ns: u64) -> Instant {
    *EPOCH.get_or_init(Instant::now) + Duration::from_nanos(ns)
}

/// Where clients connect from: 127.0.0.1, 127.0.0.2, ... (each source
/// address has its own ephemeral ports).
#[derive(Clone, Copy)]
pub struct Sources {
    pub count: u8,
}

impl Sources {
    pub fn pick(self, i: usize) -> Option<IpAddr> {
        (self.count > 1).then(|| {
            IpAddr::V4(Ipv4Addr::new(
                127,
                0,
                0,
                1 + (i % self.count as usize) as u8,
            ))
        })
    }
}

/// Why a connection attempt failed: the generator's own limits are named.
pub fn describe(e: &anyhow::Error) -> String {
    let text = format!("{e:#}");
    if text.contains("Too many open files") {
        format!("LIMIT (generator file descriptors): {text}")
    } else if text.contains("Cannot assign requested address")
        || text.contains("Address already in use")
    {
        format!("LIMIT (ephemeral ports; use --sources): {text}")
    } else {
        text
    }
}

pub struct Ws {
    pub reader: Reader,
    pub writer: Writer,
}

/// The permessage-deflate offer of `--deflate` (a browser's).
const DEFLATE_OFFER: &str = "permessage-deflate; client_max_window_bits";

pub async fn connect(
    server: SocketAddr,
    path: &str,
    source: Option<IpAddr>,
    deflate: bool,
) -> anyhow::Result<Ws> {
    let socket = match server {
        SocketAddr::V4(_) => tokio::net::TcpSocket::new_v4()?,
        SocketAddr::V6(_) => tokio::net::TcpSocket::new_v6()?,
    };
    if let Some(ip) = source {
        socket
            .bind(SocketAddr::new(ip, 0))
            .context("bind source address")?;
    }
    let mut stream: TcpStream = socket.connect(server).await.context("tcp connect")?;
    stream.set_nodelay(true)?;
    let extensions = if deflate {
        format!("Sec-WebSocket-Extensions: {DEFLATE_OFFER}\r\n")
    } else {
        String::new()
    };
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: {server}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n{extensions}\r\n"
    );
    stream
        .write_all(request.as_bytes())
        .await
        .context("websocket handshake")?;
    let mut buf = Vec::with_capacity(4096);
    let end = loop {
        if stream
            .read_buf(&mut buf)
            .await
            .context("websocket handshake")?
            == 0
        {
            bail!("websocket handshake: connection closed");
        }
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        if buf.len() > 16 * 1024 {
            bail!("websocket handshake: response too long");
        }
    };
    if !buf.starts_with(b"HTTP/1.1 101") {
        let line = String::from_utf8_lossy(
            &buf[..buf.iter().position(|&b| b == b'\r').unwrap_or(buf.len())],
        )
        .into_owned();
        bail!("websocket handshake refused: {line}");
    }
    let agreed = contains(&buf[..end].to_ascii_lowercase(), b"permessage-deflate");
    if deflate && !agreed {
        bail!("the server declined permessage-deflate");
    }
    buf.drain(..end);
    let (read, write) = stream.into_split();
    Ok(Ws {
        reader: Reader {
            io: read,
            buf,
            start: 0,
            inflater: agreed.then(|| Box::new(Inflater::new())),
            last_len: 0,
        },
        writer: Writer {
            io: write,
            out: Vec::new(),
            acked: false,
        },
    })
}

/// What the reader found in a frame.
pub enum Frame {
    /// A text message; `Some` is the intended send time of a chat.
    Text(Option<u64>),
    /// A store's ack of a chat sent with its intended time as client_msg_id.
    Ack(u64),
    Close(Option<u16>, String),
    Other,
}

pub struct Reader {
    io: OwnedReadHalf,
    buf: Vec<u8>,
    start: usize,
    /// With permessage-deflate: inflates compressed (RSV1) frames.
    inflater: Option<Box<Inflater>>,
    /// Bytes of the last frame returned, as it came over the wire.
    pub last_len: usize,
}

/// permessage-deflate's receiving side (the server sends without context
/// takeover, so each message is inflated from a reset state).
struct Inflater {
    d: flate2::Decompress,
    out: Vec<u8>,
}

impl Inflater {
    fn new() -> Inflater {
        Inflater {
            d: flate2::Decompress::new(false),
            out: Vec::with_capacity(64 * 1024),
        }
    }

    fn inflate(&mut self, payload: &[u8]) -> anyhow::Result<&[u8]> {
        self.d.reset(false);
        self.out.clear();
        for input in [payload, &[0, 0, 0xff, 0xff][..]] {
            let start = self.d.total_in();
            while ((self.d.total_in() - start) as usize) < input.len() {
                if self.out.capacity() - self.out.len() < 1024 {
                    self.out.reserve(64 * 1024);
                }
                let done = (self.d.total_in() - start) as usize;
                self.d
                    .decompress_vec(&input[done..], &mut self.out, flate2::FlushDecompress::Sync)
                    .context("inflating a compressed frame")?;
            }
        }
        Ok(&self.out)
    }
}

impl Reader {
    /// The next text message's payload, whole (setting up a session).
    pub async fn next_text(&mut self) -> anyhow::Result<String> {
        loop {
            if let Some((text, used)) = text_payload(&self.buf[self.start..]) {
                self.start += used;
                return Ok(text);
            }
            if self.io.read_buf(&mut self.buf).await? == 0 {
                bail!("connection closed during setup");
            }
        }
    }

    /// The next frame, or `None` at the end of the stream.
    pub async fn next(&mut self) -> anyhow::Result<Option<Frame>> {
        loop {
            if let Some((first, payload, used)) = split_frame(&self.buf[self.start..]) {
                let frame = if first & 0x40 != 0 {
                    let inflater = self
                        .inflater
                        .as_mut()
                        .context("a compressed frame without permessage-deflate")?;
                    classify(first & 0x0F, inflater.inflate(payload)?)
                } else {
                    classify(first & 0x0F, payload)
                };
                self.start += used;
                self.last_len = used;
                return Ok(Some(frame));
            }
            if self.start > 0 {
                self.buf.drain(..self.start);
                self.start = 0;
            }
            if self.buf.capacity() - self.buf.len() < 16 * 1024 {
                self.buf.reserve(64 * 1024);
            }
            if self.io.read_buf(&mut self.buf).await? == 0 {
                return Ok(None);
            }
        }
    }
}

/// One complete server frame (unmasked) at the start of `b`: its first
/// byte (FIN, RSV1, opcode), its payload, and the bytes it used.
fn split_frame(b: &[u8]) -> Option<(u8, &[u8], usize)> {
    if b.len() < 2 {
        return None;
    }
    let (len, header) = match b[1] & 0x7F {
        126 => (u16::from_be_bytes([*b.get(2)?, *b.get(3)?]) as usize, 4),
        127 => (
            u64::from_be_bytes(b.get(2..10)?.try_into().ok()?) as usize,
            10,
        ),
        n => (n as usize, 2),
    };
    let payload = b.get(header..header + len)?;
    Some((b[0], payload, header + len))
}

/// One text frame's payload, whole, and the bytes it used.
fn text_payload(b: &[u8]) -> Option<(String, usize)> {
    let (_, payload, used) = split_frame(b)?;
    Some((String::from_utf8_lossy(payload).into_owned(), used))
}

/// What one frame's (inflated) payload is.
fn classify(opcode: u8, payload: &[u8]) -> Frame {
    match opcode {
        0x1 => match acked_ns(payload) {
            Some(ns) => Frame::Ack(ns),
            None => Frame::Text(intended_ns(payload)),
        },
        0x8 => {
            let code = (payload.len() >= 2).then(|| u16::from_be_bytes([payload[0], payload[1]]));
            Frame::Close(
                code,
                String::from_utf8_lossy(payload.get(2..).unwrap_or_default()).into_owned(),
            )
        }
        _ => Frame::Other,
    }
}

pub struct Writer {
    io: OwnedWriteHalf,
    out: Vec<u8>,
    /// Chats carry their intended time as `client_msg_id` (durable scenario).
    pub acked: bool,
}

impl Writer {
    /// Sends one text message (setting up a session).
    pub async fn text(&mut self, text: &str) -> std::io::Result<()> {
        self.out.clear();
        self.frame(text);
        self.io.write_all(&self.out).await
    }

    /// Sends `n` chats in one write (1 normally; more for a burst, as a
    /// client that batches its output sends), each starting with the
    /// intended send time and padded to `size` bytes.
    pub async fn burst(&mut self, intended_ns: u64, size: usize, n: usize) -> std::io::Result<()> {
        let text = if self.acked {
            acked_chat_text(intended_ns, size)
        } else {
            chat_text(intended_ns, size)
        };
        self.out.clear();
        for _ in 0..n {
            self.frame(&text);
        }
        self.io.write_all(&self.out).await
    }

    fn frame(&mut self, text: &str) {
        self.out.push(0x81);
        // Masked with the all-zero key: valid, and the payload stays as is.
        match text.len() {
            n if n < 126 => self.out.push(0x80 | n as u8),
            n if n <= 0xFFFF => {
                self.out.push(0x80 | 126);
                self.out.extend_from_slice(&(n as u16).to_be_bytes());
            }
            n => {
                self.out.push(0x80 | 127);
                self.out.extend_from_slice(&(n as u64).to_be_bytes());
            }
        }
        self.out.extend_from_slice(&[0, 0, 0, 0]);
        self.out.extend_from_slice(text.as_bytes());
    }
}

pub fn chat_text(intended_ns: u64, size: usize) -> String {
    let head = format!("{intended_ns}:");
    let pad = size.saturating_sub(head.len());
    format!(
        r#"{{"type":"chat","data":{{"content":"{head}{}"}}}}"#,
        "x".repeat(pad)
    )
}

/// The same with the intended time as `client_msg_id`, so that the store's
/// ack carries it back (ack latency).
pub fn acked_chat_text(intended_ns: u64, size: usize) -> String {
    let head = format!("{intended_ns}:");
    let pad = size.saturating_sub(head.len());
    format!(
        r#"{{"type":"chat","client_msg_id":"{intended_ns}","data":{{"content":"{head}{}"}}}}"#,
        "x".repeat(pad)
    )
}

/// The intended send time in an ack, without a JSON parse.
pub fn acked_ns(text: &[u8]) -> Option<u64> {
    number_after(text, br#""type":"ack""#, br#""client_msg_id":""#)
}

/// The intended send time in a delivered chat (native, or the demo
/// dialect's `channelMessage`), without a JSON parse.
pub fn intended_ns(text: &[u8]) -> Option<u64> {
    number_after(text, br#""type":"chat""#, br#""content":""#)
        .or_else(|| number_after(text, br#""type":"channelMessage""#, br#""message":""#))
}

/// In a message of the given `kind`, the number that starts right after `key`.
fn number_after(text: &[u8], kind: &[u8], key: &[u8]) -> Option<u64> {
    if !contains(text, kind) {
        return None;
    }
    let start = find(text, key)? + key.len();
    let digits = text[start..]
        .iter()
        .take_while(|b| b.is_ascii_digit())
        .count();
    std::str::from_utf8(&text[start..start + digits])
        .ok()?
        .parse()
        .ok()
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    find(hay, needle).is_some()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_ack_carries_the_intended_time_back() {
        let ack = br#"{"id":"x","type":"ack","room":"r","data":{"client_msg_id":"987654321","id":"y","seq":3}}"#;
        assert_eq!(acked_ns(ack), Some(987654321));
        assert_eq!(
            acked_ns(acked_chat_text(5, 40).as_bytes()),
            None,
            "a chat is not an ack"
        );
    }

    #[test]
    fn intended_time_round_trips_through_an_envelope() {
        let text = chat_text(123456789, 64);
        assert_eq!(
            text.len(),
            r#"{"type":"chat","data":{"content":""}}"#.len() + 64
        );
        let envelope = text.replace(
            r#"{"type":"chat","data""#,
            r#"{"id":"x","type":"chat","room":"r","data""#,
        );
        assert_eq!(intended_ns(envelope.as_bytes()), Some(123456789));
        assert_eq!(
            intended_ns(br#"{"type":"presence","data":{"content":"1:"}}"#),
            None
        );
    }

    #[test]
    fn parses_frames_of_each_length_form() {
        for len in [5usize, 200, 70000] {
            let mut b = vec![0x81];
            match len {
                n if n < 126 => b.push(n as u8),
                n if n <= 0xFFFF => {
                    b.push(126);
                    b.extend_from_slice(&(n as u16).to_be_bytes());
                }
                n => {
                    b.push(127);
                    b.extend_from_slice(&(n as u64).to_be_bytes());
                }
            }
            b.extend(std::iter::repeat_n(b'a', len));
            assert!(split_frame(&b[..b.len() - 1]).is_none());
            let (_, _, used) = split_frame(&b).unwrap();
            assert_eq!(used, b.len());
        }
    }
}
