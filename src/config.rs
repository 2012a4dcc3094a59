//! Configuration: defaults, then a YAML file, then `CHATD_*` environment
//! variables, then command-line `--set` overrides (later wins).
//!
//! Every knob is one field here with its default beside it. Unknown keys are
//! refused, so a typo is an error rather than a silently ignored setting.

use serde::Deserialize;
use serde_norway::{Mapping, Value};
use std::path::{Path, PathBuf};
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("invalid config: {0}")]
    Parse(String),
    #[error("invalid config: {field}: {reason}")]
    Invalid { field: &'static str, reason: String },
    #[error("invalid override {0:?}: expected key.path=value")]
    Override(String),
}

#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub server: ServerConfig,
    pub limits: LimitsConfig,
    pub heartbeat: HeartbeatConfig,
    pub relay: RelayConfig,
    pub shutdown: ShutdownConfig,
    pub metrics: MetricsConfig,
    pub log: LogConfig,
    pub broker: BrokerConfig,
    pub auth: AuthConfig,
    pub store: StoreConfig,
    pub api: ApiConfig,
    pub presence: PresenceConfig,
    pub demo: DemoConfig,
    pub fastchat: FastChatConfig,
    pub files: FilesConfig,
    /// `CHATD_*` environment variables that were not read as config (no
    /// `__` in the name, e.g. `CHATD_BIN` of a script): logged as a warning
    /// at start, never an error.
    #[serde(skip)]
    pub ignored_env: Vec<String>,
}

#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthConfig {
    /// Require a valid token on every WebSocket upgrade; also set by
    /// `AUTH_ENABLED`. Default false.
    pub enabled: bool,
    /// The HS256 key tokens are signed with (at least 32 bytes when
    /// enabled). Default empty.
    pub jwt_secret: String,
    /// Clock skew allowed on `exp`. Default `30s`.
    #[serde(with = "humantime_serde")]
    pub leeway: Duration,
    /// How long a token issued at login is valid. Default `24h`.
    #[serde(with = "humantime_serde")]
    pub token_ttl: Duration,
    pub argon2: Argon2Config,
    pub throttle: ThrottleConfig,
}

/// Bounds on guessing passwords and making accounts, per minute, as token
/// buckets (a burst of that many, refilled evenly); 0: no bound. Beyond
/// one: `429 RATE_LIMITED` with `Retry-After` (FastChat: `RATE_LIMITED`),
/// before any password is hashed.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ThrottleConfig {
    /// Failed logins per account. Default 10.
    pub login_failures_per_account: u32,
    /// Failed logins per source address. Default 30.
    pub login_failures_per_address: u32,
    /// New accounts per source address (REST registration, the demo's
    /// sign-up and sign-in, FastChat's first HELLO). Default 30.
    pub accounts_per_address: u32,
}

impl Default for ThrottleConfig {
    fn default() -> Self {
        ThrottleConfig {
            login_failures_per_account: 10,
            login_failures_per_address: 30,
            accounts_per_address: 30,
        }
    }
}

/// Password hashing (Argon2id). Defaults: OWASP's minimum (19 MiB, 2
/// passes, 1 lane), about 20-40 ms per hash on one core.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Argon2Config {
    /// Memory per hash in KiB. Default 19456.
    pub memory_kib: u32,
    /// Passes over the memory. Default 2.
    pub iterations: u32,
    /// Lanes. Default 1.
    pub parallelism: u32,
    /// Most hashes running at once (each holds `memory_kib`); a login
    /// beyond it waits. Default 4.
    pub max_concurrent: usize,
    /// Most hashes waiting for one of those; one more is answered `503` at
    /// once instead of a wait that grows with a flood. Default 64.
    pub max_waiting: usize,
}

impl Default for Argon2Config {
    fn default() -> Self {
        Argon2Config {
            memory_kib: 19_456,
            iterations: 2,
            parallelism: 1,
            max_concurrent: 4,
            max_waiting: 64,
        }
    }
}

impl Default for AuthConfig {
    fn default() -> Self {
        AuthConfig {
            enabled: false,
            jwt_secret: String::new(),
            leeway: Duration::from_secs(30),
            token_ttl: Duration::from_secs(24 * 3600),
            argon2: Argon2Config::default(),
            throttle: ThrottleConfig::default(),
        }
    }
}

/// The server-side publish API (`POST /api/chat-api/server/publish`).
#[derive(Clone, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct ApiConfig {
    /// Secrets an application backend presents as `Authorization: Bearer`;
    /// empty (the default) turns the API off.
    pub keys: Vec<String>,
}

/// The keys never appear in logs.
impl std::fmt::Debug for ApiConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiConfig")
            .field("keys", &format_args!("<{} redacted>", self.keys.len()))
            .finish()
    }
}

/// Per-user rate limits of the native protocol, across all of a user's
/// connections on a node (0: no limit). Over one: an `error`
/// `RATE_LIMITED` with `retry_after_ms`.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct RateConfig {
    /// Chats per minute per user. Default 0 (off).
    pub messages_per_minute: u32,
    /// Typing indicators per minute per user. Default 0 (off).
    pub typing_per_minute: u32,
}

/// A WebSocket wire protocol (dialect) chatd speaks. All of them are
/// translations of the same chat service: one message is framed once per
/// dialect present in a room.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
pub enum Wire {
    /// The native JSON protocol.
    #[serde(rename = "chat-api")]
    ChatApi,
    /// FastChat's protocol.
    #[serde(rename = "fastchat")]
    FastChat,
    /// redis-chat-demo's protocol.
    #[serde(rename = "redis-chat-demo")]
    Demo,
    /// redis-chat-demo's, to a client that joined the public channel as
    /// `"0"`: its public messages say `recipientUUID: "0"` (not a setting).
    #[serde(skip)]
    DemoPublicZero,
    /// ...and as the number `0`.
    #[serde(skip)]
    DemoPublicZeroNumber,
}

impl Wire {
    /// Every dialect and variant (the per-dialect tables' size).
    pub const ALL: [Wire; 5] = [
        Wire::ChatApi,
        Wire::FastChat,
        Wire::Demo,
        Wire::DemoPublicZero,
        Wire::DemoPublicZeroNumber,
    ];

    /// Whether it is the redis-chat-demo dialect (any variant).
    pub fn is_demo(self) -> bool {
        matches!(
            self,
            Wire::Demo | Wire::DemoPublicZero | Wire::DemoPublicZeroNumber
        )
    }

