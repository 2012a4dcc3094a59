//! Plain HTTP: health, readiness, 426 for a GET without upgrade, 404, and the
//! binary's own start and SIGTERM shutdown.

use crate::common::{connect, http_get, start};

#[tokio::test]
async fn health_readiness_and_errors() {
    let server = start(&[]);
    let addr = server.addr();
    assert_eq!(
        http_get(addr, "/healthz").await,
        (200, r#"{"status":"ok"}"#.into())
    );
    assert_eq!(
        http_get(addr, "/readyz").await,
        (200, r#"{"status":"ready"}"#.into())
    );
    let (status, body) = http_get(addr, "/api/chat-api/ws").await;
    assert_eq!(status, 426);
    assert!(body.contains("Upgrade: websocket"), "{body}");
    assert_eq!(http_get(addr, "/ws/room").await.0, 426);
    assert_eq!(http_get(addr, "/nope").await.0, 404);
    assert_eq!(http_get(addr, "/ws/a/b").await.0, 404);
    server.shutdown().await;
}

#[tokio::test]
async fn metrics_listener_serves_prometheus_text() {
    let server = start(&[]);
    let _c = connect(server.addr(), "/ws").await;
    let (status, body) =
        http_get(server.metrics_addr().expect("metrics enabled"), "/metrics").await;
    assert_eq!(status, 200);
    assert!(body.contains("websocket_connected_clients 1"), "{body}");
    assert!(body.contains("websocket_connections_total 1"), "{body}");
    server.shutdown().await;
}

/// The real binary: prints its address, serves, exits 0 on SIGTERM after
/// closing its clients with 1001.
#[tokio::test]
async fn binary_starts_and_stops_cleanly_on_sigterm() {
    use tokio::io::AsyncBufReadExt;
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_chatd"))
        .args([
            "--host",
            "127.0.0.1",
            "--port",
            "0",
            "--set",
            "metrics.enabled=false",
        ])
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("chatd runs");
    let mut lines = tokio::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let line = tokio::time::timeout(crate::common::WAIT, lines.next_line())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    let addr: std::net::SocketAddr = line
        .strip_prefix("chatd listening on ")
        .expect(&line)
        .parse()
        .unwrap();
    let mut c = connect(addr, "/ws/r").await;
    let pid = child.id().unwrap().to_string();
    let killed = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap();
    assert!(killed.success());
    assert_eq!(c.expect_close().await, 1001);
    let status = tokio::time::timeout(crate::common::WAIT, child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(status.success(), "{status}");
}

#[tokio::test]
async fn invalid_config_exits_non_zero_naming_the_field() {
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_chatd"))
        .args(["--set", "limits.queue_messages=0"])
        .output()
        .await
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("limits.queue_messages"), "{stderr}");
}
