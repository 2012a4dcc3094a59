//! Test harness: the real server on 127.0.0.1:0 and real WebSocket clients.

use futures_util::{SinkExt, StreamExt};
use serde_json::Value;
use std::net::SocketAddr;
use std::time::Duration;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use chatd::{Config, Server};

/// How long any single expected event may take before the test fails.
pub const WAIT: Duration = Duration::from_secs(10);

/// Starts a server with two shards (so cross-shard paths run) on a free port,
/// without a store unless `overrides` names one (the default, SQLite in
/// `data/`, would be one file shared by every test).
pub fn start(overrides: &[&str]) -> Server {
    try_start(overrides).expect("server starts")
}

/// [`start`], or why the server would not start.
pub fn try_start(overrides: &[&str]) -> Result<Server, chatd::StartError> {
    let mut all: Vec<String> = [
        "server.host=127.0.0.1",
        "server.port=0",
        "server.shards=2",
        "metrics.port=0",
        "store.backend=none",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    all.extend(overrides.iter().map(|s| s.to_string()));
    let config =
        Config::load(Some(std::path::Path::new("/dev/null")), [], &all).expect("test config");
    chatd::start(config)
}

pub struct Client {
    pub ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
    /// The id the server assigned (from the `connected` message).
    pub id: String,
}

/// Connects without reading anything.
pub async fn connect_raw(addr: SocketAddr, path: &str) -> Client {
    let url = format!("ws://{addr}{path}");
    let (ws, _) = tokio_tungstenite::connect_async(url)
        .await
        .expect("websocket connects");
    Client {
        ws,
        id: String::new(),
    }
}

/// Connects and consumes the `connected` greeting.
pub async fn connect(addr: SocketAddr, path: &str) -> Client {
    let mut client = connect_raw(addr, path).await;
    let hello = client.recv().await;
    assert_eq!(hello["type"], "system", "{hello}");
    assert_eq!(hello["data"]["event"], "connected", "{hello}");
    client.id = hello["data"]["client_id"]
        .as_str()
        .expect("client_id")
        .to_owned();
    client
}

/// Connects with a tiny receive buffer, so that a client which stops reading
/// makes the server's queue for it fill quickly.
pub async fn connect_small_buffer(addr: SocketAddr, path: &str) -> Client {
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    socket.connect(&addr.into()).unwrap();
    socket.set_nonblocking(true).unwrap();
    let stream = TcpStream::from_std(socket.into()).unwrap();
    let (ws, _) = tokio_tungstenite::client_async(
        format!("ws://{addr}{path}"),
        MaybeTlsStream::Plain(stream),
    )
    .await
    .expect("websocket connects");
    let mut client = Client {
        ws,
        id: String::new(),
    };
    client.id = client.recv_type("system").await["data"]["client_id"]
        .as_str()
        .unwrap()
        .to_owned();
    client
}

/// Connects to a room by URL and waits for the join confirmation.
pub async fn connect_room(addr: SocketAddr, room: &str) -> Client {
    let mut client = connect(addr, &format!("/api/chat-api/ws/{room}")).await;
    let joined = client.recv_type("system").await;
    assert_eq!(joined["data"]["event"], "joined");
    assert_eq!(joined["room"], room);
    client
}

impl Client {
    pub async fn send_json(&mut self, v: Value) {
        self.ws
            .send(Message::text(v.to_string()))
            .await
            .expect("send");
    }

    pub async fn send_text(&mut self, text: &str) {
        self.ws
            .send(Message::text(text.to_owned()))
            .await
            .expect("send");
    }

    pub async fn chat(&mut self, room: Option<&str>, content: &str) {
        let mut msg = serde_json::json!({"type": "chat", "data": {"content": content}});
        if let Some(room) = room {
            msg["room"] = room.into();
        }
        self.send_json(msg).await;
    }

    pub async fn join(&mut self, room: &str) {
        self.send_json(serde_json::json!({"type": "join", "room": room}))
            .await;
        loop {
            let m = self.recv_type("system").await;
            if m["data"]["event"] == "joined" && m["room"] == room {
                return;
            }
        }
    }

    /// The next text message as JSON (pings are answered by the library).
    pub async fn recv(&mut self) -> Value {
        loop {
            let msg = tokio::time::timeout(WAIT, self.ws.next())
                .await
                .expect("timed out waiting for a message")
                .expect("stream ended")
                .expect("websocket error");
            match msg {
                Message::Text(t) => return serde_json::from_str(&t).expect("server sent JSON"),
                Message::Ping(_) | Message::Pong(_) => continue,
                other => panic!("expected a text message, got {other:?}"),
            }
        }
    }

    /// The next message, or `None` when none comes within `limit`.
    pub async fn recv_within(&mut self, limit: Duration) -> Option<Value> {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let msg = tokio::time::timeout_at(deadline, self.ws.next())
                .await
                .ok()?
                .expect("stream ended")
                .expect("websocket error");
            match msg {
                Message::Text(t) => {
                    return Some(serde_json::from_str(&t).expect("server sent JSON"))
                }
                Message::Ping(_) | Message::Pong(_) => continue,
                other => panic!("expected a text message, got {other:?}"),
            }
        }
    }

    /// The next message of `kind`, skipping others (e.g. presence).
    pub async fn recv_type(&mut self, kind: &str) -> Value {
        loop {
            let m = self.recv().await;
            if m["type"] == kind {
                return m;
            }
        }
    }

    /// The next presence event about `client_id` (skipping others).
    pub async fn recv_presence_from(&mut self, client_id: &str) -> Value {
        loop {
            let m = self.recv_type("presence").await;
            if m["from"] == client_id {
                return m;
            }
        }
    }

    /// Reads until the server's Close; returns its code.
    pub async fn expect_close(&mut self) -> u16 {
        loop {
            let next = tokio::time::timeout(WAIT, self.ws.next())
                .await
                .expect("timed out waiting for close");
            match next {
                Some(Ok(Message::Close(frame))) => {
                    return frame.map_or(1005, |f| u16::from(f.code))
                }
                Some(Ok(_)) => continue,
                Some(Err(e)) => panic!("error before close frame: {e}"),
                None => panic!("stream ended without a close frame"),
            }
        }
    }

    pub async fn close(mut self) {
        let _ = self.ws.close(None).await;
        while let Ok(Some(Ok(_))) = tokio::time::timeout(WAIT, self.ws.next()).await {}
    }
}