    /// Its name in config and in `Sec-WebSocket-Protocol`.
    pub fn name(self) -> &'static str {
        match self {
            Wire::ChatApi => "chat-api",
            Wire::FastChat => "fastchat",
            Wire::Demo | Wire::DemoPublicZero | Wire::DemoPublicZeroNumber => "redis-chat-demo",
        }
    }

    pub fn from_name(name: &str) -> Option<Wire> {
        Wire::ALL.into_iter().find(|w| w.name() == name)
    }

    /// A small index (per-dialect tables).
    pub fn index(self) -> usize {
        self as usize
    }
}

/// The FastChat dialect.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FastChatConfig {
    /// `Origin`s allowed to open a FastChat connection (403 otherwise);
    /// empty (the default) allows all, with a warning at start.
    pub allowed_origins: Vec<String>,
    pub rate_limit: FastChatRates,
    /// A FastChat connection with no inbound frame for this long is closed
    /// (4000), instead of `heartbeat.idle_timeout`: its clients `PING`
    /// every 15 s and expect an answer within 5. Default `20s`.
    #[serde(with = "humantime_serde")]
    pub idle_timeout: Duration,
}

impl Default for FastChatConfig {
    fn default() -> Self {
        FastChatConfig {
            allowed_origins: Vec::new(),
            rate_limit: FastChatRates::default(),
            idle_timeout: Duration::from_secs(20),
        }
    }
}

/// FastChat's per-user limits (the spec's numbers), across the user's
/// FastChat connections on a node.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FastChatRates {
    /// Default 60.
    pub messages_per_minute: u32,
    /// Default 10.
    pub typing_per_minute: u32,
}

impl Default for FastChatRates {
    fn default() -> Self {
        FastChatRates {
            messages_per_minute: 60,
            typing_per_minute: 10,
        }
    }
}

/// The redis-chat-demo dialect.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DemoConfig {
    /// The room the demo's public channel (`recipientUUID` `""` or `0`) is:
    /// native clients in it see the demo's public messages and the other
    /// way round. Default `general`.
    pub public_room: String,
}

impl Default for DemoConfig {
    fn default() -> Self {
        DemoConfig {
            public_room: "general".into(),
        }
    }
}

/// Where uploaded files' bytes go (their metadata is in the store, so files
/// need `store.backend` other than `none`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FilesBackend {
    /// A directory on this node (`files.path`).
    Local,
    /// An S3-compatible service (`files.s3.*`): for several nodes.
    S3,
}

/// File uploads and attachments.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FilesConfig {
    /// `local` or `s3`. Default `local`.
    pub backend: FilesBackend,
    /// The directory of the `local` backend (created if missing). Default
    /// `data/files`.
    pub path: PathBuf,
    /// Largest upload in bytes; a larger one gets 413. Default 26214400
    /// (25 MiB).
    pub max_size: u64,
    /// Most attachments on one chat. Default 10.
    pub max_attachments: usize,
    /// Images with more pixels than this are stored but not decoded (no
    /// dimensions, no thumbnail): a decompression bomb stays a small file.
    /// Default 40000000.
    pub max_image_pixels: u64,
    /// Images whose decoded pixels would take more than this many bytes
    /// (width × height × bytes per pixel: 8 for 16-bit RGBA) are stored with
    /// their dimensions but not decoded (no thumbnail), so a small file
    /// cannot cost hundreds of MiB to decode. Default 134217728 (128 MiB: a
    /// 40-megapixel RGB photo fits).
    pub max_image_decode_bytes: u64,
    /// Images larger than this many bytes are stored but not decoded: an
    /// image is held in memory whole while it is uploaded (every other file
    /// streams through in parts). Default 26214400 (25 MiB).
    pub max_image_size: u64,
    /// Longest side of an image's thumbnail, in pixels. Default 320.
    pub thumbnail_size: u32,
    /// Images decoded at once (on tokio's blocking pool, never on a shard
    /// thread; each holds its decoded pixels). Default 2.
    pub thumbnail_concurrency: usize,
    pub s3: S3Config,
}

impl Default for FilesConfig {
    fn default() -> Self {
        FilesConfig {
            backend: FilesBackend::Local,
            path: PathBuf::from("data/files"),
            max_size: 25 * 1024 * 1024,
            max_attachments: 10,
            max_image_pixels: 40_000_000,
            max_image_decode_bytes: 128 << 20,
            max_image_size: 25 * 1024 * 1024,
            thumbnail_size: 320,
            thumbnail_concurrency: 2,
            s3: S3Config::default(),
        }
    }
}

/// An S3-compatible object store (AWS S3, MinIO, Ceph, ...).
#[derive(Clone, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct S3Config {
    /// The service's URL, e.g. `http://127.0.0.1:9000`; empty means AWS's
    /// own endpoint for `region`. `http://` URLs are allowed. Default empty.
    pub endpoint: String,
    /// Required with `files.backend: s3`. Default empty.
    pub bucket: String,
    /// Default empty (`us-east-1`).
    pub region: String,
    /// Empty: taken from the environment (`AWS_ACCESS_KEY_ID`, ...).
    /// Default empty.
    pub access_key_id: String,
    /// Default empty.
    pub secret_access_key: String,
}

impl std::fmt::Debug for S3Config {
    /// Without the secret.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("S3Config")
            .field("endpoint", &self.endpoint)
            .field("bucket", &self.bucket)
            .field("region", &self.region)
            .field("access_key_id", &self.access_key_id)
            .finish_non_exhaustive()
    }
}

/// Users' online state.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PresenceConfig {
    /// With Redis: a node that dies has its users offline (and presence
    /// `offline` sent to their rooms) within this; nodes renew and read
    /// every quarter of it. Default `15s`.
    #[serde(with = "humantime_serde")]
    pub lease: Duration,
}

impl Default for PresenceConfig {
    fn default() -> Self {
        PresenceConfig {
            lease: Duration::from_secs(15),
        }
    }
}

/// The secret never appears in logs or error messages.
impl std::fmt::Debug for AuthConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuthConfig")
            .field("enabled", &self.enabled)
            .field("jwt_secret", &"<redacted>")
            .field("leeway", &self.leeway)
            .field("token_ttl", &self.token_ttl)
            .field("argon2", &self.argon2)
            .finish()
    }
}

