//! One task per connection: its read side and its writer polled together.
//!
//! A connection used to be two tasks, a reader and a writer; the second
//! task's cell, its join handle and its scheduling were idle memory and
//! connect work for every connection. Here both halves live in one future.
//! Each half is polled only when something it waits for woke the task: the
//! writer is polled on every wake-up (it is cheap when there is nothing to
//! drain), the read side only when one of *its* wakers fired, so a message
//! fanned out to this connection does not also pay for a look at the
//! socket's read readiness, the stop signal and the read loop.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};

use tokio::io::AsyncWrite;

use super::writer::Writer;

pin_project_lite::pin_project! {
    /// The connection's future: `read` is the read loop, close and cleanup
    /// (it ends the task); `writer` drains the queue until it ends, and is
    /// dropped then (its half of the socket and its buffer go with it).
    /// `repr(C)`: what every poll reads (the writer, the read side's flag)
    /// first, near the task's header; the read side's larger state after.
    #[repr(C)]
    pub struct Task<F, W> {
        writer: Option<Writer<W>>,
        // The same allocation as `read_waker`, typed.
        read_wake: Arc<ReadWake>,
        // Handed to the read side instead of the task's own waker.
        read_waker: Waker,
        #[pin]
        read: F,
    }
}

impl<F, W> Task<F, W> {
    pub fn new(read: F, writer: Writer<W>) -> Self {
        let read_wake = Arc::new(ReadWake {
            // The read side runs on the first poll (it has not registered
            // any waker yet).
            woken: AtomicBool::new(true),
            task: parking_lot::Mutex::new(None),
        });
        Task {
            read,
            writer: Some(writer),
            read_waker: Waker::from(read_wake.clone()),
            read_wake,
        }
    }
}

impl<F: Future<Output = ()>, W: AsyncWrite + Unpin> Future for Task<F, W> {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = self.project();
        if let Some(writer) = this.writer {
            if Pin::new(writer).poll(cx).is_ready() {
                // (It told the queue, which woke the read side.)
                *this.writer = None;
            }
        }
        if !this.read_wake.woken.swap(false, Ordering::AcqRel) {
            return Poll::Pending;
        }
        this.read_wake.follow(cx.waker());
        this.read.poll(&mut Context::from_waker(this.read_waker))
    }
}

/// The read side's waker: marks the read side woken, then wakes the task.
pub struct ReadWake {
    woken: AtomicBool,
    /// The task's waker. A lock, not a cell: a deferred step (a store round
    /// trip) completes on another thread.
    task: parking_lot::Mutex<Option<Waker>>,
}

impl ReadWake {
    /// Keeps the task's current waker (tokio's stays the same for a task's
    /// life, so this stores once).
    fn follow(&self, waker: &Waker) {
        let mut task = self.task.lock();
        if !task.as_ref().is_some_and(|w| w.will_wake(waker)) {
            *task = Some(waker.clone());
        }
    }
}

impl Wake for ReadWake {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.woken.store(true, Ordering::Release);
        if let Some(task) = &*self.task.lock() {
            task.wake_by_ref();
        }
    }
}
