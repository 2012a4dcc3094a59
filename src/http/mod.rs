//! HTTP in front of the WebSockets: routing, upgrade checks, health.
//!
//! | path | what |
//! |---|---|
//! | `/api/chat-api/ws` (`?room=`, `?client_id=`) | native protocol |
//! | `/ws` (the same queries) | `server.default_protocol` (native by default) |
//! | `/api/chat-api/ws/{room}`, `/ws/{room}` | native protocol in `room` |
//! | `/relay`, and a WebSocket upgrade at `/` | verbatim relay |
//! | `/healthz`, `/readyz` | liveness, readiness (JSON) |
//! | `/`, `/app.js`, `/style.css`, `/favicon.svg` | the web client (`web.rs`) |
//! | `/api/chat-api/rooms/{room}/messages` | a room's history |
//! | `/api/chat-api/rooms/{room}/receipts` | how far each user was delivered |
//! | `/api/chat-api/...` | accounts, groups, DMs, server publish (`api.rs`) |
//! | `/api/chat-api/auth/logout`, `/api/chat-api/me/sessions` | login sessions (`sessions.rs`) |

pub mod api;
pub mod error;
pub mod files;
pub mod head;
pub mod linger;
pub mod metrics;
pub mod sessions;
pub mod upgrade;
pub mod web;

pub use upgrade::{check_handshake, deflate_offer};

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{HeaderValue, CONTENT_TYPE};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use std::cell::Cell;
use std::convert::Infallible;
use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use crate::accounts::Identity;
use crate::conn::native::envelope_value;
use crate::metrics::RejectReason;
use crate::node::Node;
use crate::protocol::RoomName;
use crate::shard::Shard;
use crate::shutdown::Phase;

/// Response bodies: whole (JSON, pages) or streamed (files).
pub(crate) type Body = http_body_util::combinators::UnsyncBoxBody<Bytes, std::io::Error>;

/// A whole body.
pub(crate) fn full(bytes: impl Into<Bytes>) -> Body {
    use http_body_util::BodyExt;
    Full::new(bytes.into())
        .map_err(|never| match never {})
        .boxed_unsync()
}

/// Serves one connection with hyper (HTTP/1.1, with upgrades) until it
/// upgrades or ends: every TLS connection, and the plain ones `head.rs`
/// leaves to hyper.
///
/// Time limits, so a silent or slow client cannot hold a socket: the first
/// request head must arrive by `first_deadline` (`server.handshake_timeout`
/// after the accept, or the idle limit after a refusal `head.rs` sent), and
/// a keep-alive connection is dropped once no request has arrived for
/// `server.http_idle_timeout` since the last one ended. A request whose body
/// or response is still streaming (a file upload or download) is not idle,
/// however long it takes, as long as it keeps moving: a request in progress
/// that moves fewer than `server.min_transfer_rate` bytes a second over a
/// window of `server.transfer_timeout` (its body trickling in, its response
/// unread) loses its connection (`conn/metered.rs`).
///
/// `admitted` holds the connection's place in the budgets: it stops
/// counting as "in its handshake" once its first request arrived (a
/// request in progress is bounded by its address's budget and the transfer
/// rule, not by the upgrades' budget), and against its address when the
/// connection ends.
pub async fn serve_connection<IO>(
    shard: Rc<Shard>,
    stream: IO,
    first_deadline: Instant,
    admitted: Admitted,
) where
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let config = &shard.node.config.server;
    let idle_limit = config.http_idle_timeout;
    let window = config.transfer_timeout;
    let least = config
        .min_transfer_rate
        .saturating_mul(window.as_secs().max(1));
    let metrics = shard.node.metrics.clone();
    let last_request: Rc<Activity> = Rc::default();
    let seen = last_request.clone();
    let admitted = Rc::new(std::cell::RefCell::new(admitted));
    let first_request = admitted.clone();
    let service = hyper::service::service_fn(move |mut req: Request<Incoming>| {
        let client = {
            let mut admitted = first_request.borrow_mut();
            admitted.request_arrived();
            admitted.client(&shard.node, &req)
        };
        req.extensions_mut().insert(client);
        seen.at.set(Some(Instant::now()));
        seen.changed.notify_one();
        let shard = shard.clone();
        let busy = Busy::new(seen.clone());
        async move {
            let resp = handle(req, shard).await;
            Ok::<_, Infallible>(resp.map(|body| Tracked { body, _busy: busy }))
        }
    });
    let moved = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let stream = crate::conn::metered::Metered::new(stream, moved.clone());
    let served = hyper::server::conn::http1::Builder::new()
        .serve_connection(TokioIo::new(stream), service)
        .with_upgrades();
    let deadline = || match last_request.at.get() {
        None => first_deadline,
        Some(at) => at + idle_limit,
    };
    let mut served = std::pin::pin!(served);
    let mut timer = Box::pin(tokio::time::sleep_until(deadline().into()));
    let mut transfer = tokio::time::interval_at((Instant::now() + window).into(), window);
    // Bytes moved at the last check, and whether a request was in progress
    // then (a window is judged only when one was in progress all along).
    let (mut moved_then, mut busy_then) = (0u64, false);
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
            _ = transfer.tick() => {
                let now = moved.load(std::sync::atomic::Ordering::Relaxed);
                let busy = last_request.busy.get() > 0;
                if busy && busy_then && now - moved_then < least {
                    metrics.rejected(RejectReason::TooSlow);
                    tracing::debug!(bytes = now - moved_then, "http request too slow; closed");
                    return;
                }
                (moved_then, busy_then) = (now, busy);
            }
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

