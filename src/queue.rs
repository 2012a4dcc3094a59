//! The bounded per-client queue of encoded frames.
//!
//! Producers (the shard's fan-out, the connection's own replies, the heartbeat
//! sweep) push refcount clones of shared frames; the connection's writer takes
//! everything queued at once and writes it with one vectored write. Both sides
//! run on the connection's shard thread, so the queue is `Rc`/`RefCell`-based
//! and costs no atomic operation per message.
//!
//! A push never waits, and slowness is judged over time, not inside one
//! turn of the event loop (where a burst from one sender lands in every
//! member's queue before any writer runs):
//! - `max_messages` (NFR-3's 256-message send buffer) is a soft bound on
//!   the frames not yet accepted by the socket (queued, or taken by the
//!   writer and not yet written): a burst may go over it, but a client that
//!   stays over it, its writer never finishing a write in between, for
//!   longer than `slow_timeout` is a slow consumer.
//! - `max_bytes` is a hard bound far above one burst: going over it is a
//!   slow consumer at once.
//!
//! A slow consumer's backlog is dropped and the queue switches to
//! [`State::Closing`] with 1008: the writer sends that Close frame and the
//! connection ends. Kept here rather than inside `conn` because `rooms`
//! pushes and `conn` drains; a leaf module avoids an import cycle.
//!
//! Write-through: the shard's fan-out pushes without waking a writer that
//! is parked (waiting for frames) on a plain socket, and once its inbox
//! batch is delivered writes each such queue straight to its socket, with a
//! turn for the rest of the shard every 64 writes while the shard's inbox
//! is not behind ([`ClientQueue::flush`]): everything the batch queued for a connection
//! in one vectored write, as the writer would, but without scheduling,
//! polling and parking the connection's task for every message (about half
//! of the user-space time per delivery). Whatever the socket does not take
//! at once (full, or an error), and a backlog of more than a few frames,
//! is left to the writer, woken then, with its write timeout and error
//! handling.
//! (The one `unsafe` block of the crate is that write: see
//! [`ClientQueue::flush`].)

use bytes::{Buf, Bytes};
use std::cell::RefCell;
use std::collections::VecDeque;
use std::io::IoSlice;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, RawFd};
use std::sync::{Arc, LazyLock};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

/// How a connection's writer empties its queue onto the socket; one per
/// shard, shared by its connections' writers (`conn::writer`).
pub struct WriterOptions {
    /// A write that makes no progress this long fails the connection.
    pub write_timeout: Duration,
    /// Gets, per write, the time since the oldest written frame arrived.
    pub latency: crate::metrics::LocalHistogram,
    /// Least time between two writes of one connection (0: write at once).
    pub coalesce: Duration,
}

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
    /// The user's tokens were revoked (a password change) (4001).
    SignedOut,
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
            CloseReason::SignedOut => 4001,
        }
    }

    pub fn text(self) -> &'static str {
        match self {
            CloseReason::SlowConsumer => "slow consumer: not keeping up with its messages",
            CloseReason::HeartbeatTimeout => "heartbeat timeout",
            CloseReason::Shutdown => "server shutting down",
            CloseReason::TooBig => "message too big",
            CloseReason::Protocol => "protocol error",
            CloseReason::InvalidUtf8 => "invalid UTF-8",
            CloseReason::Echo(_) => "",
            CloseReason::WriteError => "write error",
            CloseReason::PeerGone => "connection lost",
            CloseReason::SignedOut => {
                "signed out: the password changed; connect again with a new token"
            }
        }
    }
}

/// Bounds of one queue. A single frame larger than `max_bytes` is still
/// accepted into an empty queue, so a big message is never undeliverable.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Soft: how many frames may wait without the clock starting.
    pub max_messages: usize,
    /// Hard: more bytes than this waiting closes the connection at once.
    pub max_bytes: usize,
    /// How long the queue may stay over `max_messages` without a drain.
    pub slow_timeout: Duration,
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

/// A queue per connection is idle memory: with `Rc`'s two counts it is a
/// 160-byte allocation, the size class it must stay in.
#[cfg(target_pointer_width = "64")]
const _: () = assert!(std::mem::size_of::<ClientQueue>() <= 144);

