//! HTTP in front of the WebSockets: routing, upgrade checks, health.
//!
//! | path | what |
//! |---|---|
//! | `/api/chat-api/ws`, `/ws` (`?room=`, `?client_id=`) | native protocol |
//! | `/api/chat-api/ws/{room}`, `/ws/{room}` | native protocol in `room` |
//! | `/relay` | verbatim relay |
//! | `/healthz`, `/readyz` | liveness, readiness (JSON) |
//! | `/`, `/app.js`, `/style.css`, `/favicon.svg` | the web client (`web.rs`) |
//! | `/api/chat-api/rooms/{room}/messages` | a room's history |
//! | `/api/chat-api/...` | accounts, groups, DMs, server publish (`api.rs`) |

pub mod api;
pub mod files;
pub mod metrics;
pub mod web;

use bytes::Bytes;
use futures_util::future::Either;
use futures_util::FutureExt;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{HeaderValue, CONTENT_TYPE, UPGRADE};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use std::cell::Cell;
use std::convert::Infallible;
use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use crate::accounts::Identity;
use crate::config::Wire;
use crate::conn::demo::Demo;
use crate::conn::fastchat::FastChat;
use crate::conn::native::{envelope_value, Native, Start};
use crate::conn::{self, relay::Relay, ConnLimits};
use crate::metrics::RejectReason;
use crate::node::Node;
use crate::protocol::{ClientId, RoomName};
use crate::queue::Limits;
use crate::shard::Shard;
use crate::shutdown::Phase;
use crate::ws::deflate::{self, Agreement};

/// Response bodies: whole (JSON, pages) or streamed (files).
pub(crate) type Body = http_body_util::combinators::UnsyncBoxBody<Bytes, std::io::Error>;

/// A whole body.
pub(crate) fn full(bytes: impl Into<Bytes>) -> Body {
    use http_body_util::BodyExt;
    Full::new(bytes.into())
        .map_err(|never| match never {})
        .boxed_unsync()
}

/// Serves one accepted connection, plain or TLS (HTTP/1.1, with upgrades),
/// until it upgrades or ends.
///
/// Time limits, so a silent or slow client cannot hold a socket: the first
/// request head must arrive within `server.handshake_timeout` of the accept,
/// and a keep-alive connection is dropped once no request has arrived for
/// `server.http_idle_timeout` since the last one ended. A request whose body
/// or response is still streaming (a file upload or download) is not idle,
/// however long it takes.
pub async fn serve_connection<IO>(shard: Rc<Shard>, stream: IO)
where
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let config = &shard.node.config.server;
    let (first_limit, idle_limit) = (config.handshake_timeout, config.http_idle_timeout);
    let metrics = shard.node.metrics.clone();
    let last_request: Rc<Activity> = Rc::default();
    let seen = last_request.clone();
    let service = hyper::service::service_fn(move |req| {
        seen.at.set(Some(Instant::now()));
        seen.changed.notify_one();
        let shard = shard.clone();
        let busy = Busy::new(seen.clone());
        async move {
            let resp = handle(req, shard).await;
            Ok::<_, Infallible>(resp.map(|body| Tracked { body, _busy: busy }))
        }
    });
    let accepted = Instant::now();
    let served = hyper::server::conn::http1::Builder::new()
        .serve_connection(TokioIo::new(stream), service)
        .with_upgrades();
    let deadline = || match last_request.at.get() {
        None => accepted + first_limit,
        Some(at) => at + idle_limit,
    };
    let mut served = std::pin::pin!(served);
    let mut timer = Box::pin(tokio::time::sleep_until(deadline().into()));
    loop {
        tokio::select! {
            done = served.as_mut() => {
                if let Err(e) = done {
                    tracing::debug!(error = %e, "http connection ended with an error");
                }
                return;
            }
            // A request came: the deadline moved.
            _ = last_request.changed.notified() => timer.as_mut().reset(deadline().into()),
            _ = timer.as_mut() => {
                let due = deadline();
                if last_request.busy.get() > 0 {
                    // A request or its response is still streaming.
                    timer.as_mut().reset((Instant::now() + idle_limit).into());
                } else if Instant::now() >= due {
                    // Dropping the connection closes the socket.
                    metrics.rejected(RejectReason::HandshakeTimeout);
                    tracing::debug!("http connection timed out before an upgrade");
                    return;
                }
                timer.as_mut().reset(due.into());
            }
        }
    }
}

