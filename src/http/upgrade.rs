//! Which WebSocket endpoint an upgrade request asks for and whether it may
//! have it: the same decision whether chatd read the request head itself
//! (`head.rs`, plain connections) or hyper did (TLS, and plain requests
//! `head.rs` leaves to hyper).
//!
//! [`websocket`] runs every check (relay switch, origin, token, room access,
//! names, the RFC 6455 handshake, the connection limit, permessage-deflate)
//! and gives either a refusal or an [`Accepted`] upgrade; the caller answers
//! `101` its own way and starts the connection with [`Accepted::start`].

use base64::Engine;
use bytes::{BufMut, Bytes, BytesMut};
use futures_util::FutureExt;
use hyper::header::{HeaderValue, UPGRADE};
use hyper::{Request, Response, StatusCode};
use sha1::{Digest, Sha1};
use std::rc::Rc;

use super::{client_addr, error, identify, query_param, Body, Route};
use crate::accounts::Identity;
use crate::config::Wire;
use crate::conn::demo::Demo;
use crate::conn::fastchat::FastChat;
use crate::conn::native::{Native, Start};
use crate::conn::relay::Relay;
use crate::conn::{self, ConnLimits, Io};
use crate::metrics::RejectReason;
use crate::node::Node;
use crate::protocol::{ClientId, RoomName};
use crate::queue::Limits;
use crate::shard::Shard;
use crate::ws::deflate::{self, Agreement};

/// An upgrade that passed every check: what the connection will be.
pub(crate) struct Accepted {
    endpoint: Endpoint,
    limits: ConnLimits,
    /// The subprotocol to name in the 101 (when the client chose a dialect).
    protocol: Option<&'static str>,
    /// The permessage-deflate answer, when the client offered one we take.
    deflate: Option<Agreement>,
}

/// The handler the connection will run (one variant per endpoint, so each
/// connection's task is sized by its own handler).
enum Endpoint {
    Native(Native),
    FastChat(FastChat),
    Demo(Demo),
    Relay(Relay),
}

impl Accepted {
    /// Starts the connection's task on this shard.
    pub(crate) fn start(self, shard: Rc<Shard>, io: Io) {
        let window = self.deflate.map(|a| a.window);
        let limits = self.limits;
        // (`serve` spawns nothing when the node is draining already.)
        match self.endpoint {
            Endpoint::Native(h) => conn::serve(shard, io, limits, window, h),
            Endpoint::FastChat(h) => conn::serve(shard, io, limits, window, h),
            Endpoint::Demo(h) => conn::serve(shard, io, limits, window, h),
            Endpoint::Relay(h) => conn::serve(shard, io, limits, window, h),
        }
    }

    /// The whole `101 Switching Protocols` response for the client's
    /// `Sec-WebSocket-Key` (already checked by [`check_handshake`]).
    pub(crate) fn switching_protocols(&self, key: &[u8]) -> Bytes {
        let mut out = BytesMut::with_capacity(256);
        out.put_slice(b"HTTP/1.1 101 Switching Protocols\r\nconnection: upgrade\r\nupgrade: websocket\r\nsec-websocket-accept: ");
        out.put_slice(accept_key(key).as_bytes());
        if let Some(protocol) = self.protocol {
            out.put_slice(b"\r\nsec-websocket-protocol: ");
            out.put_slice(protocol.as_bytes());
        }
        if let Some(agreed) = &self.deflate {
            out.put_slice(b"\r\nsec-websocket-extensions: ");
            out.put_slice(agreed.response.as_bytes());
        }
        out.put_slice(b"\r\n\r\n");
        out.freeze()
    }
}

