//! Entry points for the fuzz targets in `fuzz/` (not an API: hidden from
//! the docs). Each takes raw client input through the same code the server
//! runs on it; a panic, overflow or hang here is a bug.

use bytes::Bytes;
use futures_util::FutureExt;
use hyper::Request;
use parking_lot::Mutex;
use std::sync::{mpsc, OnceLock};

use crate::http;
use crate::protocol::{self, ClientId, ParseLimits, RoomName};
use crate::ws::FrameReader;

/// The native command parser with the default limits, run on a thread with
/// a shard's stack: the main thread's 8 MiB would hide a stack overflow that
/// kills a shard (10,000 nested `[` fit in 8 MiB, not in 2).
pub fn command(data: &[u8]) {
    on_shard_stack(data, parse_command);
}

fn parse_command(data: &[u8]) {
    let limits = ParseLimits {
        max_name: 64,
        max_depth: 32,
    };
    // Whatever parsed must be within the limits.
    if let Ok(protocol::Command::Join { room, .. } | protocol::Command::Leave(room)) =
        protocol::parse(data, limits)
    {
        assert!(room.as_str().len() <= 64);
    }
}

/// Runs `f(data)` on one long-lived thread with `runtime::SHARD_STACK`; a
/// panic there is re-raised here (an overflow aborts the process, which the
/// fuzzer reports too).
fn on_shard_stack(data: &[u8], f: fn(&[u8])) {
    type Job = (Vec<u8>, fn(&[u8]), mpsc::SyncSender<bool>);
    static WORKER: OnceLock<Mutex<mpsc::SyncSender<Job>>> = OnceLock::new();
    let worker = WORKER.get_or_init(|| {
        let (tx, rx) = mpsc::sync_channel::<Job>(0);
        std::thread::Builder::new()
            .stack_size(crate::runtime::SHARD_STACK)
            .spawn(move || {
                for (data, f, done) in rx {
                    let ok = std::panic::catch_unwind(|| f(&data)).is_ok();
                    let _ = done.send(ok);
                }
            })
            .expect("fuzz worker thread");
        Mutex::new(tx)
    });
    let (done_tx, done_rx) = mpsc::sync_channel(1);
    let job = (data.to_vec(), f, done_tx);
    worker.lock().send(job).expect("worker alive");
    assert!(
        done_rx.recv().expect("worker alive"),
        "panicked on the shard stack"
    );
}

/// The frame reader over one read-ahead buffer (as after an upgrade), with a
/// small message limit so that the limit paths are reached. The first
/// byte's low bit: permessage-deflate negotiated (compressed messages are
/// inflated).
pub fn frames(data: &[u8]) {
    let Some((&mode, data)) = data.split_first() else {
        return;
    };
    let inflate = mode & 1 == 1;
    let mut reader = FrameReader::new(&[][..], Bytes::copy_from_slice(data), 1024, inflate);
    for _ in 0..data.len() + 1 {
        // An in-memory source never waits.
        match reader.next().now_or_never() {
            Some(Ok(_)) => continue,
            Some(Err(_)) => return,
            None => panic!("the reader waited on an in-memory source"),
        }
    }
}

/// Routing and the upgrade checks of one parsed request: the path, its
/// query parameters, the names in them, the handshake headers, and a token
/// (verified with a fixed key).
pub fn request<B>(req: &Request<B>) {
    static AUTH: OnceLock<crate::auth::Authenticator> = OnceLock::new();
    let auth = AUTH.get_or_init(|| {
        let config = crate::config::AuthConfig {
            enabled: true,
            jwt_secret: "fuzz-secret-fuzz-secret-fuzz-secret".into(),
            ..Default::default()
        };
        crate::auth::Authenticator::new(&config)
    });
    let path = req.uri().path();
    let query = req.uri().query();
    if let http::Route::Native { room: Some(room) } = http::route(path) {
        let _ = RoomName::parse(room, 64);
    }
    for key in ["room", "client_id", "token"] {
        if let Some(value) = http::query_param(query, key) {
            let _ = ClientId::parse(value, 64);
        }
    }
    let _ = http::check_handshake(req);
    if let Some(agreed) = http::deflate_offer(req) {
        // The answer goes into the 101 as it is: it must be a valid header.
        assert!(hyper::header::HeaderValue::from_str(&agreed.response).is_ok());
    }
    let _ = auth.subject(req.headers(), http::query_param(query, "token"));
}

/// An HTTP request head as a client sends it: read by chatd's own head
/// parser (plain upgrades), and parsed as hyper does (httparse), then
/// routed and checked ([`request`]). The `request` fuzz target.
pub fn request_head(data: &[u8]) {
    head(data);
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut parsed = httparse::Request::new(&mut headers);
    let Ok(httparse::Status::Complete(_)) = parsed.parse(data) else {
        return;
    };
    let mut req = Request::builder()
        .method(parsed.method.unwrap_or("GET"))
        .uri(parsed.path.unwrap_or("/"))
        .version(match parsed.version {
            Some(0) => hyper::Version::HTTP_10,
            _ => hyper::Version::HTTP_11,
        });
    for h in parsed.headers.iter() {
        req = req.header(h.name, h.value);
    }
    // Requests hyper itself would refuse (bad URI or header) never reach us.
    if let Ok(req) = req.body(()) {
        request(&req);
    }
}

