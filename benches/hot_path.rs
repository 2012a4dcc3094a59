//! Micro-benchmarks of the per-message hot path: parse, encode, frame once,
//! fan out one frame to many queues, queue push and drain.
//!
//! `cargo bench --bench hot_path`; numbers and their reading are in
//! BENCHMARKS.md.

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use serde::{Deserialize, Serialize};
use std::borrow::Cow;
use std::collections::VecDeque;
use std::hint::black_box;
use std::rc::Rc;
use std::time::Instant;

use chatd::bench::{self as protocol, frame, ChatData, ClientId, Header, Kind, RoomName, Wire};
use chatd::bench::{
    ClientQueue, ConnId, Event, Limits, LocalRooms, OpCode, Outgoing, Payload, Topic, Voice, Window,
};

/// A 100-byte client chat, as the load generator sends.
const CHAT: &[u8] = br#"{"type":"chat","room":"general","data":{"content":"hello everyone, this is a chat line!!"}}"#;

/// The shape chatd parses (the same as `protocol::command`'s private one).
#[derive(Deserialize)]
struct Raw<'a> {
    #[serde(rename = "type", borrow)]
    kind: Option<Cow<'a, str>>,
    #[serde(borrow)]
    room: Option<Cow<'a, str>>,
    #[serde(borrow)]
    data: Option<RawData<'a>>,
}

#[derive(Deserialize)]
struct RawData<'a> {
    #[serde(borrow)]
    content: Option<Cow<'a, str>>,
}

#[derive(Serialize)]
struct Envelope<'a> {
    id: &'a str,
    #[serde(rename = "type")]
    kind: &'a str,
    room: &'a str,
    from: &'a str,
    data: ChatData<'a>,
    timestamp: &'a str,
}

impl Raw<'_> {
    /// Reads every field, as the real parser does after deserialising.
    fn complete(&self) -> bool {
        self.kind.is_some()
            && self.room.is_some()
            && self.data.as_ref().is_some_and(|d| d.content.is_some())
    }
}

fn parse(c: &mut Criterion) {
    let mut g = c.benchmark_group("parse");
    g.throughput(Throughput::Elements(1));
    g.bench_function("chatd protocol::parse (sonic-rs)", |b| {
        let limits = protocol::ParseLimits {
            max_name: 64,
            max_depth: 32,
        };
        b.iter(|| protocol::parse(black_box(CHAT), limits).unwrap())
    });
    g.bench_function("serde_json", |b| {
        b.iter(|| {
            serde_json::from_slice::<Raw>(black_box(CHAT))
                .unwrap()
                .complete()
        })
    });
    g.bench_function("sonic-rs", |b| {
        b.iter(|| {
            sonic_rs::from_slice::<Raw>(black_box(CHAT))
                .unwrap()
                .complete()
        })
    });
    g.bench_function("simd-json (copy + parse)", |b| {
        b.iter_batched(
            || CHAT.to_vec(),
            |mut buf| {
                simd_json::serde::from_slice::<Raw>(&mut buf)
                    .map(|r| r.complete())
                    .unwrap()
            },
            BatchSize::SmallInput,
        )
    });
    g.finish();
}

fn encode(c: &mut Criterion) {
    let env = Envelope {
        id: "0190b2a4-1d2e-7c3b-9a5f-2b9c7e1d4f60",
        kind: "chat",
        room: "general",
        from: "9f1c2d3e-4b5a-4c6d-8e7f-0a1b2c3d4e5f",
        data: ChatData {
            content: "hello everyone, this is a chat line!!",
            attachments: None,
            client_msg_id: None,
        },
        timestamp: "2026-11-22T10:30:00.123Z",
    };
    let mut g = c.benchmark_group("encode");
    g.throughput(Throughput::Elements(1));
    g.bench_function("chatd protocol::encode (id, clock, sonic-rs)", |b| {
        let header = Header {
            kind: Kind::Chat,
            room: Some("general"),
            from: Some(env.from),
        };
        b.iter(|| {
            protocol::encode(
                header,
                &ChatData {
                    content: black_box(env.data.content),
                    attachments: None,
                    client_msg_id: None,
                },
            )
        })
    });
    g.bench_function("serde_json to_writer", |b| {
        b.iter(|| {
            let mut out = Outgoing::default();
            serde_json::to_writer(out.writer(), black_box(&env)).unwrap();
            out
        })
    });
    g.bench_function("sonic-rs to_writer", |b| {
        b.iter(|| {
            let mut out = Outgoing::default();
            sonic_rs::to_writer(out.writer(), black_box(&env)).unwrap();
            out
        })
    });
    g.finish();
}

