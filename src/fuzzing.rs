//! Entry points for the fuzz targets in `fuzz/` (not an API: hidden from
//! the docs). Each takes raw client input through the same code the server
//! runs on it; a panic, overflow or hang here is a bug.

use bytes::Bytes;
use futures_util::FutureExt;
use hyper::Request;

use crate::http;
use crate::protocol::{self, ClientId, ParseLimits, RoomName};
use crate::ws::FrameReader;

/// The native command parser with the default limits.
pub fn command(data: &[u8]) {
    let limits = ParseLimits {
        max_name: 64,
        max_depth: 32,
    };
    // Whatever parsed must be within the limits.
    if let Ok(protocol::Command::Join(room) | protocol::Command::Leave(room)) =
        protocol::parse(data, limits)
    {
        assert!(room.as_str().len() <= 64);
    }
}

/// The frame reader over one read-ahead buffer (as after an upgrade), with a
/// small message limit so that the limit paths are reached.
pub fn frames(data: &[u8]) {
    let mut reader = FrameReader::new(&[][..], Bytes::copy_from_slice(data), 1024);
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
pub fn request<B>(req: &Request<B>, auth: &crate::auth::Authenticator) {
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
    let _ = auth.subject(req.headers(), http::query_param(query, "token"));
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
