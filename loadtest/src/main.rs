//! chatd's load generator.
//!
//! ```text
//! loadtest fanout  --clients 1000 --senders 10 --rate 400 --server-pid PID
//! loadtest rooms   --clients 2000 --room-size 10 --per-client-rate 1
//! loadtest connect --clients 10000 --concurrency 200
//! loadtest idle    --clients 19000 --server-pid PID --sources 4
//! loadtest burst   --clients 100 --senders 1 --rate 10 --burst 300
//! loadtest durable --clients 100 --senders 10 --rate 10000   # chatd with store.backend=sqlite
//! loadtest cross-node --url 127.0.0.1:8080 --url 127.0.0.1:8081 --clients 1000 --senders 10 --rate 200
//! ```
//!
//! Every message carries its *intended* send time; senders keep their
//! schedule when they fall behind and latency counts from the intended time,
//! so a stalled server cannot hide its stall (coordinated omission).

mod client;
mod pacer;
mod procfs;
mod report;
mod scenarios;

use clap::{Parser, ValueEnum};
use std::net::SocketAddr;
use std::time::Duration;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Scenario {
    /// C clients in one room; S of them send at a fixed total rate.
    Fanout,
    /// C clients in rooms of K, each sending at r messages/s.
    Rooms,
    /// A connection storm: connects per second and handshake latency.
    Connect,
    /// C clients join one room at once, each reading from its first
    /// moment (closes are the server's); with --reconnect, all then drop
    /// and come back at once.
    JoinStorm,
    /// C idle connections held; server memory per connection.
    Idle,
    /// Fan-out with receivers spread over several nodes (--url, repeated),
    /// senders on the first: every delivery to another node crosses the bus.
    CrossNode,
    /// C clients in one room; S senders each write --burst chats in one
    /// TCP write, --rate bursts per second in all. Every reader is prompt:
    /// any close is a failure of the server's backpressure.
    Burst,
    /// Fan-out whose chats carry a client_msg_id: against a server with a
    /// store, also reports acks and ack latency (send to ack).
    Durable,
}

#[derive(Debug, Clone, Parser)]
#[command(about = "Load generator for chatd (and the baseline server)")]
pub struct Args {
    pub scenario: Scenario,
    /// Server address(es), host:port or ws://host:port; repeat for several nodes.
    #[arg(long = "url", default_value = "127.0.0.1:8080")]
    pub urls: Vec<String>,
    /// Path prefix of a room (the room name is appended).
    #[arg(long, default_value = "/ws/")]
    pub path: String,
    /// fanout: this share of the receivers (0 to 1) speak the
    /// redis-chat-demo dialect (`/demo/ws`, signed in, in the public
    /// channel; run chatd with a store and `demo.public_room=fanout`), the
    /// rest the native protocol: a mixed-dialect room.
    #[arg(long, default_value_t = 0.0)]
    pub demo_share: f64,
    /// Clients in all (senders included).
    #[arg(long, default_value_t = 1000)]
    pub clients: usize,
    /// fanout/cross-node: how many of the clients send.
    #[arg(long, default_value_t = 10)]
    pub senders: usize,
    /// fanout/cross-node: messages per second, all senders together.
    #[arg(long, default_value_t = 400.0)]
    pub rate: f64,
    /// burst: chats per burst (one write).
    #[arg(long, default_value_t = 300)]
    pub burst: usize,
    /// join-storm: once every client is in, all drop and reconnect at once
    /// (the second storm is what is reported).
    #[arg(long)]
    pub reconnect: bool,
    /// rooms: members per room.
    #[arg(long, default_value_t = 10)]
    pub room_size: usize,
    /// rooms: messages per second per client.
    #[arg(long, default_value_t = 1.0)]
    pub per_client_rate: f64,
    /// Message content bytes; the client's JSON is 37 bytes more, so the
    /// default makes 100-byte messages.
    #[arg(long, default_value_t = 63)]
    pub size: usize,
    /// Measured time (after warm-up).
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    pub duration: Duration,
    /// Sending before measurement starts (excluded from every number).
    #[arg(long, default_value = "2s", value_parser = humantime::parse_duration)]
    pub warmup: Duration,
    /// Server process id: reports its CPU per delivery and memory.
    #[arg(long)]
    pub server_pid: Option<u32>,
    /// Loopback source addresses to spread sockets over (127.0.0.1..N).
    #[arg(long, default_value_t = 1)]
    pub sources: u8,
    /// Generator worker threads.
    #[arg(long, default_value_t = 1)]
    pub threads: usize,
    /// connect: handshakes in flight at once.
    #[arg(long, default_value_t = 200)]
    pub concurrency: usize,
    /// Clients offer permessage-deflate (as browsers do) and inflate what
    /// comes compressed; the connection fails if the server declines.
    #[arg(long)]
    pub deflate: bool,
    /// No progress bar.
    #[arg(long)]
    pub quiet: bool,
}

impl Args {
    pub fn servers(&self) -> anyhow::Result<Vec<SocketAddr>> {
        self.urls
            .iter()
            .map(|u| {
                let hostport = u.trim_start_matches("ws://").trim_end_matches('/');
                hostport
                    .parse()
                    .map_err(|e| anyhow::anyhow!("--url {u}: {e} (want host:port with an IP)"))
            })
            .collect()
    }
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let fd_limit = procfs::raise_fd_limit();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(args.threads.max(1))
        .enable_all()
        .build()?;
    let mut report = rt.block_on(scenarios::run(&args))?;
    if (args.clients as u64) + 64 > fd_limit {
        report.notes.push(format!(
            "LIMIT: this process may open {fd_limit} files; {} clients need more",
            args.clients
        ));
    }
    if report.generator_cpu_pct >= 90.0 {
        report.notes.push(format!(
            "LIMIT: the generator's CPU was at {:.0} %: rates are its ceiling, not the server's",
            report.generator_cpu_pct
        ));
    }
    report.print();
    Ok(())
}