/// `Sec-WebSocket-Accept` for a key (RFC 6455 §4.2.2): base64 of the SHA-1
/// of the key and the protocol's GUID.
pub(crate) fn accept_key(key: &[u8]) -> String {
    let mut sha = Sha1::new();
    sha.update(key);
    sha.update(b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11");
    base64::engine::general_purpose::STANDARD.encode(sha.finalize())
}

/// Decides a GET on a WebSocket route (`route` is one of `Native`,
/// `FastChat`, `Demo`, `Relay`): the refusal to send, or the accepted
/// upgrade.
pub(crate) async fn websocket<B>(
    req: &Request<B>,
    shard: &Rc<Shard>,
    route: Route<'_>,
    query: Option<&str>,
) -> Result<Accepted, Response<Body>> {
    let node = &shard.node;
    let refusal = |e: crate::accounts::AccountError| error::refusal(&e);
    let (endpoint, limits, protocol) = match route {
        Route::Relay if !node.config.relay.enabled => {
            return Err(error::plain(
                StatusCode::NOT_FOUND,
                "the relay endpoint is disabled",
            ))
        }
        Route::Relay => {
            identify(req, node, query).await.map_err(refusal)?;
            (Endpoint::Relay(Relay), relay_limits(node), None)
        }
        Route::FastChat => (fastchat(req, node, query).await?, chat_limits(node), None),
        Route::Demo => {
            // With auth on, this upgrade needs a token like any other.
            identify(req, node, query).await.map_err(refusal)?;
            (
                Endpoint::Demo(Demo::new(client_addr(req))),
                chat_limits(node),
                None,
            )
        }
        Route::Native { .. } | Route::Bare => {
            // A dialect named by Sec-WebSocket-Protocol, or (a bare `/ws`
            // only) `server.default_protocol`, or the native one.
            let (room, default) = match route {
                Route::Native { room } => (room, Wire::ChatApi),
                _ => (None, node.config.server.default_protocol),
            };
            let offered = subprotocols(req);
            let chosen = offered.iter().find_map(|p| Wire::from_name(p));
            let wire = chosen.unwrap_or(default);
            let echo = chosen.map(Wire::name);
            let endpoint = match wire {
                Wire::FastChat => fastchat(req, node, query).await?,
                Wire::Demo | Wire::DemoPublicZero | Wire::DemoPublicZeroNumber => {
                    identify(req, node, query).await.map_err(refusal)?;
                    Endpoint::Demo(Demo::new(client_addr(req)))
                }
                Wire::ChatApi => native(req, node, room, query).await?,
            };
            (endpoint, chat_limits(node), echo)
        }
        _ => return Err(error::plain(StatusCode::NOT_FOUND, "no such endpoint")),
    };
    if !fastwebsockets::upgrade::is_upgrade_request(req) {
        let mut resp = error::plain(
            StatusCode::UPGRADE_REQUIRED,
            "this endpoint speaks WebSocket: send Connection: Upgrade and Upgrade: websocket",
        );
        resp.headers_mut()
            .insert(UPGRADE, HeaderValue::from_static("websocket"));
        return Err(resp);
    }
    if let Err(e) = check_handshake(req) {
        return Err(error::plain(
            StatusCode::BAD_REQUEST,
            &format!("bad WebSocket handshake: {e}"),
        ));
    }
    let max = node.config.server.max_connections;
    if max > 0 && node.metrics.connected.get() >= max as i64 {
        node.metrics.rejected(RejectReason::MaxConnections);
        return Err(error::plain(
            StatusCode::SERVICE_UNAVAILABLE,
            "this node is at its connection limit; try another or retry later",
        ));
    }
    let deflate = node
        .config
        .server
        .deflate
        .enabled
        .then(|| deflate_offer(req))
        .flatten();
    Ok(Accepted {
        endpoint,
        limits,
        protocol,
        deflate,
    })
}

/// The native endpoint: room and cursors from the URL, the client's id from
/// its token (or, anonymous, from `?client_id=` or a new one).
async fn native<B>(
    req: &Request<B>,
    node: &Node,
    room: Option<&str>,
    query: Option<&str>,
) -> Result<Endpoint, Response<Body>> {
    let bad = |status, message: String| error::plain(status, &message);
    let max_name = node.config.limits.max_name_length;
    let room = room
        .or_else(|| query_param(query, "room"))
        .filter(|r| !r.is_empty());
    let room = room
        .map(|r| RoomName::parse(r, max_name))
        .transpose()
        .map_err(|e| bad(StatusCode::BAD_REQUEST, format!("invalid room name: {e}")))?;
    // A query number, or the message saying it is not one.
    let number = |key: &str| -> Result<Option<u64>, String> {
        query_param(query, key)
            .map(|v| v.parse())
            .transpose()
            .map_err(|_| format!("{key} must be a non-negative integer"))
    };
    let since_seq = number("since_seq").map_err(|m| bad(StatusCode::BAD_REQUEST, m))?;
    let notifications_since =
        number("notifications_since").map_err(|m| bad(StatusCode::BAD_REQUEST, m))?;
    let identity = identify(req, node, query)
        .await
        .map_err(|e| error::refusal(&e))?;
    // A private URL room is checked before the upgrade.
    if let Some(room) = &room {
        node.accounts
            .may_use(&identity, room)
            .await
            .map_err(|e| error::refusal(&e))?;
    }
    let client_id = match &identity {
        // A token's subject is the id: a client cannot choose its `from`
        // when it presents one.
        Identity::User(user) => ClientId::parse(&user.user.id, max_name).map_err(|e| {
            let message = format!("user id is not a valid client id: {e}");
            bad(StatusCode::FORBIDDEN, message)
        })?,
        Identity::Subject(subject) => ClientId::parse(subject, max_name).map_err(|e| {
            let message = format!("token subject is not a valid client id: {e}");
            bad(StatusCode::FORBIDDEN, message)
        })?,
        Identity::Anonymous => match query_param(query, "client_id").filter(|c| !c.is_empty()) {
            None => ClientId::generate(),
            Some(id) => {
                let id = ClientId::parse(id, max_name)
                    .map_err(|e| bad(StatusCode::BAD_REQUEST, format!("invalid client_id: {e}")))?;
                not_a_user(node, &id).await?;
                id
            }
        },
    };
    let start = Start {
        room,
        since_seq,
        notifications_since,
    };
    Ok(Endpoint::Native(Native::new(identity, client_id, start)))
}

/// An anonymous connection may not take a registered user's id as its
/// `client_id`: its chats would be stored and delivered as that user's, and
/// its `client_msg_id`s would answer the user's own later sends. (User ids
/// are UUIDs: other names need no look-up.) Refused with 403, as FastChat
/// refuses a HELLO naming a user with a password without their token.
async fn not_a_user(node: &Node, id: &ClientId) -> Result<(), Response<Body>> {
    if node.store.is_none() || uuid::Uuid::parse_str(id.as_str()).is_err() {
        return Ok(());
    }
    match node.accounts.user(id.as_str()).await {
        Err(crate::accounts::AccountError::NotFound(_)) => Ok(()),
        Ok(_) => Err(error::plain(
            StatusCode::FORBIDDEN,
            "client_id is a registered user's id: connect with their token instead",
        )),
        Err(e) => Err(error::refusal(&e)),
    }
}

/// The FastChat dialect: its origin check (403 before the upgrade), then the
/// token with `auth.enabled`.
async fn fastchat<B>(
    req: &Request<B>,
    node: &Node,
    query: Option<&str>,
) -> Result<Endpoint, Response<Body>> {
    let allowed = &node.config.fastchat.allowed_origins;
    if !allowed.is_empty() {
        let origin = req
            .headers()
            .get(hyper::header::ORIGIN)
            .and_then(|o| o.to_str().ok())
            .unwrap_or("");
        if !allowed.iter().any(|a| a == origin) {
            return Err(error::plain(StatusCode::FORBIDDEN, "origin not allowed"));
        }
    }
    let identity = identify(req, node, query)
        .await
        .map_err(|e| error::refusal(&e))?;
    Ok(Endpoint::FastChat(FastChat::new(
        node,
        identity,
        client_addr(req),
    )))
}

/// Answers an accepted upgrade that hyper read (TLS, or a plain request
/// `head.rs` left to it): hyper sends the 101 and hands the socket over.
pub(crate) fn by_hyper<B>(
    req: &mut Request<B>,
    shard: Rc<Shard>,
    accepted: Accepted,
) -> Response<Body> {
    let (mut resp, fut) = match fastwebsockets::upgrade::upgrade(req) {
        Ok(pair) => pair,
        Err(e) => {
            return error::plain(
                StatusCode::BAD_REQUEST,
                &format!("bad WebSocket handshake: {e}"),
            )
        }
    };
    if let Some(protocol) = accepted.protocol {
        resp.headers_mut().insert(
            hyper::header::SEC_WEBSOCKET_PROTOCOL,
            HeaderValue::from_static(protocol),
        );
    }
    if let Some(agreed) = &accepted.deflate {
        // Made from a fixed text and a checked number: always valid.
        if let Ok(value) = HeaderValue::from_str(&agreed.response) {
            resp.headers_mut()
                .insert(hyper::header::SEC_WEBSOCKET_EXTENSIONS, value);
        }
    }
    // This task only waits for hyper's hand-over; the connection gets a task
    // of its own, sized by its handler alone.
    tokio::task::spawn_local(fut.map(move |upgraded| match upgraded {
        Ok(ws) => accepted.start(shard, Io::Upgraded(ws.into_inner().into_inner())),
        Err(e) => tracing::debug!(error = %e, "upgrade failed"),
    }));
    resp.map(|_| super::full(Bytes::new()))
}

/// The `Sec-WebSocket-Protocol` names the client offers, in its order.
fn subprotocols<B>(req: &Request<B>) -> Vec<String> {
    req.headers()
        .get_all(hyper::header::SEC_WEBSOCKET_PROTOCOL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|p| p.trim().to_owned())
        .filter(|p| !p.is_empty())
        .collect()
}

/// The native limits of a chat connection.
fn chat_limits(node: &Node) -> ConnLimits {
    let l = &node.config.limits;
    ConnLimits {
        max_message: l.max_message_size,
        queue: Limits {
            max_messages: l.queue_messages,
            max_bytes: l.queue_bytes,
            slow_timeout: l.slow_consumer_timeout,
        },
    }
}

/// The relay's limits: its own sizes, the chat's slow-consumer timeout.
fn relay_limits(node: &Node) -> ConnLimits {
    let relay = &node.config.relay;
    let mut limits = chat_limits(node);
    limits.max_message = relay.max_message_size;
    limits.queue.max_messages = relay.queue_messages;
    limits.queue.max_bytes = relay.queue_bytes;
    limits
}

/// The permessage-deflate offer of an upgrade request this server accepts,
/// if there is one (`Sec-WebSocket-Extensions`, every line in order).
pub fn deflate_offer<B>(req: &Request<B>) -> Option<Agreement> {
    deflate::negotiate(
        req.headers()
            .get_all(hyper::header::SEC_WEBSOCKET_EXTENSIONS)
            .iter()
            .map(HeaderValue::as_bytes),
    )
}

/// Why an upgrade request is refused with 400.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum HandshakeError {
    #[error("WebSocket needs HTTP/1.1")]
    Version,
    #[error("missing Host header")]
    MissingHost,
    #[error("Sec-WebSocket-Key must be 16 bytes in base64")]
    BadKey,
    #[error("Sec-WebSocket-Version must be 13")]
    BadVersion,
}

