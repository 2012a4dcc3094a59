use anyhow::Context;
use clap::Parser;
use std::io::IsTerminal;
use std::path::PathBuf;
use tracing_subscriber::filter::Targets;
use tracing_subscriber::layer::{Layer, SubscriberExt};
use tracing_subscriber::util::SubscriberInitExt;

use chatd::config::{Config, LogFormat};

#[cfg(feature = "mimalloc")]
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// A real-time WebSocket chat server.
///
/// Settings come from defaults, then the config file, then CHATD_* variables
/// (CHATD_SECTION__FIELD, e.g. CHATD_SERVER__PORT=8081), then these flags.
#[derive(Parser, Debug)]
#[command(version)]
struct Cli {
    /// YAML config file (default: ./config.yaml when present).
    #[arg(long)]
    config_file: Option<PathBuf>,
    /// Listen address (server.host).
    #[arg(long)]
    host: Option<String>,
    /// Listen port, 0 for any free port (server.port).
    #[arg(long)]
    port: Option<u16>,
    /// Shards; 0 means one per core (server.shards).
    #[arg(long)]
    shards: Option<usize>,
    /// Log filter, e.g. info or chatd=debug (log.level).
    #[arg(long)]
    log_level: Option<String>,
    /// Any setting as key.path=value, e.g. --set limits.queue_messages=512.
    #[arg(long = "set", value_name = "KEY=VALUE")]
    set: Vec<String>,
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let mut overrides = Vec::new();
    if let Some(host) = &cli.host {
        overrides.push(format!("server.host={host}"));
    }
    if let Some(port) = cli.port {
        overrides.push(format!("server.port={port}"));
    }
    if let Some(shards) = cli.shards {
        overrides.push(format!("server.shards={shards}"));
    }
    if let Some(level) = &cli.log_level {
        overrides.push(format!("log.level={level}"));
    }
    overrides.extend(cli.set.iter().cloned());
    let config = Config::load(cli.config_file.as_deref(), std::env::vars(), &overrides)?;
    init_logging(&config)?;
    for name in &config.ignored_env {
        tracing::warn!(
            name,
            "environment variable ignored: config variables are CHATD_SECTION__FIELD"
        );
    }

    // The runtime and signal handlers (which need file descriptors) exist
    // before the first client can take the last descriptor.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let signals = {
        let _in_runtime = rt.enter();
        Signals::new()?
    };
    let server = chatd::start(config).context("starting chatd")?;
    // One plain line on stdout, for scripts that start chatd on port 0.
    println!("chatd listening on {}", server.addr());
    rt.block_on(async {
        tokio::select! {
            () = signals.wait() => {},
            reason = server.failed() => {
                // A dead shard cannot serve or drain its connections: exit
                // non-zero so that a supervisor restarts the node.
                tracing::error!(%reason, "a shard failed; exiting");
                std::process::exit(70);
            }
        }
        tracing::info!("shutdown signal received");
        server.shutdown().await;
        anyhow::Ok(())
    })
}

fn init_logging(config: &Config) -> anyhow::Result<()> {
    // `target=level` directives and a default level (`chatd=debug,info`):
    // `Targets`, not `EnvFilter`, whose span and field filters chatd does
    // not need and whose regex engine was about 40 s of a cold build.
    let filter: Targets = match std::env::var("RUST_LOG") {
        Ok(env) if !env.is_empty() => env.parse().context("RUST_LOG")?,
        _ => config.log.level.parse().context("log.level")?,
    };
    let layer = tracing_subscriber::fmt::layer()
        // Colour codes only for a person at a terminal, not in log files.
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    let registry = tracing_subscriber::registry();
    match config.log.format {
        LogFormat::Text => registry.with(layer.with_filter(filter)).init(),
        LogFormat::Json => registry.with(layer.json().with_filter(filter)).init(),
    }
    Ok(())
}

/// SIGTERM and SIGINT, registered up front.
struct Signals {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
}

impl Signals {
    fn new() -> anyhow::Result<Signals> {
        use tokio::signal::unix::{signal, SignalKind};
        Ok(Signals {
            term: signal(SignalKind::terminate())?,
            int: signal(SignalKind::interrupt())?,
        })
    }

    async fn wait(mut self) {
        tokio::select! {
            _ = self.term.recv() => {}
            _ = self.int.recv() => {}
        }
    }
}
