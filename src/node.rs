//! What every shard shares: configuration, the room registry, the broker,
//! metrics and the shutdown state. Built once at start; read-only after.

use std::sync::atomic::AtomicUsize;
use std::sync::Arc;

use crate::accounts::Accounts;
use crate::auth::Authenticator;
use crate::broker::Broker;
use crate::config::Config;
use crate::files::Files;
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
    /// Verifies tokens (required on every request when `auth.enabled`) and
    /// issues them at login.
    pub auth: Arc<Authenticator>,
    /// Users, logins, online state, access to private conversations.
    pub accounts: Accounts,
    /// Connections accepted and not yet upgraded or done (bounded by
    /// `server.max_handshakes`).
    pub handshakes: AtomicUsize,
    /// Connections not yet upgraded, per source address.
    pub peers: Arc<crate::peers::Peers>,
    /// Durable history, with `store.backend` other than `none`.
    pub store: Option<StoreHandle>,
    /// Uploaded files (they need the store for their metadata).
    pub files: Files,
}
