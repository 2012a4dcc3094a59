//! Wakes senders at their intended send times, to tens of microseconds.
//!
//! tokio's timer has a resolution of one millisecond and rounds up, so a
//! sender sleeping on it starts every message 0–1 ms late, and since latency
//! counts from the intended send time, that lateness was reported as server
//! latency (about 1 ms of the rooms scenario's p50). The pacer is one OS
//! thread that waits on a futex with a timeout (the kernel's high-resolution
//! timers) and wakes each sender's task when its time comes.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::sync::mpsc;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Notify;

use crate::client;

/// A handle for sender tasks; the thread stops when every handle is gone.
#[derive(Clone)]
pub struct Pacer {
    tx: mpsc::Sender<(u64, Arc<Notify>)>,
}

impl Pacer {
    pub fn start() -> Pacer {
        let (tx, rx) = mpsc::channel();
        std::thread::Builder::new()
            .name("pacer".into())
            .spawn(move || run(rx))
            .expect("spawn pacer thread");
        Pacer { tx }
    }

    /// Waits until `at_ns` (on [`client::now_ns`]'s clock).
    pub async fn until(&self, at_ns: u64, wake: &Arc<Notify>) {
        if client::now_ns() >= at_ns || self.tx.send((at_ns, wake.clone())).is_err() {
            return;
        }
        wake.notified().await;
    }
}

/// One sender waiting: ordered by time, ties by arrival (`Notify` itself
/// has no order, so it rides along outside the comparison).
struct Due {
    at: u64,
    seq: u64,
    wake: Arc<Notify>,
}

impl Due {
    fn key(&self) -> Reverse<(u64, u64)> {
        Reverse((self.at, self.seq))
    }
}

impl PartialEq for Due {
    fn eq(&self, other: &Self) -> bool {
        self.key() == other.key()
    }
}

impl Eq for Due {}

impl PartialOrd for Due {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Due {
    /// Reversed: `BinaryHeap` is a max-heap and the earliest must come first.
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.key().cmp(&other.key())
    }
}

fn run(rx: mpsc::Receiver<(u64, Arc<Notify>)>) {
    let mut due: BinaryHeap<Due> = BinaryHeap::new();
    let mut seq = 0u64;
    loop {
        let now = client::now_ns();
        while due.peek().is_some_and(|d| d.at <= now) {
            if let Some(d) = due.pop() {
                d.wake.notify_one();
            }
        }
        let next = match due.peek() {
            Some(d) => rx.recv_timeout(Duration::from_nanos(d.at - now)),
            None => rx.recv().map_err(|_| mpsc::RecvTimeoutError::Disconnected),
        };
        match next {
            Ok((at, wake)) => {
                seq += 1;
                due.push(Due { at, seq, wake });
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => match due.peek() {
                None => return,
                // Senders gone but some are still waiting: sleep to the next.
                Some(d) => std::thread::sleep(Duration::from_nanos(d.at - now)),
            },
        }
    }
}
