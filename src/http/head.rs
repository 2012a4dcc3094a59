//! The first request on a plain connection, read by chatd itself: a
//! WebSocket upgrade is answered here, everything else goes to hyper.
//!
//! Why: the connect profile spent a third of chatd's own time per connect
//! in hyper's connection machinery (its connection task and buffers, the
//! upgrade's channel and boxed socket, the response built as a header map,
//! written and then taken back by `conn::hold`). An upgrade needs none of
//! it: one read of the head, the same checks (`upgrade.rs`), and the `101`
//! queued ahead of the greeting so both leave in one write.
//!
//! What is not a bodiless HTTP/1.1 `GET` on a WebSocket route, does not
//! parse, or has a head over [`MAX_HEAD`] bytes, goes to hyper with the
//! bytes read so far put back in front (`conn::rewind`), and is answered
//! exactly as before. A refused upgrade is answered here, then hyper serves
//! the rest of the (keep-alive) connection.

use bytes::BytesMut;
use http_body_util::BodyExt;
use hyper::{Request, Response};
use std::rc::Rc;
use std::time::Instant;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use super::{serve_connection, upgrade, Admitted, Body, Route};
use crate::conn::hold::HoldUpgrade;
use crate::conn::rewind::Rewind;
use crate::conn::socket::read_drained;
use crate::conn::Io;
use crate::metrics::RejectReason;
use crate::shard::Shard;

/// The first read's buffer: a browser's upgrade head is ~500 bytes, a
/// token adds a few hundred. Grows (doubling) when a head is longer.
const FIRST_READ: usize = 1024;

/// Longer heads are left to hyper (whose own limit then applies), so this
/// path adds no limit of its own.
pub const MAX_HEAD: usize = 8 * 1024;

/// More header lines than this: left to hyper.
const MAX_HEADERS: usize = 64;

/// Bytes read so far that are not (yet) an upgrade to answer here.
#[derive(Debug, PartialEq, Eq)]
pub enum NotYet {
    /// Not a whole head yet.
    Partial,
    /// Anything else: for hyper.
    Other,
}

/// Parses a request head (the parser hyper uses, with the same strictness):
/// a bodiless HTTP/1.1 GET on a WebSocket route gives the request the
/// upgrade checks read and the head's length.
pub fn parse(buf: &[u8]) -> Result<(Request<()>, usize), NotYet> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut parsed = httparse::Request::new(&mut headers);
    let len = match parsed.parse(buf) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => return Err(NotYet::Partial),
        Err(_) => return Err(NotYet::Other),
    };
    let (Some("GET"), Some(path), Some(1)) = (parsed.method, parsed.path, parsed.version) else {
        return Err(NotYet::Other);
    };
    let mut builder = Request::builder().uri(path);
    for h in parsed.headers.iter() {
        // A request body would have to be read past: hyper's job.
        let bodiless = if h.name.eq_ignore_ascii_case("content-length") {
            h.value == b"0"
        } else {
            !h.name.eq_ignore_ascii_case("transfer-encoding")
        };
        if !bodiless {
            return Err(NotYet::Other);
        }
        builder = builder.header(h.name, h.value);
    }
    // A URI or header that does not convert: hyper refuses it with 400.
    let Ok(req) = builder.body(()) else {
        return Err(NotYet::Other);
    };
    match super::route_of(req.uri().path(), &req) {
        Route::Native { .. } | Route::Bare | Route::FastChat | Route::Demo | Route::Relay => {
            Ok((req, len))
        }
        _ => Err(NotYet::Other),
    }
}

/// Whether `buf`, of which the bytes from `new` on just arrived, may hold the
/// end of a request head: a blank line (`\n\n` or `\n\r\n`, as httparse
/// accepts both) that touches the new bytes.
fn may_end_head(buf: &[u8], new: usize) -> bool {
    let tail = &buf[new.saturating_sub(2)..];
    tail.windows(2).any(|w| w == b"\n\n") || tail.windows(3).any(|w| w == b"\n\r\n")
}

