//! Real redis-server and chatd processes on loopback for the scale-out tests.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::common::{chatd_command, http_get, spawn_chatd, WAIT};

/// Fails the test when redis-server cannot run here: a missing dependency
/// is a failure, never a silent pass (scripts/test.sh installs it).
pub fn require_redis() {
    let found = Command::new("redis-server")
        .arg("--version")
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    assert!(
        found,
        "redis-server is required (scripts/test.sh installs it: apt-get install redis-server)"
    );
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub struct Redis {
    child: Option<Child>,
    pub port: u16,
    dir: PathBuf,
    cluster: bool,
    /// Append-only file with a fsync per write: what it acked survives a
    /// restart (a Redis that keeps history must be run so).
    durable: bool,
    /// A TLS port too, with this certificate and key: (cert, key, port).
    tls: Option<(PathBuf, PathBuf, u16)>,
}

impl Redis {
    pub fn start() -> Redis {
        Redis::start_on(free_port(), false)
    }

    /// A Redis whose data survives [`Redis::restart`] (AOF, `appendfsync
    /// always`), as one that keeps chatd's history must be run.
    pub fn start_durable() -> Redis {
        let mut redis = Redis::start_on(free_port(), false);
        redis.kill();
        redis.durable = true;
        redis.spawn();
        redis
    }

    pub fn start_on(port: u16, cluster: bool) -> Redis {
        let dir = std::env::temp_dir().join(format!("chatd-redis-{}-{port}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let mut redis = Redis {
            child: None,
            port,
            dir,
            cluster,
            durable: false,
            tls: None,
        };
        redis.spawn();
        redis
    }

    /// A Redis that also takes TLS (`rediss://`, see [`Redis::tls_url`])
    /// with this certificate and key; no client certificates.
    pub fn start_tls(cert: &std::path::Path, key: &std::path::Path) -> Redis {
        let mut redis = Redis::start();
        redis.kill();
        redis.tls = Some((cert.to_owned(), key.to_owned(), free_port()));
        redis.spawn();
        redis
    }

    pub fn tls_url(&self) -> String {
        let (_, _, port) = self.tls.as_ref().expect("started with TLS");
        format!("rediss://127.0.0.1:{port}")
    }

    fn spawn(&mut self) {
        let mut cmd = Command::new("redis-server");
        cmd.args([
            "--port",
            &self.port.to_string(),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
        ])
        .args(match self.durable {
            true => ["--appendonly", "yes", "--appendfsync", "always"],
            false => ["--appendonly", "no", "--appendfsync", "everysec"],
        })
        .arg("--dir")
        .arg(&self.dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null());
        if let Some((cert, key, port)) = &self.tls {
            cmd.args(["--tls-port", &port.to_string(), "--tls-auth-clients", "no"])
                .arg("--tls-cert-file")
                .arg(cert)
                .arg("--tls-key-file")
                .arg(key);
        }
        if self.cluster {
            cmd.args([
                "--cluster-enabled",
                "yes",
                "--cluster-config-file",
                "nodes.conf",
            ]);
        }
        self.child = Some(cmd.spawn().expect("redis-server starts"));
        let deadline = std::time::Instant::now() + WAIT;
        while self.cli(&["PING"]).as_deref() != Some("PONG") {
            assert!(
                std::time::Instant::now() < deadline,
                "redis-server did not answer"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The server's own temp directory (removed with it).
    pub fn dir(&self) -> &std::path::Path {
        &self.dir
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Runs a command through redis-cli; its trimmed output.
    pub fn cli(&self, args: &[&str]) -> Option<String> {
        let out = Command::new("redis-cli")
            .args(["-p", &self.port.to_string()])
            .args(args)
            .output()
            .ok()?;
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
    }

    /// Freezes the server (SIGSTOP): connections stay open, nothing is
    /// answered, and commands sent meanwhile never run if it is then killed.
    pub fn freeze(&self) {
        let pid = self.child.as_ref().expect("running").id().to_string();
        let stopped = Command::new("kill").args(["-STOP", &pid]).status();
        assert!(stopped.is_ok_and(|s| s.success()), "SIGSTOP redis-server");
    }

    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    pub fn restart(&mut self) {
        self.kill();
        self.spawn();
    }

    /// Starts a killed server again on its port and directory.
    pub fn start_again(&mut self) {
        self.spawn();
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Subscribers of a channel across the whole server (PUBSUB NUMSUB).
pub fn numsub(redis: &Redis, channel: &str, sharded: bool) -> u64 {
    let sub = if sharded { "SHARDNUMSUB" } else { "NUMSUB" };
    let out = redis.cli(&["PUBSUB", sub, channel]).unwrap_or_default();
    out.lines()
        .nth(1)
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or(0)
}

/// A chatd process (killed when dropped).
pub struct Chatd {
    child: tokio::process::Child,
    pub addr: SocketAddr,
}

impl Chatd {
    pub async fn start(redis_url: &str, extra: &[&str]) -> Chatd {
        let mut cmd = chatd_command();
        cmd.args([
            "--log-level",
            "warn",
            "--set",
            "broker.redis.health_interval=100ms",
        ])
        .env("REDIS_URL", redis_url);
        for e in extra {
            cmd.args(["--set", e]);
        }
        let (child, addr) = spawn_chatd(&mut cmd).await;
        Chatd { child, addr }
    }

    /// Stops the process (SIGSTOP) until [`Chatd::resume`]: it sees
    /// nothing meanwhile, as a node stalled or slow to reconnect.
    pub fn pause(&self) {
        self.signal("-STOP");
    }

    pub fn resume(&self) {
        self.signal("-CONT");
    }

    fn signal(&self, signal: &str) {
        let pid = self.child.id().expect("running").to_string();
        let sent = std::process::Command::new("kill")
            .args([signal, &pid])
            .status()
            .unwrap();
        assert!(sent.success(), "kill {signal} {pid}");
    }

    /// A chatd started some other way.
    pub fn from_child(child: tokio::process::Child, addr: SocketAddr) -> Chatd {
        Chatd { child, addr }
    }

    /// `kill -9`: the process gets no chance to clean up.
    pub async fn kill_9(mut self) {
        self.child.start_kill().unwrap();
        self.child.wait().await.unwrap();
    }

    pub async fn ready(&self) -> bool {
        http_get(self.addr, "/readyz").await.0 == 200
    }

    pub async fn wait_ready(&self) {
        let deadline = tokio::time::Instant::now() + WAIT;
        while !self.ready().await {
            assert!(
                tokio::time::Instant::now() < deadline,
                "node never became ready"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// Waits until `channel` has `n` subscribers.
pub async fn wait_numsub(redis: &Redis, channel: &str, sharded: bool, n: u64) {
    let deadline = tokio::time::Instant::now() + WAIT;
    while numsub(redis, channel, sharded) != n {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{channel} never had {n} subscribers"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Two chatd nodes on one Redis (or cluster), both ready.
pub async fn two_ready_nodes(redis_url: &str, extra: &[&str]) -> (Chatd, Chatd) {
    let (n1, n2) = (
        Chatd::start(redis_url, extra).await,
        Chatd::start(redis_url, extra).await,
    );
    n1.wait_ready().await;
    n2.wait_ready().await;
    (n1, n2)
}