/// Which store keeps the history.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StoreBackend {
    /// No history: messages are delivered and forgotten.
    None,
    /// One SQLite file on this node.
    Sqlite,
    /// A PostgreSQL server (`store.postgres.url` or `DATABASE_URL`).
    Postgres,
    /// A MySQL or MariaDB server (`store.mysql.url`, or a `mysql://`
    /// `DATABASE_URL`).
    Mysql,
    /// A Redis server (`store.redis.url`, default the broker's): durability
    /// is Redis's own (its AOF `appendfsync` decides what an ack means).
    Redis,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StoreConfig {
    /// `sqlite`, `postgres`, `mysql`, `redis` or `none` (no history).
    /// Default `sqlite`: one embedded file, no other service needed.
    pub backend: StoreBackend,
    pub sqlite: SqliteConfig,
    pub postgres: PostgresConfig,
    pub mysql: MysqlConfig,
    pub redis: StoreRedisConfig,
    /// Messages waiting for the store before further chats get
    /// `MESSAGE_FAILED`. Default 10000.
    pub max_pending: usize,
    /// Most messages in one transaction (group commit). Default 1024.
    pub max_batch: usize,
    /// Most messages a join with `since_seq` replays; a longer gap gets
    /// `recovered: false` and the client pages the history. Default 1000.
    pub max_recover: u32,
    /// Several nodes on one PostgreSQL and Redis: how long a gap in a room's
    /// `seq` (another node's message still on its way) may hold the later
    /// ones back before the missing ones are read from the store. Default
    /// `100ms`.
    #[serde(with = "humantime_serde")]
    pub reorder_timeout: Duration,
    pub retention: RetentionConfig,
}

/// What the store keeps; enforced in the background. Default: everything.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RetentionConfig {
    /// Delete messages older than this; `0s` keeps them. Default `0s`.
    #[serde(with = "humantime_serde")]
    pub max_age: Duration,
    /// Keep at most this many (the newest) per room; 0 keeps all. Default 0.
    pub max_messages: u64,
    /// How often the limits are enforced. Default `1m`.
    #[serde(with = "humantime_serde")]
    pub interval: Duration,
}

impl Default for RetentionConfig {
    fn default() -> Self {
        RetentionConfig {
            max_age: Duration::ZERO,
            max_messages: 0,
            interval: Duration::from_secs(60),
        }
    }
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            backend: StoreBackend::Sqlite,
            sqlite: SqliteConfig::default(),
            postgres: PostgresConfig::default(),
            mysql: MysqlConfig::default(),
            redis: StoreRedisConfig::default(),
            max_pending: 10_000,
            max_batch: 1024,
            max_recover: 1000,
            reorder_timeout: Duration::from_millis(100),
            retention: RetentionConfig::default(),
        }
    }
}

#[derive(Clone, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct PostgresConfig {
    /// `postgres://user:password@host:5432/db`; also set by `DATABASE_URL`
    /// (which also selects `store.backend: postgres`). Default empty.
    pub url: String,
}

#[derive(Clone, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct MysqlConfig {
    /// `mysql://user:password@host:3306/db` (MySQL 8 or MariaDB 10.5+);
    /// also set by a `mysql://` `DATABASE_URL` (which also selects
    /// `store.backend: mysql`). Default empty.
    pub url: String,
}

/// The URL may hold a password: never printed.
impl std::fmt::Debug for MysqlConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let set = if self.url.is_empty() { "" } else { "<set>" };
        f.debug_struct("MysqlConfig").field("url", &set).finish()
    }
}

/// The Redis store (`store.backend: redis`).
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StoreRedisConfig {
    /// `redis://host:6379/0`; empty: the broker's (`broker.redis.url`).
    /// Default empty.
    pub url: String,
    /// Prefix of every key the store writes. Default `chatd:store:`.
    pub prefix: String,
    /// PEM CA certificate(s) a `rediss://` server's certificate is checked
    /// against. Default empty: the broker's (`broker.redis.ca_file`).
    pub ca_file: PathBuf,
}

impl Default for StoreRedisConfig {
    fn default() -> Self {
        StoreRedisConfig {
            url: String::new(),
            prefix: "chatd:store:".into(),
            ca_file: PathBuf::new(),
        }
    }
}

/// The URL may hold a password: never printed.
impl std::fmt::Debug for StoreRedisConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let set = if self.url.is_empty() { "" } else { "<set>" };
        f.debug_struct("StoreRedisConfig")
            .field("url", &set)
            .field("prefix", &self.prefix)
            .finish()
    }
}

impl Config {
    /// The Redis URL the Redis store uses (`store.redis.url`, else the
    /// broker's).
    pub fn store_redis_url(&self) -> &str {
        match self.store.redis.url.as_str() {
            "" => &self.broker.redis.url,
            url => url,
        }
    }

    /// The CA file the Redis store trusts (`store.redis.ca_file`, else the
    /// broker's).
    pub fn store_redis_ca_file(&self) -> &std::path::Path {
        match self.store.redis.ca_file.as_os_str().is_empty() {
            true => &self.broker.redis.ca_file,
            false => &self.store.redis.ca_file,
        }
    }
}

/// The URL may hold a password: never printed.
impl std::fmt::Debug for PostgresConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let set = if self.url.is_empty() { "" } else { "<set>" };
        f.debug_struct("PostgresConfig").field("url", &set).finish()
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SqliteConfig {
    /// The database file, created (with its directory) on first start.
    /// Default `data/chatd.db`.
    pub path: PathBuf,
}

impl Default for SqliteConfig {
    fn default() -> Self {
        SqliteConfig {
            path: "data/chatd.db".into(),
        }
    }
}

#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct BrokerConfig {
    /// Without `redis.url` or `redis.nodes`, the in-process broker (one node).
    pub redis: RedisConfig,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RedisConfig {
    /// `redis://host:port/db`; also set by `REDIS_URL`. Empty (default): no
    /// Redis, the in-process broker.
    pub url: String,
    /// Use a Redis Cluster with sharded pub/sub (`SPUBLISH`/`SSUBSCRIBE`,
    /// Redis 7). Default false.
    pub cluster: bool,
    /// Cluster seed URLs (besides `url`); a non-empty list implies `cluster`.
    pub nodes: Vec<String>,
    /// Prefix of every channel name (`<prefix>room:<name>`, `<prefix>global`,
    /// `<prefix>relay`, a node's `<prefix>node:<id>`, and `<prefix>nodes`,
    /// where nodes announce a reconnect). Default `chatd:`.
    pub channel_prefix: String,
    /// Most messages in one pipelined write. Default 512.
    pub max_batch: usize,
    /// Messages a shard may have waiting for Redis before further publishes
    /// fail with `MESSAGE_FAILED`. Default 10000.
    pub max_pending: usize,
    /// How often the bus is checked (PING); also how fast an outage and a
    /// recovery are noticed. Default `500ms`.
    #[serde(with = "humantime_serde")]
    pub health_interval: Duration,
    /// Connect and command timeout. Default `2s`.
    #[serde(with = "humantime_serde")]
    pub connect_timeout: Duration,
    /// How long a node keeps what it published again after an outage
    /// (chats it stored and acked while the bus was down), to publish it
    /// once more when another node announces its own, later reconnect:
    /// that node was not subscribed yet to hear the first time. Cover the
    /// longest reconnect lag between your nodes. Default `60s`.
    #[serde(with = "humantime_serde")]
    pub republish_window: Duration,
    /// PEM CA certificate(s) a `rediss://` server's certificate is checked
    /// against (a managed Redis's own CA). Default empty: the system's
    /// roots.
    pub ca_file: PathBuf,
}

