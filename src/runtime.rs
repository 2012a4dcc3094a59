//! Starting and stopping the server: one thread per shard, each with a
//! current-thread tokio runtime and its own `SO_REUSEPORT` listener on the
//! same address, so the kernel spreads connections and each one stays on the
//! shard that accepted it.

use socket2::{Domain, Protocol, Socket, Type};
use std::net::{IpAddr, SocketAddr};
use std::rc::Rc;
use std::sync::atomic::AtomicUsize;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use tokio::net::TcpListener;
use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver};
use tokio::sync::watch;
use tokio_rustls::TlsAcceptor;

use crate::broker::{Broker, MemoryBroker, RedisBroker};
use crate::config::{Config, StoreBackend};
use crate::metrics::Metrics;
use crate::node::Node;
use crate::rooms::{Registry, ShardMsg};
use crate::shard::Shard;
use crate::shutdown::{Phase, Shutdown};
use crate::store::Database;

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("cannot start shard thread: {0}")]
    Thread(std::io::Error),
    #[error("cannot start a shard: {0}")]
    Shard(String),
    #[error(transparent)]
    Tls(#[from] crate::tls::TlsError),
    #[error("invalid config: {0}: {1}")]
    Store(&'static str, crate::store::StoreError),
    #[error("invalid config: {0}")]
    Files(String),
}

/// Stack of a shard thread (Rust's default for spawned threads, written
/// out so that the fuzz targets parse with the same stack as the server).
pub const SHARD_STACK: usize = 2 << 20;

/// A running server.
pub struct Server {
    addr: SocketAddr,
    metrics_addr: Option<SocketAddr>,
    node: Arc<Node>,
    threads: Vec<JoinHandle<()>>,
    failure: Arc<Failure>,
}

/// Set when a shard thread panicked (its connections are gone and it can
/// no longer serve or drain): the binary exits non-zero on it.
#[derive(Default)]
pub struct Failure {
    reason: parking_lot::Mutex<Option<String>>,
    notify: tokio::sync::Notify,
}

impl Failure {
    fn set(&self, reason: String) {
        self.reason.lock().get_or_insert(reason);
        self.notify.notify_waiters();
    }

    /// Resolves with the first failure's description.
    pub async fn wait(&self) -> String {
        loop {
            let notified = self.notify.notified();
            if let Some(reason) = self.reason.lock().clone() {
                return reason;
            }
            notified.await;
        }
    }
}

/// Runs `body` as shard `index`'s thread; a panic is recorded in `failure`
/// instead of ending the thread silently.
fn supervised(index: usize, failure: Arc<Failure>, body: impl FnOnce()) {
    if let Err(panic) = std::panic::catch_unwind(std::panic::AssertUnwindSafe(body)) {
        let what = panic
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| panic.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "unknown panic".into());
        failure.set(format!("shard {index} panicked: {what}"));
    }
}

/// What shutdown achieved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ShutdownReport {
    /// Every connection flushed and closed within the grace period.
    pub drained: bool,
    pub elapsed: Duration,
}

/// Binds the listeners and starts every shard.
/// Raises the soft open-file limit to the hard one. Every connection is a
/// descriptor, and the soft limit a service gets is often 1,024 (systemd's
/// default), while the hard one is far higher: without this, a node would
/// refuse connections at about a thousand clients on a default machine.
/// What the limit is after it is logged (and what to change when it is low).
fn raise_open_files_limit() {
    let (soft, hard) = match rlimit::Resource::NOFILE.get() {
        Ok(limits) => limits,
        Err(e) => {
            tracing::warn!(error = %e, "cannot read the open-file limit");
            return;
        }
    };
    let now = if soft < hard {
        match rlimit::Resource::NOFILE.set(hard, hard) {
            Ok(()) => {
                tracing::info!(from = soft, to = hard, "open-file limit raised");
                hard
            }
            Err(e) => {
                tracing::warn!(error = %e, soft, hard, "cannot raise the open-file limit");
                soft
            }
        }
    } else {
        soft
    };
    if now < LOW_OPEN_FILES {
        tracing::warn!(
            limit = now,
            "the open-file limit caps this node at fewer connections (one descriptor each); \
             raise the hard limit (LimitNOFILE= in a systemd unit, ulimit -Hn) for more"
        );
    }
}

