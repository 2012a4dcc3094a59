//! Announcing who joins and leaves a room: one event per change while the
//! room is calm, one summary per second per shard during a storm (see
//! `rooms::presence`).

use serde::Serialize;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::broker::{Payload, Publish};
use crate::model::Event;
use crate::protocol::{ClientId, RoomName};
use crate::rooms::presence::Summary;
use crate::shard::Shard;

/// How often a shard looks for windows whose summary is due: a summary goes
/// out at most this long after its window ended.
const SUMMARY_TICK: Duration = Duration::from_millis(200);

/// Announces `client` coming online in (joining) or going offline from
/// (leaving) `room`, now or in the room's next summary.
pub fn announce(shard: &Shard, room: &RoomName, client: &ClientId, online: bool) {
    if !shard.presence.admit(room, client, online, Instant::now()) {
        if shard.presence.enabled() {
            shard.node.metrics.presence_coalesced.inc();
        }
        return;
    }
    publish(shard, Event::presence(room.clone(), client.clone(), online));
}

/// Publishes the summaries of the shard's presence windows as they fall
/// due; runs for the shard's life (only when presence is on).
pub async fn summaries(shard: Rc<Shard>) {
    let mut tick = tokio::time::interval(SUMMARY_TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        for (room, summary) in shard.presence.due(Instant::now()) {
            let body = sonic_rs::to_string(&SummaryData::from(&summary))
                .expect("names and numbers serialise");
            shard.node.metrics.presence_summaries.inc();
            publish(&shard, Event::presence_summary(room, &body));
        }
    }
}

fn publish(shard: &Shard, event: Event) {
    let topic = event.topic.clone();
    let publish = Publish {
        topic: &topic,
        payload: Payload::Event(Arc::new(event)),
        origin: None,
    };
    if let Err(e) = shard.node.broker.publish(shard.index, publish) {
        tracing::debug!(topic = ?topic, error = %e, "presence not published");
    }
}

/// A summary's `data` in the native protocol.
#[derive(Serialize)]
struct SummaryData<'a> {
    online: Vec<&'a str>,
    offline: Vec<&'a str>,
    more: usize,
}

impl<'a> From<&'a Summary> for SummaryData<'a> {
    fn from(s: &'a Summary) -> Self {
        SummaryData {
            online: s.online.iter().map(ClientId::as_str).collect(),
            offline: s.offline.iter().map(ClientId::as_str).collect(),
            more: s.more,
        }
    }
}
