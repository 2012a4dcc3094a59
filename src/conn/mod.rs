//! One WebSocket connection, from upgrade to cleanup.
//!
//! [`serve`] runs the parts every endpoint shares, in one task
//! (`task.rs`): the writer, the read loop (heartbeat bookkeeping, pings,
//! close handshake, size and protocol errors) and the close paths. What a
//! data message *means* is the endpoint's [`Handler`]: `native.rs` (the
//! chat-api JSON protocol) or `relay.rs` (verbatim relay).

pub mod demo;
pub mod fastchat;
pub mod hold;
pub mod metered;
pub mod native;
pub mod relay;
pub mod rewind;
pub mod socket;
pub mod task;
pub mod writer;

use bytes::Bytes;
use hyper::upgrade::Upgraded;
use hyper_util::rt::TokioIo;
use std::future::{poll_fn, Future};
use std::rc::Rc;
use std::task::Poll;
use std::time::Duration;
use tokio::io::AsyncWrite;
use tokio::net::TcpStream;

use crate::metrics::DisconnectReason;
use crate::queue::{ClientQueue, CloseReason, Limits, State, Stop};
use crate::shard::{ConnState, Shard};
use crate::ws::deflate::Window;
use crate::ws::frame::{self, OpCode};
use crate::ws::{FrameReader, Message, ReadError, ReadSource};
use hold::HoldUpgrade;
use metered::Metered;
use rewind::Rewind;
use socket::{SocketRead, SocketWrite};
use std::sync::Arc;
use task::{Shared, Task};
use writer::Writer;

/// A connection as its handler sees it.
pub struct Conn {
    pub shard: Rc<Shard>,
    pub state: Rc<ConnState>,
}

impl Conn {
    /// Queues a data message for this connection only (a reply).
    pub fn reply(&self, frame: Bytes) {
        let len = frame.len() as u64;
        if self.push(frame) {
            let metrics = &self.shard.node.metrics;
            metrics.messages_out.inc();
            metrics.bytes_out.inc_by(len);
        }
    }

    /// Queues a control frame (Pong); not counted as a message.
    pub fn control(&self, frame: Bytes) {
        self.push(frame);
    }

    /// (A slow-consumer close is counted where the connection ends.)
    fn push(&self, frame: Bytes) -> bool {
        self.state
            .queue
            .push(frame, std::time::Instant::now())
            .is_ok()
    }
}

/// Work a handler cannot finish at once (an access check in the store):
/// the read loop awaits it before the connection's next message, then hands
/// its result to [`Handler::on_resume`]. Boxed: only the rare message that
/// needs one pays for it, not every idle connection's task.
pub type Deferred<T> = std::pin::Pin<Box<dyn Future<Output = T>>>;

/// What an endpoint does with a connection's data messages.
pub trait Handler {
    /// What a [`Deferred`] step of this handler gives back.
    type Resume;
    /// Whether it takes grants ([`Handler::on_grant`]); only those
    /// connections wait for them (and pay for the waiting).
    const GRANTS: bool = false;
    fn on_open(&mut self, conn: &Conn);
    /// A complete text (already UTF-8 checked) or binary message; `Some`
    /// when the message needs a deferred step (messages after it wait).
    fn on_data(
        &mut self,
        conn: &Conn,
        opcode: OpCode,
        payload: Bytes,
    ) -> Option<Deferred<Self::Resume>>;
    /// The deferred step of the last message finished.
    fn on_resume(&mut self, _conn: &Conn, _resume: Self::Resume) {}
    /// Another user opened a conversation with this connection's user (only
    /// dialects whose clients never ask to join get these).
    fn on_grant(&mut self, _conn: &Conn, _grant: crate::shard::Grant) {}
    /// The connection is going: leave every room. Runs once.
    fn on_close(&mut self, conn: &Conn);
}

/// Per-endpoint bounds.
#[derive(Debug, Clone, Copy)]
pub struct ConnLimits {
    pub max_message: usize,
    pub queue: Limits,
}

/// How the read loop ended.
#[derive(Debug)]
enum End {
    /// Shutdown, first phase: stop reading, keep delivering until drained.
    Halted,
    /// The server closed the queue (slow consumer, heartbeat, write error).
    Server(CloseReason),
    /// The client sent Close.
    ClientClose,
    /// The client broke the protocol or the size limit.
    Invalid,
    /// The socket ended without a close handshake.
    Gone { error: bool },
}