/// Below this many descriptors, a start warns that connections are capped.
const LOW_OPEN_FILES: u64 = 4096;

pub fn start(config: Config) -> Result<Server, StartError> {
    // Every TLS client chatd makes (S3, rediss://) uses the process's
    // provider: ring, as the server side does. (Already installed when an
    // earlier server of this process did it.)
    let _ = rustls::crypto::ring::default_provider().install_default();
    raise_open_files_limit();
    let shards = config.shard_count();
    let host: IpAddr = config
        .server
        .host
        .parse()
        .expect("validated by Config::validate");
    let tls = match config.server.tls.enabled {
        true => Some(crate::tls::acceptor(&config.server.tls)?),
        false => None,
    };
    let (senders, receivers): (Vec<_>, Vec<_>) =
        (0..shards).map(|_| unbounded_channel::<ShardMsg>()).unzip();
    let registry = Arc::new(Registry::new(senders));
    let metrics = Arc::new(Metrics::new());
    // Several nodes numbering one shared history: the bus delivers through
    // the reorder stage, so every node hands out a room's messages in `seq`
    // order (see `store::order`).
    let shared_history = config.broker.redis.enabled()
        && matches!(
            config.store.backend,
            StoreBackend::Postgres | StoreBackend::Mysql | StoreBackend::Redis
        );
    let order = shared_history.then(|| crate::store::Order::new(registry.clone()));
    let broker: Arc<dyn Broker> = if config.broker.redis.enabled() {
        let delivery: Arc<dyn crate::broker::Delivery> = match &order {
            Some((order, _)) => order.clone(),
            None => registry.clone(),
        };
        Arc::new(RedisBroker::new(
            config.broker.redis.clone(),
            shards,
            config.limits.max_name_length,
            delivery,
            metrics.broker.clone(),
        ))
    } else {
        Arc::new(MemoryBroker::new(registry.clone(), metrics.broker.clone()))
    };

    let wanted = SocketAddr::new(host, config.server.port);
    if config.server.port != 0 {
        ensure_port_free(wanted)?;
    }
    let first = bind(wanted, config.server.backlog)?;
    let addr = first.local_addr().map_err(|source| StartError::Bind {
        addr: SocketAddr::new(host, config.server.port),
        source,
    })?;
    let mut listeners = vec![first];
    for _ in 1..shards {
        listeners.push(bind(addr, config.server.backlog)?);
    }
    let mut metrics_listener = None;
    let mut metrics_addr = None;
    if config.metrics.enabled {
        let l = bind_plain(SocketAddr::new(host, config.metrics.port))?;
        metrics_addr = l.local_addr().ok();
        metrics_listener = Some(l);
    }

    let database = match config.store.backend {
        StoreBackend::None => None,
        StoreBackend::Sqlite => Some(Database::Sqlite(config.store.sqlite.path.clone())),
        StoreBackend::Postgres => Some(Database::Postgres(config.store.postgres.url.clone())),
        StoreBackend::Mysql => Some(Database::Mysql(config.store.mysql.url.clone())),
        StoreBackend::Redis => Some(Database::Redis {
            url: config.store_redis_url().to_owned(),
            prefix: config.store.redis.prefix.clone(),
            ca_file: config.store_redis_ca_file().to_owned(),
        }),
    };
    match &database {
        None => tracing::info!("history store: none (messages are delivered, not kept)"),
        Some(Database::Sqlite(path)) => {
            tracing::info!(path = %path.display(), "history store: sqlite (this node's file)")
        }
        Some(Database::Postgres(_)) => tracing::info!("history store: postgres"),
        Some(Database::Mysql(_)) => tracing::info!("history store: mysql"),
        Some(Database::Redis { prefix, .. }) => {
            tracing::info!(prefix = %prefix, "history store: redis (shared by every node on it)")
        }
    }
    if matches!(database, Some(Database::Sqlite(_))) && config.broker.redis.enabled() {
        tracing::warn!(
            "SQLite store with a Redis broker: each node keeps and numbers its own history, \
             and a message acked while Redis is down reaches only this node's members; \
             use store.backend postgres, mysql or redis (the default with Redis) for several \
             nodes sharing rooms"
        );
    }
    let store = match database {
        None => None,
        Some(database) => {
            let key = match database {
                Database::Sqlite(_) => "store.sqlite.path",
                Database::Postgres(_) => "store.postgres.url",
                Database::Mysql(_) => "store.mysql.url",
                Database::Redis { .. } => "store.redis.url",
            };
            let settings = crate::store::Settings {
                database,
                max_pending: config.store.max_pending,
                max_batch: config.store.max_batch,
                max_name: config.limits.max_name_length,
                max_recover: config.store.max_recover,
                reorder_timeout: config.store.reorder_timeout,
                metrics: metrics.store.clone(),
                retention: crate::store::Retention {
                    max_age: Some(config.store.retention.max_age).filter(|a| !a.is_zero()),
                    max_messages: Some(config.store.retention.max_messages).filter(|&n| n > 0),
                    interval: config.store.retention.interval,
                },
            };
            let store = crate::store::start(settings, registry.clone(), broker.clone(), order);
            Some(store.map_err(|e| StartError::Store(key, e))?)
        }
    };
    if config.fastchat.allowed_origins.is_empty() {
        // Nothing is wrong for a first run: said once, calmly.
        tracing::info!("FastChat accepts any Origin (set fastchat.allowed_origins to restrict it)");
    }
    let mut auth_config = config.auth.clone();
    if auth_config.jwt_secret.is_empty() {
        // Auth off and no secret: logins still get tokens, signed with a key
        // of this process (they end with it, and other nodes refuse them).
        // That is a fault only where there are other nodes.
        if config.broker.redis.enabled() {
            tracing::warn!(
                "auth.jwt_secret is not set: login tokens are signed with a key of this \
                 node, which the other nodes refuse; give every node the same secret"
            );
        } else {
            tracing::info!(
                "login tokens are signed with a random key and end at restart \
                 (set auth.jwt_secret to keep them)"
            );
        }
        auth_config.jwt_secret = format!("{}{}", uuid::Uuid::new_v4(), uuid::Uuid::new_v4());
    }
    let auth = Arc::new(crate::auth::Authenticator::new(&auth_config));
    let online = crate::accounts::Online::default();
    if config.broker.redis.enabled() {
        crate::accounts::lease::start(
            config.broker.redis.clone(),
            config.presence.lease,
            online.clone(),
            broker.clone(),
            config.limits.max_name_length,
        );
    }
    let accounts = crate::accounts::Accounts::new(
        store.clone(),
        auth.clone(),
        &config.auth,
        metrics.auth.clone(),
        online,
    );
    // Without a store there are no files (their metadata lives there): the
    // configured storage is not touched, and uploads are refused first.
    let objects: Arc<dyn object_store::ObjectStore> = match &store {
        Some(_) => crate::files::object_store(&config.files).map_err(StartError::Files)?,
        None => Arc::new(object_store::memory::InMemory::new()),
    };
    let files = crate::files::Files::new(
        objects,
        store.clone(),
        config.files.clone(),
        metrics.files.clone(),
    );
    let peers = crate::peers::Peers::new(
        config.server.max_connections_per_ip,
        config
            .server
            .trusted_proxies
            .iter()
            .map(|p| crate::peers::Cidr::parse(p).expect("validated by Config::validate"))
            .collect(),
    );
    let node = Arc::new(Node {
        files,
        config,
        registry,
        broker,
        metrics,
        shutdown: Shutdown::new(),
        auth,
        accounts,
        handshakes: AtomicUsize::new(0),
        peers,
        store,
    });
    let failure = Arc::new(Failure::default());
    let mut threads = Vec::with_capacity(shards);
    // Each shard reports once its runtime and listener are up, so that
    // "listening" below means every shard accepts, and a shard that cannot
    // start (no file descriptor left for its runtime) fails the start.
    let (ready_tx, ready_rx) = std::sync::mpsc::sync_channel(shards);
    for (index, (listener, inbox)) in listeners.into_iter().zip(receivers).enumerate() {
        let start = ShardStart {
            index,
            node: node.clone(),
            listener,
            inbox,
            metrics_listener: if index == 0 {
                metrics_listener.take()
            } else {
                None
            },
            tls: tls.clone(),
        };
        let failed = failure.clone();
        let ready = ready_tx.clone();
        let thread = std::thread::Builder::new()
            .name(format!("chatd-shard-{index}"))
            .stack_size(SHARD_STACK)
            .spawn(move || supervised(index, failed, || run_shard(start, ready)))
            .map_err(StartError::Thread);
        match thread {
            Ok(thread) => threads.push(thread),
            Err(e) => {
                stop_started(&node, threads);
                return Err(e);
            }
        }
    }
    drop(ready_tx);
    for _ in 0..shards {
        let why = match ready_rx.recv() {
            Ok((_, Ok(()))) => continue,
            Ok((index, Err(e))) => Some(format!("shard {index}: {e}")),
            // Every sender gone before all reported: a shard panicked (its
            // reason is recorded once its thread has ended).
            Err(_) => None,
        };
        stop_started(&node, threads);
        let why = why.or_else(|| failure.reason.lock().clone());
        return Err(StartError::Shard(why.unwrap_or_default()));
    }
    tracing::info!(%addr, shards, metrics = ?metrics_addr, "chatd listening");
    Ok(Server {
        addr,
        metrics_addr,
        node,
        threads,
        failure,
    })
}