/// An accepted connection's places in the budgets: `server.max_handshakes`
/// until its first request arrives (or it upgrades), and its address's
/// `server.max_connections_per_ip` until it upgrades or ends.
pub struct Admitted {
    handshake: Option<HandshakeGuard>,
    _peer: crate::peers::PeerGuard,
    /// The peer's address.
    ip: std::net::IpAddr,
}

impl Admitted {
    pub fn new(
        handshake: HandshakeGuard,
        peer: crate::peers::PeerGuard,
        ip: std::net::IpAddr,
    ) -> Admitted {
        Admitted {
            handshake: Some(handshake),
            _peer: peer,
            ip,
        }
    }

    /// The client a request on this connection is from: the peer, or the
    /// address a trusted proxy forwarded it for.
    pub fn client<B>(&self, node: &Node, req: &Request<B>) -> crate::peers::ClientAddr {
        let forwarded = req
            .headers()
            .get("x-forwarded-for")
            .and_then(|v| v.to_str().ok());
        crate::peers::ClientAddr(node.peers.client(self.ip, forwarded))
    }

    /// A request arrived: the connection is past its handshake.
    pub fn request_arrived(&mut self) {
        self.handshake = None;
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
    /// A bare `/ws`: the dialect `server.default_protocol` names (unless
    /// the client names one), native by default. Only this path follows
    /// that setting: `/api/chat-api/ws` and `/ws/{room}` stay native, so
    /// chatd's own web client works whatever it is set to.
    Bare,
    /// `/api/chat-api/rooms/{room}/messages`: a page of stored history.
    History {
        room: &'a str,
    },
    /// `/api/chat-api/rooms/{room}/receipts`: delivery receipts.
    Receipts {
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

/// The route of a request: [`route`] of its path, except that a WebSocket
/// upgrade at `/` is the relay (the websocket-relay specification serves
/// its broadcast socket there; a plain `GET /` stays the web page).
pub(crate) fn route_of<'a, B>(path: &'a str, req: &Request<B>) -> Route<'a> {
    if path == "/" && fastwebsockets::upgrade::is_upgrade_request(req) {
        return Route::Relay;
    }
    route(path)
}

pub(crate) fn route(path: &str) -> Route<'_> {
    match path {
        "/healthz" => return Route::Health,
        "/readyz" => return Route::Ready,
        "/relay" => return Route::Relay,
        "/ws" | "/ws/" => return Route::Bare,
        "/demo/ws" | "/demo/ws/" => return Route::Demo,
        "/fastchat/ws" | "/fastchat/ws/" => return Route::FastChat,
        _ => {}
    }
    if let Some(asset) = web::asset(path) {
        return Route::Web(asset);
    }
    if let Some(rest) = path.strip_prefix("/api/chat-api/rooms/") {
        let room = |suffix| {
            rest.strip_suffix(suffix)
                .filter(|r: &&str| !r.is_empty() && !r.contains('/'))
        };
        if let Some(room) = room("/messages") {
            return Route::History { room };
        }
        if let Some(room) = room("/receipts") {
            return Route::Receipts { room };
        }
        return Route::NotFound;
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

/// The address the request is from (attached by `serve_connection`).
pub(crate) fn client_addr<B>(req: &Request<B>) -> std::net::IpAddr {
    req.extensions()
        .get::<crate::peers::ClientAddr>()
        .map_or(std::net::Ipv4Addr::UNSPECIFIED.into(), |a| a.0)
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

async fn handle(mut req: Request<Incoming>, shard: Rc<Shard>) -> Response<Body> {
    let uri = req.uri().clone();
    let query = uri.query().map(str::to_owned);
    let route = route_of(uri.path(), &req);
    if !matches!(route, Route::NotFound | Route::Api { .. }) && req.method() != Method::GET {
        return error::wrong_method("GET");
    }
    let node = &shard.node;
    match route {
        Route::NotFound => error::plain(StatusCode::NOT_FOUND, "no such endpoint"),
        Route::Api { rest } => api::handle(req, shard.clone(), rest).await,
        Route::History { room } => {
            let identity = match identify(&req, node, query.as_deref()).await {
                Ok(identity) => identity,
                Err(e) => return error::refusal(&e),
            };
            history_page(node, &identity, room, query.as_deref()).await
        }
        Route::Receipts { room } => {
            let identity = match identify(&req, node, query.as_deref()).await {
                Ok(identity) => identity,
                Err(e) => return error::refusal(&e),
            };
            receipts(node, &identity, room).await
        }
        Route::Web(_) if !node.config.server.web_client => {
            error::plain(StatusCode::NOT_FOUND, "no such endpoint")
        }
        Route::Web(asset) => web::serve(asset, req.headers()),
        Route::Health => json(StatusCode::OK, r#"{"status":"ok"}"#.into()),
        Route::Ready => {
            let reason = if node.shutdown.phase() != Phase::Running {
                Some("shutting down")
            } else if !node.broker.is_ready() {
                Some("broker not connected")
            } else if node.store.as_ref().is_some_and(|s| !s.is_ready()) {
                Some("store not connected")
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
        Route::Relay | Route::FastChat | Route::Demo | Route::Native { .. } | Route::Bare => {
            match upgrade::websocket(&req, &shard, route, query.as_deref()).await {
                Ok(accepted) => upgrade::by_hyper(&mut req, shard, accepted),
                Err(refused) => refused,
            }
        }
    }
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
        Err(e) => return error::plain(StatusCode::BAD_REQUEST, &format!("invalid room name: {e}")),
    };
    if let Err(e) = node.accounts.may_use(identity, &room).await {
        return error::refusal(&e);
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
            return error::plain(StatusCode::BAD_REQUEST, &message);
        }
    };
    let page = match crate::chat::history(node.store.as_ref(), room.clone(), before_seq, limit) {
        Ok(page) => page,
        Err(e @ crate::chat::ChatError::BadLimit(_)) => {
            return error::plain(StatusCode::BAD_REQUEST, &e.to_string())
        }
        // The same code as the WebSocket's and the other REST routes' that
        // need a store.
        Err(e @ crate::chat::ChatError::NoHistory) => {
            return error::json(StatusCode::NOT_FOUND, "UNSUPPORTED", &e.to_string(), None)
        }
        Err(e) => return error::plain(StatusCode::SERVICE_UNAVAILABLE, &e.to_string()),
    };
    match page.await {
        Ok(Ok(events)) => {
            let page = HistoryPage {
                room: room.as_str(),
                messages: events.iter().map(envelope_value).collect(),
            };
            json(StatusCode::OK, to_json(&page))
        }
        _ => error::plain(
            StatusCode::SERVICE_UNAVAILABLE,
            "history could not be read; try again",
        ),
    }
}

/// `GET /api/chat-api/rooms/{room}/receipts`: how far each user was
/// delivered the room (the highest `seq` one of their clients confirmed),
/// for whoever may read the room.
async fn receipts(node: &Node, identity: &Identity, room: &str) -> Response<Body> {
    let room = match RoomName::parse(room, node.config.limits.max_name_length) {
        Ok(room) => room,
        Err(e) => return error::plain(StatusCode::BAD_REQUEST, &format!("invalid room name: {e}")),
    };
    if let Err(e) = node.accounts.may_use(identity, &room).await {
        return error::refusal(&e);
    }
    let asked = match node.store.as_ref().map(|s| s.receipts(room.clone())) {
        None => {
            let message = crate::chat::ChatError::NoHistory.to_string();
            return error::json(StatusCode::NOT_FOUND, "UNSUPPORTED", &message, None);
        }
        Some(Err(busy)) => return error::plain(StatusCode::SERVICE_UNAVAILABLE, &busy.to_string()),
        Some(Ok(asked)) => asked,
    };
    match asked.await {
        Ok(Ok(all)) => {
            let body = Receipts {
                room: room.as_str(),
                receipts: all
                    .iter()
                    .map(|(user, seq)| Receipt {
                        user_id: user,
                        delivered_seq: *seq,
                    })
                    .collect(),
            };
            json(StatusCode::OK, to_json(&body))
        }
        _ => error::plain(
            StatusCode::SERVICE_UNAVAILABLE,
            "receipts could not be read; try again",
        ),
    }
}

#[derive(serde::Serialize)]
struct Receipts<'a> {
    room: &'a str,
    receipts: Vec<Receipt<'a>>,
}

#[derive(serde::Serialize)]
struct Receipt<'a> {
    user_id: &'a str,
    delivered_seq: u64,
}

#[derive(serde::Serialize)]
struct HistoryPage<'a> {
    room: &'a str,
    messages: Vec<sonic_rs::Value>,
}

/// Who the request is from (a token is required with `auth.enabled`).
async fn identify<B>(
    req: &Request<B>,
    node: &Node,
    query: Option<&str>,
) -> Result<Identity, crate::accounts::AccountError> {
    node.accounts
        .identify(req.headers(), query_param(query, "token"))
        .await
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
        assert_eq!(route("/ws/"), Route::Bare);
        assert_eq!(route("/ws"), Route::Bare);
        assert_eq!(route("/ws/r"), Route::Native { room: Some("r") });
        assert_eq!(route("/ws/a/b"), Route::NotFound);
        assert_eq!(route("/wsx"), Route::NotFound);
        assert_eq!(route("/relay"), Route::Relay);
        assert_eq!(
            route("/api/chat-api/rooms/r/receipts"),
            Route::Receipts { room: "r" }
        );
        assert_eq!(route("/api/chat-api/rooms//receipts"), Route::NotFound);
        assert!(matches!(route("/"), Route::Web(_)));
        assert!(matches!(route("/app.js"), Route::Web(_)));
        assert_eq!(route("/nope.js"), Route::NotFound);
    }

    #[test]
    fn query_params() {
        assert_eq!(query_param(Some("a=1&room=r&x"), "room"), Some("r"));
        assert_eq!(query_param(Some("rooms=r"), "room"), None);
        assert_eq!(query_param(None, "room"), None);
    }
}