/// The RFC 6455 §4.2.1 checks that fastwebsockets leaves to the server.
pub fn check_handshake<B>(req: &Request<B>) -> Result<(), HandshakeError> {
    if req.version() != hyper::Version::HTTP_11 {
        return Err(HandshakeError::Version);
    }
    let headers = req.headers();
    if !headers.contains_key(hyper::header::HOST) {
        return Err(HandshakeError::MissingHost);
    }
    let key = headers.get(hyper::header::SEC_WEBSOCKET_KEY);
    if !key.is_some_and(|k| is_base64_of_16_bytes(k.as_bytes())) {
        return Err(HandshakeError::BadKey);
    }
    let version = headers.get(hyper::header::SEC_WEBSOCKET_VERSION);
    if version.is_none_or(|v| v.as_bytes() != b"13") {
        return Err(HandshakeError::BadVersion);
    }
    Ok(())
}

/// 16 bytes in base64 are 22 characters of the alphabet and `==`.
fn is_base64_of_16_bytes(key: &[u8]) -> bool {
    key.len() == 24
        && key.ends_with(b"==")
        && key[..22]
            .iter()
            .all(|&b| b.is_ascii_alphanumeric() || b == b'+' || b == b'/')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn handshake_checks() {
        let req = |version, host: bool, key: &str, ws_version: &str| {
            let mut b = Request::builder().version(version).uri("/ws");
            if host {
                b = b.header("host", "x");
            }
            b.header("sec-websocket-key", key)
                .header("sec-websocket-version", ws_version)
                .body(())
                .unwrap()
        };
        let good = "dGhlIHNhbXBsZSBub25jZQ==";
        let v11 = hyper::Version::HTTP_11;
        assert_eq!(check_handshake(&req(v11, true, good, "13")), Ok(()));
        assert_eq!(
            check_handshake(&req(hyper::Version::HTTP_10, true, good, "13")),
            Err(HandshakeError::Version)
        );
        assert_eq!(
            check_handshake(&req(v11, false, good, "13")),
            Err(HandshakeError::MissingHost)
        );
        for key in [
            "abc",
            "",
            "dGhlIHNhbXBsZSBub25jZQ=",
            "dGhlIHNhbXBsZSBub25j*Q==",
        ] {
            assert_eq!(
                check_handshake(&req(v11, true, key, "13")),
                Err(HandshakeError::BadKey),
                "{key}"
            );
        }
        assert_eq!(
            check_handshake(&req(v11, true, good, "8")),
            Err(HandshakeError::BadVersion)
        );
    }

    #[test]
    fn accept_key_of_the_rfc_example() {
        // RFC 6455 §1.3.
        assert_eq!(
            accept_key(b"dGhlIHNhbXBsZSBub25jZQ=="),
            "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        );
    }
}