/// Waits until `cond` holds (state that settles asynchronously).
pub async fn eventually(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + WAIT;
    while !cond() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for: {what}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Waits until the async `cond` holds (state read over the network).
pub async fn eventually_async<F, Fut>(what: &str, mut cond: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + WAIT;
    while !cond().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for: {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Sends one raw HTTP/1.1 request (`Connection: close`) and reads the whole
/// response: (status, body).
pub async fn http_raw(addr: SocketAddr, request: &str) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    stream.write_all(request.as_bytes()).await.expect("write");
    let mut raw = String::new();
    tokio::time::timeout(WAIT, stream.read_to_string(&mut raw))
        .await
        .expect("response in time")
        .expect("read");
    let status = raw
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("status line");
    let body = raw
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (status, body)
}

/// A plain HTTP/1.1 GET; returns (status, body).
pub async fn http_get(addr: SocketAddr, path: &str) -> (u16, String) {
    http_raw(
        addr,
        &format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"),
    )
    .await
}

/// A plain HTTP/1.1 request with an optional bearer token and JSON body;
/// returns (status, body as JSON, or `null` when empty).
pub async fn http_json(
    addr: SocketAddr,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<Value>,
) -> (u16, Value) {
    let body = body.map(|b| b.to_string()).unwrap_or_default();
    let auth = token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n{auth}\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    let (status, body) = http_raw(addr, &req).await;
    let value = if body.is_empty() {
        Value::Null
    } else {
        serde_json::from_str(&body).unwrap_or_else(|_| panic!("not JSON: {body}"))
    };
    (status, value)
}

/// Registers `name` over REST (display name = name) and logs in:
/// (user id, token).
pub async fn register_and_login(addr: SocketAddr, name: &str, password: &str) -> (String, String) {
    let body = serde_json::json!({"username":name,"password":password,"display_name":name});
    let (status, user) = http_json(
        addr,
        "POST",
        "/api/chat-api/auth/register",
        None,
        Some(body),
    )
    .await;
    assert_eq!(status, 201, "{user}");
    let body = serde_json::json!({"username":name,"password":password});
    let (status, login) =
        http_json(addr, "POST", "/api/chat-api/auth/login", None, Some(body)).await;
    assert_eq!(status, 200, "{login}");
    assert_eq!(login["user"]["id"], user["id"]);
    (
        user["id"].as_str().expect("an id").to_owned(),
        login["token"].as_str().expect("a token").to_owned(),
    )
}

/// Runs the real binary on 127.0.0.1, any free port, metrics off, plus
/// `args`; returns it (killed when dropped) and the address it printed.
pub async fn spawn_chatd(cmd: &mut tokio::process::Command) -> (tokio::process::Child, SocketAddr) {
    let mut child = cmd
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
    let addr = listening_addr(&mut child).await;
    (child, addr)
}

/// The address a chatd process (stdout piped) prints when it listens.
pub async fn listening_addr(child: &mut tokio::process::Child) -> SocketAddr {
    use tokio::io::AsyncBufReadExt;
    let mut lines = tokio::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let line = tokio::time::timeout(WAIT, lines.next_line())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    line.strip_prefix("chatd listening on ")
        .expect(&line)
        .parse()
        .unwrap()
}

/// The chatd binary, to add arguments to before [`spawn_chatd`]; without a
/// store unless a later `--set store.backend=...` names one (as [`start`]).
pub fn chatd_command() -> tokio::process::Command {
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_chatd"));
    cmd.args(["--set", "store.backend=none"]);
    cmd
}

/// Runs `command` (sh) once this test process has ended, however it ended:
/// how a server shared by the whole run (a static, never dropped) is
/// stopped and its files removed.
pub fn after_this_process(command: &str) {
    let pid = std::process::id();
    // The watcher runs in the background of a shell that exits at once (and
    // is waited for): it belongs to init, not to this process.
    let started = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!(
            "(while kill -0 {pid} 2>/dev/null; do sleep 0.5; done; {command}) &"
        ))
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .expect("sh runs");
    assert!(started.success());
}

/// A name and a temp directory of one test's own (a database on a shared
/// server, and the files beside it); the directory goes with it.
pub struct Scratch {
    /// `t_` and 32 hex digits: a valid SQL identifier, unique to the test.
    pub name: String,
    dir: std::path::PathBuf,
}

impl Scratch {
    pub fn new() -> Scratch {
        let name = format!("t_{}", uuid::Uuid::new_v4().simple());
        let dir = std::env::temp_dir().join(format!("chatd-{name}"));
        std::fs::create_dir_all(&dir).unwrap();
        Scratch { name, dir }
    }

    pub fn dir(&self) -> &std::path::Path {
        &self.dir
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Runs a chatd that must refuse to start; what it wrote to stderr (which
/// should say why).
pub async fn refused_start(cmd: &mut tokio::process::Command) -> String {
    let out = cmd.output().await.expect("chatd runs");
    assert!(!out.status.success(), "chatd started");
    String::from_utf8_lossy(&out.stderr).into_owned()
}
