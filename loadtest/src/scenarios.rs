//! The scenarios: connect clients, run the schedule, collect the numbers.

use futures_util::StreamExt;
use hdrhistogram::Histogram;
use indicatif::{ProgressBar, ProgressStyle};
use parking_lot::Mutex;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::watch;

use crate::client::{self, Sources};
use crate::pacer::Pacer;
use crate::procfs;
use crate::report::Report;
use crate::{Args, Scenario};

/// Time given to the last messages to arrive after sending stops.
const DRAIN: Duration = Duration::from_secs(2);
/// Pause after connecting so every join has settled before sending.
const SETTLE: Duration = Duration::from_millis(1000);

fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 120_000_000, 3).expect("valid bounds")
}

/// Counters shared by every client task.
struct Shared {
    warm_end_ns: AtomicU64,
    end_ns: AtomicU64,
    sent: AtomicU64,
    received: AtomicU64,
    /// Bytes on the wire of the measured deliveries (their frames as sent).
    wire_bytes: AtomicU64,
    /// Every delivery, measured or not (progress bar).
    seen: AtomicU64,
    errors: AtomicU64,
    closes: Mutex<BTreeMap<String, u64>>,
    latency: Mutex<Histogram<u64>>,
    /// Acks of chats sent in the window (durable scenario), and their latency.
    acks: AtomicU64,
    ack_latency: Mutex<Histogram<u64>>,
}

impl Shared {
    fn new() -> Arc<Shared> {
        Arc::new(Shared {
            warm_end_ns: AtomicU64::new(u64::MAX),
            end_ns: AtomicU64::new(u64::MAX),
            sent: AtomicU64::new(0),
            received: AtomicU64::new(0),
            wire_bytes: AtomicU64::new(0),
            seen: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            closes: Mutex::new(BTreeMap::new()),
            latency: Mutex::new(histogram()),
            acks: AtomicU64::new(0),
            ack_latency: Mutex::new(histogram()),
        })
    }

    fn in_window(&self, ns: u64) -> bool {
        ns >= self.warm_end_ns.load(Ordering::Relaxed) && ns < self.end_ns.load(Ordering::Relaxed)
    }

    fn close(&self, what: String) {
        *self.closes.lock().entry(what).or_insert(0) += 1;
    }
}

