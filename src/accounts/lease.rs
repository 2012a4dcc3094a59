//! Online state across nodes, through Redis: each node writes its online
//! users (and the rooms they are in) into one Redis hash, `<prefix>online`,
//! field = the node's id, every quarter of `presence.lease`, with a deadline
//! half a lease ahead (one late renewal is forgiven). Every node reads the
//! hash as often to know who is online elsewhere. A node that dies stops
//! renewing: its deadline passes within half a lease and the next read, a
//! quarter later, finds it, so its users are offline within three quarters
//! of the lease. The first node to delete its field (`HDEL` answers 1 to one
//! node only) tells the rooms its users were in that they went offline.
//!
//! One hash, not a key per node, so that it lives in one slot of a Redis
//! Cluster too. Deadlines are wall-clock times: nodes' clocks should agree
//! to well within the lease.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use redis::aio::ConnectionLike;
use serde::{Deserialize, Serialize};

use super::Online;
use crate::broker::{Broker, Payload, Publish};
use crate::config::RedisConfig;
use crate::model::{Event, Topic};
use crate::protocol::{ClientId, RoomName};

/// What a node writes about itself.
#[derive(Serialize, Deserialize)]
struct Entry {
    /// Milliseconds since the epoch after which the entry is stale.
    deadline: u64,
    /// Each online user's rooms.
    users: HashMap<String, Vec<String>>,
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Starts the lease on its own thread (it never touches a shard).
pub fn start(
    config: RedisConfig,
    lease: Duration,
    online: Online,
    broker: Arc<dyn Broker>,
    max_name: usize,
) {
    let node = uuid::Uuid::new_v4().to_string();
    let spawned = std::thread::Builder::new()
        .name("chatd-presence".into())
        .spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("a runtime for the presence lease");
            let lease = Lease {
                key: format!("{}online", config.channel_prefix),
                node,
                lease,
                online,
                broker,
                max_name,
            };
            rt.block_on(lease.run(config));
        });
    if let Err(e) = spawned {
        tracing::error!(error = %e, "presence lease not started");
    }
}

struct Lease {
    key: String,
    node: String,
    lease: Duration,
    online: Online,
    broker: Arc<dyn Broker>,
    max_name: usize,
}

impl Lease {
    async fn run(self, config: RedisConfig) {
        let timeout = Some(config.connect_timeout);
        loop {
            if config.is_cluster() {
                let builder = redis::cluster::ClusterClient::builder(config.seeds())
                    .connection_timeout(config.connect_timeout)
                    .response_timeout(config.connect_timeout);
                let client =
                    crate::tls::redis_cluster(builder, &config.ca_file).and_then(|b| b.build());
                match client {
                    Ok(c) => match c.get_async_connection().await {
                        Ok(conn) => self.renew_forever(conn).await,
                        Err(e) => tracing::warn!(error = %e, "presence lease: no redis"),
                    },
                    Err(e) => tracing::warn!(error = %e, "presence lease: no redis"),
                }
            } else {
                let manager = match crate::tls::redis_client(&config.url, &config.ca_file) {
                    Ok(client) => {
                        let cfg = redis::aio::ConnectionManagerConfig::new()
                            .set_connection_timeout(timeout)
                            .set_response_timeout(timeout);
                        client.get_connection_manager_with_config(cfg).await
                    }
                    Err(e) => Err(e),
                };
                match manager {
                    Ok(conn) => self.renew_forever(conn).await,
                    Err(e) => tracing::warn!(error = %e, "presence lease: no redis"),
                }
            }
            tokio::time::sleep(self.lease / 4).await;
        }
    }

    /// Renews, reads and reaps every quarter of the lease until Redis fails.
    async fn renew_forever<C: ConnectionLike>(&self, mut conn: C) {
        let mut tick = tokio::time::interval(self.lease / 4);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            if let Err(e) = self.round(&mut conn).await {
                tracing::warn!(error = %e, "presence lease round failed");
                return;
            }
        }
    }

    async fn round<C: ConnectionLike>(&self, conn: &mut C) -> redis::RedisResult<()> {
        let mine = Entry {
            deadline: now_ms() + (self.lease / 2).as_millis() as u64,
            users: self.online.local_rooms(),
        };
        let value = sonic_rs::to_string(&mine).expect("plain structs serialise");
        redis::cmd("HSET")
            .arg(&self.key)
            .arg(&self.node)
            .arg(value)
            .query_async::<()>(conn)
            .await?;
        let all: HashMap<String, String> = redis::cmd("HGETALL")
            .arg(&self.key)
            .query_async(conn)
            .await?;
        let now = now_ms();
        let mut remote = HashMap::new();
        let mut stale = Vec::new();
        for (node, value) in all {
            if node == self.node {
                continue;
            }
            let Ok(entry) = sonic_rs::from_str::<Entry>(&value) else {
                continue;
            };
            if entry.deadline >= now {
                remote.insert(node, entry.users.into_keys().collect::<HashSet<_>>());
            } else {
                stale.push((node, entry));
            }
        }
        // Who is online elsewhere is known before the dead node's users are
        // declared offline (one may have reconnected to another node).
        self.online.set_remote(remote);
        for (node, entry) in stale {
            // Whoever deletes it tells the rooms.
            let deleted: i64 = redis::cmd("HDEL")
                .arg(&self.key)
                .arg(&node)
                .query_async(conn)
                .await?;
            if deleted == 1 {
                tracing::info!(node = %node, users = entry.users.len(), "a node's presence lease ended");
                self.offline(&entry.users);
            }
        }
        Ok(())
    }

    /// Tells each room that its user went offline (their node died).
    fn offline(&self, users: &HashMap<String, Vec<String>>) {
        for (user, rooms) in users {
            if self.online.is_online(user) {
                continue;
            }
            let Ok(sender) = ClientId::parse(user, self.max_name) else {
                continue;
            };
            for room in rooms {
                let Ok(room) = RoomName::parse(room, self.max_name) else {
                    continue;
                };
                let topic = Topic::Room(room.clone());
                let event = Event::presence(room, sender.clone(), false);
                let publish = Publish {
                    topic: &topic,
                    payload: Payload::Event(Arc::new(event)),
                    origin: None,
                };
                if let Err(e) = self.broker.publish(0, publish) {
                    tracing::warn!(error = %e, "offline presence not published");
                }
            }
        }
    }
}