impl Default for RedisConfig {
    fn default() -> Self {
        RedisConfig {
            url: String::new(),
            cluster: false,
            nodes: Vec::new(),
            channel_prefix: "chatd:".into(),
            max_batch: 512,
            max_pending: 10_000,
            health_interval: Duration::from_millis(500),
            connect_timeout: Duration::from_secs(2),
            republish_window: Duration::from_secs(60),
            ca_file: PathBuf::new(),
        }
    }
}

impl RedisConfig {
    /// Whether Redis is configured at all.
    pub fn enabled(&self) -> bool {
        !self.url.is_empty() || !self.nodes.is_empty()
    }

    pub fn is_cluster(&self) -> bool {
        self.cluster || !self.nodes.is_empty()
    }

    /// Cluster seeds: `url` (if set) and `nodes`.
    pub fn seeds(&self) -> Vec<String> {
        std::iter::once(self.url.clone())
            .filter(|u| !u.is_empty())
            .chain(self.nodes.iter().cloned())
            .collect()
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// Address to listen on. Default `0.0.0.0`.
    pub host: String,
    /// Port to listen on; 0 picks a free one. Default 8080.
    pub port: u16,
    /// Shards (one thread and one `SO_REUSEPORT` listener each); 0 means one
    /// per available core. Default 0.
    pub shards: usize,
    /// Listen backlog per shard. Default 4096.
    pub backlog: u32,
    /// Time from accept to a complete first request head (and, with TLS,
    /// from the end of the TLS handshake); a connection still without one
    /// is dropped. Default `10s`.
    #[serde(with = "humantime_serde")]
    pub handshake_timeout: Duration,
    /// Serve the web client at `/`. Default true.
    pub web_client: bool,
    /// A keep-alive HTTP connection with no new request for this long is
    /// dropped. Default `5s`.
    #[serde(with = "humantime_serde")]
    pub http_idle_timeout: Duration,
    /// Connections accepted but not yet upgraded (or done), node-wide; one
    /// more is dropped at accept. Default 1024.
    pub max_handshakes: usize,
    /// WebSocket connections the node serves at once; an upgrade beyond it
    /// is answered `503` before the upgrade. 0: no limit. Default 0.
    pub max_connections: usize,
    /// What a bare `/ws` speaks when the client names no
    /// `Sec-WebSocket-Protocol`: `chat-api` (default), `fastchat` or
    /// `redis-chat-demo`, so that an unchanged client of any works.
    pub default_protocol: Wire,
    /// After answering a request before its body arrived (a `413` for a
    /// too-large upload), the rest of the body is still read and dropped
    /// for at most this long, so a client that sends its whole body before
    /// reading gets the answer instead of a connection reset. Default `10s`.
    #[serde(with = "humantime_serde")]
    pub linger_time: Duration,
    /// ...and at most this many bytes of it. Default 64 MiB.
    pub linger_bytes: u64,
    /// Connections not yet upgraded (in their handshake, or HTTP requests)
    /// from one source address; one more is closed at accept. Connections
    /// from `trusted_proxies` are not counted (bound them at the proxy).
    /// 0: no bound. Default 256 (many clients may share one address behind
    /// a NAT).
    pub max_connections_per_ip: usize,
    /// Addresses or ranges (`10.0.0.0/8`) of reverse proxies: their
    /// connections are not bounded per address, and a request from one is
    /// taken to be from the last address its `X-Forwarded-For` names
    /// (from anyone else, that header is ignored). Default `127.0.0.1` and
    /// `::1`: a proxy on the same host (and local load generators).
    pub trusted_proxies: Vec<String>,
    /// An HTTP request in progress (its body arriving, its response being
    /// sent) must move at least `min_transfer_rate` bytes a second over each
    /// window this long, or its connection is closed: a body that trickles
    /// in, or a response nobody reads, holds no connection for good.
    /// Default `10s`.
    #[serde(with = "humantime_serde")]
    pub transfer_timeout: Duration,
    /// Bytes a second (read and written together). Default 1024: a 25 MiB
    /// upload may take up to seven hours.
    pub min_transfer_rate: u64,
    pub tls: TlsConfig,
    pub deflate: DeflateConfig,
}

/// permessage-deflate (RFC 7692): compressed once per message, shared by
/// every recipient that negotiated it.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DeflateConfig {
    /// Accept a client's permessage-deflate offer. Default true.
    pub enabled: bool,
    /// Messages to the client shorter than this many bytes go uncompressed
    /// (deflate saves little on them and costs the client an inflate).
    /// Default 128.
    pub threshold: usize,
}