impl End {
    fn reason(&self) -> DisconnectReason {
        match self {
            End::Halted | End::Server(CloseReason::Shutdown) => DisconnectReason::Shutdown,
            End::Server(CloseReason::SlowConsumer) => DisconnectReason::SlowConsumer,
            End::Server(CloseReason::HeartbeatTimeout) => DisconnectReason::Timeout,
            End::Server(CloseReason::SignedOut) => DisconnectReason::SignedOut,
            End::Server(CloseReason::PeerGone) => DisconnectReason::ClientClose,
            End::Server(_) | End::Invalid | End::Gone { error: true } => DisconnectReason::Error,
            End::ClientClose | End::Gone { error: false } => DisconnectReason::ClientClose,
        }
    }

    /// Whether the server sent Close first and should wait for the reply.
    /// (Not after a write failure: no Close could be sent.)
    fn server_initiated(&self) -> bool {
        match self {
            End::Halted | End::Invalid => true,
            End::Server(reason) => {
                !matches!(reason, CloseReason::WriteError | CloseReason::PeerGone)
            }
            End::ClientClose | End::Gone { .. } => false,
        }
    }
}

/// The socket of an upgraded connection, as the HTTP side hands it over.
pub enum Io {
    /// A plain socket whose upgrade chatd answered itself (`http::head`).
    Plain {
        stream: TcpStream,
        /// Bytes read past the request head (the client's first frames).
        read_ahead: Bytes,
        /// The 101 response, to go out with the first frame.
        reply: Bytes,
    },
    /// Upgraded by hyper: TLS, or a plain request `http::head` left to it.
    Upgraded(Upgraded),
}

/// The plain socket that hyper served (the 101 held back, bytes read ahead
/// of hyper put back in front).
pub type HyperPlain = HoldUpgrade<Rewind<TcpStream>>;

/// Serves an upgraded connection until it ends, then cleans up everywhere:
/// spawns its task on this shard (nothing when the node is draining
/// already: the socket is dropped). Every log line of the connection
/// carries its id and shard.
///
/// The setup runs here, synchronously, and only what the connection needs
/// for its life goes into the task. (An async fn keeps a slot for each of
/// its arguments beside the values they were moved into, which made every
/// idle connection's task ~450 bytes bigger.)
pub fn serve(
    shard: Rc<Shard>,
    io: Io,
    limits: ConnLimits,
    deflate: Option<Window>,
    handler: impl Handler + 'static,
) {
    let span = tracing::info_span!("conn", id = tracing::field::Empty, shard = shard.index);
    let plain = match io {
        Io::Plain {
            stream,
            read_ahead,
            reply,
        } => Ok((stream, read_ahead, reply)),
        Io::Upgraded(upgraded) => match upgraded.downcast::<TokioIo<Metered<HyperPlain>>>() {
            Ok(parts) => {
                let (rewind, reply) = parts.io.into_inner().into_inner().into_parts();
                let (unread, stream) = rewind.into_parts();
                // hyper reads the whole put-back head at once, so `unread`
                // is empty unless the head was larger than its buffer.
                let read_ahead = match unread.is_empty() {
                    true => parts.read_buf,
                    false => [unread, parts.read_buf].concat().into(),
                };
                Ok((stream, read_ahead, reply))
            }
            Err(upgraded) => Err(upgraded),
        },
    };
    // Plain and TLS connections are tasks of their own types, so neither
    // is sized by the other and the hot path tests no variant.
    let _entered = span.enter();
    match plain {
        Ok((stream, read_ahead, reply)) => {
            let handover = Handover {
                read_ahead,
                reply,
                deflate,
            };
            let shared = Arc::new(Shared::new(stream));
            let halves = (SocketRead(shared.clone()), SocketWrite(shared.clone()));
            if let Some((session, writer)) = Session::open(shard, halves, handover, limits, handler)
            {
                writer.write_through(shared.clone());
                let task = Task::new(session.run(), writer, shared);
                tokio::task::spawn_local(InSpan::new(span.clone(), task));
            }
        }
        Err(upgraded) => {
            let halves = tokio::io::split(TokioIo::new(upgraded));
            let handover = Handover {
                deflate,
                ..Handover::default()
            };
            if let Some((session, writer)) = Session::open(shard, halves, handover, limits, handler)
            {
                // (The read side's flag alone: tokio's halves share the
                // stream in their own way.)
                let task = Task::new(session.run(), writer, Arc::new(Shared::new(())));
                tokio::task::spawn_local(InSpan::new(span.clone(), task));
            }
        }
    }
}

