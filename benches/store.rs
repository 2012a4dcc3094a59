//! The store's own ceiling: durable chats per second through the store
//! thread (idempotency lookup, numbering, group commit, publish, ack) into
//! SQLite with `synchronous=FULL`, or PostgreSQL, without any socket.
//!
//! `taskset -c 0 cargo bench --bench store` (one core, as BENCHMARKS.md
//! reports it); `STORE_BENCH_PG=postgres://...` adds a PostgreSQL run;
//! `STORE_BENCH_CHATS` (default 500000) and `STORE_BENCH_ROOMS` (default 100)
//! change the load. Prints one line per backend and batch size.

use chatd::bench::{drive_store, Database, Retention, StoreSettings};
use std::time::Duration;

fn settings(database: Database, max_batch: usize) -> StoreSettings {
    StoreSettings {
        database,
        max_pending: 10_000,
        max_batch,
        max_name: 64,
        max_recover: 1000,
        reorder_timeout: Duration::from_millis(100),
        retention: Retention {
            max_age: None,
            max_messages: None,
            interval: Duration::from_secs(60),
        },
        metrics: chatd::metrics::Metrics::new().store,
    }
}

fn env_or(key: &str, default: u64) -> u64 {
    std::env::var(key)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn main() {
    // `cargo bench` passes `--bench`; `cargo test --benches` runs this with
    // a small load as a smoke test.
    let smoke = !std::env::args().any(|a| a == "--bench");
    let chats = if smoke {
        2_000
    } else {
        env_or("STORE_BENCH_CHATS", 500_000)
    };
    let rooms = env_or("STORE_BENCH_ROOMS", 100);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let dir = std::env::temp_dir().join(format!("chatd-store-bench-{}", std::process::id()));
    for batch in [256, 1024, 4096] {
        let _ = std::fs::remove_dir_all(&dir);
        let db = Database::Sqlite(dir.join("chatd.db"));
        let secs = rt
            .block_on(drive_store(settings(db, batch), chats, rooms))
            .expect("the store runs");
        println!(
            "sqlite  max_batch {batch:>5}: {chats} chats in {secs:.2} s = {:>8.0} durable chats/s",
            chats as f64 / secs
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
    if let Ok(url) = std::env::var("STORE_BENCH_PG") {
        let secs = rt
            .block_on(drive_store(
                settings(Database::Postgres(url), 1024),
                chats,
                rooms,
            ))
            .expect("the store runs");
        println!(
            "postgres max_batch 1024: {chats} chats in {secs:.2} s = {:>8.0} durable chats/s",
            chats as f64 / secs
        );
    }
}