impl Default for DeflateConfig {
    fn default() -> Self {
        DeflateConfig {
            enabled: true,
            threshold: 128,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TlsConfig {
    /// Serve `wss://` and `https://` (only) on `server.port`. Default false.
    pub enabled: bool,
    /// PEM certificate chain, leaf first. Default `cert.pem`.
    pub cert_file: PathBuf,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1). Default `key.pem`.
    pub key_file: PathBuf,
    /// A TLS handshake not done within this is dropped. Default `10s`.
    #[serde(with = "humantime_serde")]
    pub handshake_timeout: Duration,
}

impl Default for TlsConfig {
    fn default() -> Self {
        TlsConfig {
            enabled: false,
            cert_file: "cert.pem".into(),
            key_file: "key.pem".into(),
            handshake_timeout: Duration::from_secs(10),
        }
    }
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            host: "0.0.0.0".into(),
            port: 8080,
            shards: 0,
            backlog: 4096,
            handshake_timeout: Duration::from_secs(10),
            web_client: true,
            http_idle_timeout: Duration::from_secs(5),
            max_handshakes: 1024,
            max_connections: 0,
            linger_time: Duration::from_secs(10),
            linger_bytes: 64 << 20,
            max_connections_per_ip: 256,
            trusted_proxies: vec!["127.0.0.1".into(), "::1".into()],
            transfer_timeout: Duration::from_secs(10),
            min_transfer_rate: 1024,
            default_protocol: Wire::ChatApi,
            tls: TlsConfig::default(),
            deflate: DeflateConfig::default(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsConfig {
    /// Largest message a native client may send, in bytes (after fragment
    /// reassembly); larger closes with 1009. Default 65536 (NFR-1).
    pub max_message_size: usize,
    /// A connection's send buffer in frames (soft): a queue may go over it
    /// in a burst, but one that stays over it, never drained to the socket,
    /// for `slow_consumer_timeout` is closed as a slow consumer (1008).
    /// Default 256 (NFR-3).
    pub queue_messages: usize,
    /// Bytes a connection's send queue may hold (hard): more closes it as a
    /// slow consumer at once. Far above one burst: the frames are shared with
    /// every other recipient, so this is not memory per client. Default
    /// 8 MiB.
    pub queue_bytes: usize,
    /// How long a send queue may stay over `queue_messages` without its
    /// writer draining it before the client is closed (1008). Default `5s`.
    #[serde(with = "humantime_serde")]
    pub slow_consumer_timeout: Duration,
    /// Messages one connection's reader handles before it lets the shard's
    /// fan-out and writers run (and, if they are behind, waits for them).
    /// Default 32.
    pub read_budget: usize,
    /// Bytes of messages the same, whichever comes first. Default 256 KiB.
    pub read_budget_bytes: usize,
    /// Messages waiting in this node's shard inboxes (published, not yet
    /// fanned out) above which readers stop reading their sockets until the
    /// fan-out catches up (TCP backpressure on senders). Default 4096.
    pub inbox_high_water: usize,
    /// Presence events (online/offline) one shard announces one by one per
    /// room per second; the rest of the second's changes (a join storm) go
    /// out coalesced in one summary event when the second ends. 0 turns
    /// presence off. Default 50.
    pub presence_per_second: u32,
    /// Most clients a presence summary lists (the rest are counted in its
    /// `more`), so a summary of a 10,000-client storm stays small. Default 100.
    pub presence_summary_max: usize,
    pub rate: RateConfig,
    /// Rooms one connection may be in at once. Default 100.
    pub max_rooms_per_connection: usize,
    /// Longest room name or client id. Default 64.
    pub max_name_length: usize,
    /// Deepest nesting of arrays and objects in a client's JSON message
    /// (ignored fields included); deeper is refused with `VALIDATION` and
    /// the connection stays open. Default 32.
    pub max_json_depth: usize,
    /// A write that makes no progress for this long ends the connection.
    /// Default `10s`.
    #[serde(with = "humantime_serde")]
    pub write_timeout: Duration,
    /// After the server sends Close, how long it waits for the client's
    /// reply before dropping the socket. Default `2s`.
    #[serde(with = "humantime_serde")]
    pub close_timeout: Duration,
    /// Least time between two socket writes of one connection: messages that
    /// arrive meanwhile go out together in the next write. Adds at most this
    /// much latency, and only to a client that receives more often than
    /// this; saves a system call per message under load. Default `0ms`
    /// (write at once).
    #[serde(with = "humantime_serde")]
    pub write_coalesce: Duration,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig {
            max_message_size: 64 * 1024,
            queue_messages: 256,
            queue_bytes: 8 << 20,
            slow_consumer_timeout: Duration::from_secs(5),
            read_budget: 32,
            read_budget_bytes: 256 << 10,
            inbox_high_water: 4096,
            presence_per_second: 50,
            presence_summary_max: 100,
            rate: RateConfig::default(),
            max_rooms_per_connection: 100,
            max_name_length: 64,
            max_json_depth: 32,
            write_timeout: Duration::from_secs(10),
            close_timeout: Duration::from_secs(2),
            write_coalesce: Duration::ZERO,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HeartbeatConfig {
    /// How often the server pings each connection. Default `30s`.
    #[serde(with = "humantime_serde")]
    pub ping_interval: Duration,
    /// A connection with no inbound frame for this long is closed (4000).
    /// Default `60s` (NFR-2).
    #[serde(with = "humantime_serde")]
    pub idle_timeout: Duration,
}

impl Default for HeartbeatConfig {
    fn default() -> Self {
        HeartbeatConfig {
            ping_interval: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(60),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RelayConfig {
    /// Serve `GET /relay`. Default true.
    pub enabled: bool,
    /// Largest relayed message in bytes. Default 16 MiB.
    pub max_message_size: usize,
    /// Relay send queue bound in frames. Default 1024.
    pub queue_messages: usize,
    /// Relay send queue bound in bytes. Default 64 MiB.
    pub queue_bytes: usize,
}

impl Default for RelayConfig {
    fn default() -> Self {
        RelayConfig {
            enabled: true,
            max_message_size: 16 << 20,
            queue_messages: 1024,
            queue_bytes: 64 << 20,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ShutdownConfig {
    /// How long shutdown waits for connections to flush and close. Default `10s`.
    #[serde(with = "humantime_serde")]
    pub grace_period: Duration,
}

impl Default for ShutdownConfig {
    fn default() -> Self {
        ShutdownConfig {
            grace_period: Duration::from_secs(10),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsConfig {
    /// Serve Prometheus metrics. Default true.
    pub enabled: bool,
    /// Port of the metrics listener (same host as the server); 0 picks one.
    /// Default 9090.
    pub port: u16,
}

impl Default for MetricsConfig {
    fn default() -> Self {
        MetricsConfig {
            enabled: true,
            port: 9090,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// A tracing filter (`info`, `chatd=debug`, ...); `RUST_LOG` wins when set.
    /// Default `info`.
    pub level: String,
    /// `text` or `json`. Default `text`.
    pub format: LogFormat,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            level: "info".into(),
            format: LogFormat::Text,
        }
    }
}

/// Durations as humantime strings (`30s`, `500ms`, `1m`).
mod humantime_serde {
    use serde::{Deserialize, Deserializer};
    use std::time::Duration;

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let s = String::deserialize(d)?;
        humantime::parse_duration(&s).map_err(|e| serde::de::Error::custom(format!("{s:?}: {e}")))
    }
}

/// An environment variable of the chat-api specification.
struct SpecVar {
    name: &'static str,
    path: &'static [&'static str],
    /// Taken as text as it is (a URL), not read as a YAML scalar.
    text: bool,
}

const SPEC_ENV: [SpecVar; 3] = [
    SpecVar {
        name: "REDIS_URL",
        path: &["broker", "redis", "url"],
        text: true,
    },
    SpecVar {
        name: "AUTH_ENABLED",
        path: &["auth", "enabled"],
        text: false,
    },
    SpecVar {
        name: "DATABASE_URL",
        path: &["store", "postgres", "url"],
        text: true,
    },
];

/// Prefix of environment overrides; `__` separates levels:
/// `CHATD_LIMITS__QUEUE_MESSAGES=512` sets `limits.queue_messages`. Only
/// names with a `__` are config: other `CHATD_*` names (scripts use
/// `CHATD_BIN` and the like) are ignored with a warning.
pub const ENV_PREFIX: &str = "CHATD_";

impl Config {
    /// Loads a config: `file` (must exist when given), else `config.yaml` in
    /// the working directory if present, then `env`, then `overrides`
    /// (`key.path=value`).
    pub fn load(
        file: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
        overrides: &[String],
    ) -> Result<Config, ConfigError> {
        let mut tree = match file {
            Some(path) => read_yaml(path)?,
            None if Path::new("config.yaml").exists() => read_yaml(Path::new("config.yaml"))?,
            None => Value::Mapping(Mapping::new()),
        };
        let mut env: Vec<(String, String)> = env.into_iter().collect();
        let mut ignored_env = Vec::new();
        // The chat-api spec's variables first, so CHATD_* ones win over them.
        env.sort_by_key(|(k, _)| !SPEC_ENV.iter().any(|v| v.name == k));
        for (key, value) in env {
            if let Some(var) = SPEC_ENV.iter().find(|v| v.name == key) {
                let path: Vec<String> = var.path.iter().map(|p| p.to_string()).collect();
                let mut path = path;
                if var.name == "DATABASE_URL" {
                    let (backend, url_path) = if value.starts_with("postgres") {
                        ("postgres", ["store", "postgres", "url"])
                    } else if value.starts_with("mysql://") || value.starts_with("mariadb://") {
                        ("mysql", ["store", "mysql", "url"])
                    } else {
                        continue; // another program's database
                    };
                    let key = ["store".to_string(), "backend".to_string()];
                    set_path(&mut tree, &key, Value::String(backend.into()));
                    path = url_path.iter().map(|p| p.to_string()).collect();
                }
                let value = if var.text {
                    Value::String(value)
                } else {
                    scalar(&value)
                };
                set_path(&mut tree, &path, value);
            } else if let Some(rest) = key.strip_prefix(ENV_PREFIX) {
                if !rest.contains("__") {
                    ignored_env.push(key);
                    continue;
                }
                let path: Vec<String> = rest.split("__").map(|p| p.to_ascii_lowercase()).collect();
                set_path(&mut tree, &path, scalar(&value));
            }
        }
        for item in overrides {
            let (key, value) = item
                .split_once('=')
                .ok_or_else(|| ConfigError::Override(item.clone()))?;
            let path: Vec<String> = key.split('.').map(str::to_owned).collect();
            set_path(&mut tree, &path, scalar(value));
        }
        // Redis alone is a correct multi-node deployment: with a Redis bus
        // and no store named, history is kept in the same Redis, shared by
        // every node (a SQLite file per node would give each node its own
        // history and numbering).
        let redis_url = path_str(&tree, &["broker", "redis", "url"]).unwrap_or_default();
        if !redis_url.is_empty() && get_path(&tree, &["store", "backend"]).is_none() {
            let key = ["store".to_string(), "backend".to_string()];
            set_path(&mut tree, &key, Value::String("redis".into()));
        }
        let mut config: Config = serde_path_to_error::deserialize(tree)
            .map_err(|e| ConfigError::Parse(e.to_string()))?;
        config.validate()?;
        ignored_env.sort();
        config.ignored_env = ignored_env;
        Ok(config)
    }

    /// Checks relations and ranges that types alone do not.
    pub fn validate(&self) -> Result<(), ConfigError> {
        fn positive(field: &'static str, v: usize) -> Result<(), ConfigError> {
            if v == 0 {
                return Err(ConfigError::Invalid {
                    field,
                    reason: "must be greater than 0".into(),
                });
            }
            Ok(())
        }
        positive("limits.max_message_size", self.limits.max_message_size)?;
        positive("limits.queue_messages", self.limits.queue_messages)?;
        positive("limits.queue_bytes", self.limits.queue_bytes)?;
        positive("limits.read_budget", self.limits.read_budget)?;
        positive("server.max_handshakes", self.server.max_handshakes)?;
        positive("store.max_pending", self.store.max_pending)?;
        let a = &self.auth.argon2;
        if let Err(e) = argon2::Params::new(a.memory_kib, a.iterations, a.parallelism, None) {
            return Err(ConfigError::Invalid {
                field: "auth.argon2",
                reason: e.to_string(),
            });
        }
        positive("auth.argon2.max_concurrent", a.max_concurrent)?;
        if self.presence.lease < Duration::from_millis(300) {
            return Err(ConfigError::Invalid {
                field: "presence.lease",
                reason: "must be at least 300ms".into(),
            });
        }
        positive("store.max_batch", self.store.max_batch)?;
        positive(
            "files.thumbnail_concurrency",
            self.files.thumbnail_concurrency,
        )?;
        positive("files.thumbnail_size", self.files.thumbnail_size as usize)?;
        if self.files.backend == FilesBackend::S3 && self.files.s3.bucket.is_empty() {
            return Err(ConfigError::Invalid {
                field: "files.s3.bucket",
                reason: "is required with files.backend s3".into(),
            });
        }
        let pg = &self.store.postgres.url;
        if self.store.backend == StoreBackend::Postgres
            && !(pg.starts_with("postgres://") || pg.starts_with("postgresql://"))
        {
            return Err(ConfigError::Invalid {
                field: "store.postgres.url",
                reason: "must be a postgres:// URL when store.backend is postgres".into(),
            });
        }
        let my = &self.store.mysql.url;
        if self.store.backend == StoreBackend::Mysql
            && !(my.starts_with("mysql://") || my.starts_with("mariadb://"))
        {
            return Err(ConfigError::Invalid {
                field: "store.mysql.url",
                reason: "must be a mysql:// URL when store.backend is mysql".into(),
            });
        }
        if self.store.backend == StoreBackend::Redis && self.store_redis_url().is_empty() {
            return Err(ConfigError::Invalid {
                field: "store.redis.url",
                reason: "is needed with store.backend redis (or broker.redis.url)".into(),
            });
        }
        if self.store.retention.interval.is_zero() {
            return Err(ConfigError::Invalid {
                field: "store.retention.interval",
                reason: "must be greater than 0".into(),
            });
        }
        positive("limits.read_budget_bytes", self.limits.read_budget_bytes)?;
        positive("limits.inbox_high_water", self.limits.inbox_high_water)?;
        positive(
            "limits.max_rooms_per_connection",
            self.limits.max_rooms_per_connection,
        )?;
        positive("limits.max_name_length", self.limits.max_name_length)?;
        positive("limits.max_json_depth", self.limits.max_json_depth)?;
        positive("relay.max_message_size", self.relay.max_message_size)?;
        positive("relay.queue_messages", self.relay.queue_messages)?;
        positive("relay.queue_bytes", self.relay.queue_bytes)?;
        positive("broker.redis.max_batch", self.broker.redis.max_batch)?;
        positive("broker.redis.max_pending", self.broker.redis.max_pending)?;
        let redis = &self.broker.redis;
        for url in redis.seeds() {
            if !(url.starts_with("redis://") || url.starts_with("rediss://")) {
                return Err(ConfigError::Invalid {
                    field: "broker.redis.url",
                    reason: format!("{url:?} is not a redis:// URL"),
                });
            }
        }
        if self.auth.enabled && self.auth.jwt_secret.len() < 32 {
            return Err(ConfigError::Invalid {
                field: "auth.jwt_secret",
                reason: "must be at least 32 bytes when auth.enabled is true".into(),
            });
        }
        if redis.health_interval.is_zero() {
            return Err(ConfigError::Invalid {
                field: "broker.redis.health_interval",
                reason: "must be greater than 0".into(),
            });
        }
        if self.heartbeat.ping_interval.is_zero() {
            return Err(ConfigError::Invalid {
                field: "heartbeat.ping_interval",
                reason: "must be greater than 0".into(),
            });
        }
        if self.heartbeat.idle_timeout <= self.heartbeat.ping_interval {
            return Err(ConfigError::Invalid {
                field: "heartbeat.idle_timeout",
                reason: "must be longer than heartbeat.ping_interval".into(),
            });
        }
        for proxy in &self.server.trusted_proxies {
            crate::peers::Cidr::parse(proxy).map_err(|reason| ConfigError::Invalid {
                field: "server.trusted_proxies",
                reason,
            })?;
        }
        if self.server.transfer_timeout.is_zero() {
            return Err(ConfigError::Invalid {
                field: "server.transfer_timeout",
                reason: "must be greater than 0".into(),
            });
        }
        if self.fastchat.idle_timeout.is_zero() {
            return Err(ConfigError::Invalid {
                field: "fastchat.idle_timeout",
                reason: "must be greater than 0".into(),
            });
        }
        if self.server.host.parse::<std::net::IpAddr>().is_err() {
            return Err(ConfigError::Invalid {
                field: "server.host",
                reason: "must be an IP address".into(),
            });
        }
        Ok(())
    }

    /// Shards to run: the configured count or one per available core.
    pub fn shard_count(&self) -> usize {
        match self.server.shards {
            0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
            n => n,
        }
    }
}

fn read_yaml(path: &Path) -> Result<Value, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.display().to_string(),
        source,
    })?;
    let value: Value = serde_norway::from_str(&text)
        .map_err(|e| ConfigError::Parse(format!("{}: {e}", path.display())))?;
    Ok(match value {
        Value::Null => Value::Mapping(Mapping::new()),
        v => v,
    })
}

/// Reads an override value as a YAML scalar, so `8080` is a number and
/// `true` a boolean, as they would be in the file.
fn scalar(text: &str) -> Value {
    serde_norway::from_str(text).unwrap_or_else(|_| Value::String(text.to_owned()))
}

/// The value at `path` in `tree`, if there is one.
fn get_path<'a>(tree: &'a Value, path: &[&str]) -> Option<&'a Value> {
    path.iter().try_fold(tree, |node, key| match node {
        Value::Mapping(map) => map.get(*key),
        _ => None,
    })
}

/// The text at `path` in `tree`, if it is a string.
fn path_str<'a>(tree: &'a Value, path: &[&str]) -> Option<&'a str> {
    get_path(tree, path).and_then(Value::as_str)
}

fn set_path(tree: &mut Value, path: &[String], value: Value) {
    let Some((last, parents)) = path.split_last() else {
        return;
    };
    let mut node = tree;
    for key in parents {
        if !matches!(node, Value::Mapping(_)) {
            *node = Value::Mapping(Mapping::new());
        }
        let Value::Mapping(map) = node else {
            unreachable!()
        };
        node = map
            .entry(Value::String(key.clone()))
            .or_insert_with(|| Value::Mapping(Mapping::new()));
    }
    if !matches!(node, Value::Mapping(_)) {
        *node = Value::Mapping(Mapping::new());
    }
    if let Value::Mapping(map) = node {
        map.insert(Value::String(last.clone()), value);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn defaults_match_the_spec() {
        let c = Config::load(Some(Path::new("/dev/null")), [], &[]).unwrap();
        assert_eq!(c.server.port, 8080);
        assert_eq!(c.limits.max_message_size, 65536);
        assert_eq!(c.limits.queue_messages, 256);
        assert_eq!(c.heartbeat.idle_timeout, Duration::from_secs(60));
        assert_eq!(c.shutdown.grace_period, Duration::from_secs(10));
    }

    /// config.example.yaml documents every key with its default: it loads,
    /// and gives exactly the built-in defaults.
    #[test]
    fn the_example_config_is_the_defaults() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("config.example.yaml");
        let example = Config::load(Some(&path), [], &[]).unwrap();
        assert_eq!(format!("{example:?}"), format!("{:?}", Config::default()));
    }

    #[test]
    fn file_then_env_then_flags() {
        let dir = std::env::temp_dir().join(format!("chatd-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("c.yaml");
        std::fs::write(
            &file,
            "server:\n  port: 8443\nheartbeat:\n  ping_interval: 5s\nmetrics:\n  enabled: false\n",
        )
        .unwrap();
        let c = Config::load(
            Some(&file),
            env(&[
                ("CHATD_LIMITS__QUEUE_MESSAGES", "512"),
                ("CHATD_SERVER__PORT", "9000"),
                ("HOME", "/"),
            ]),
            &["server.port=9100".into()],
        )
        .unwrap();
        let _ = std::fs::remove_dir_all(&dir);
        assert_eq!(c.server.port, 9100);
        assert_eq!(c.limits.queue_messages, 512);
        assert_eq!(c.heartbeat.ping_interval, Duration::from_secs(5));
        assert!(!c.metrics.enabled);
    }

    /// Regression (issue 9): `CHATD_BIN=...` in the environment stopped
    /// chatd from starting with `unknown field bin`.
    #[test]
    fn chatd_names_without_a_section_are_ignored_not_fatal() {
        let c = Config::load(
            Some(Path::new("/dev/null")),
            env(&[
                ("CHATD_BIN", "/usr/bin/chatd"),
                ("CHATD_SERVER__PORT", "9001"),
            ]),
            &[],
        )
        .unwrap();
        assert_eq!(c.server.port, 9001);
        assert_eq!(c.ignored_env, ["CHATD_BIN"]);
    }

    #[test]
    fn database_url_selects_postgres_or_mysql_and_other_databases_are_left_alone() {
        let pg = env(&[("DATABASE_URL", "postgres://u:p@db/chat")]);
        let c = Config::load(Some(Path::new("/dev/null")), pg, &[]).unwrap();
        assert_eq!(c.store.backend, StoreBackend::Postgres);
        assert_eq!(c.store.postgres.url, "postgres://u:p@db/chat");
        assert!(!format!("{:?}", c.store).contains("u:p"), "never printed");
        let my = env(&[("DATABASE_URL", "mysql://u:p@db/chat")]);
        let c = Config::load(Some(Path::new("/dev/null")), my, &[]).unwrap();
        assert_eq!(c.store.backend, StoreBackend::Mysql);
        assert_eq!(c.store.mysql.url, "mysql://u:p@db/chat");
        assert!(c.store.postgres.url.is_empty());
        assert!(!format!("{:?}", c.store).contains("u:p"), "never printed");
        let other = env(&[("DATABASE_URL", "sqlserver://db/chat")]);
        let c = Config::load(Some(Path::new("/dev/null")), other, &[]).unwrap();
        assert_eq!(c.store.backend, StoreBackend::Sqlite, "the default");
        let redis = Config::load(
            Some(Path::new("/dev/null")),
            env(&[("REDIS_URL", "redis://r:6379")]),
            &["store.backend=redis".into()],
        )
        .unwrap();
        assert_eq!(redis.store_redis_url(), "redis://r:6379", "the broker's");
        let bad = Config::load(
            Some(Path::new("/dev/null")),
            [],
            &["store.backend=redis".into()],
        );
        assert!(bad.unwrap_err().to_string().contains("store.redis.url"));
        let bad = Config::load(
            Some(Path::new("/dev/null")),
            [],
            &["store.backend=postgres".into()],
        );
        assert!(bad.unwrap_err().to_string().contains("store.postgres.url"));
    }

    #[test]
    fn redis_alone_keeps_history_in_redis_unless_a_store_is_named() {
        let redis = || env(&[("REDIS_URL", "redis://r:6379")]);
        let file = Some(Path::new("/dev/null"));
        let c = Config::load(file, redis(), &[]).unwrap();
        assert_eq!(c.store.backend, StoreBackend::Redis);
        assert_eq!(c.store_redis_url(), "redis://r:6379");
        // Named explicitly, by file, environment or flag: kept.
        let c = Config::load(file, redis(), &["store.backend=sqlite".into()]).unwrap();
        assert_eq!(c.store.backend, StoreBackend::Sqlite);
        let mut vars = redis();
        vars.push(("CHATD_STORE__BACKEND".into(), "none".into()));
        let c = Config::load(file, vars, &[]).unwrap();
        assert_eq!(c.store.backend, StoreBackend::None);
        let mut vars = redis();
        vars.push(("DATABASE_URL".into(), "postgres://u:p@db/chat".into()));
        let c = Config::load(file, vars, &[]).unwrap();
        assert_eq!(c.store.backend, StoreBackend::Postgres);
        // Without Redis: the embedded default.
        let c = Config::load(file, [], &[]).unwrap();
        assert_eq!(c.store.backend, StoreBackend::Sqlite);
    }

    #[test]
    fn redis_url_env_sets_the_broker() {
        let c = Config::load(
            Some(Path::new("/dev/null")),
            env(&[("REDIS_URL", "redis://10.0.0.1:6379")]),
            &[],
        )
        .unwrap();
        assert_eq!(c.broker.redis.url, "redis://10.0.0.1:6379");
        assert!(c.broker.redis.enabled() && !c.broker.redis.is_cluster());
        let both = env(&[
            ("CHATD_BROKER__REDIS__URL", "redis://b:1"),
            ("REDIS_URL", "redis://a:1"),
        ]);
        assert_eq!(
            Config::load(Some(Path::new("/dev/null")), both, &[])
                .unwrap()
                .broker
                .redis
                .url,
            "redis://b:1"
        );
        let bad = Config::load(
            Some(Path::new("/dev/null")),
            env(&[("REDIS_URL", "localhost:6379")]),
            &[],
        );
        assert!(bad.unwrap_err().to_string().contains("broker.redis.url"));
    }

    #[test]
    fn auth_enabled_env_needs_a_secret() {
        let on = env(&[("AUTH_ENABLED", "true")]);
        let err = Config::load(Some(Path::new("/dev/null")), on.clone(), &[])
            .unwrap_err()
            .to_string();
        assert!(err.contains("auth.jwt_secret"), "{err}");
        let secret = format!("auth.jwt_secret={}", "k".repeat(32));
        let c = Config::load(Some(Path::new("/dev/null")), on, &[secret]).unwrap();
        assert!(c.auth.enabled);
        assert!(
            !format!("{:?}", c.auth).contains("kkkk"),
            "the secret is not printed"
        );
    }

    #[test]
    fn errors_name_the_field() {
        let unknown = Config::load(
            Some(Path::new("/dev/null")),
            env(&[("CHATD_SERVER__PROT", "1")]),
            &[],
        );
        assert!(unknown.unwrap_err().to_string().contains("prot"));
        let bad_type = Config::load(
            Some(Path::new("/dev/null")),
            [],
            &["server.port=eighty".into()],
        );
        assert!(
            bad_type.unwrap_err().to_string().contains("port"),
            "names the field"
        );
        let zero = Config::load(
            Some(Path::new("/dev/null")),
            [],
            &["limits.queue_messages=0".into()],
        );
        assert!(zero
            .unwrap_err()
            .to_string()
            .contains("limits.queue_messages"));
        let hb = Config::load(
            Some(Path::new("/dev/null")),
            [],
            &["heartbeat.idle_timeout=1s".into()],
        );
        assert!(hb
            .unwrap_err()
            .to_string()
            .contains("heartbeat.idle_timeout"));
        let missing = Config::load(Some(Path::new("/nonexistent/chatd.yaml")), [], &[]);
        assert!(matches!(missing, Err(ConfigError::Read { .. })));
    }
}