pub struct ClientQueue {
    inner: RefCell<Inner>,
}

struct Inner {
    frames: VecDeque<Bytes>,
    bytes: usize,
    /// When the oldest queued frame arrived at this node (fan-out latency).
    oldest: Stamp,
    /// Frames the writer took with its last drain and has not finished
    /// writing (they still count against `max_messages`).
    in_flight: u32,
    /// When queued plus in-flight frames went over `max_messages` (cleared
    /// when the writer finishes a write with the queue under it again).
    over_since: Stamp,
    /// The first frame is the held-back HTTP 101: it survives a slow-consumer
    /// close, so a client never gets a Close frame without its handshake.
    preamble: bool,
    limits: Bounds,
    state: State,
    /// Set at shutdown: the reader stops taking client input, the writer keeps
    /// delivering until the queue is closed.
    halted: bool,
    /// The writer ended (Close written, or the socket failed): the read
    /// side's cleanup waits for it (they share one task, so it cannot join
    /// the writer's).
    writer_done: bool,
    /// The writer, waiting for frames (parked: it holds nothing unwritten).
    waker: Option<Waker>,
    /// The socket, for writing straight to it while the writer is parked
    /// (plain sockets; see the module doc). Taken away when the writer goes.
    /// Held here, it keeps `sink_fd` open.
    sink: Option<Arc<dyn AsFd>>,
    /// `sink`'s descriptor, copied beside the queue's own fields: a write
    /// through then touches no other memory of the connection (the line
    /// holding the socket's descriptor was the one cache miss left per
    /// delivery in the profile, 14 % of the user-space time).
    sink_fd: RawFd,
    /// The reader, waiting for a reason to stop.
    reader: Option<Waker>,
}

/// An instant in 8 bytes where `Option<Instant>` takes 16 (the queue's two
/// kept the allocation out of its size class once it also held a sink):
/// nanoseconds since the first stamp taken, plus one; 0 is none. An
/// instant before that first stamp counts as it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Stamp(u64);

static EPOCH: LazyLock<Instant> = LazyLock::new(Instant::now);

impl Stamp {
    const NONE: Stamp = Stamp(0);

    fn of(at: Instant) -> Stamp {
        let nanos = at.saturating_duration_since(*EPOCH).as_nanos();
        Stamp(u64::try_from(nanos).unwrap_or(u64::MAX - 1) + 1)
    }

    fn get(self) -> Option<Instant> {
        (self.0 != 0).then(|| *EPOCH + Duration::from_nanos(self.0 - 1))
    }

    /// Keeps the earlier stamp: set only when none.
    fn get_or_insert(&mut self, at: Instant) {
        if *self == Stamp::NONE {
            *self = Stamp::of(at);
        }
    }

    fn take(&mut self) -> Option<Instant> {
        std::mem::take(self).get()
    }
}

/// Frames one write-through takes at most: more are left to the writer.
const FLUSH_SLICES: usize = 8;