fn frame_once(c: &mut Criterion) {
    let payload = vec![b'x'; 250];
    let mut g = c.benchmark_group("frame 250 bytes for 1000 recipients");
    g.throughput(Throughput::Elements(1000));
    g.bench_function("once, then 1000 refcount clones", |b| {
        b.iter(|| {
            let frame = Outgoing::from_payload(black_box(&payload)).into_frame(OpCode::Text);
            let clones: Vec<Bytes> = (0..1000).map(|_| frame.clone()).collect();
            clones
        })
    });
    g.bench_function("1000 separate frames", |b| {
        b.iter(|| {
            let frames: Vec<Bytes> = (0..1000)
                .map(|_| frame::encode(OpCode::Text, black_box(&payload)))
                .collect();
            frames
        })
    });
    g.finish();
}

fn fanout(c: &mut Criterion) {
    let mut g = c.benchmark_group("fan-out");
    fanout_room(&mut g, "one event framed once, to 10k queues", |_| {
        Wire::ChatApi.into()
    });
    // Every member negotiated permessage-deflate: the frame is compressed
    // once more, and the 10k clones are of the compressed frame.
    fanout_room(&mut g, "one event compressed once, to 10k queues", |_| {
        Voice {
            deflate: Some(Window::DEFAULT),
            ..Wire::ChatApi.into()
        }
    });
    // A third of the members in each dialect: the event is framed once per
    // dialect (three times), still never per recipient.
    fanout_room(&mut g, "mixed room: a third per dialect", |i| {
        match i % 3 {
            0 => Wire::ChatApi,
            1 => Wire::Demo,
            _ => Wire::FastChat,
        }
        .into()
    });
    g.finish();
}

fn fanout_room(
    g: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>,
    name: &str,
    voice_of: impl Fn(usize) -> Voice,
) {
    const MEMBERS: usize = 10_000;
    let rooms = LocalRooms::default();
    let room = RoomName::parse("big", 64).unwrap();
    let limits = Limits {
        max_messages: 1 << 20,
        max_bytes: usize::MAX,
        slow_timeout: std::time::Duration::from_secs(5),
    };
    let queues: Vec<Rc<ClientQueue>> = (0..MEMBERS)
        .map(|_| Rc::new(ClientQueue::new(limits)))
        .collect();
    for (i, q) in queues.iter().enumerate() {
        rooms.join(&room, ConnId(i as u64), q.clone(), voice_of(i));
    }
    let topic = Topic::Room(room);
    // An event: the fan-out frames it once (chat-api), then pushes 10k clones.
    let sender = ClientId::parse("alice", 64).unwrap();
    let event = Event::chat(topic.clone(), sender, &"x".repeat(200));
    let payload = Payload::Event(std::sync::Arc::new(event));
    let waker = std::task::Waker::noop();
    let mut cx = std::task::Context::from_waker(waker);
    g.throughput(Throughput::Elements(MEMBERS as u64));
    g.bench_function(name, |b| {
        b.iter(|| {
            let out = rooms.fanout(&topic, black_box(&payload), Instant::now());
            // Empty the queues again so they stay the same size between runs.
            let mut sink = VecDeque::new();
            for q in &queues {
                let _ = q.poll_drain(&mut cx, &mut sink);
                sink.clear();
            }
            out
        })
    });
}

fn queue(c: &mut Criterion) {
    let q = ClientQueue::new(Limits {
        max_messages: 256,
        max_bytes: 1 << 20,
        slow_timeout: std::time::Duration::from_secs(5),
    });
    let frame = Bytes::from_static(&[0u8; 120]);
    let waker = std::task::Waker::noop();
    let mut cx = std::task::Context::from_waker(waker);
    let mut out = VecDeque::with_capacity(64);
    let mut g = c.benchmark_group("queue");
    g.throughput(Throughput::Elements(64));
    g.bench_function("push 64, drain once", |b| {
        b.iter(|| {
            let now = Instant::now();
            for _ in 0..64 {
                q.push(frame.clone(), now).unwrap();
            }
            let _ = q.poll_drain(&mut cx, &mut out);
            out.clear();
        })
    });
    g.finish();
}

criterion_group!(benches, parse, encode, frame_once, fanout, queue);
criterion_main!(benches);
