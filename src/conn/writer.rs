//! The connection's writer: everything queued goes out in one vectored
//! write per wake-up, never a flush per message. It runs in the
//! connection's task, beside the read side (`conn::Task`).

use bytes::{Buf, Bytes};
use std::collections::VecDeque;
use std::future::Future;
use std::io;
use std::os::fd::AsFd;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Duration;
use tokio::io::AsyncWrite;
use tokio::time::Sleep;

use crate::queue::{advance, slices, ClientQueue, CloseReason, Drained, State, WriterOptions};
use crate::ws::frame;

/// Slices handed to one `writev`; built on the stack inside `poll`, so an
/// idle connection's task does not carry them.
const MAX_SLICES: usize = 128;

/// How the writer ended.
#[derive(Debug)]
pub enum WriterEnd {
    /// The queue closed; its Close frame was written.
    Closed,
    /// The socket failed or made no progress within the write timeout.
    Failed(io::Error),
}

/// Runs until the queue closes (then writes the Close frame and shuts the
/// sending side) or the socket fails (then closes the queue, which stops the
/// reader too). Either way it tells the queue it ended.
///
/// It lives as long as the connection, so its size is idle memory. The
/// writer is a hand-written state machine ([`Writer`]): an `async fn` kept
/// a slot for each await's future and the references held across it (320
/// bytes); this is 112. Timers are boxed and armed only when needed (rare).
pub fn run<W: AsyncWrite + Unpin>(
    io: W,
    queue: Rc<ClientQueue>,
    options: Rc<WriterOptions>,
) -> Writer<W> {
    Writer {
        io,
        queue,
        options,
        batch: VecDeque::new(),
        phase: Phase::Drain,
    }
}

pub struct Writer<W> {
    io: W,
    queue: Rc<ClientQueue>,
    /// The shard's (one for all its connections: 8 bytes here, not 40).
    options: Rc<WriterOptions>,
    /// Frames taken from the queue and not yet written.
    batch: VecDeque<Bytes>,
    phase: Phase,
}

/// Where the writer is.
enum Phase {
    /// Waiting for frames.
    Drain,
    /// Writing `batch`; the timer is armed once a write could not finish at
    /// once (most do, and a timer per write showed up in the profile).
    Write {
        drained: Drained,
        timer: Option<Pin<Box<Sleep>>>,
    },
    /// Spacing writes out (`limits.write_coalesce`): what arrives meanwhile
    /// goes in the next write.
    Coalesce(Pin<Box<Sleep>>),
    /// Sending the Close frame (what is left of it), then shutting the
    /// sending side.
    Close {
        frame: Bytes,
        timer: Option<Pin<Box<Sleep>>>,
    },
}

impl<W> Writer<W> {
    /// Lets the shard's fan-out write to `sink` (this writer's socket)
    /// while the writer waits for frames (`ClientQueue::flush`). Not with
    /// `limits.write_coalesce`: the writer spaces its writes out itself.
    pub fn write_through(&self, sink: Arc<dyn AsFd>) {
        if self.options.coalesce.is_zero() {
            self.queue.attach_sink(sink);
        }
    }
}

/// Nothing is written to the socket past the writer's end (the queue may
/// outlive it in the shard's rooms for a moment).
impl<W> Drop for Writer<W> {
    fn drop(&mut self) {
        self.queue.detach_writer();
    }
}

impl<W: AsyncWrite + Unpin> Future for Writer<W> {
    type Output = WriterEnd;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<WriterEnd> {
        let this = self.get_mut();
        let end = ready!(this.step(cx));
        if let WriterEnd::Failed(e) = &end {
            this.queue.close(if super::peer_gone(e) {
                CloseReason::PeerGone
            } else {
                CloseReason::WriteError
            });
        }
        this.queue.writer_ended();
        Poll::Ready(end)
    }
}

