//! Plain HTTP: health, readiness, 426 for a GET without upgrade, 404, and the
//! binary's own start and SIGTERM shutdown.

use crate::common::{chatd_command, connect, http_get, refused_start, spawn_chatd, start};

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
    // A wrong method is 405 with Allow (before any token is asked for).
    for (method, path, allow) in [
        ("DELETE", "/api/chat-api/auth/login", "POST"),
        ("PUT", "/api/chat-api/users", "GET"),
        ("POST", "/api/chat-api/dm/x", ""),
        ("DELETE", "/api/chat-api/me", "GET, PATCH"),
        ("POST", "/healthz", "GET"),
        ("PUT", "/api/chat-api/rooms/r/messages", "GET"),
    ] {
        let (status, head) = raw_head(addr, method, path).await;
        if allow.is_empty() {
            assert_ne!(status, 405, "{method} {path}");
            continue;
        }
        assert_eq!(status, 405, "{method} {path}: {head}");
        let allow = format!("allow: {}", allow.to_ascii_lowercase());
        assert!(head.contains(&allow), "{method} {path}: {head}");
    }
    assert_eq!(
        raw_head(addr, "GET", "/api/chat-api/nothing-here").await.0,
        404
    );
    // History without a store: one code on REST and on the WebSocket.
    let (status, body) = http_get(addr, "/api/chat-api/rooms/r/messages").await;
    assert_eq!(status, 404);
    assert!(body.contains(r#""code":"UNSUPPORTED""#), "{body}");
    let mut c = connect(addr, "/ws/r").await;
    c.send_json(serde_json::json!({"type":"history","room":"r"}))
        .await;
    assert_eq!(c.recv_type("error").await["data"]["code"], "UNSUPPORTED");
    c.close().await;
    server.shutdown().await;
}

/// A bodiless request: (status, the head, lower-cased).
async fn raw_head(addr: std::net::SocketAddr, method: &str, path: &str) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: 0\r\n\r\n"
    );
    s.write_all(req.as_bytes()).await.unwrap();
    let mut answer = String::new();
    s.read_to_string(&mut answer).await.unwrap();
    let head = answer
        .split("\r\n\r\n")
        .next()
        .unwrap()
        .to_ascii_lowercase();
    let status = head.split(' ').nth(1).unwrap().parse().unwrap();
    (status, head)
}

/// The real binary: prints its address, serves, exits 0 on SIGTERM after
/// closing its clients with 1001.
#[tokio::test]
async fn binary_starts_and_stops_cleanly_on_sigterm() {
    let (mut child, addr) = spawn_chatd(&mut chatd_command()).await;
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
    let chatd = || tokio::process::Command::new(env!("CARGO_BIN_EXE_chatd"));
    let stderr = refused_start(chatd().args(["--set", "limits.queue_messages=0"])).await;
    assert!(stderr.contains("limits.queue_messages"), "{stderr}");
    // A log filter it cannot read names where it came from.
    let stderr = refused_start(chatd().env("RUST_LOG", "chatd=loud")).await;
    assert!(stderr.contains("RUST_LOG"), "{stderr}");
}

/// SIGTERM to a chatd process; what it wrote, once it exited.
async fn terminate(child: tokio::process::Child) -> std::process::Output {
    let pid = child.id().unwrap().to_string();
    std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap();
    tokio::time::timeout(crate::common::WAIT, child.wait_with_output())
        .await
        .unwrap()
        .unwrap()
}

/// `log.format: json`: one JSON object per line; a connection's lines carry
/// its id and shard; no message content at info level.
#[tokio::test]
async fn json_logs_carry_the_connection_id_and_shard() {
    let mut cmd = chatd_command();
    cmd.args(["--set", "log.format=json", "--log-level", "chatd=debug"])
        .env_remove("RUST_LOG")
        .stderr(std::process::Stdio::piped());
    let (child, addr) = spawn_chatd(&mut cmd).await;
    let mut c = connect(addr, "/ws/r").await;
    c.chat(None, "secret content").await;
    c.recv_type("chat").await;
    c.close().await;
    let out = terminate(child).await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    let logs: Vec<serde_json::Value> = stderr
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|_| panic!("not JSON: {l}")))
        .collect();
    let open = logs
        .iter()
        .find(|l| l["fields"]["message"] == "connection open")
        .unwrap_or_else(|| panic!("no connection line in {stderr}"));
    assert_eq!(open["span"]["name"], "conn");
    assert!(open["span"]["id"].is_u64(), "{open}");
    assert!(open["span"]["shard"].is_u64(), "{open}");
    assert!(!stderr.contains("secret content"));
}

/// Regression (issue 9, finding 5): `CHATD_BIN` in the environment stopped
/// chatd from starting (`unknown field bin`), and text logs written to a
/// pipe carried ANSI colour codes.
#[tokio::test]
async fn stray_chatd_variables_warn_and_piped_logs_have_no_colour() {
    let mut cmd = chatd_command();
    cmd.args(["--log-level", "info"])
        .env_remove("RUST_LOG")
        .env_remove("NO_COLOR")
        .env("CHATD_BIN", "/usr/local/bin/chatd")
        .stderr(std::process::Stdio::piped());
    let (child, addr) = spawn_chatd(&mut cmd).await;
    assert_eq!(http_get(addr, "/healthz").await.0, 200);
    let out = terminate(child).await;
    assert!(out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("environment variable ignored"), "{stderr}");
    assert!(stderr.contains("CHATD_BIN"), "{stderr}");
    assert!(
        !stderr.contains('\x1b'),
        "colour codes in a pipe: {stderr:?}"
    );
}

/// SO_REUSEPORT must not let a second server share a port by accident.
#[tokio::test]
async fn a_port_in_use_stops_the_start() {
    let server = crate::common::start(&[]);
    let port = server.addr().port();
    let config = chatd::Config::load(
        Some(std::path::Path::new("/dev/null")),
        [],
        &[
            "server.host=127.0.0.1".into(),
            format!("server.port={port}"),
            "metrics.enabled=false".into(),
        ],
    )
    .unwrap();
    let err = chatd::start(config)
        .err()
        .expect("second server refused")
        .to_string();
    assert!(err.contains("Address already in use"), "{err}");
    server.shutdown().await;
}

/// A node started with a low soft open-file limit (1,024 is common: it is
/// systemd's default) raises it to the hard one, so the limit does not cap
/// it at about that many clients. Started at 256:4096, it serves 400
/// connections at once and says what it did.
#[tokio::test]
async fn a_low_soft_open_file_limit_is_raised_to_the_hard_one() {
    let mut cmd = tokio::process::Command::new("prlimit");
    cmd.args(["--nofile=256:4096", "--", env!("CARGO_BIN_EXE_chatd")])
        .args(["--set", "store.backend=none", "--log-level", "info"])
        .env_remove("RUST_LOG")
        .stderr(std::process::Stdio::piped());
    let (child, addr) = spawn_chatd(&mut cmd).await;
    let limits = std::fs::read_to_string(format!("/proc/{}/limits", child.id().unwrap())).unwrap();
    let open_files = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .unwrap()
        .split_whitespace()
        .skip(3)
        .take(2)
        .collect::<Vec<_>>();
    assert_eq!(open_files, ["4096", "4096"], "{limits}");
    let mut clients = Vec::new();
    for _ in 0..400 {
        clients.push(connect(addr, "/ws/r").await);
    }
    let out = terminate(child).await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("open-file limit raised"), "{stderr}");
    assert!(stderr.contains("from=256 to=4096"), "{stderr}");
    drop(clients);
}