/// When an HTTP connection last received a request, and a signal for it.
#[derive(Default)]
struct Activity {
    at: Cell<Option<Instant>>,
    changed: tokio::sync::Notify,
    /// Requests being handled or whose response body is still being sent.
    busy: Cell<usize>,
}

/// One request in progress on a connection, until its response body is
/// done (dropped): the connection is not idle meanwhile.
struct Busy(Rc<Activity>);

impl Busy {
    fn new(activity: Rc<Activity>) -> Busy {
        activity.busy.set(activity.busy.get() + 1);
        Busy(activity)
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        let a = &self.0;
        a.busy.set(a.busy.get() - 1);
        // Idle from the end of the response.
        a.at.set(Some(Instant::now()));
        a.changed.notify_one();
    }
}

/// A response body that keeps its request counted as [`Busy`].
struct Tracked {
    body: Body,
    _busy: Busy,
}

impl hyper::body::Body for Tracked {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Bytes>, std::io::Error>>> {
        std::pin::Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.body.size_hint()
    }
}

/// A connection counted as "in its handshake" (accepted, not yet upgraded
/// or done) for `server.max_handshakes`.
pub struct HandshakeGuard(Arc<Node>);

impl HandshakeGuard {
    /// `None` (and counted) when the node is at its limit.
    pub fn new(node: &Arc<Node>) -> Option<HandshakeGuard> {
        let max = node.config.server.max_handshakes;
        if node.handshakes.fetch_add(1, Ordering::AcqRel) >= max {
            node.handshakes.fetch_sub(1, Ordering::AcqRel);
            node.metrics.rejected(RejectReason::HandshakeLimit);
            return None;
        }
        Some(HandshakeGuard(node.clone()))
    }
}

impl Drop for HandshakeGuard {
    fn drop(&mut self) {
        self.0.handshakes.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Which endpoint a path names.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Route<'a> {
    Native {
        room: Option<&'a str>,
    },
    /// `/api/chat-api/rooms/{room}/messages`: a page of stored history.
    History {
        room: &'a str,
    },
    /// The redis-chat-demo dialect.
    Demo,
    /// The FastChat dialect.
    FastChat,
    /// The rest of `/api/chat-api/...` (`api.rs`).
    Api {
        rest: &'a str,
    },
    /// A file of the web client (with `server.web_client`).
    Web(&'static web::Asset),
    Relay,
    Health,
    Ready,
    NotFound,
}

pub(crate) fn route(path: &str) -> Route<'_> {
    match path {
        "/healthz" => return Route::Health,
        "/readyz" => return Route::Ready,
        "/relay" => return Route::Relay,
        "/demo/ws" | "/demo/ws/" => return Route::Demo,
        "/fastchat/ws" | "/fastchat/ws/" => return Route::FastChat,
        _ => {}
    }
    if let Some(asset) = web::asset(path) {
        return Route::Web(asset);
    }
    if let Some(rest) = path.strip_prefix("/api/chat-api/rooms/") {
        return match rest.strip_suffix("/messages") {
            Some(room) if !room.is_empty() && !room.contains('/') => Route::History { room },
            _ => Route::NotFound,
        };
    }
    if let Some(rest) = path.strip_prefix("/api/chat-api/") {
        if !(rest == "ws" || rest.starts_with("ws/")) {
            return Route::Api { rest };
        }
    }
    for prefix in ["/api/chat-api/ws", "/ws"] {
        if let Some(rest) = path.strip_prefix(prefix) {
            return match rest {
                "" | "/" => Route::Native { room: None },
                _ => match rest.strip_prefix('/') {
                    Some(room) if !room.contains('/') => Route::Native { room: Some(room) },
                    _ => Route::NotFound,
                },
            };
        }
    }
    Route::NotFound
}

/// The value of `key` in a query string (names need no percent-decoding:
/// their allowed characters are all URL-safe).
pub(crate) fn query_param<'a>(query: Option<&'a str>, key: &str) -> Option<&'a str> {
    query?
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .find(|(k, _)| *k == key)
        .map(|(_, v)| v)
}