/// Serves one accepted plain connection: reads its first request head, and
/// either upgrades it here or hands it to hyper. `guard` counts the
/// connection as in its handshake (and against its address) until then.
pub async fn serve_plain(shard: Rc<Shard>, mut stream: TcpStream, guard: Admitted) {
    let config = &shard.node.config.server;
    let deadline = Instant::now() + config.handshake_timeout;
    let idle_limit = config.http_idle_timeout;
    let mut buf = BytesMut::with_capacity(FIRST_READ);
    // How long the buffer was when last parsed.
    let mut parsed_at = 0;
    let (req, len) = loop {
        if buf.len() == buf.capacity() {
            buf.reserve(buf.capacity());
        }
        // Readiness first, then the read: reading a just-accepted socket
        // at once mostly finds the request not there yet (a wasted recv).
        match tokio::time::timeout_at(deadline.into(), stream.readable()).await {
            Err(_) => {
                shard.node.metrics.rejected(RejectReason::HandshakeTimeout);
                tracing::debug!("connection timed out before a request");
                return;
            }
            Ok(Err(e)) => {
                tracing::debug!(error = %e, "waiting for a request failed");
                return;
            }
            Ok(Ok(())) => {}
        }
        let before = buf.len();
        let spare = buf.capacity() - before;
        // (Drained by a short read: the connection's first read then waits
        // for the client's first frame, not a recv that finds nothing.)
        match read_drained(&stream, spare, |s| s.try_read_buf(&mut buf)) {
            // Gone before a whole request: nothing to answer.
            Ok(0) => return,
            // Parsed again only when the new bytes may end the head, or the
            // buffer doubled since the last parse (so garbage is still
            // refused early): a client sending its head a byte at a time
            // costs linear time, not quadratic.
            Ok(_) if !may_end_head(&buf, before) && buf.len() < 2 * parsed_at => continue,
            Ok(_) => parsed_at = buf.len(),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
            Err(e) => {
                tracing::debug!(error = %e, "reading a request failed");
                return;
            }
        }
        match parse(&buf) {
            Ok(head) => break head,
            Err(NotYet::Partial) if buf.len() < MAX_HEAD => continue,
            Err(NotYet::Partial | NotYet::Other) => {
                let io = HoldUpgrade::new(Rewind::new(buf.freeze(), stream));
                serve_connection(shard, io, deadline, guard).await;
                return;
            }
        }
    };
    let read_ahead = buf.split_off(len).freeze();
    let mut req = req;
    let client = guard.client(&shard.node, &req);
    req.extensions_mut().insert(client);
    let route = super::route_of(req.uri().path(), &req);
    match upgrade::websocket(&req, &shard, route, req.uri().query()).await {
        Ok(accepted) => {
            // Present: `websocket` checked it.
            let key = req
                .headers()
                .get(hyper::header::SEC_WEBSOCKET_KEY)
                .map_or(&[][..], |k| k.as_bytes());
            let reply = accepted.switching_protocols(key);
            drop(guard);
            let io = Io::Plain {
                stream,
                read_ahead,
                reply,
            };
            accepted.start(shard, io);
        }
        Err(refused) => {
            if let Err(e) = respond(&mut stream, refused).await {
                tracing::debug!(error = %e, "writing a refusal failed");
                return;
            }
            // The next request (keep-alive) is hyper's.
            let io = HoldUpgrade::new(Rewind::new(read_ahead, stream));
            serve_connection(shard, io, Instant::now() + idle_limit, guard).await;
        }
    }
}

/// Writes a whole (small, in-memory) response as HTTP/1.1.
async fn respond(stream: &mut TcpStream, resp: Response<Body>) -> std::io::Result<()> {
    let (parts, body) = resp.into_parts();
    let body = body.collect().await?.to_bytes();
    let mut out = Vec::with_capacity(256 + body.len());
    let status = parts.status;
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(status.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(status.canonical_reason().unwrap_or("").as_bytes());
    out.extend_from_slice(b"\r\n");
    for (name, value) in &parts.headers {
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(format!("content-length: {}\r\n\r\n", body.len()).as_bytes());
    out.extend_from_slice(&body);
    stream.write_all(&out).await
}

#[cfg(test)]
mod tests {
    use super::*;

    const UPGRADE: &str = "GET /ws?room=a HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n";

    #[test]
    fn an_upgrade_head_is_ours_with_its_length() {
        let mut bytes = UPGRADE.as_bytes().to_vec();
        bytes.extend_from_slice(&[0x81, 0x80]); // a frame sent right behind
        let (req, len) = parse(&bytes).expect("an upgrade");
        assert_eq!(len, UPGRADE.len());
        assert_eq!(req.uri().query(), Some("room=a"));
        assert_eq!(req.headers()["sec-websocket-version"], "13");
        assert_eq!(req.version(), hyper::Version::HTTP_11);
    }

    #[test]
    fn the_end_of_a_head_is_seen_whichever_read_brings_it() {
        let head = UPGRADE.as_bytes();
        for cut in 0..head.len() {
            // Only the read that completes the head may end it.
            assert!(!may_end_head(&head[..cut], 0), "{cut}");
            assert!(may_end_head(head, cut), "{cut}");
        }
        assert!(may_end_head(b"GET / HTTP/1.1\nHost: x\n\n", 20));
    }

    #[test]
    fn partial_heads_wait() {
        for cut in [0, 1, 20, UPGRADE.len() - 1] {
            assert_eq!(
                parse(&UPGRADE.as_bytes()[..cut]).err(),
                Some(NotYet::Partial)
            );
        }
    }

    #[test]
    fn everything_else_is_hyper_s() {
        let other = |head: &str| parse(head.as_bytes()).err() == Some(NotYet::Other);
        // Not a WebSocket route, not GET, HTTP/1.0, a body, garbage.
        assert!(other("GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"));
        assert!(other("GET /api/chat-api/users HTTP/1.1\r\n\r\n"));
        assert!(other("POST /ws HTTP/1.1\r\nHost: x\r\n\r\n"));
        assert!(other("GET /ws HTTP/1.0\r\nHost: x\r\n\r\n"));
        assert!(other(
            "GET /ws HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello"
        ));
        assert!(other(
            "GET /ws HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"
        ));
        let tls_hello = b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\r\n\r\n";
        assert_eq!(parse(tls_hello).err(), Some(NotYet::Other));
        let many = "a: b\r\n".repeat(MAX_HEADERS + 1);
        assert!(other(&format!("GET /ws HTTP/1.1\r\n{many}\r\n")));
        // A plain GET of `/` is the web page (hyper's); its upgrade, the relay.
        assert!(other("GET / HTTP/1.1\r\nHost: x\r\n\r\n"));
        assert!(
            parse(b"GET / HTTP/1.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n").is_ok()
        );
        // An explicit empty body is no body.
        assert!(parse(b"GET /relay HTTP/1.1\r\nContent-Length: 0\r\n\r\n").is_ok());
    }
}