/// The first `N` frames at most, as one vectored write's slices (built on
/// the stack: nothing kept per connection), and how many there are.
pub fn slices<const N: usize>(frames: &VecDeque<Bytes>) -> ([IoSlice<'_>; N], usize) {
    let mut slices = [IoSlice::new(&[]); N];
    let mut n = 0;
    for (slice, frame) in slices.iter_mut().zip(frames) {
        *slice = IoSlice::new(frame);
        n += 1;
    }
    (slices, n)
}

/// Drops fully written frames from the front of `frames` and trims a
/// partly written one (the writer's batch, and a partial write-through).
pub fn advance(frames: &mut VecDeque<Bytes>, mut written: usize) {
    while written > 0 {
        let front = frames.front_mut().expect("wrote more than was queued");
        if written >= front.len() {
            written -= front.len();
            frames.pop_front();
        } else {
            front.advance(written);
            written = 0;
        }
    }
}

/// [`Limits`] as each queue keeps them: 16 bytes, not 32 (a queue per
/// connection is idle memory; this keeps it in a smaller allocation class).
/// A soft bound over 4 billion frames or a timeout over 49 days is taken as
/// that.
#[derive(Debug)]
struct Bounds {
    max_bytes: usize,
    max_messages: u32,
    slow_timeout_ms: u32,
}

impl Bounds {
    fn new(limits: Limits) -> Bounds {
        Bounds {
            max_bytes: limits.max_bytes,
            max_messages: u32::try_from(limits.max_messages).unwrap_or(u32::MAX),
            slow_timeout_ms: u32::try_from(limits.slow_timeout.as_millis()).unwrap_or(u32::MAX),
        }
    }

    fn max_messages(&self) -> usize {
        self.max_messages as usize
    }

    fn slow_timeout(&self) -> Duration {
        Duration::from_millis(self.slow_timeout_ms.into())
    }
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
                oldest: Stamp::NONE,
                in_flight: 0,
                over_since: Stamp::NONE,
                preamble: false,
                limits: Bounds::new(limits),
                state: State::Open,
                halted: false,
                writer_done: false,
                waker: None,
                sink: None,
                sink_fd: -1,
                reader: None,
            }),
        }
    }

    /// Queues the HTTP 101 response ahead of everything else; it is written
    /// even if the connection is closed before its writer first runs.
    pub fn push_preamble(&self, frame: Bytes) {
        let mut inner = self.inner.borrow_mut();
        debug_assert!(inner.frames.is_empty());
        inner.bytes += frame.len();
        inner.frames.push_back(frame);
        inner.preamble = true;
        inner.wake();
    }

    /// Queues a frame that arrived at this node at `arrived`; returns the
    /// depth after the push.
    pub fn push(&self, frame: Bytes, arrived: Instant) -> Result<usize, PushError> {
        self.enqueue(frame, arrived, false).map(|(depth, _)| depth)
    }

    /// [`ClientQueue::push`] for the shard's fan-out: a writer parked on a
    /// socket it may write to is not woken. `true` with the depth: this
    /// push made the queue wait for the caller's [`ClientQueue::flush`]
    /// (the shard's dispatch flushes after each inbox batch).
    pub fn push_deferred(
        &self,
        frame: Bytes,
        arrived: Instant,
    ) -> Result<(usize, bool), PushError> {
        self.enqueue(frame, arrived, true)
    }

    fn enqueue(
        &self,
        frame: Bytes,
        arrived: Instant,
        defer: bool,
    ) -> Result<(usize, bool), PushError> {
        let mut inner = self.inner.borrow_mut();
        if inner.state != State::Open {
            return Err(PushError::Closed);
        }
        let over_bytes =
            !inner.frames.is_empty() && inner.bytes + frame.len() > inner.limits.max_bytes;
        if over_bytes || inner.stalled(arrived) {
            inner.slow_consumer();
            return Err(PushError::Full);
        }
        if inner.frames.len() + inner.in_flight as usize >= inner.limits.max_messages() {
            inner.over_since.get_or_insert(arrived);
        }
        inner.bytes += frame.len();
        inner.oldest.get_or_insert(arrived);
        inner.frames.push_back(frame);
        let depth = inner.frames.len();
        let mut deferred = false;
        if depth == 1 {
            if defer && inner.sink.is_some() && inner.waker.is_some() {
                deferred = true;
            } else {
                inner.wake();
            }
        }
        Ok((depth, deferred))
    }

    /// Writes what is queued straight to the socket if the writer is still
    /// parked (it was not woken since the deferred push); whatever the
    /// socket does not take at once is the writer's, woken for it.
    /// `latency` gets the time from the oldest frame's arrival to `now`
    /// when all of it went out (`now` is read once per turn of flushes by
    /// the caller: a clock read per connection was 8 % of the fan-out's
    /// user-space time).
    pub fn flush(&self, latency: &crate::metrics::LocalHistogram, now: Instant) {
        let mut inner = self.inner.borrow_mut();
        if inner.frames.is_empty() || inner.state != State::Open || inner.waker.is_none() {
            return;
        }
        // A backlog of more than a few frames (a busy batch, or a client
        // falling behind) is the writer's: its one `writev` takes up to 128,
        // where a write-through of the first few and the writer's of the
        // rest would be two.
        if inner.sink.is_none() || inner.frames.len() > FLUSH_SLICES {
            inner.wake();
            return;
        }
        let (slices, n) = slices::<FLUSH_SLICES>(&inner.frames);
        // SAFETY: `sink_fd` is the descriptor of the socket `sink` owns, and
        // `sink` is held, unchanged (the queue stays borrowed), through this
        // call: the descriptor is open and cannot name another file.
        let fd = unsafe { BorrowedFd::borrow_raw(inner.sink_fd) };
        // Straight to the socket, without tokio's readiness check (that
        // flag sits in a registration of its own per connection: another
        // miss). A full socket answers `WouldBlock` all the same; the
        // writer, woken then, writes the rest through tokio, whose flag
        // this write did not touch.
        match socket2::SockRef::from(&fd).send_vectored(&slices[..n]) {
            Ok(written) if written == inner.bytes => {
                inner.frames = VecDeque::new();
                inner.bytes = 0;
                inner.preamble = false;
                inner.over_since = Stamp::NONE;
                if let Some(oldest) = inner.oldest.take() {
                    latency.observe(now.saturating_duration_since(oldest).as_secs_f64());
                }
            }
            Ok(written) => {
                inner.consume(written);
                inner.wake();
            }
            Err(_) => inner.wake(),
        }
    }

    /// Lets [`ClientQueue::flush`] write to `sink` while the writer is
    /// parked.
    pub fn attach_sink(&self, sink: Arc<dyn AsFd>) {
        let mut inner = self.inner.borrow_mut();
        inner.sink_fd = sink.as_fd().as_raw_fd();
        inner.sink = Some(sink);
    }

    /// The writer is going: nothing may be written past it any more, and
    /// its waker (if parked) is stale.
    pub fn detach_writer(&self) {
        let mut inner = self.inner.borrow_mut();
        inner.sink = None;
        inner.sink_fd = -1;
        inner.waker = None;
    }

    /// Closes the queue as a slow consumer if it has been over its soft
    /// bound, undrained, for longer than its timeout (the heartbeat sweep
    /// asks, so a queue nobody pushes to is judged too). True if it closed.
    pub fn check_stalled(&self, now: Instant) -> bool {
        let mut inner = self.inner.borrow_mut();
        if inner.state == State::Open && inner.stalled(now) {
            inner.slow_consumer();
            return true;
        }
        false
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

    /// The writer ended; wakes the read side if it waits for that.
    pub fn writer_ended(&self) {
        let mut inner = self.inner.borrow_mut();
        inner.writer_done = true;
        inner.wake_reader();
    }

    /// Ready once the writer ended. (The read side's waker slot: by then
    /// the read loop no longer waits for a stop.)
    pub fn poll_writer_done(&self, cx: &mut Context<'_>) -> Poll<()> {
        let mut inner = self.inner.borrow_mut();
        if inner.writer_done {
            return Poll::Ready(());
        }
        inner.reader = Some(cx.waker().clone());
        Poll::Pending
    }

    pub fn len(&self) -> usize {
        self.inner.borrow().frames.len()
    }

    /// The writer wrote everything it took with its last drain: the socket
    /// accepted it, so the slow-consumer clock stops unless the queue alone
    /// is still over the soft bound.
    pub fn written(&self) {
        let mut inner = self.inner.borrow_mut();
        inner.in_flight = 0;
        if inner.frames.len() < inner.limits.max_messages() {
            inner.over_since = Stamp::NONE;
        }
    }

    /// Whether more frames wait than the soft bound (`max_messages`).
    pub fn over_soft_bound(&self) -> bool {
        let inner = self.inner.borrow();
        inner.frames.len() > inner.limits.max_messages()
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
            // (Kept across write-throughs, which do not wake it: cloned
            // again only after a wake-up took it.)
            if !inner
                .waker
                .as_ref()
                .is_some_and(|w| w.will_wake(cx.waker()))
            {
                inner.waker = Some(cx.waker().clone());
            }
            return Poll::Pending;
        }
        std::mem::swap(&mut inner.frames, out);
        inner.bytes = 0;
        inner.in_flight = u32::try_from(out.len()).unwrap_or(u32::MAX);
        inner.preamble = false;
        Poll::Ready(Drained {
            state: inner.state,
            oldest: inner.oldest.take(),
        })
    }
}

