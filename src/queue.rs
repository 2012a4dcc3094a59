//! The bounded per-client queue of encoded frames.
//!
//! Producers (the shard's fan-out, the connection's own replies, the heartbeat
//! sweep) push refcount clones of shared frames; the connection's writer takes
//! everything queued at once and writes it with one vectored write. Both sides
//! run on the connection's shard thread, so the queue is `Rc`/`RefCell`-based
//! and costs no atomic operation per message.
//!
//! A push never waits. When either bound (messages or bytes) would be
//! exceeded, the queue drops its backlog and switches to [`State::Closing`]
//! with the slow-consumer code: the writer then sends that Close frame and the
//! connection ends. Kept here rather than inside `conn` because `rooms`
//! pushes and `conn` drains; a leaf module avoids an import cycle.

use bytes::Bytes;
use std::cell::RefCell;
use std::collections::VecDeque;
use std::task::{Context, Poll, Waker};
use std::time::Instant;

/// Why a connection is being closed by the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloseReason {
    /// Send queue full: the client did not read fast enough (1008).
    SlowConsumer,
    /// No inbound frame within the idle timeout (4000).
    HeartbeatTimeout,
    /// Server shutting down (1001).
    Shutdown,
    /// The client sent a message over the size limit (1009).
    TooBig,
    /// A protocol violation (1002).
    Protocol,
    /// Text that is not UTF-8 (1007).
    InvalidUtf8,
    /// The client closed; the server echoes its code.
    Echo(u16),
    /// Writing to the socket failed or made no progress in time; nothing
    /// more can be sent (1011, never seen by the peer).
    WriteError,
    /// The peer reset or abandoned the connection (1006, never sent).
    PeerGone,
}

impl CloseReason {
    pub fn code(self) -> u16 {
        match self {
            CloseReason::SlowConsumer => 1008,
            CloseReason::HeartbeatTimeout => 4000,
            CloseReason::Shutdown => 1001,
            CloseReason::TooBig => 1009,
            CloseReason::Protocol => 1002,
            CloseReason::InvalidUtf8 => 1007,
            CloseReason::Echo(code) => code,
            CloseReason::WriteError => 1011,
            CloseReason::PeerGone => 1006,
        }
    }

    pub fn text(self) -> &'static str {
        match self {
            CloseReason::SlowConsumer => "slow consumer: send queue full",
            CloseReason::HeartbeatTimeout => "heartbeat timeout",
            CloseReason::Shutdown => "server shutting down",
            CloseReason::TooBig => "message too big",
            CloseReason::Protocol => "protocol error",
            CloseReason::InvalidUtf8 => "invalid UTF-8",
            CloseReason::Echo(_) => "",
            CloseReason::WriteError => "write error",
            CloseReason::PeerGone => "connection lost",
        }
    }
}

/// Bounds of one queue. A single frame larger than `max_bytes` is still
/// accepted into an empty queue, so a big message is never undeliverable.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_messages: usize,
    pub max_bytes: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    Open,
    /// Write what is queued, then a Close frame with this reason, then stop.
    Closing(CloseReason),
}

/// What one drain took.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Drained {
    pub state: State,
    /// Arrival of the oldest frame taken, if any.
    pub oldest: Option<Instant>,
}

#[derive(Debug, PartialEq, Eq)]
pub enum PushError {
    /// The queue overflowed just now; the connection is being closed.
    Full,
    /// The connection is already closing; the frame was not queued.
    Closed,
}

#[derive(Debug)]
pub struct ClientQueue {
    inner: RefCell<Inner>,
}

#[derive(Debug)]
struct Inner {
    frames: VecDeque<Bytes>,
    bytes: usize,
    /// When the oldest queued frame arrived at this node (fan-out latency).
    oldest: Option<Instant>,
    limits: Limits,
    state: State,
    /// Set at shutdown: the reader stops taking client input, the writer keeps
    /// delivering until the queue is closed.
    halted: bool,
    /// The writer, waiting for frames.
    waker: Option<Waker>,
    /// The reader, waiting for a reason to stop.
    reader: Option<Waker>,
}

/// Why the reader should stop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stop {
    Halted,
    Closing(CloseReason),
}

impl ClientQueue {
    pub fn new(limits: Limits) -> ClientQueue {
        ClientQueue {
            inner: RefCell::new(Inner {
                frames: VecDeque::new(),
                bytes: 0,
                oldest: None,
                limits,
                state: State::Open,
                halted: false,
                waker: None,
                reader: None,
            }),
        }
    }

    /// Queues a frame that arrived at this node at `arrived`; returns the
    /// depth after the push.
    pub fn push(&self, frame: Bytes, arrived: Instant) -> Result<usize, PushError> {
        let mut inner = self.inner.borrow_mut();
        if inner.state != State::Open {
            return Err(PushError::Closed);
        }
        let over_count = inner.frames.len() >= inner.limits.max_messages;
        let over_bytes =
            !inner.frames.is_empty() && inner.bytes + frame.len() > inner.limits.max_bytes;
        if over_count || over_bytes {
            // The backlog will never be read in time; free it now.
            inner.frames.clear();
            inner.bytes = 0;
            inner.oldest = None;
            inner.state = State::Closing(CloseReason::SlowConsumer);
            inner.wake();
            inner.wake_reader();
            return Err(PushError::Full);
        }
        inner.bytes += frame.len();
        inner.oldest.get_or_insert(arrived);
        inner.frames.push_back(frame);
        let depth = inner.frames.len();
        if depth == 1 {
            inner.wake();
        }
        Ok(depth)
    }

