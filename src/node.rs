//! What every shard shares: configuration, the room registry, the broker,
//! metrics and the shutdown state. Built once at start; read-only after.

use std::sync::atomic::AtomicUsize;
use std::sync::Arc;

use crate::auth::Authenticator;
use crate::broker::Broker;
use crate::config::Config;
use crate::metrics::Metrics;
use crate::rooms::Registry;
use crate::shutdown::Shutdown;
use crate::store::StoreHandle;

pub struct Node {
    pub config: Config,
    pub registry: Arc<Registry>,
    pub broker: Arc<dyn Broker>,
    pub metrics: Arc<Metrics>,
    pub shutdown: Shutdown,
    /// Set when `auth.enabled`: every WebSocket upgrade needs a valid token.
    pub auth: Option<Authenticator>,
    /// Connections accepted and not yet upgraded or done (bounded by
    /// `server.max_handshakes`).
    pub handshakes: AtomicUsize,
    /// Durable history, with `store.backend` other than `none`.
    pub store: Option<StoreHandle>,
}
