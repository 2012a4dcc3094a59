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

fn run(rx: mpsc::Receiver<(u64, Arc<Notify>)>) {
    // Ties broken by arrival order; `Notify` itself is not ordered.
    let mut due: BinaryHeap<Reverse<(u64, u64)>> = BinaryHeap::new();
    let mut waiting: std::collections::HashMap<u64, Arc<Notify>> = std::collections::HashMap::new();
    let mut seq = 0u64;
    loop {
        let now = client::now_ns();
        while let Some(&Reverse((at, id))) = due.peek() {
            if at > now {
                break;
            }
            due.pop();
            if let Some(wake) = waiting.remove(&id) {
                wake.notify_one();
            }
        }
        let next = match due.peek() {
            Some(&Reverse((at, _))) => rx.recv_timeout(Duration::from_nanos(at - now)),
            None => rx.recv().map_err(|_| mpsc::RecvTimeoutError::Disconnected),
        };
        match next {
            Ok((at, wake)) => {
                seq += 1;
                due.push(Reverse((at, seq)));
                waiting.insert(seq, wake);
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) if due.is_empty() => return,
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                // Senders gone but some are still waiting: sleep to the next.
                let at = due.peek().map_or(now, |r| r.0 .0);
                std::thread::sleep(Duration::from_nanos(at.saturating_sub(now)));
            }
        }
    }
}