/// A struct's fields serialise in declaration order: a body is the same on
/// every call (a `json!` map's order was not).
pub(crate) fn to_json<T: serde::Serialize>(value: &T) -> String {
    sonic_rs::to_string(value).expect("plain structs serialise")
}

#[derive(serde::Serialize)]
struct NotReady {
    status: &'static str,
    reason: &'static str,
}

pub(crate) fn json(status: StatusCode, body: String) -> Response<Body> {
    let mut resp = Response::new(full(body));
    *resp.status_mut() = status;
    resp.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    resp
}

/// `{"error":{"code","message"}}`, the code named after the status.
fn error(status: StatusCode, message: &str) -> Response<Body> {
    let code = match status {
        StatusCode::BAD_REQUEST => "VALIDATION",
        StatusCode::UNAUTHORIZED => "UNAUTHORIZED",
        StatusCode::FORBIDDEN => "FORBIDDEN",
        StatusCode::NOT_FOUND => "NOT_FOUND",
        StatusCode::METHOD_NOT_ALLOWED => "METHOD_NOT_ALLOWED",
        _ => "UNAVAILABLE",
    };
    api::error_body(status, code, message, None)
}

async fn handle(mut req: Request<Incoming>, shard: Rc<Shard>) -> Response<Body> {
    let path = req.uri().path().to_owned();
    let query = req.uri().query().map(str::to_owned);
    let route = route(&path);
    if !matches!(route, Route::NotFound | Route::Api { .. }) && req.method() != Method::GET {
        return error(StatusCode::METHOD_NOT_ALLOWED, "only GET is allowed here");
    }
    let node = &shard.node;
    match route {
        Route::NotFound => error(StatusCode::NOT_FOUND, "no such endpoint"),
        Route::Api { rest } => api::handle(req, shard.clone(), rest).await,
        Route::History { room } => {
            let identity = match identify(&req, node, query.as_deref()).await {
                Ok(identity) => identity,
                Err(e) => return api::refusal(&e),
            };
            history_page(node, &identity, room, query.as_deref()).await
        }
        Route::Web(_) if !node.config.server.web_client => {
            error(StatusCode::NOT_FOUND, "no such endpoint")
        }
        Route::Web(asset) => web::serve(asset, req.headers()),
        Route::Health => json(StatusCode::OK, r#"{"status":"ok"}"#.into()),
        Route::Ready => {
            let reason = if node.shutdown.phase() != Phase::Running {
                Some("shutting down")
            } else if !node.broker.is_ready() {
                Some("broker not connected")
            } else {
                None
            };
            match reason {
                None => json(StatusCode::OK, r#"{"status":"ready"}"#.into()),
                Some(reason) => json(
                    StatusCode::SERVICE_UNAVAILABLE,
                    to_json(&NotReady {
                        status: "not ready",
                        reason,
                    }),
                ),
            }
        }
        Route::Relay if !node.config.relay.enabled => {
            error(StatusCode::NOT_FOUND, "the relay endpoint is disabled")
        }
        Route::Relay => {
            if let Err(e) = identify(&req, node, query.as_deref()).await {
                return api::refusal(&e);
            }
            let relay = &node.config.relay;
            let limits = ConnLimits {
                max_message: relay.max_message_size,
                queue: Limits {
                    max_messages: relay.queue_messages,
                    max_bytes: relay.queue_bytes,
                    slow_timeout: node.config.limits.slow_consumer_timeout,
                },
            };
            upgrade(&mut req, shard.clone(), limits, None, Relay)
        }
        Route::FastChat => fastchat_upgrade(&mut req, shard.clone(), query.as_deref(), None).await,
        Route::Demo => {
            // With auth on, this upgrade needs a token like any other.
            if let Err(e) = identify(&req, node, query.as_deref()).await {
                return api::refusal(&e);
            }
            demo_upgrade(&mut req, shard.clone(), None)
        }
        Route::Native { room } => {
            // A dialect named by Sec-WebSocket-Protocol, or the default.
            let offered = subprotocols(&req);
            let chosen = offered.iter().find_map(|p| Wire::from_name(p));
            let wire = chosen.unwrap_or(node.config.server.default_protocol);
            let echo = chosen.map(Wire::name);
            if wire == Wire::FastChat {
                return fastchat_upgrade(&mut req, shard.clone(), query.as_deref(), echo).await;
            }
            if wire == Wire::Demo {
                if let Err(e) = identify(&req, node, query.as_deref()).await {
                    return api::refusal(&e);
                }
                return demo_upgrade(&mut req, shard.clone(), echo);
            }
            let max_name = node.config.limits.max_name_length;
            let room = room
                .or_else(|| query_param(query.as_deref(), "room"))
                .filter(|r| !r.is_empty());
            let room = match room.map(|r| RoomName::parse(r, max_name)).transpose() {
                Ok(room) => room,
                Err(e) => {
                    return error(StatusCode::BAD_REQUEST, &format!("invalid room name: {e}"))
                }
            };
            let number = |key: &str| -> Result<Option<u64>, String> {
                query_param(query.as_deref(), key)
                    .map(|v| v.parse())
                    .transpose()
                    .map_err(|_| format!("{key} must be a non-negative integer"))
            };
            let (since_seq, notifications_since) =
                match (number("since_seq"), number("notifications_since")) {
                    (Ok(s), Ok(n)) => (s, n),
                    (Err(m), _) | (_, Err(m)) => return error(StatusCode::BAD_REQUEST, &m),
                };
            let identity = match identify(&req, node, query.as_deref()).await {
                Ok(identity) => identity,
                Err(e) => return api::refusal(&e),
            };
            // A private URL room is checked before the upgrade.
            if let Some(room) = &room {
                if let Err(e) = node.accounts.may_use(&identity, room).await {
                    return api::refusal(&e);
                }
            }
            let client_id = match &identity {
                // A token's subject is the id: a client cannot choose its
                // `from` when it presents one.
                Identity::User(user) => match ClientId::parse(&user.id, max_name) {
                    Ok(id) => id,
                    Err(e) => {
                        let message = format!("user id is not a valid client id: {e}");
                        return error(StatusCode::FORBIDDEN, &message);
                    }
                },
                Identity::Subject(subject) => match ClientId::parse(subject, max_name) {
                    Ok(id) => id,
                    Err(e) => {
                        return error(
                            StatusCode::FORBIDDEN,
                            &format!("token subject is not a valid client id: {e}"),
                        )
                    }
                },
                Identity::Anonymous => {
                    match query_param(query.as_deref(), "client_id").filter(|c| !c.is_empty()) {
                        None => ClientId::generate(),
                        Some(id) => match ClientId::parse(id, max_name) {
                            Ok(id) => id,
                            Err(e) => {
                                return error(
                                    StatusCode::BAD_REQUEST,
                                    &format!("invalid client_id: {e}"),
                                )
                            }
                        },
                    }
                }
            };
            let limits = chat_limits(node);
            upgrade(
                &mut req,
                shard.clone(),
                limits,
                echo,
                Native::new(
                    identity,
                    client_id,
                    Start {
                        room,
                        since_seq,
                        notifications_since,
                    },
                ),
            )
        }
    }
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

/// `GET /api/chat-api/rooms/{room}/messages?before_seq=&limit=`: the room's
/// stored messages, newest first, each as live delivery frames it.
async fn history_page(
    node: &Node,
    identity: &Identity,
    room: &str,
    query: Option<&str>,
) -> Response<Body> {
    let room = match RoomName::parse(room, node.config.limits.max_name_length) {
        Ok(room) => room,
        Err(e) => return error(StatusCode::BAD_REQUEST, &format!("invalid room name: {e}")),
    };
    if let Err(e) = node.accounts.may_use(identity, &room).await {
        return api::refusal(&e);
    }
    // The name of a parameter that is not a number.
    let number = |key: &'static str| -> Result<Option<u64>, &'static str> {
        query_param(query, key)
            .map(|v| v.parse().map_err(|_| key))
            .transpose()
    };
    let (before_seq, limit) = match (number("before_seq"), number("limit")) {
        (Ok(b), Ok(l)) => (b, l),
        (Err(key), _) | (_, Err(key)) => {
            let message = format!("{key} must be a non-negative integer");
            return error(StatusCode::BAD_REQUEST, &message);
        }
    };
    let page = match crate::chat::history(node.store.as_ref(), room.clone(), before_seq, limit) {
        Ok(page) => page,
        Err(e @ crate::chat::ChatError::BadLimit(_)) => {
            return error(StatusCode::BAD_REQUEST, &e.to_string())
        }
        Err(e @ crate::chat::ChatError::NoHistory) => {
            return error(StatusCode::NOT_FOUND, &e.to_string())
        }
        Err(e) => return error(StatusCode::SERVICE_UNAVAILABLE, &e.to_string()),
    };
    match page.await {
        Ok(Ok(events)) => {
            let page = HistoryPage {
                room: room.as_str(),
                messages: events.iter().map(envelope_value).collect(),
            };
            json(StatusCode::OK, to_json(&page))
        }
        _ => error(
            StatusCode::SERVICE_UNAVAILABLE,
            "history could not be read; try again",
        ),
    }
}

#[derive(serde::Serialize)]
struct HistoryPage<'a> {
    room: &'a str,
    messages: Vec<sonic_rs::Value>,
}

/// Who the request is from (a token is required with `auth.enabled`).
async fn identify(
    req: &Request<Incoming>,
    node: &Node,
    query: Option<&str>,
) -> Result<Identity, crate::accounts::AccountError> {
    node.accounts
        .identify(req.headers(), query_param(query, "token"))
        .await
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

/// Upgrades to the FastChat dialect: its origin check (403 before the
/// upgrade), the token with `auth.enabled`, then the handler.
async fn fastchat_upgrade(
    req: &mut Request<Incoming>,
    shard: Rc<Shard>,
    query: Option<&str>,
    echo: Option<&'static str>,
) -> Response<Body> {
    let node = shard.node.clone();
    let allowed = &node.config.fastchat.allowed_origins;
    if !allowed.is_empty() {
        let origin = req
            .headers()
            .get(hyper::header::ORIGIN)
            .and_then(|o| o.to_str().ok())
            .unwrap_or("");
        if !allowed.iter().any(|a| a == origin) {
            return error(StatusCode::FORBIDDEN, "origin not allowed");
        }
    }
    let identity = match identify(req, &node, query).await {
        Ok(identity) => identity,
        Err(e) => return api::refusal(&e),
    };
    let limits = chat_limits(&node);
    upgrade(req, shard, limits, echo, FastChat::new(&node, identity))
}

/// Upgrades to the redis-chat-demo dialect (`echo`: the subprotocol to name
/// in the 101, when the client asked for it).
fn demo_upgrade(
    req: &mut Request<Incoming>,
    shard: Rc<Shard>,
    echo: Option<&'static str>,
) -> Response<Body> {
    let limits = chat_limits(&shard.node);
    upgrade(req, shard, limits, echo, Demo::new())
}

fn upgrade(
    req: &mut Request<Incoming>,
    shard: Rc<Shard>,
    limits: ConnLimits,
    protocol: Option<&'static str>,
    handler: impl conn::Handler + 'static,
) -> Response<Body> {
    if !fastwebsockets::upgrade::is_upgrade_request(req) {
        let mut resp = error(
            StatusCode::UPGRADE_REQUIRED,
            "this endpoint speaks WebSocket: send Connection: Upgrade and Upgrade: websocket",
        );
        resp.headers_mut()
            .insert(UPGRADE, HeaderValue::from_static("websocket"));
        return resp;
    }
    if let Err(e) = check_handshake(req) {
        return error(
            StatusCode::BAD_REQUEST,
            &format!("bad WebSocket handshake: {e}"),
        );
    }
    let node = &shard.node;
    let max = node.config.server.max_connections;
    if max > 0 && node.metrics.connected.get() >= max as i64 {
        node.metrics.rejected(RejectReason::MaxConnections);
        return error(
            StatusCode::SERVICE_UNAVAILABLE,
            "this node is at its connection limit; try another or retry later",
        );
    }
    let deflate = node
        .config
        .server
        .deflate
        .enabled
        .then(|| deflate_offer(req))
        .flatten();
    let (mut resp, fut) = match fastwebsockets::upgrade::upgrade(req) {
        Ok(pair) => pair,
        Err(e) => {
            return error(
                StatusCode::BAD_REQUEST,
                &format!("bad WebSocket handshake: {e}"),
            )
        }
    };
    // Combinators, not an async block: the captured shard, limits and
    // handler live only until the upgrade completes, and the connection's
    // task holds just the connection's own future after that.
    let window = deflate.as_ref().map(|a| a.window);
    let task = fut.then(move |upgraded| match upgraded {
        Ok(ws) => Either::Left(conn::serve(
            shard,
            ws.into_inner().into_inner(),
            limits,
            window,
            handler,
        )),
        Err(e) => {
            tracing::debug!(error = %e, "upgrade failed");
            Either::Right(std::future::ready(()))
        }
    });
    tokio::task::spawn_local(task);
    if let Some(protocol) = protocol {
        resp.headers_mut().insert(
            hyper::header::SEC_WEBSOCKET_PROTOCOL,
            HeaderValue::from_static(protocol),
        );
    }
    if let Some(agreed) = deflate {
        // Made here from a fixed text and a checked number: always valid.
        if let Ok(value) = HeaderValue::from_str(&agreed.response) {
            resp.headers_mut()
                .insert(hyper::header::SEC_WEBSOCKET_EXTENSIONS, value);
        }
    }
    resp.map(|_| full(Bytes::new()))
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes() {
        assert_eq!(route("/api/chat-api/ws"), Route::Native { room: None });
        assert_eq!(
            route("/api/chat-api/ws/general"),
            Route::Native {
                room: Some("general")
            }
        );
        assert_eq!(route("/ws/"), Route::Native { room: None });
        assert_eq!(route("/ws/a/b"), Route::NotFound);
        assert_eq!(route("/wsx"), Route::NotFound);
        assert_eq!(route("/relay"), Route::Relay);
        assert!(matches!(route("/"), Route::Web(_)));
        assert!(matches!(route("/app.js"), Route::Web(_)));
        assert_eq!(route("/nope.js"), Route::NotFound);
    }

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
    fn query_params() {
        assert_eq!(query_param(Some("a=1&room=r&x"), "room"), Some("r"));
        assert_eq!(query_param(Some("rooms=r"), "room"), None);
        assert_eq!(query_param(None, "room"), None);
    }
}