pin_project_lite::pin_project! {
    /// A future polled inside a span. `tracing::Instrumented` keeps the span
    /// inline: 40 bytes in every connection's task, logging on or off. Here
    /// a disabled span (the default log level) is nothing and an enabled one
    /// is boxed. `repr(C)`, span first: it is read on every poll, so it
    /// sits on the task's first cache line, not behind the read side's
    /// state (a cache miss per delivery in the profile).
    #[repr(C)]
    struct InSpan<F> {
        span: Option<Box<tracing::Span>>,
        #[pin]
        inner: F,
    }
}

impl<F> InSpan<F> {
    fn new(span: tracing::Span, inner: F) -> Self {
        let span = (!span.is_disabled()).then(|| Box::new(span));
        InSpan { span, inner }
    }
}

impl<F: Future> Future for InSpan<F> {
    type Output = F::Output;

    fn poll(self: std::pin::Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> Poll<F::Output> {
        let this = self.project();
        let _entered = this.span.as_ref().map(|span| span.enter());
        this.inner.poll(cx)
    }
}

/// What the HTTP side hands over with the socket.
#[derive(Default)]
struct Handover {
    /// Bytes read past the upgrade request (the client's first frames).
    read_ahead: Bytes,
    /// The 101 response, held back to go out with the first frame.
    reply: Bytes,
    /// The permessage-deflate window agreed in the 101, if any.
    deflate: Option<Window>,
}

/// One open connection: what its read side and cleanup need.
struct Session<R, H> {
    conn: Conn,
    reader: FrameReader<R>,
    handler: H,
    /// Held for the connection's life: shutdown waits for every guard.
    drain: crate::shutdown::DrainGuard,
}

impl<R: ReadSource, H: Handler> Session<R, H> {
    /// Registers the connection and makes its writer (run beside the
    /// session in one task); `None` when the server is draining already.
    fn open<W: AsyncWrite + Unpin>(
        shard: Rc<Shard>,
        (read, write): (R, W),
        handover: Handover,
        limits: ConnLimits,
        mut handler: H,
    ) -> Option<(Self, Writer<W>)> {
        let node = &shard.node;
        let drain = node.shutdown.guard()?;
        let options = shard.writer.clone();
        let queue = Rc::new(ClientQueue::new(limits.queue));
        if !handover.reply.is_empty() {
            // Not a message, so not counted; kept even by a slow-consumer
            // close, so the client always gets its handshake first.
            queue.push_preamble(handover.reply);
        }
        let conn = Conn {
            state: shard.register(queue.clone(), handover.deflate),
            shard,
        };
        tracing::Span::current().record("id", conn.state.id.0);
        let writer = writer::run(write, queue, options);
        handler.on_open(&conn);
        let session = Session {
            reader: FrameReader::new(
                read,
                handover.read_ahead,
                limits.max_message,
                handover.deflate.is_some(),
            ),
            conn,
            handler,
            drain,
        };
        Some((session, writer))
    }

    /// Not an `async fn`: that would move `self` from its argument slot into
    /// a second copy inside the future (measured: the native connection's
    /// future held its 344-byte session twice). The block below captures
    /// `self` once and uses it in place.
    fn run(mut self) -> impl Future<Output = ()> {
        tracing::debug!("connection open");
        // (The node is reached through the session when needed: a clone
        // held in the block would be 8 more bytes in every idle task.)
        async move {
            let end = self.read_loop().await;
            // The queue's first close reason is the truth: a slow consumer whose
            // client then hung up is still one slow-consumer close.
            let end = match self.conn.state.queue.state() {
                State::Closing(CloseReason::SlowConsumer) => End::Server(CloseReason::SlowConsumer),
                _ => end,
            };
            tracing::debug!(end = ?end, "connection ending");
            // (Fields are used in place, not destructured: new bindings would be
            // a second copy of the session inside this future.)
            if let End::Halted = end {
                // Keep the room memberships until the shard drains: messages
                // published before shutdown must still reach this client.
                self.writer_done().await;
                self.handler.on_close(&self.conn);
            } else {
                self.handler.on_close(&self.conn);
                self.writer_done().await;
            }
            if end.server_initiated() {
                // Boxed: its timer and copy state would otherwise sit in every
                // connection's task for its whole life (idle memory).
                let limit = self.conn.shard.node.config.limits.close_timeout;
                Box::pin(linger(self.reader, limit)).await;
            }
            let conn = &self.conn;
            conn.shard.unregister(conn.state.id);
            conn.shard.node.metrics.disconnected(end.reason());
            tracing::debug!(reason = end.reason().as_str(), "connection closed");
            // Named here so the block owns it: a `move` block captures only
            // the fields it uses, and an unused guard stayed behind in `run`
            // and was dropped at once, so shutdown did not wait for this
            // connection's Close (test: redis::shutdown_delivers_...).
            drop(self.drain);
        }
    }
}

impl<R, H> Session<R, H> {
    /// Waits until the writer (in the same task) wrote the Close frame or
    /// failed.
    fn writer_done(&self) -> impl Future<Output = ()> + '_ {
        let queue = &self.conn.state.queue;
        poll_fn(move |cx| queue.poll_writer_done(cx))
    }
}

