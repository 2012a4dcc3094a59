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
    /// dropped then (its buffer goes with it).
    /// `repr(C)`: what every poll reads (the writer, the shared part with
    /// the read side's flag) first, near the task's header; the read side's
    /// larger state after.
    #[repr(C)]
    pub struct Task<F, W, S> {
        writer: Option<Writer<W>>,
        shared: Arc<Shared<S>>,
        #[pin]
        read: F,
    }
}

impl<F, W, S> Task<F, W, S> {
    pub fn new(read: F, writer: Writer<W>, shared: Arc<Shared<S>>) -> Self {
        Task {
            read,
            writer: Some(writer),
            shared,
        }
    }
}

impl<F, W, S> Future for Task<F, W, S>
where
    F: Future<Output = ()>,
    W: AsyncWrite + Unpin,
    S: Send + Sync + 'static,
{
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = self.project();
        if let Some(writer) = this.writer {
            if Pin::new(writer).poll(cx).is_ready() {
                // (It told the queue, which woke the read side.)
                *this.writer = None;
            }
        }
        // A plain load first: most wake-ups are the writer's, and a swap is
        // a locked instruction on every one of them. Only this task clears
        // the flag, so a set flag stays set until the swap; the swap (not a
        // store) keeps a wake that lands between the two.
        if !this.shared.woken.load(Ordering::Acquire) {
            return Poll::Pending;
        }
        this.shared.woken.swap(false, Ordering::AcqRel);
        this.shared.follow(cx.waker());
        // Made per read-side poll (rare next to writes): a refcount, where
        // keeping it would be 16 bytes in every idle connection's task.
        let waker = Waker::from(this.shared.clone());
        this.read.poll(&mut Context::from_waker(&waker))
    }
}

/// What the read side and the writer share, and the read side's waker: it
/// marks the read side woken, then wakes the task. For a plain connection
/// `io` is the socket itself, so the flag sits beside what every write
/// touches anyway, in one allocation with it (tokio's split halves were a
/// second one).
pub struct Shared<S> {
    pub io: S,
    woken: AtomicBool,
    /// The task's waker. A lock, not a cell: a deferred step (a store round
    /// trip) completes on another thread.
    task: parking_lot::Mutex<Option<Waker>>,
}

impl<S> Shared<S> {
    pub fn new(io: S) -> Self {
        Shared {
            io,
            // The read side runs on the first poll (it has not registered
            // any waker yet).
            woken: AtomicBool::new(true),
            task: parking_lot::Mutex::new(None),
        }
    }

    /// Keeps the task's current waker (tokio's stays the same for a task's
    /// life, so this stores once).
    fn follow(&self, waker: &Waker) {
        let mut task = self.task.lock();
        if !task.as_ref().is_some_and(|w| w.will_wake(waker)) {
            *task = Some(waker.clone());
        }
    }
}

impl<S: Send + Sync + 'static> Wake for Shared<S> {
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