impl Server {
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics_addr
    }

    /// The node's shared state (for the integration tests' checks of
    /// counters and bookkeeping; not an API).
    #[doc(hidden)]
    pub fn node(&self) -> &Arc<Node> {
        &self.node
    }

    /// Resolves if a shard thread panics (never, normally).
    pub async fn failed(&self) -> String {
        self.failure.wait().await
    }

    /// Graceful shutdown: stop accepting and reading, deliver everything
    /// already published, Close 1001 to every client, wait at most the grace
    /// period, stop the shards.
    pub async fn shutdown(self) -> ShutdownReport {
        let started = Instant::now();
        let grace = self.node.config.shutdown.grace_period;
        let shutdown = &self.node.shutdown;
        shutdown.set_phase(Phase::Stopping);
        let readers_done = shutdown.readers_stopped(grace).await;
        if !readers_done {
            tracing::warn!(
                readers = shutdown.readers(),
                "readers still running at the end of the grace period"
            );
        }
        // Messages accepted by the store are written, published and acked.
        if let Some(store) = &self.node.store {
            let left = grace.saturating_sub(started.elapsed());
            if tokio::time::timeout(left, store.flush()).await.is_err() {
                tracing::warn!("store did not flush within the grace period");
            }
        }
        // Messages already accepted may still be on their way through the bus.
        let left = grace.saturating_sub(started.elapsed());
        if tokio::time::timeout(left, self.node.broker.flush())
            .await
            .is_err()
        {
            tracing::warn!("broker did not flush within the grace period");
        }
        self.node.registry.drain_all();
        let drained = shutdown
            .drained(grace.saturating_sub(started.elapsed()))
            .await;
        shutdown.set_phase(Phase::Exit);
        let threads = self.threads;
        let _ =
            tokio::task::spawn_blocking(move || threads.into_iter().for_each(|t| drop(t.join())))
                .await;
        let report = ShutdownReport {
            drained: drained && readers_done,
            elapsed: started.elapsed(),
        };
        tracing::info!(
            drained = report.drained,
            elapsed_ms = report.elapsed.as_millis() as u64,
            "chatd stopped"
        );
        report
    }
}