impl<W: AsyncWrite + Unpin> Writer<W> {
    fn step(&mut self, cx: &mut Context<'_>) -> Poll<WriterEnd> {
        let limit = self.options.write_timeout;
        loop {
            match &mut self.phase {
                Phase::Drain => {
                    let drained = ready!(self.queue.poll_drain(cx, &mut self.batch));
                    self.phase = Phase::Write {
                        drained,
                        timer: None,
                    };
                }
                Phase::Write { drained, timer } => {
                    let drained = *drained;
                    match poll_write_batch(&mut self.io, &mut self.batch, cx) {
                        Poll::Ready(Ok(())) => self.wrote(drained),
                        Poll::Ready(Err(e)) => return Poll::Ready(WriterEnd::Failed(e)),
                        Poll::Pending => return expire(timer, limit, cx).map(WriterEnd::Failed),
                    }
                }
                Phase::Coalesce(sleep) => {
                    ready!(sleep.as_mut().poll(cx));
                    self.phase = Phase::Drain;
                }
                Phase::Close { frame, timer } => {
                    return match poll_close(&mut self.io, frame, cx) {
                        Poll::Ready(Ok(())) => Poll::Ready(WriterEnd::Closed),
                        Poll::Ready(Err(e)) => Poll::Ready(WriterEnd::Failed(e)),
                        Poll::Pending => expire(timer, limit, cx).map(WriterEnd::Failed),
                    };
                }
            }
        }
    }

    /// A batch is written: bookkeeping, then the next phase.
    fn wrote(&mut self, drained: Drained) {
        self.queue.written();
        if self.queue.is_empty() {
            // Going idle: give the emptied buffer back (the queue frees its
            // own when the writer waits), so an idle connection keeps
            // neither buffer's capacity (measured: ~240 bytes per idle
            // connection after the greeting and presence burst). A busy
            // connection keeps both, with no allocation per write.
            self.batch = VecDeque::new();
        }
        if let Some(oldest) = drained.oldest {
            let waited = oldest.elapsed().as_secs_f64();
            self.options.latency.observe(waited);
        }
        let coalesce = self.options.coalesce;
        self.phase = match drained.state {
            State::Closing(reason) => Phase::Close {
                frame: frame::close(reason.code(), reason.text()),
                timer: None,
            },
            State::Open if !coalesce.is_zero() => {
                Phase::Coalesce(Box::pin(tokio::time::sleep(coalesce)))
            }
            State::Open => Phase::Drain,
        };
    }
}

/// Arms the write timer (once) and reports its expiry as the error.
fn expire(
    timer: &mut Option<Pin<Box<Sleep>>>,
    limit: Duration,
    cx: &mut Context<'_>,
) -> Poll<io::Error> {
    let timer = timer.get_or_insert_with(|| Box::pin(tokio::time::sleep(limit)));
    ready!(timer.as_mut().poll(cx));
    Poll::Ready(io::Error::new(
        io::ErrorKind::TimedOut,
        "write made no progress",
    ))
}

/// Writes what is left of the Close frame, then shuts the sending side.
fn poll_close<W: AsyncWrite + Unpin>(
    io: &mut W,
    frame: &mut Bytes,
    cx: &mut Context<'_>,
) -> Poll<io::Result<()>> {
    while !frame.is_empty() {
        let n = ready!(Pin::new(&mut *io).poll_write(cx, frame))?;
        if n == 0 {
            return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
        }
        frame.advance(n);
    }
    Pin::new(io).poll_shutdown(cx)
}

/// Writes and empties `batch` with as few `writev` calls as the socket
/// allows, then flushes.
fn poll_write_batch<W: AsyncWrite + Unpin>(
    io: &mut W,
    batch: &mut VecDeque<Bytes>,
    cx: &mut Context<'_>,
) -> Poll<io::Result<()>> {
    while !batch.is_empty() {
        // Most writes carry a frame or two: their slices are built in a small
        // array (filling all 128 cost 2 KiB of stores per write, 1-2 % of
        // the user-space time per delivery in the profile).
        let written = if batch.len() <= FEW_SLICES {
            ready!(write_some::<W, FEW_SLICES>(io, batch, cx))
        } else {
            ready!(write_some::<W, MAX_SLICES>(io, batch, cx))
        }?;
        if written == 0 {
            return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
        }
        advance(batch, written);
    }
    Pin::new(io).poll_flush(cx)
}

/// A small write's slices (see [`poll_write_batch`]).
const FEW_SLICES: usize = 4;