impl Inner {
    fn stalled(&self, now: Instant) -> bool {
        self.over_since
            .get()
            .is_some_and(|t| now.saturating_duration_since(t) > self.limits.slow_timeout())
    }

    /// The backlog will never be read in time: free it (all but a held 101)
    /// and close with 1008.
    fn slow_consumer(&mut self) {
        let keep = usize::from(self.preamble);
        self.frames.truncate(keep);
        self.bytes = self.frames.iter().map(Bytes::len).sum();
        self.oldest = Stamp::NONE;
        self.over_since = Stamp::NONE;
        self.state = State::Closing(CloseReason::SlowConsumer);
        self.wake();
        self.wake_reader();
    }

    /// Drops the first `written` bytes of the queued frames (a partial
    /// write-through): the writer goes on from there.
    fn consume(&mut self, written: usize) {
        self.bytes -= written;
        // (The 101 is out: a slow-consumer close may drop the rest.)
        if self.frames.front().is_some_and(|f| written >= f.len()) {
            self.preamble = false;
        }
        advance(&mut self.frames, written);
    }

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

    const SLOW: Duration = Duration::from_secs(5);

    fn q(max_messages: usize, max_bytes: usize) -> ClientQueue {
        ClientQueue::new(Limits {
            max_messages,
            max_bytes,
            slow_timeout: SLOW,
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
    fn over_the_message_bound_is_slow_only_after_the_timeout_without_a_drain() {
        let queue = q(2, 1024);
        let t0 = Instant::now();
        // A burst far over the soft bound inside one tick: nobody is closed.
        for i in 0..300 {
            assert_eq!(queue.push(Bytes::from_static(b"a"), t0), Ok(i + 1));
        }
        assert!(!queue.check_stalled(t0 + SLOW));
        // Taken by the writer but not yet written: still pending.
        let mut out = VecDeque::new();
        let waker = std::task::Waker::noop();
        let drained = queue.poll_drain(&mut Context::from_waker(waker), &mut out);
        assert!(drained.is_ready());
        assert!(queue.check_stalled(t0 + SLOW * 2), "the writer is stuck");
        let queue = q(2, 1024);
        out.clear();
        for _ in 0..300 {
            queue.push(Bytes::from_static(b"a"), t0).unwrap();
        }
        let drained = queue.poll_drain(&mut Context::from_waker(waker), &mut out);
        assert!(drained.is_ready());
        // The socket accepted the whole batch: the clock stops.
        queue.written();
        for _ in 0..3 {
            queue.push(Bytes::from_static(b"b"), t0 + SLOW).unwrap();
        }
        assert!(!queue.check_stalled(t0 + SLOW * 2));
        // Still over and undrained after the timeout: a slow consumer.
        assert_eq!(
            queue.push(Bytes::from_static(b"c"), t0 + SLOW * 2 + SLOW),
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
    fn the_sweep_judges_a_queue_nobody_pushes_to() {
        let queue = q(1, 1024);
        let t0 = Instant::now();
        queue.push(Bytes::from_static(b"a"), t0).unwrap();
        queue.push(Bytes::from_static(b"b"), t0).unwrap();
        assert!(!queue.check_stalled(t0 + SLOW));
        assert!(queue.check_stalled(t0 + SLOW * 2));
        assert!(!queue.check_stalled(t0 + SLOW * 3), "closes once");
    }

    #[test]
    fn a_held_101_survives_a_slow_consumer_close() {
        let queue = q(10, 8);
        queue.push_preamble(Bytes::from_static(b"HTTP/1.1 101"));
        queue
            .push(Bytes::from_static(b"x"), Instant::now())
            .unwrap_err();
        assert_eq!(queue.state(), State::Closing(CloseReason::SlowConsumer));
        assert_eq!(queue.len(), 1, "the 101 is still queued");
    }

    #[test]
    fn byte_bound_admits_one_big_frame_into_an_empty_queue() {
        let queue = q(10, 4);
        assert_eq!(
            queue.push(Bytes::from_static(b"0123456789"), Instant::now()),
            Ok(1)
        );
        // The hard byte bound closes at once, whatever the soft bound.
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