/// Ends the shards already started when another cannot start, so that a
/// failed `start` leaves no thread or listener behind.
fn stop_started(node: &Node, threads: Vec<JoinHandle<()>>) {
    node.shutdown.set_phase(Phase::Exit);
    threads.into_iter().for_each(|t| drop(t.join()));
}

fn bind(addr: SocketAddr, backlog: u32) -> Result<std::net::TcpListener, StartError> {
    let err = |source| StartError::Bind { addr, source };
    let socket =
        Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP)).map_err(err)?;
    socket.set_reuse_address(true).map_err(err)?;
    socket.set_reuse_port(true).map_err(err)?;
    socket.set_nonblocking(true).map_err(err)?;
    // Accepted sockets inherit it on Linux: no setsockopt per connection.
    socket.set_nodelay(true).map_err(err)?;
    socket.bind(&addr.into()).map_err(err)?;
    socket
        .listen(backlog.min(i32::MAX as u32) as i32)
        .map_err(err)?;
    Ok(socket.into())
}

/// `SO_REUSEPORT` would let a second chatd (same user) bind the same port
/// and silently take half the connections; a plain bind first refuses a port
/// that anything already listens on.
fn ensure_port_free(addr: SocketAddr) -> Result<(), StartError> {
    let err = |source| StartError::Bind { addr, source };
    let probe =
        Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP)).map_err(err)?;
    probe.set_reuse_address(true).map_err(err)?;
    probe.bind(&addr.into()).map_err(err)?;
    Ok(())
}