pub async fn run(args: &Args) -> anyhow::Result<Report> {
    let servers = args.servers()?;
    match args.scenario {
        Scenario::Fanout | Scenario::CrossNode | Scenario::Burst | Scenario::Durable => {
            messaging(args, &servers, Layout::Fanout).await
        }
        Scenario::Rooms => messaging(args, &servers, Layout::Rooms).await,
        Scenario::Connect => connect_storm(args, servers[0]).await,
        Scenario::JoinStorm => join_storm(args, servers[0]).await,
        Scenario::Idle => idle(args, servers[0]).await,
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Layout {
    Fanout,
    Rooms,
}

/// What connecting a set of clients gave.
struct Connected {
    clients: Vec<client::Ws>,
    /// How many connected (kept or taken).
    connected: usize,
    failures: Vec<String>,
    /// Handshake times (TCP connect to the 101 response), microseconds.
    handshake: Histogram<u64>,
}

/// Connects `n` clients, `concurrency` at a time; client i to `path(i)` on
/// `server(i)`. Each connected client goes to `take` at once, which keeps it
/// (returned in `clients`, in index order) or takes it over (`None`).
async fn connect_all(
    args: &Args,
    n: usize,
    server: impl Fn(usize) -> SocketAddr,
    path: impl Fn(usize) -> String,
    progress: &ProgressBar,
    take: &mut dyn FnMut(client::Ws) -> Option<client::Ws>,
) -> Connected {
    let sources = Sources {
        count: args.sources,
    };
    let mut done = Connected {
        clients: Vec::with_capacity(n),
        connected: 0,
        failures: Vec::new(),
        handshake: histogram(),
    };
    let mut in_flight = futures_util::stream::FuturesOrdered::new();
    let deflate = args.deflate;
    let mut i = 0;
    while i < n || !in_flight.is_empty() {
        while i < n && in_flight.len() < args.concurrency {
            let (addr, p, src) = (server(i), path(i), sources.pick(i));
            in_flight.push_back(async move {
                let start = Instant::now();
                client::connect(addr, &p, src, deflate)
                    .await
                    .map(|ws| (ws, start.elapsed()))
            });
            i += 1;
        }
        match in_flight.next().await {
            Some(Ok((ws, took))) => {
                done.handshake
                    .saturating_record(took.as_micros().max(1) as u64);
                done.connected += 1;
                if let Some(ws) = take(ws) {
                    done.clients.push(ws);
                }
            }
            Some(Err(e)) => done.failures.push(client::describe(&e)),
            None => {}
        }
        progress.set_position(done.connected as u64);
    }
    done
}

fn bar(args: &Args, len: u64, what: &str) -> ProgressBar {
    if args.quiet {
        return ProgressBar::hidden();
    }
    let pb = ProgressBar::new(len);
    pb.set_style(
        ProgressStyle::with_template("{spinner} {msg} [{elapsed}] {wide_bar} {pos}/{len}")
            .expect("template"),
    );
    pb.set_message(what.to_owned());
    pb
}

async fn messaging(args: &Args, servers: &[SocketAddr], layout: Layout) -> anyhow::Result<Report> {
    let n = args.clients;
    let (room_of, audience): (Box<dyn Fn(usize) -> String>, usize) = match layout {
        Layout::Fanout => (Box::new(|_| "fanout".to_string()), n),
        Layout::Rooms => {
            let k = args.room_size.max(1);
            (Box::new(move |i| format!("room{}", i / k)), k)
        }
    };
    let senders: Vec<usize> = match layout {
        // Senders on the first node; receivers spread over every node.
        Layout::Fanout => (0..args.senders.min(n))
            .map(|s| s * servers.len())
            .filter(|&i| i < n)
            .collect(),
        Layout::Rooms => (0..n).collect(),
    };
    let pb = bar(args, n as u64, "connecting");
    // Mixed-dialect fan-out: receiver i speaks the demo dialect when the
    // running share of demo receivers is below --demo-share (never a sender).
    let demo_share = args.demo_share.clamp(0.0, 1.0);
    let is_demo = |i: usize| {
        demo_share > 0.0
            && !senders.contains(&i)
            && ((i + 1) as f64 * demo_share).floor() > (i as f64 * demo_share).floor()
    };
    let Connected {
        mut clients,
        mut failures,
        ..
    } = connect_all(
        args,
        n,
        |i| servers[i % servers.len()],
        |i| match is_demo(i) {
            true => "/demo/ws".to_string(),
            false => format!("{}{}", args.path, room_of(i)),
        },
        &pb,
        &mut Some,
    )
    .await;
    pb.finish_and_clear();
    if demo_share > 0.0 {
        let mut ready = Vec::with_capacity(clients.len());
        for (i, mut ws) in clients.into_iter().enumerate() {
            if is_demo(i) {
                if let Err(e) = demo_join(&mut ws, i).await {
                    failures.push(client::describe(&e));
                    continue;
                }
            }
            ready.push(ws);
        }
        clients = ready;
    }
    let connected = clients.len();
    let shared = Shared::new();
    let (stop_tx, stop_rx) = watch::channel(false);
    // A burst scenario sends `burst` chats per scheduled send.
    let burst = match args.scenario {
        Scenario::Burst => args.burst.max(1),
        _ => 1,
    };
    let per_sender_rate = match layout {
        Layout::Fanout => args.rate / senders.len().max(1) as f64,
        Layout::Rooms => args.per_client_rate,
    };
    let mut receivers = Vec::new();
    let mut sender_tasks = Vec::new();
    let is_sender: std::collections::HashSet<usize> = senders.iter().copied().collect();
    tokio::time::sleep(SETTLE).await;

    let start_ns = client::now_ns() + 100_000_000;
    let warm_end = start_ns + args.warmup.as_nanos() as u64;
    let end = warm_end + args.duration.as_nanos() as u64;
    shared.warm_end_ns.store(warm_end, Ordering::Relaxed);
    shared.end_ns.store(end, Ordering::Relaxed);
    let interval_ns = (1e9 / per_sender_rate.max(1e-9)) as u64;
    let n_senders = senders.len().max(1) as u64;
    let mut idle_writers = Vec::new();
    let pacer = Pacer::start();
    for (i, ws) in clients.into_iter().enumerate() {
        receivers.push(tokio::spawn(receive(
            ws.reader,
            shared.clone(),
            stop_rx.clone(),
        )));
        if is_sender.contains(&i) {
            // Spread the senders' first sends over one interval.
            let offset = interval_ns * (i as u64 % n_senders) / n_senders;
            let mut writer = ws.writer;
            writer.acked = args.scenario == Scenario::Durable;
            sender_tasks.push(tokio::spawn(send(
                writer,
                shared.clone(),
                pacer.clone(),
                start_ns + offset,
                interval_ns,
                end,
                (args.size, burst),
            )));
        } else {
            // Dropping a write half would shut the socket's sending side.
            idle_writers.push(ws.writer);
        }
    }

    // Measure the server (and ourselves) over the measured window only.
    let total = args.warmup + args.duration;
    let pb = bar(args, total.as_secs(), "running");
    tokio::time::sleep_until(client::at_ns(warm_end).into()).await;
    let window = procfs::CpuWindow::start(args.server_pid);
    while client::now_ns() < end {
        tokio::time::sleep(Duration::from_millis(250)).await;
        pb.set_position(
            (client::now_ns().saturating_sub(start_ns) / 1_000_000_000).min(total.as_secs()),
        );
        pb.set_message(format!("{} delivered", shared.seen.load(Ordering::Relaxed)));
    }
    let cpu = window.finish();
    pb.finish_and_clear();
    let mut writers = Vec::new();
    for t in sender_tasks {
        writers.extend(t.await.ok().flatten());
    }
    tokio::time::sleep(DRAIN).await;
    let _ = stop_tx.send(true);
    for r in receivers {
        let _ = r.await;
    }
    drop((writers, idle_writers));

    let sent = shared.sent.load(Ordering::Relaxed);
    let received = shared.received.load(Ordering::Relaxed);
    let expected = sent * audience.min(connected) as u64;
    let mut report = Report {
        scenario: format!("{:?}", args.scenario).to_lowercase(),
        server: servers
            .iter()
            .map(|s| s.to_string())
            .collect::<Vec<_>>()
            .join(","),
        clients: connected,
        duration_s: cpu.elapsed.as_secs_f64(),
        sent,
        expected,
        received,
        delivered_pct: if expected > 0 {
            100.0 * received as f64 / expected as f64
        } else {
            0.0
        },
        deliveries_per_s: received as f64 / args.duration.as_secs_f64(),
        errors: shared.errors.load(Ordering::Relaxed) + failures.len() as u64,
        closes: shared.closes.lock().clone(),
        ..Default::default()
    };
    report.latency(&shared.latency.lock());
    cpu_figures(&mut report, &cpu, received);
    if received > 0 {
        let wire = shared.wire_bytes.load(Ordering::Relaxed);
        report.extra.insert(
            "wire_bytes_per_delivery".into(),
            wire as f64 / received as f64,
        );
    }
    let acks = shared.acks.load(Ordering::Relaxed);
    if acks > 0 {
        let h = shared.ack_latency.lock();
        report.extra.insert("acks".into(), acks as f64);
        report.extra.insert(
            "acks_per_s".into(),
            acks as f64 / args.duration.as_secs_f64(),
        );
        report
            .extra
            .insert("ack_p50_us".into(), h.value_at_quantile(0.5) as f64);
        report
            .extra
            .insert("ack_p99_us".into(), h.value_at_quantile(0.99) as f64);
    }
    if let Some(first) = failures.first() {
        report.notes.push(format!(
            "{} clients failed to connect; first: {first}",
            failures.len()
        ));
    }
    Ok(report)
}

fn cpu_figures(report: &mut Report, cpu: &procfs::CpuSpent, deliveries: u64) {
    if let Some(server) = cpu.server {
        let server = server.as_secs_f64();
        report.server_cpu_pct = Some(100.0 * server / cpu.elapsed.as_secs_f64());
        if deliveries > 0 {
            report.server_cpu_us_per_delivery = Some(server * 1e6 / deliveries as f64);
            if let Some(user) = cpu.server_user {
                report.extra.insert(
                    "server_user_us_per_delivery".into(),
                    user.as_secs_f64() * 1e6 / deliveries as f64,
                );
            }
        }
    }
    if let Some(pct) = cpu.own_pct() {
        report.generator_cpu_pct = pct;
    }
}

/// Sends on schedule; returns the write half (kept open until the end).
async fn send(
    mut writer: client::Writer,
    shared: Arc<Shared>,
    pacer: Pacer,
    first: u64,
    interval: u64,
    end: u64,
    (size, burst): (usize, usize),
) -> Option<client::Writer> {
    let wake = Arc::new(tokio::sync::Notify::new());
    let mut t = first;
    while t < end {
        pacer.until(t, &wake).await;
        if writer.burst(t, size, burst).await.is_err() {
            shared.errors.fetch_add(1, Ordering::Relaxed);
            return None;
        }
        if shared.in_window(t) {
            shared.sent.fetch_add(burst as u64, Ordering::Relaxed);
        }
        t += interval;
    }
    Some(writer)
}

async fn receive(mut reader: client::Reader, shared: Arc<Shared>, mut stop: watch::Receiver<bool>) {
    let mut h = histogram();
    let mut acks_h = histogram();
    let mut acks = 0u64;
    let mut received = 0u64;
    let mut wire_bytes = 0u64;
    let mut seen = 0u64;
    loop {
        let frame = tokio::select! {
            frame = reader.next() => frame,
            _ = stop.changed() => break,
        };
        match frame {
            Ok(Some(client::Frame::Text(Some(intended)))) => {
                seen += 1;
                if seen.is_multiple_of(64) {
                    shared.seen.fetch_add(64, Ordering::Relaxed);
                }
                if shared.in_window(intended) {
                    received += 1;
                    wire_bytes += reader.last_len as u64;
                    let latency_us = client::now_ns().saturating_sub(intended) / 1000;
                    h.saturating_record(latency_us.max(1));
                }
            }
            Ok(Some(client::Frame::Ack(intended))) => {
                if shared.in_window(intended) {
                    acks += 1;
                    let latency_us = client::now_ns().saturating_sub(intended) / 1000;
                    acks_h.saturating_record(latency_us.max(1));
                }
            }
            Ok(Some(client::Frame::Close(code, reason))) => {
                shared.close(code.map_or("no code".into(), |c| format!("{c} {reason}")));
                break;
            }
            Ok(Some(_)) => {}
            Ok(None) => break,
            Err(e) => {
                shared.errors.fetch_add(1, Ordering::Relaxed);
                shared.close(format!("error: {e}"));
                break;
            }
        }
    }
    shared.received.fetch_add(received, Ordering::Relaxed);
    shared.wire_bytes.fetch_add(wire_bytes, Ordering::Relaxed);
    shared.latency.lock().add(&h).expect("same bounds");
    shared.acks.fetch_add(acks, Ordering::Relaxed);
    shared.ack_latency.lock().add(&acks_h).expect("same bounds");
}

/// Signs a demo-dialect client in (creating its user) and joins the public
/// channel; the setup's answers are read whole.
async fn demo_join(ws: &mut client::Ws, i: usize) -> anyhow::Result<()> {
    use anyhow::Context;
    let ready = ws.reader.next_text().await?;
    anyhow::ensure!(ready.contains(r#""type":"ready""#), "no ready: {ready}");
    let sign_in = format!(
        r#"{{"type":"signIn","signIn":{{"username":"load{i}","password":"load-password"}}}}"#
    );
    ws.writer.text(&sign_in).await?;
    let authorized = ws.reader.next_text().await?;
    let field = |key: &str| -> anyhow::Result<String> {
        let start = authorized
            .find(&format!(r#""{key}":""#))
            .with_context(|| format!("no {key} in {authorized}"))?
            + key.len()
            + 4;
        let len = authorized[start..].find('"').context("unterminated")?;
        Ok(authorized[start..start + len].to_owned())
    };
    let (user, key) = (field("userUUID")?, field("accessKey")?);
    let join = format!(
        r#"{{"type":"channelJoin","userUUID":"{user}","accessKey":"{key}","channelJoin":{{"recipientUUID":""}}}}"#
    );
    ws.writer.text(&join).await?;
    loop {
        let answer = ws.reader.next_text().await?;
        if answer.contains(r#""type":"channelJoin""#) {
            return Ok(());
        }
        anyhow::ensure!(
            !answer.contains(r#""type":"error""#),
            "join refused: {answer}"
        );
    }
}

async fn connect_storm(args: &Args, server: SocketAddr) -> anyhow::Result<Report> {
    let pb = bar(args, args.clients as u64, "connecting");
    let window = procfs::CpuWindow::start(args.server_pid);
    // Room-less: a storm of joins to one room would measure presence fan-out
    // (each join is announced to every member), not handshakes.
    let path = args.path.trim_end_matches('/').to_owned();
    let done = connect_all(
        args,
        args.clients,
        |_| server,
        |_| path.clone(),
        &pb,
        &mut Some,
    )
    .await;
    let cpu = window.finish();
    pb.finish_and_clear();
    let held = done.clients.len();
    let mut report = Report {
        scenario: "connect".into(),
        server: server.to_string(),
        clients: held,
        duration_s: cpu.elapsed.as_secs_f64(),
        errors: done.failures.len() as u64,
        ..Default::default()
    };
    connect_figures(&mut report, &done, held, cpu.elapsed, cpu.server);
    if let Some(pct) = cpu.own_pct() {
        // The client side of every TCP handshake runs in our context: near
        // 100 % here means the rate is the generator's, not the server's.
        report.generator_cpu_pct = pct;
    }
    Ok(report)
}

/// What a storm of `held` connections over `took` shows: handshake
/// latency, connects per second, server CPU per connect, failed connects.
fn connect_figures(
    report: &mut Report,
    done: &Connected,
    held: usize,
    took: Duration,
    server_cpu: Option<Duration>,
) {
    report.latency(&done.handshake);
    report
        .extra
        .insert("connects_per_s".into(), held as f64 / took.as_secs_f64());
    if let Some(spent) = server_cpu {
        report.extra.insert(
            "server_cpu_us_per_connect".into(),
            spent.as_secs_f64() * 1e6 / held.max(1) as f64,
        );
    }
    if let Some(first) = done.failures.first() {
        report.notes.push(format!(
            "{} connects failed; first: {first}",
            done.failures.len()
        ));
    }
}

/// A join storm: every client connects into one room (`--path` + `storm`)
/// and reads from the moment it is connected, so any close is the server
/// closing a prompt reader (each join is announced to the members already
/// there). `--reconnect`: once all are in, every client drops and comes
/// back at once (a deploy or a network blip); that second storm is reported.
async fn join_storm(args: &Args, server: SocketAddr) -> anyhow::Result<Report> {
    let mut storm = Storm::start(args, server, "joining").await;
    if args.reconnect {
        tokio::time::sleep(SETTLE).await;
        storm.hang_up().await;
        storm = Storm::start(args, server, "reconnecting").await;
    }
    tokio::time::sleep(args.duration).await;
    Ok(storm.finish(args, server).await)
}

/// One storm of clients joining the room, each with its reader running.
struct Storm {
    shared: Arc<Shared>,
    frames: Arc<AtomicU64>,
    stop: watch::Sender<bool>,
    readers: Vec<tokio::task::JoinHandle<()>>,
    /// Kept so the connections stay open.
    writers: Vec<client::Writer>,
    connected: Connected,
    took: Duration,
    cpu: procfs::CpuWindow,
}

impl Storm {
    async fn start(args: &Args, server: SocketAddr, label: &str) -> Storm {
        let shared = Shared::new();
        let frames = Arc::new(AtomicU64::new(0));
        let (stop, stop_rx) = watch::channel(false);
        let path = format!("{}storm", args.path);
        let (mut readers, mut writers) = (Vec::new(), Vec::new());
        let pb = bar(args, args.clients as u64, label);
        let cpu = procfs::CpuWindow::start(args.server_pid);
        let started = Instant::now();
        let mut take = |ws: client::Ws| {
            let reader = count_frames(ws.reader, shared.clone(), frames.clone(), stop_rx.clone());
            readers.push(tokio::spawn(reader));
            writers.push(ws.writer);
            None
        };
        let connected = connect_all(
            args,
            args.clients,
            |_| server,
            |_| path.clone(),
            &pb,
            &mut take,
        )
        .await;
        pb.finish_and_clear();
        Storm {
            shared,
            frames,
            stop,
            readers,
            writers,
            connected,
            took: started.elapsed(),
            cpu,
        }
    }

    /// Every client drops its connection at once.
    async fn hang_up(self) {
        self.stop.send_replace(true);
        for r in self.readers {
            let _ = r.await;
        }
        drop(self.writers);
    }

    async fn finish(self, args: &Args, server: SocketAddr) -> Report {
        let cpu = self.cpu.finish();
        self.stop.send_replace(true);
        for r in self.readers {
            let _ = r.await;
        }
        let done = self.connected;
        let held = done.connected;
        let mut report = Report {
            scenario: if args.reconnect {
                "reconnect"
            } else {
                "join-storm"
            }
            .into(),
            server: server.to_string(),
            clients: held,
            duration_s: self.took.as_secs_f64(),
            errors: done.failures.len() as u64 + self.shared.errors.load(Ordering::Relaxed),
            closes: self.shared.closes.lock().clone(),
            ..Default::default()
        };
        connect_figures(&mut report, &done, held, self.took, cpu.server);
        report.extra.insert(
            "frames_per_client".into(),
            self.frames.load(Ordering::Relaxed) as f64 / held.max(1) as f64,
        );
        report
    }
}

/// Reads a storm client's frames until told to stop: counts them, and a
/// close (with its code) or an error.
async fn count_frames(
    mut reader: client::Reader,
    shared: Arc<Shared>,
    frames: Arc<AtomicU64>,
    mut stop: watch::Receiver<bool>,
) {
    let mut seen = 0u64;
    loop {
        let frame = tokio::select! {
            frame = reader.next() => frame,
            _ = stop.changed() => break,
        };
        match frame {
            Ok(Some(client::Frame::Close(code, reason))) => {
                shared.close(code.map_or("no code".into(), |c| format!("{c} {reason}")));
                break;
            }
            Ok(Some(_)) => seen += 1,
            Ok(None) => break,
            Err(e) => {
                shared.errors.fetch_add(1, Ordering::Relaxed);
                shared.close(format!("error: {e}"));
                break;
            }
        }
    }
    frames.fetch_add(seen, Ordering::Relaxed);
}

async fn idle(args: &Args, server: SocketAddr) -> anyhow::Result<Report> {
    let rss0 = args.server_pid.and_then(procfs::rss);
    let pb = bar(args, args.clients as u64, "connecting");
    let Connected {
        clients: held,
        failures,
        ..
    } = connect_all(
        args,
        args.clients,
        |_| server,
        |i| format!("{}idle{}", args.path, i % 1000),
        &pb,
        &mut Some,
    )
    .await;
    pb.finish_and_clear();
    // Let the server settle (greetings written, buffers released).
    tokio::time::sleep(SETTLE).await;
    let rss1 = args.server_pid.and_then(procfs::rss);
    tokio::time::sleep(args.duration).await;
    let mut report = Report {
        scenario: "idle".into(),
        server: server.to_string(),
        clients: held.len(),
        duration_s: args.duration.as_secs_f64(),
        errors: failures.len() as u64,
        ..Default::default()
    };
    if let (Some(a), Some(b)) = (rss0, rss1) {
        let conns = held.len().max(1) as f64;
        let per = b.total.saturating_sub(a.total) as f64 / conns;
        let mib = |bytes: u64| bytes as f64 / 1048576.0;
        let extra = &mut report.extra;
        extra.insert("server_rss_before_mib".into(), mib(a.total));
        extra.insert("server_rss_after_mib".into(), mib(b.total));
        extra.insert("server_bytes_per_conn".into(), per);
        extra.insert(
            "extrapolated_gib_per_1m_conns".into(),
            per * 1e6 / 1073741824.0,
        );
        // Without the code pages the storm faulted in (see `procfs::Rss`).
        let anon = b.anon.saturating_sub(a.anon) as f64 / conns;
        extra.insert("server_anon_bytes_per_conn".into(), anon);
    }
    if let Some(first) = failures.first() {
        report.notes.push(format!(
            "{} clients failed to connect; first: {first}",
            failures.len()
        ));
    }
    drop(held);
    Ok(report)
}
