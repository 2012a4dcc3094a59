//! HTTP in front of the WebSockets: routing, upgrade checks, health.
//!
//! | path | what |
//! |---|---|
//! | `/api/chat-api/ws`, `/ws` (`?room=`, `?client_id=`) | native protocol |
//! | `/api/chat-api/ws/{room}`, `/ws/{room}` | native protocol in `room` |
//! | `/relay` | verbatim relay |
//! | `/healthz`, `/readyz` | liveness, readiness (JSON) |

pub mod hold;
pub mod metrics;

use bytes::Bytes;
use futures_util::future::Either;
use futures_util::FutureExt;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{HeaderValue, CONTENT_TYPE, UPGRADE};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use std::convert::Infallible;
use std::rc::Rc;

use crate::conn::{self, native::Native, relay::Relay, ConnLimits};
use crate::protocol::{ClientId, RoomName};
use crate::queue::Limits;
use crate::shard::Shard;
use crate::shutdown::Phase;

type Body = Full<Bytes>;

/// Serves one accepted connection, plain or TLS (HTTP/1.1, with upgrades).
pub async fn serve_connection<IO>(shard: Rc<Shard>, stream: IO)
where
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let service = hyper::service::service_fn(move |req| {
        let shard = shard.clone();
        async move { Ok::<_, Infallible>(handle(req, shard)) }
    });
    let served = hyper::server::conn::http1::Builder::new()
        .serve_connection(TokioIo::new(stream), service)
        .with_upgrades()
        .await;
    if let Err(e) = served {
        tracing::debug!(error = %e, "http connection ended with an error");
    }
}

/// Which endpoint a path names.
#[derive(Debug, PartialEq, Eq)]
enum Route<'a> {
    Native { room: Option<&'a str> },
    Relay,
    Health,
    Ready,
    NotFound,
}

fn route(path: &str) -> Route<'_> {
    match path {
        "/healthz" => return Route::Health,
        "/readyz" => return Route::Ready,
        "/relay" => return Route::Relay,
        _ => {}
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
fn query_param<'a>(query: Option<&'a str>, key: &str) -> Option<&'a str> {
    query?
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .find(|(k, _)| *k == key)
        .map(|(_, v)| v)
}

fn json(status: StatusCode, body: String) -> Response<Body> {
    let mut resp = Response::new(Full::new(Bytes::from(body)));
    *resp.status_mut() = status;
    resp.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    resp
}

fn error(status: StatusCode, message: &str) -> Response<Body> {
    json(status, sonic_rs::json!({ "error": message }).to_string())
}

fn handle(mut req: Request<Incoming>, shard: Rc<Shard>) -> Response<Body> {
    let path = req.uri().path().to_owned();
    let query = req.uri().query().map(str::to_owned);
    let route = route(&path);
    if route != Route::NotFound && req.method() != Method::GET {
        return error(StatusCode::METHOD_NOT_ALLOWED, "only GET is allowed here");
    }
    let node = &shard.node;
    match route {
        Route::NotFound => error(StatusCode::NOT_FOUND, "no such endpoint"),
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
                    sonic_rs::json!({"status": "not ready", "reason": reason}).to_string(),
                ),
            }
        }
        Route::Relay if !node.config.relay.enabled => {
            error(StatusCode::NOT_FOUND, "the relay endpoint is disabled")
        }
        Route::Relay => {
            if let Err(e) = authenticate(&req, node, query.as_deref()) {
                return unauthorized(e);
            }
            let relay = &node.config.relay;
            let limits = ConnLimits {
                max_message: relay.max_message_size,
                queue: Limits {
                    max_messages: relay.queue_messages,
                    max_bytes: relay.queue_bytes,
                },
            };
            upgrade(&mut req, shard.clone(), limits, Relay)
        }
        Route::Native { room } => {
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
            let client_id = match authenticate(&req, node, query.as_deref()) {
                Err(e) => return unauthorized(e),
                // With authentication on, the token's subject is the id.
                Ok(Some(subject)) => match ClientId::parse(&subject, max_name) {
                    Ok(id) => id,
                    Err(e) => {
                        return error(
                            StatusCode::FORBIDDEN,
                            &format!("token subject is not a valid client id: {e}"),
                        )
                    }
                },
                Ok(None) => {
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
            let l = &node.config.limits;
            let limits = ConnLimits {
                max_message: l.max_message_size,
                queue: Limits {
                    max_messages: l.queue_messages,
                    max_bytes: l.queue_bytes,
                },
            };
            upgrade(
                &mut req,
                shard.clone(),
                limits,
                Native::new(client_id, room),
            )
        }
    }
}

/// With `auth.enabled`, the verified token subject; without, `None`.
fn authenticate(
    req: &Request<Incoming>,
    node: &crate::node::Node,
    query: Option<&str>,
) -> Result<Option<String>, crate::auth::AuthError> {
    match &node.auth {
        None => Ok(None),
        Some(auth) => auth
            .subject(req.headers(), query_param(query, "token"))
            .map(Some),
    }
}

fn unauthorized(e: crate::auth::AuthError) -> Response<Body> {
    let mut resp = error(StatusCode::UNAUTHORIZED, &e.to_string());
    resp.headers_mut().insert(
        hyper::header::WWW_AUTHENTICATE,
        HeaderValue::from_static("Bearer"),
    );
    resp
}

fn upgrade(
    req: &mut Request<Incoming>,
    shard: Rc<Shard>,
    limits: ConnLimits,
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
    let (resp, fut) = match fastwebsockets::upgrade::upgrade(req) {
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
    let task = fut.then(move |upgraded| match upgraded {
        Ok(ws) => Either::Left(conn::serve(
            shard,
            ws.into_inner().into_inner(),
            limits,
            handler,
        )),
        Err(e) => {
            tracing::debug!(error = %e, "upgrade failed");
            Either::Right(std::future::ready(()))
        }
    });
    tokio::task::spawn_local(task);
    resp.map(|_| Full::default())
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
        assert_eq!(route("/"), Route::NotFound);
    }

    #[test]
    fn query_params() {
        assert_eq!(query_param(Some("a=1&room=r&x"), "room"), Some("r"));
        assert_eq!(query_param(Some("rooms=r"), "room"), None);
        assert_eq!(query_param(None, "room"), None);
    }
}