/// A listener of its own (no `SO_REUSEPORT`: one port, one owner).
fn bind_plain(addr: SocketAddr) -> Result<std::net::TcpListener, StartError> {
    let listener =
        std::net::TcpListener::bind(addr).map_err(|source| StartError::Bind { addr, source })?;
    listener
        .set_nonblocking(true)
        .map_err(|source| StartError::Bind { addr, source })?;
    Ok(listener)
}

/// Where a shard reports that it is up (or why it cannot be).
type Ready = std::sync::mpsc::SyncSender<(usize, std::io::Result<()>)>;

/// Everything a shard thread starts with.
struct ShardStart {
    index: usize,
    node: Arc<Node>,
    listener: std::net::TcpListener,
    inbox: UnboundedReceiver<ShardMsg>,
    /// Shard 0 also serves metrics.
    metrics_listener: Option<std::net::TcpListener>,
    tls: Option<TlsAcceptor>,
}

fn run_shard(start: ShardStart, ready: Ready) {
    let index = start.index;
    // I/O and timers only: signals are the main thread's, and a signal
    // driver here would hold a descriptor per shard for nothing.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .enable_time()
        .build();
    let rt = match rt {
        Ok(rt) => rt,
        Err(e) => return drop(ready.send((index, Err(e)))),
    };
    let local = tokio::task::LocalSet::new();
    local.block_on(&rt, async move {
        let ShardStart {
            index,
            node,
            listener,
            inbox,
            metrics_listener,
            tls,
        } = start;
        let listeners = TcpListener::from_std(listener).and_then(|listener| {
            let metrics = metrics_listener.map(TcpListener::from_std).transpose()?;
            Ok((listener, metrics))
        });
        let (listener, metrics_listener) = match listeners {
            Ok(listeners) => listeners,
            Err(e) => return drop(ready.send((index, Err(e)))),
        };
        let shard = Rc::new(Shard::new(index, node.clone()));
        let mut phase = node.shutdown.subscribe();
        tokio::task::spawn_local(crate::shard::dispatch(shard.clone(), inbox));
        node.broker.start_shard(index);
        tokio::task::spawn_local(crate::shard::heartbeat(shard.clone()));
        if shard.presence.enabled() {
            tokio::task::spawn_local(crate::chat::presence::summaries(shard.clone()));
        }
        if let Some(l) = metrics_listener {
            tokio::task::spawn_local(crate::http::metrics::serve(l, node.clone()));
        }
        let _ = ready.send((index, Ok(())));
        // Gone once it has reported: `start` sees the channel close if a
        // later shard panics before reporting, instead of waiting for good.
        drop(ready);
        accept(&shard, listener, tls, &mut phase).await;
        shard.halt_all();
        let _ = phase.wait_for(|p| *p == Phase::Exit).await;
    });
    // Dropping the LocalSet and runtime cancels whatever is left.
}