/// What woke the read loop.
enum Wake {
    Stop(Stop),
    Grant(crate::shard::Grant),
    Read(Result<Message, ReadError>),
}

/// What the read loop does after handling one message.
enum Then<T> {
    /// Read the next one.
    Read,
    /// Await the handler's deferred step first.
    Finish(Deferred<T>),
    /// The connection ends.
    End(End),
}

impl<R: ReadSource, H: Handler> Session<R, H> {
    /// What the read loop waits for, in this order: a stop first, then
    /// grants, then input. (A method, so the waiting closure holds one
    /// reference, not one per field.)
    fn poll_wake(&mut self, cx: &mut std::task::Context<'_>) -> Poll<Wake> {
        if let Poll::Ready(stop) = self.conn.state.queue.poll_stop(cx) {
            return Poll::Ready(Wake::Stop(stop));
        }
        if H::GRANTS {
            if let Poll::Ready(grant) = self.conn.state.poll_grant(cx) {
                return Poll::Ready(Wake::Grant(grant));
            }
        }
        self.reader.poll_next(cx).map(Wake::Read)
    }

    /// Reads and handles the connection's messages until it must end.
    ///
    /// Not an `async fn` (whose argument slots would sit beside their moved
    /// copies); the wait is one poll function over the stop signal, grants
    /// and the frame reader, not a `select!` of their futures; and a message
    /// is handled by a plain function ([`handle`]), so nothing of it is kept
    /// across an await. An idle connection's task keeps a reference to the
    /// session, the reader guard and the read budget here.
    fn read_loop(&mut self) -> impl Future<Output = End> + '_ {
        let mut budget = Budget::full(&self.conn.shard.node.config.limits);
        async move {
            // Counted as reading until the loop ends (shutdown's first phase
            // waits for every reader to stop).
            let _reading = self.conn.shard.node.shutdown.reader();
            loop {
                // The wake-up and the handling stay inside this block: a
                // value alive across an await gets a slot in every idle task.
                let (step, tired) = {
                    let wake = poll_fn(|cx| self.poll_wake(cx)).await;
                    let next = match wake {
                        Wake::Stop(stop) => return stop.into(),
                        Wake::Grant(grant) => {
                            self.handler.on_grant(&self.conn, grant);
                            continue;
                        }
                        Wake::Read(next) => next,
                    };
                    let (then, spent) = handle(&self.conn, &mut self.handler, next);
                    let tired = budget.spend(spent, &self.conn.shard.node.config.limits);
                    match then {
                        Then::Read => (None, tired),
                        Then::Finish(step) => (Some(step), tired),
                        Then::End(end) => return end,
                    }
                };
                if let Some(step) = step {
                    let finished = finish(&self.conn, &mut self.handler, step);
                    if let Some(stop) = Box::pin(finished).await {
                        return stop.into();
                    }
                }
                if tired {
                    // Boxed: rare, and its timer would otherwise sit in
                    // every connection's task.
                    if let Some(stop) = Box::pin(catch_up(&self.conn)).await {
                        return stop.into();
                    }
                }
            }
        }
    }
}

/// Handles one read result: what the loop does next, and the bytes it
/// spent of the read budget.
fn handle<H: Handler>(
    conn: &Conn,
    handler: &mut H,
    next: Result<Message, ReadError>,
) -> (Then<H::Resume>, usize) {
    let queue = &conn.state.queue;
    let metrics = &conn.shard.node.metrics;
    conn.state.touch();
    let (opcode, payload) = match next {
        Ok(Message::Text(payload)) => (OpCode::Text, payload),
        Ok(Message::Binary(payload)) => (OpCode::Binary, payload),
        Ok(Message::Ping(payload)) => {
            conn.control(frame::encode(OpCode::Pong, &payload));
            return (Then::Read, payload.len());
        }
        Ok(Message::Pong(payload)) => return (Then::Read, payload.len()),
        Ok(Message::Close(code)) => {
            queue.close(CloseReason::Echo(code.unwrap_or(1000)));
            return (Then::End(End::ClientClose), 0);
        }
        Err(ReadError::Eof) => {
            queue.close(CloseReason::Echo(1000));
            return (Then::End(End::Gone { error: false }), 0);
        }
        Err(ReadError::Io(e)) => {
            // A reset or broken pipe is the client going away, not a fault.
            let error = !matches!(
                e.kind(),
                std::io::ErrorKind::ConnectionReset
                    | std::io::ErrorKind::BrokenPipe
                    | std::io::ErrorKind::UnexpectedEof
            );
            tracing::debug!(error = %e, "read failed");
            queue.close(CloseReason::WriteError);
            return (Then::End(End::Gone { error }), 0);
        }
        Err(e) => {
            tracing::debug!(error = %e, "closing on invalid input");
            queue.close(match e {
                ReadError::TooBig(_) => CloseReason::TooBig,
                ReadError::InvalidUtf8 => CloseReason::InvalidUtf8,
                _ => CloseReason::Protocol,
            });
            return (Then::End(End::Invalid), 0);
        }
    };
    let spent = payload.len();
    metrics.messages_in.inc();
    metrics.bytes_in.inc_by(spent as u64);
    match handler.on_data(conn, opcode, payload) {
        Some(step) => (Then::Finish(step), spent),
        None => (Then::Read, spent),
    }
}

