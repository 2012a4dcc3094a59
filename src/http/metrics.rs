//! The metrics listener: `GET /metrics` in the Prometheus text format.

use bytes::Bytes;
use http_body_util::Full;
use hyper::header::{HeaderValue, CONTENT_TYPE};
use hyper::{Response, StatusCode};
use hyper_util::rt::TokioIo;
use std::convert::Infallible;
use std::sync::Arc;
use tokio::net::TcpListener;

use crate::node::Node;

pub async fn serve(listener: TcpListener, node: Arc<Node>) {
    loop {
        let (stream, _) = match listener.accept().await {
            Ok(pair) => pair,
            Err(e) => {
                tracing::warn!(error = %e, "metrics accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            }
        };
        let node = node.clone();
        tokio::task::spawn_local(async move {
            let service = hyper::service::service_fn(move |req| {
                let node = node.clone();
                async move { Ok::<_, Infallible>(respond(req.uri().path(), &node)) }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

fn respond(path: &str, node: &Node) -> Response<Full<Bytes>> {
    if path != "/metrics" {
        let mut resp = Response::new(Full::new(Bytes::from_static(b"not found; try /metrics\n")));
        *resp.status_mut() = StatusCode::NOT_FOUND;
        return resp;
    }
    node.metrics.rooms.set(node.registry.room_count() as i64);
    let mut resp = Response::new(Full::new(Bytes::from(node.metrics.encode())));
    resp.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("application/openmetrics-text; version=1.0.0; charset=utf-8"),
    );
    resp
}