/// Accepts until shutdown begins; the listener is dropped on return.
async fn accept(
    shard: &Rc<Shard>,
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    phase: &mut watch::Receiver<Phase>,
) {
    let mut backoff = AcceptBackoff::default();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    backoff.succeeded();
                    // Refused at once (the socket is closed) when its address
                    // has `server.max_connections_per_ip` not yet upgraded,
                    // or too many connections are still in their handshake.
                    let ip = peer.ip();
                    let Some(peer) = shard.node.peers.admit(ip) else {
                        shard.node.metrics.rejected(crate::metrics::RejectReason::PerAddressLimit);
                        continue;
                    };
                    let Some(handshake) = crate::http::HandshakeGuard::new(&shard.node) else {
                        continue;
                    };
                    let guard = crate::http::Admitted::new(handshake, peer, ip);
                    // (Linux: inherited from the listener, see `bind`.)
                    #[cfg(not(target_os = "linux"))]
                    let _ = stream.set_nodelay(true);
                    let shard = shard.clone();
                    match &tls {
                        None => {
                            tokio::task::spawn_local(crate::http::head::serve_plain(shard, stream, guard));
                        }
                        Some(tls) => {
                            let handshake = tls.accept(stream);
                            let limit = shard.node.config.server.tls.handshake_timeout;
                            tokio::task::spawn_local(async move {
                                match tokio::time::timeout(limit, handshake).await {
                                    Ok(Ok(stream)) => {
                                        let first = Instant::now() + shard.node.config.server.handshake_timeout;
                                        crate::http::serve_connection(shard, stream, first, guard).await
                                    }
                                    Ok(Err(e)) => tracing::debug!(error = %e, "TLS handshake failed"),
                                    Err(_) => tracing::debug!("TLS handshake timed out"),
                                }
                            });
                        }
                    }
                }
                Err(e) => {
                    // Typically EMFILE: back off instead of spinning.
                    shard.node.metrics.accept_errors.inc();
                    let pause = backoff.failed(shard.index, &e);
                    tokio::time::sleep(pause).await;
                }
            },
            _ = phase.wait_for(|p| *p != Phase::Running) => return,
        }
    }
}

/// Backoff of a failing accept loop (EMFILE, ENFILE): 10 ms doubling to 1 s,
/// and one log line per `LOG_EVERY` with the count of failures since the last
/// (a fd exhaustion logged thousands of lines a minute before).
#[derive(Default)]
struct AcceptBackoff {
    pause: Duration,
    failures: u64,
    last_log: Option<Instant>,
}

impl AcceptBackoff {
    const FIRST: Duration = Duration::from_millis(10);
    const MAX: Duration = Duration::from_secs(1);
    const LOG_EVERY: Duration = Duration::from_secs(10);

    fn succeeded(&mut self) {
        self.pause = Duration::ZERO;
    }

    /// Counts a failure; how long to wait before accepting again.
    fn failed(&mut self, shard: usize, error: &std::io::Error) -> Duration {
        self.failures += 1;
        let now = Instant::now();
        if self
            .last_log
            .is_none_or(|t| now.duration_since(t) >= Self::LOG_EVERY)
        {
            tracing::warn!(shard, %error, failures = self.failures, "accept failed; backing off");
            self.last_log = Some(now);
            self.failures = 0;
        }
        self.pause = (self.pause * 2).clamp(Self::FIRST, Self::MAX);
        self.pause
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_shard_panic_is_reported_not_swallowed() {
        let failure = Arc::new(Failure::default());
        let f = failure.clone();
        let thread = std::thread::spawn(move || supervised(3, f, || panic!("boom")));
        let reason = tokio::time::timeout(Duration::from_secs(5), failure.wait())
            .await
            .expect("reported");
        assert_eq!(reason, "shard 3 panicked: boom");
        thread.join().unwrap();
    }

    #[test]
    fn accepted_sockets_have_nodelay_from_the_listener() {
        let listener = bind("127.0.0.1:0".parse().unwrap(), 16).unwrap();
        let addr = listener.local_addr().unwrap();
        let _client = std::net::TcpStream::connect(addr).unwrap();
        listener.set_nonblocking(false).unwrap();
        let (accepted, _) = listener.accept().unwrap();
        // The accept loop sets it itself where it is not inherited.
        assert_eq!(accepted.nodelay().unwrap(), cfg!(target_os = "linux"));
    }
}
