//! Graceful shutdown in phases, and "wait until every connection is gone".
//!
//! 1. `Stopping`: listeners close, every reader stops taking client input.
//! 2. Once no reader is left, every shard gets `Drain` through its inbox, after
//!    every message already published; each connection flushes its queue and
//!    gets Close 1001.
//! 3. The server waits (bounded) until every connection has dropped its
//!    [`DrainGuard`], then `Exit` stops the shard threads.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, watch};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    Running,
    Stopping,
    Exit,
}

pub struct Shutdown {
    phase: watch::Sender<Phase>,
    /// Cloned into each connection; the receiver sees `None` once all are dropped.
    drain_tx: parking_lot::Mutex<Option<mpsc::Sender<()>>>,
    drain_rx: tokio::sync::Mutex<mpsc::Receiver<()>>,
    /// Connections whose read loop is still running (and may still publish).
    /// Shared with their guards, which then borrow nothing.
    readers: Arc<AtomicUsize>,
}

/// Held by a connection for its whole life.
pub struct DrainGuard {
    _tx: mpsc::Sender<()>,
}

/// Held while a connection's read loop runs.
pub struct ReaderGuard {
    readers: Arc<AtomicUsize>,
}

impl Drop for ReaderGuard {
    fn drop(&mut self) {
        self.readers.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Default for Shutdown {
    fn default() -> Self {
        Shutdown::new()
    }
}

impl Shutdown {
    pub fn new() -> Shutdown {
        let (drain_tx, drain_rx) = mpsc::channel(1);
        Shutdown {
            phase: watch::Sender::new(Phase::Running),
            drain_tx: parking_lot::Mutex::new(Some(drain_tx)),
            drain_rx: tokio::sync::Mutex::new(drain_rx),
            readers: Arc::new(AtomicUsize::new(0)),
        }
    }

    pub fn phase(&self) -> Phase {
        *self.phase.borrow()
    }

    pub fn subscribe(&self) -> watch::Receiver<Phase> {
        self.phase.subscribe()
    }

    pub fn set_phase(&self, phase: Phase) {
        self.phase.send_replace(phase);
    }

    /// A guard for a new connection; `None` once draining has begun.
    pub fn guard(&self) -> Option<DrainGuard> {
        self.drain_tx
            .lock()
            .as_ref()
            .map(|tx| DrainGuard { _tx: tx.clone() })
    }

    pub fn reader(&self) -> ReaderGuard {
        self.readers.fetch_add(1, Ordering::AcqRel);
        ReaderGuard {
            readers: self.readers.clone(),
        }
    }

    pub fn readers(&self) -> usize {
        self.readers.load(Ordering::Acquire)
    }

    /// Waits (at most `limit`) until no read loop is running.
    pub async fn readers_stopped(&self, limit: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + limit;
        while self.readers() > 0 {
            if tokio::time::Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        true
    }

    /// Waits (at most `limit`) until every [`DrainGuard`] is dropped.
    pub async fn drained(&self, limit: Duration) -> bool {
        self.drain_tx.lock().take();
        let mut rx = self.drain_rx.lock().await;
        tokio::time::timeout(limit, rx.recv()).await.is_ok()
    }
}