/// A plain connection's first bytes, as `http::head` reads them: whatever
/// it takes as an upgrade is a request within the bytes, which then goes
/// through the upgrade checks ([`request`]) and, when they pass, gets a
/// well-formed `Sec-WebSocket-Accept`.
pub fn head(data: &[u8]) {
    let Ok((req, len)) = http::head::parse(data) else {
        return;
    };
    assert!(len <= data.len());
    assert!(matches!(
        http::route_of(req.uri().path(), &req),
        http::Route::Native { .. }
            | http::Route::Bare
            | http::Route::FastChat
            | http::Route::Demo
            | http::Route::Relay
    ));
    request(&req);
    if http::check_handshake(&req).is_ok() {
        let key = &req.headers()[hyper::header::SEC_WEBSOCKET_KEY];
        let accept = http::upgrade::accept_key(key.as_bytes());
        assert!(hyper::header::HeaderValue::from_str(&accept).is_ok() && accept.len() == 28);
    }
}

/// The broker's event decoding (what another node, or anything that can
/// publish on the bus's channels, sends): never panics, and what decodes
/// encodes back to the same bytes.
pub fn event(data: &[u8]) {
    if let Ok(event) = crate::model::Event::decode(data, 64) {
        let mut again = Vec::new();
        event.encode(&mut again);
        assert_eq!(again, data);
    }
}

/// The REST API's request bodies (register, login, profile, password,
/// groups, members, server publish) and the `@mention` scan of a message.
pub fn api(data: &[u8]) {
    http::api::parse_bodies(data);
}

/// The redis-chat-demo dialect's request parser.
pub fn demo(data: &[u8]) {
    let _ = protocol::demo::parse(data, 32);
}

/// The FastChat dialect's message parser (and its tag stripping).
pub fn fastchat(data: &[u8]) {
    let _ = protocol::fastchat::parse(data, 32);
    if let Ok(text) = std::str::from_utf8(data) {
        let stripped = protocol::fastchat::strip_tags(text);
        assert!(!stripped.to_ascii_lowercase().contains("<script"));
    }
}

/// What an upload or a download takes from the client: a `Range` header,
/// the `?name=` value (decoded, sanitised, put in `Content-Disposition`),
/// and the file's bytes (sniffed, probed as an image within small limits).
pub fn files(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    if let Ok(Some(range)) = http::files::parse_range(&text, 1000) {
        assert!(range.start < range.end && range.end <= 1000, "{range:?}");
    }
    let name = crate::files::name::sanitise(&http::files::percent_decode(&text));
    assert!(
        !name.is_empty() && !name.contains(['/', '\\', '"']),
        "{name:?}"
    );
    let disposition = crate::files::name::content_disposition(&name, false);
    assert!(
        hyper::header::HeaderValue::from_str(&disposition).is_ok(),
        "{disposition:?}"
    );
    let _ = crate::files::sniff::content_type(data);
    let bounds = crate::files::image::Bounds {
        max_pixels: 1 << 20,
        max_decode_bytes: 1 << 22,
        thumbnail_size: 32,
    };
    if let Some(probe) = crate::files::image::probe(data, bounds) {
        assert!(u64::from(probe.width) * u64::from(probe.height) <= 1 << 20);
        assert!(!(probe.too_large && probe.thumbnail.is_some()));
    }
}

/// Every input kept in `fuzz/corpus/` through its target, in every test
/// run: what the fuzzers found once (and the seeds written by hand) cannot
/// come back unnoticed. The timed exploration is `fuzz/run.sh`.
#[cfg(test)]
mod corpus {
    fn replay(target: &str, run: fn(&[u8])) {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("fuzz/corpus")
            .join(target);
        let mut inputs = 0;
        for entry in std::fs::read_dir(&dir).expect("the corpus is kept in the repository") {
            let path = entry.unwrap().path();
            let data = std::fs::read(&path).unwrap();
            let outcome = std::panic::catch_unwind(|| run(&data));
            assert!(outcome.is_ok(), "{target}: {} fails", path.display());
            inputs += 1;
        }
        assert!(inputs > 0, "{target}: an empty corpus");
    }

    #[test]
    fn command() {
        replay("command", super::command);
    }

    #[test]
    fn frames() {
        replay("frames", super::frames);
    }

    #[test]
    fn request() {
        replay("request", super::request_head);
    }

    #[test]
    fn event() {
        replay("event", super::event);
    }

    #[test]
    fn api() {
        replay("api", super::api);
    }

    #[test]
    fn demo() {
        replay("demo", super::demo);
    }

    #[test]
    fn fastchat() {
        replay("fastchat", super::fastchat);
    }

    #[test]
    fn files() {
        replay("files", super::files);
    }
}