/// One `writev` of the first `N` frames at most.
fn write_some<W: AsyncWrite + Unpin, const N: usize>(
    io: &mut W,
    batch: &VecDeque<Bytes>,
    cx: &mut Context<'_>,
) -> Poll<io::Result<usize>> {
    let (slices, n) = slices::<N>(batch);
    Pin::new(io).poll_write_vectored(cx, &slices[..n])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::queue::Limits;
    use std::future::Future;
    use tokio::io::AsyncReadExt;

    #[test]
    fn advance_handles_partial_frames() {
        let mut batch: VecDeque<Bytes> = ["abc", "de", "fgh"]
            .iter()
            .map(|s| Bytes::from_static(s.as_bytes()))
            .collect();
        advance(&mut batch, 4);
        assert_eq!(
            batch,
            [Bytes::from_static(b"e"), Bytes::from_static(b"fgh")]
        );
        advance(&mut batch, 4);
        assert!(batch.is_empty());
    }

    #[tokio::test]
    async fn flushes_queue_then_close_frame() {
        let (client, server) = tokio::io::duplex(64);
        let queue = Rc::new(ClientQueue::new(Limits {
            max_messages: 1000,
            max_bytes: 1 << 20,
            slow_timeout: Duration::from_secs(5),
        }));
        for i in 0..300u32 {
            queue
                .push(
                    Bytes::from(i.to_be_bytes().to_vec()),
                    std::time::Instant::now(),
                )
                .unwrap();
        }
        queue.close(CloseReason::Shutdown);
        let local = tokio::task::LocalSet::new();
        let options = Rc::new(WriterOptions {
            write_timeout: Duration::from_secs(5),
            latency: crate::metrics::ShardedHistogram::doubling(0.1, 1).local(),
            coalesce: Duration::ZERO,
        });
        let writer = local.spawn_local(run(server, queue, options));
        let reader = async move {
            let mut client = client;
            let mut all = Vec::new();
            client.read_to_end(&mut all).await.unwrap();
            all
        };
        let (all, end) = local
            .run_until(async { tokio::join!(reader, writer) })
            .await;
        assert!(matches!(end.unwrap(), WriterEnd::Closed));
        let expected: Vec<u8> = (0..300u32).flat_map(|i| i.to_be_bytes()).collect();
        assert_eq!(&all[..1200], &expected[..]);
        assert_eq!(
            &all[1200..],
            &frame::close(1001, "server shutting down")[..]
        );
    }

    /// A writer on a real loopback socket, polled by hand with a waker
    /// that counts its wake-ups; and the client's end.
    struct Rig {
        queue: Rc<ClientQueue>,
        writer: Writer<super::super::socket::SocketWrite>,
        client: tokio::net::TcpStream,
        wakes: Arc<Wakes>,
        latency: crate::metrics::LocalHistogram,
    }

    #[derive(Default)]
    struct Wakes(std::sync::atomic::AtomicUsize);

    impl std::task::Wake for Wakes {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
    }

    impl Rig {
        async fn new(send_buffer: Option<usize>) -> Rig {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let client = tokio::net::TcpStream::connect(listener.local_addr().unwrap())
                .await
                .unwrap();
            let (server, _) = listener.accept().await.unwrap();
            if let Some(size) = send_buffer {
                socket2::SockRef::from(&server)
                    .set_send_buffer_size(size)
                    .unwrap();
            }
            let queue = Rc::new(ClientQueue::new(Limits {
                max_messages: 1000,
                max_bytes: 64 << 20,
                slow_timeout: Duration::from_secs(5),
            }));
            let histogram = crate::metrics::ShardedHistogram::doubling(0.000_01, 18);
            let latency = histogram.local();
            let options = Rc::new(WriterOptions {
                write_timeout: Duration::from_secs(5),
                latency: histogram.local(),
                coalesce: Duration::ZERO,
            });
            let shared = Arc::new(super::super::task::Shared::new(server));
            let writer = run(
                super::super::socket::SocketWrite(shared.clone()),
                queue.clone(),
                options,
            );
            writer.write_through(shared);
            Rig {
                queue,
                writer,
                client,
                wakes: Arc::default(),
                latency,
            }
        }

        fn poll_writer(&mut self) -> Poll<WriterEnd> {
            let waker = std::task::Waker::from(self.wakes.clone());
            Pin::new(&mut self.writer).poll(&mut Context::from_waker(&waker))
        }

        fn wakes(&self) -> usize {
            self.wakes.0.load(std::sync::atomic::Ordering::Relaxed)
        }

        async fn read_exactly(&mut self, n: usize) -> Vec<u8> {
            let mut got = vec![0; n];
            tokio::time::timeout(Duration::from_secs(10), self.client.read_exact(&mut got))
                .await
                .expect("the client got its bytes")
                .unwrap();
            got
        }
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_parked_writers_frames_are_written_through_without_waking_it() {
        let mut rig = Rig::new(None).await;
        assert!(rig.poll_writer().is_pending(), "parked: nothing queued");
        let now = std::time::Instant::now();
        assert_eq!(
            rig.queue.push_deferred(Bytes::from_static(b"one,"), now),
            Ok((1, true))
        );
        // A second frame before the flush goes in the same write.
        assert_eq!(
            rig.queue.push_deferred(Bytes::from_static(b"two"), now),
            Ok((2, false))
        );
        rig.queue.flush(&rig.latency, std::time::Instant::now());
        assert_eq!(rig.read_exactly(7).await, b"one,two");
        assert!(rig.queue.is_empty());
        assert_eq!(rig.wakes(), 0, "the writer was never woken");
        // Still parked, and the next one goes the same way.
        assert!(rig.poll_writer().is_pending());
        assert_eq!(
            rig.queue.push_deferred(Bytes::from_static(b"3"), now),
            Ok((1, true))
        );
        rig.queue.flush(&rig.latency, std::time::Instant::now());
        assert_eq!(rig.read_exactly(1).await, b"3");
        assert_eq!(rig.wakes(), 0);
    }

    #[tokio::test(flavor = "current_thread")]
    async fn what_the_socket_does_not_take_is_left_to_the_writer_in_order() {
        let mut rig = Rig::new(Some(4096)).await;
        assert!(rig.poll_writer().is_pending());
        let big: Bytes = (0..2u32 << 20)
            .map(|i| (i % 251) as u8)
            .collect::<Vec<u8>>()
            .into();
        let now = std::time::Instant::now();
        assert_eq!(rig.queue.push_deferred(big.clone(), now), Ok((1, true)));
        rig.queue.flush(&rig.latency, std::time::Instant::now());
        assert_eq!(rig.wakes(), 1, "a partial write wakes the writer");
        assert!(!rig.queue.is_empty(), "the rest is still queued");
        // Woken, it is not written through: it drains the rest itself.
        assert_eq!(
            rig.queue.push_deferred(Bytes::from_static(b"tail"), now),
            Ok((2, false))
        );
        rig.queue.flush(&rig.latency, std::time::Instant::now());
        assert_eq!(rig.wakes(), 1);
        // The writer finishes in order: the rest, the tail, then the Close.
        rig.queue.close(CloseReason::Shutdown);
        let Rig {
            writer, mut client, ..
        } = rig;
        let reader = async move {
            let mut got = Vec::new();
            client.read_to_end(&mut got).await.unwrap();
            got
        };
        let (end, got) = tokio::time::timeout(Duration::from_secs(20), async {
            tokio::join!(writer, reader)
        })
        .await
        .expect("the writer makes progress");
        assert!(matches!(end, WriterEnd::Closed));
        let expected = [
            &big[..],
            b"tail",
            &frame::close(1001, "server shutting down"),
        ]
        .concat();
        assert!(got == expected, "every byte once, in order");
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_backlog_of_more_than_a_few_frames_is_left_to_the_writer() {
        let mut rig = Rig::new(None).await;
        assert!(rig.poll_writer().is_pending());
        let now = std::time::Instant::now();
        for i in 0..9u8 {
            rig.queue
                .push_deferred(Bytes::from(vec![b'a' + i]), now)
                .unwrap();
        }
        rig.queue.flush(&rig.latency, std::time::Instant::now());
        assert_eq!(rig.wakes(), 1, "woken for the backlog");
        assert_eq!(rig.queue.len(), 9, "nothing written past it");
        assert!(rig.poll_writer().is_pending());
        assert_eq!(rig.read_exactly(9).await, b"abcdefghi");
    }

    #[tokio::test(flavor = "current_thread")]
    async fn nothing_is_written_through_past_the_writer() {
        let mut rig = Rig::new(None).await;
        let now = std::time::Instant::now();
        // Not parked yet (never polled): woken the usual way.
        assert_eq!(
            rig.queue.push_deferred(Bytes::from_static(b"a"), now),
            Ok((1, false))
        );
        assert!(rig.poll_writer().is_pending());
        assert_eq!(rig.read_exactly(1).await, b"a");
        // Parked, then gone: a later push is not deferred to a flush, and a
        // flush writes nothing.
        let Rig {
            queue,
            writer,
            mut client,
            latency,
            ..
        } = rig;
        drop(writer);
        assert_eq!(
            queue.push_deferred(Bytes::from_static(b"b"), now),
            Ok((1, false))
        );
        queue.flush(&latency, std::time::Instant::now());
        let mut buf = [0u8; 1];
        let read = tokio::time::timeout(Duration::from_millis(200), client.read(&mut buf)).await;
        assert!(
            matches!(read, Err(_) | Ok(Ok(0))),
            "nothing after the writer: {read:?}"
        );
    }
}