    /// Asks the writer to flush what is queued and then close. The first
    /// reason wins; later calls are ignored.
    pub fn close(&self, reason: CloseReason) {
        let mut inner = self.inner.borrow_mut();
        if inner.state == State::Open {
            inner.state = State::Closing(reason);
            inner.wake();
            inner.wake_reader();
        }
    }

    /// Tells the reader to stop taking input (shutdown, first phase).
    pub fn halt(&self) {
        let mut inner = self.inner.borrow_mut();
        inner.halted = true;
        inner.wake_reader();
    }

    /// Ready once the reader should stop: halted, or the queue is closing.
    pub fn poll_stop(&self, cx: &mut Context<'_>) -> Poll<Stop> {
        let mut inner = self.inner.borrow_mut();
        match inner.state {
            State::Closing(reason) => Poll::Ready(Stop::Closing(reason)),
            State::Open if inner.halted => Poll::Ready(Stop::Halted),
            State::Open => {
                inner.reader = Some(cx.waker().clone());
                Poll::Pending
            }
        }
    }

    pub fn state(&self) -> State {
        self.inner.borrow().state
    }

    pub fn len(&self) -> usize {
        self.inner.borrow().frames.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Moves every queued frame into `out` (which should be empty). Ready when
    /// there was something to move or the queue is closing.
    pub fn poll_drain(&self, cx: &mut Context<'_>, out: &mut VecDeque<Bytes>) -> Poll<Drained> {
        let mut inner = self.inner.borrow_mut();
        if inner.frames.is_empty() && inner.state == State::Open {
            // The writer is going idle: an idle connection keeps no capacity.
            if inner.frames.capacity() != 0 {
                inner.frames = VecDeque::new();
            }
            inner.waker = Some(cx.waker().clone());
            return Poll::Pending;
        }
        std::mem::swap(&mut inner.frames, out);
        inner.bytes = 0;
        Poll::Ready(Drained {
            state: inner.state,
            oldest: inner.oldest.take(),
        })
    }
}

impl Inner {
    fn wake(&mut self) {
        if let Some(w) = self.waker.take() {
            w.wake();
        }
    }

    fn wake_reader(&mut self) {
        if let Some(w) = self.reader.take() {
            w.wake();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::future::poll_fn;

    fn q(max_messages: usize, max_bytes: usize) -> ClientQueue {
        ClientQueue::new(Limits {
            max_messages,
            max_bytes,
        })
    }

    #[tokio::test]
    async fn drains_everything_at_once_in_order() {
        let queue = q(4, 1024);
        for i in 0..3u8 {
            queue.push(Bytes::from(vec![i]), Instant::now()).unwrap();
        }
        let mut out = VecDeque::new();
        let drained = poll_fn(|cx| queue.poll_drain(cx, &mut out)).await;
        assert_eq!(drained.state, State::Open);
        assert!(drained.oldest.is_some());
        assert_eq!(
            out,
            [
                Bytes::from(vec![0]),
                Bytes::from(vec![1]),
                Bytes::from(vec![2])
            ]
        );
        assert!(queue.is_empty());
    }

    #[test]
    fn message_bound_closes_as_slow_consumer() {
        let queue = q(2, 1024);
        assert_eq!(queue.push(Bytes::from_static(b"a"), Instant::now()), Ok(1));
        assert_eq!(queue.push(Bytes::from_static(b"b"), Instant::now()), Ok(2));
        assert_eq!(
            queue.push(Bytes::from_static(b"c"), Instant::now()),
            Err(PushError::Full)
        );
        assert_eq!(queue.state(), State::Closing(CloseReason::SlowConsumer));
        assert!(queue.is_empty(), "backlog is freed on overflow");
        assert_eq!(
            queue.push(Bytes::from_static(b"d"), Instant::now()),
            Err(PushError::Closed)
        );
    }

    #[test]
    fn byte_bound_admits_one_big_frame_into_an_empty_queue() {
        let queue = q(10, 4);
        assert_eq!(
            queue.push(Bytes::from_static(b"0123456789"), Instant::now()),
            Ok(1)
        );
        assert_eq!(
            queue.push(Bytes::from_static(b"x"), Instant::now()),
            Err(PushError::Full)
        );
    }

    #[tokio::test]
    async fn reader_stops_on_halt_or_close() {
        let queue = q(10, 100);
        queue.halt();
        assert_eq!(poll_fn(|cx| queue.poll_stop(cx)).await, Stop::Halted);
        queue
            .push(Bytes::from_static(b"still delivered"), Instant::now())
            .unwrap();
        queue.close(CloseReason::Shutdown);
        assert_eq!(
            poll_fn(|cx| queue.poll_stop(cx)).await,
            Stop::Closing(CloseReason::Shutdown)
        );
        let mut out = VecDeque::new();
        let state = poll_fn(|cx| queue.poll_drain(cx, &mut out)).await;
        assert_eq!(
            (state.state, out.len()),
            (State::Closing(CloseReason::Shutdown), 1)
        );
    }

    #[test]
    fn first_close_reason_wins() {
        let queue = q(10, 100);
        queue.close(CloseReason::Shutdown);
        queue.close(CloseReason::HeartbeatTimeout);
        assert_eq!(queue.state(), State::Closing(CloseReason::Shutdown));
    }
}