/// Awaits a handler's deferred step (unless the connection must stop
/// first) and gives the handler its result.
async fn finish<H: Handler>(
    conn: &Conn,
    handler: &mut H,
    step: Deferred<H::Resume>,
) -> Option<Stop> {
    let queue = &conn.state.queue;
    tokio::select! {
        biased;
        stop = poll_fn(|cx| queue.poll_stop(cx)) => Some(stop),
        resume = step => {
            handler.on_resume(conn, resume);
            None
        }
    }
}

impl From<Stop> for End {
    fn from(stop: Stop) -> End {
        match stop {
            Stop::Halted => End::Halted,
            Stop::Closing(reason) => End::Server(reason),
        }
    }
}

/// How much one reader may handle before the rest of the shard gets a turn.
/// Without it, a burst in one TCP read (hundreds of messages) was handled
/// before any writer ran, and landed in every recipient's queue at once.
/// (What is left, in 8 bytes: it lives in every connection's task.)
struct Budget {
    messages: u32,
    bytes: u32,
}

impl Budget {
    fn full(limits: &crate::config::LimitsConfig) -> Budget {
        Budget {
            messages: u32::try_from(limits.read_budget).unwrap_or(u32::MAX),
            bytes: u32::try_from(limits.read_budget_bytes).unwrap_or(u32::MAX),
        }
    }

    /// Counts one message of `len` bytes; true when the budget is spent
    /// (and refilled for the next turn).
    fn spend(&mut self, len: usize, limits: &crate::config::LimitsConfig) -> bool {
        self.messages = self.messages.saturating_sub(1);
        self.bytes = self
            .bytes
            .saturating_sub(u32::try_from(len).unwrap_or(u32::MAX));
        if self.messages == 0 || self.bytes == 0 {
            *self = Budget::full(limits);
            return true;
        }
        false
    }
}

/// After a spent read budget: lets the shard's fan-out and writers run, then,
/// while the node's fan-out is behind (`limits.inbox_high_water`) or this
/// connection's own replies are piling up (its queue over its soft bound),
/// stops reading this socket, so TCP slows the sender down instead of
/// queues growing. Returns early if the connection must stop.
async fn catch_up(conn: &Conn) -> Option<Stop> {
    tokio::task::yield_now().await;
    let node = &conn.shard.node;
    let queue = &conn.state.queue;
    let behind =
        || node.registry.backlog() > node.config.limits.inbox_high_water || queue.over_soft_bound();
    if !behind() {
        return None;
    }
    node.metrics.reader_pauses.inc();
    while behind() {
        tokio::select! {
            biased;
            stop = poll_fn(|cx| queue.poll_stop(cx)) => return Some(stop),
            _ = tokio::time::sleep(Duration::from_millis(1)) => {}
        }
    }
    None
}

/// A reset or broken pipe is the client going away, not a server fault.
fn peer_gone(e: &std::io::Error) -> bool {
    use std::io::ErrorKind::*;
    matches!(
        e.kind(),
        ConnectionReset | ConnectionAborted | BrokenPipe | UnexpectedEof
    )
}

/// After the server's Close: reads and discards until the peer closes (or
/// `limit` passes), so unread input does not turn the close into a reset
/// that could destroy the Close frame in flight.
async fn linger<R: ReadSource>(reader: FrameReader<R>, limit: Duration) {
    let mut io = reader.into_inner();
    let _ = tokio::time::timeout(limit, tokio::io::copy(&mut io, &mut tokio::io::sink())).await;
}
