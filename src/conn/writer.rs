//! The connection's writer task: everything queued goes out in one vectored
//! write per wake-up, never a flush per message.

use bytes::{Buf, Bytes};
use prometheus_client::metrics::histogram::Histogram;
use std::collections::VecDeque;
use std::future::{poll_fn, Future};
use std::io::{self, IoSlice};
use std::pin::Pin;
use std::rc::Rc;
use std::task::{ready, Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncWrite, AsyncWriteExt};

use crate::queue::{ClientQueue, CloseReason, State};
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

/// What the writer needs besides the socket and the queue.
pub struct WriterOptions {
    /// A write that makes no progress this long fails the connection.
    pub write_timeout: Duration,
    /// Gets, per write, the time since the oldest written frame arrived.
    pub latency: Histogram,
    /// Least time between two writes of one connection (0: write at once).
    pub coalesce: Duration,
}

/// Runs until the queue closes (then writes the Close frame and shuts the
/// sending side) or the socket fails (then closes the queue, which stops the
/// reader too).
///
/// The task lives as long as the connection, so its size is idle memory:
/// the state is one struct used in place, the write step is a plain poll
/// function, and timers and the close path are boxed (they are rare).
pub fn run<W: AsyncWrite + Unpin>(
    io: W,
    queue: Rc<ClientQueue>,
    options: WriterOptions,
) -> impl Future<Output = WriterEnd> {
    let mut writer = Writer {
        io,
        queue,
        options,
        batch: VecDeque::new(),
    };
    // Not an `async fn` taking the writer: that would hold it twice (its
    // argument slot beside the moved copy); the block captures it once.
    async move {
        let end = writer.write_until_closed().await;
        if let WriterEnd::Failed(e) = &end {
            writer.queue.close(if super::peer_gone(e) {
                CloseReason::PeerGone
            } else {
                CloseReason::WriteError
            });
        }
        end
    }
}

struct Writer<W> {
    io: W,
    queue: Rc<ClientQueue>,
    options: WriterOptions,
    /// Frames taken from the queue and not yet written.
    batch: VecDeque<Bytes>,
}

impl<W: AsyncWrite + Unpin> Writer<W> {
    async fn write_until_closed(&mut self) -> WriterEnd {
        let Writer {
            io,
            queue,
            options,
            batch,
        } = self;
        loop {
            let drained = poll_fn(|cx| queue.poll_drain(cx, batch)).await;
            let written = with_timeout(
                options.write_timeout,
                poll_fn(|cx| poll_write_batch(io, batch, cx)),
            )
            .await;
            if let Err(e) = written {
                return WriterEnd::Failed(e);
            }
            queue.written();
            if queue.is_empty() {
                // Going idle: give the emptied buffer back (the queue frees
                // its own when the writer waits), so an idle connection
                // keeps neither buffer's capacity (measured: ~240 bytes per
                // idle connection after the greeting and presence burst). A
                // busy connection keeps both, with no allocation per write.
                *batch = VecDeque::new();
            }
            if let Some(oldest) = drained.oldest {
                options.latency.observe(oldest.elapsed().as_secs_f64());
            }
            if drained.state == State::Open && !options.coalesce.is_zero() {
                // Space writes out: what arrives meanwhile goes in the next one.
                Box::pin(tokio::time::sleep(options.coalesce)).await;
            }
            if let State::Closing(reason) = drained.state {
                let close = frame::close(reason.code(), reason.text());
                let sent = with_timeout(
                    options.write_timeout,
                    Box::pin(async {
                        io.write_all(&close).await?;
                        io.shutdown().await
                    }),
                )
                .await;
                return match sent {
                    Ok(()) => WriterEnd::Closed,
                    Err(e) => WriterEnd::Failed(e),
                };
            }
        }
    }
}

/// Runs `f` with a time limit, arming the timer only if `f` does not finish
/// on its first poll: most writes complete at once, and a timer per write
/// showed up in the profile.
async fn with_timeout<F: Future<Output = io::Result<()>> + Unpin>(
    limit: Duration,
    mut f: F,
) -> io::Result<()> {
    if let Poll::Ready(done) = poll_fn(|cx| Poll::Ready(Pin::new(&mut f).poll(cx))).await {
        return done;
    }
    // Boxed: a timer inline would enlarge every connection's writer task.
    let mut deadline = Box::pin(tokio::time::sleep(limit));
    tokio::select! {
        biased;
        done = &mut f => done,
        _ = &mut deadline => Err(io::Error::new(
            io::ErrorKind::TimedOut,
            "write made no progress",
        )),
    }
}

/// Writes and empties `batch` with as few `writev` calls as the socket
/// allows, then flushes.
fn poll_write_batch<W: AsyncWrite + Unpin>(
    io: &mut W,
    batch: &mut VecDeque<Bytes>,
    cx: &mut Context<'_>,
) -> Poll<io::Result<()>> {
    while !batch.is_empty() {
        let mut slices = [IoSlice::new(&[]); MAX_SLICES];
        let mut n = 0;
        for b in batch.iter().take(MAX_SLICES) {
            slices[n] = IoSlice::new(b);
            n += 1;
        }
        let written = ready!(Pin::new(&mut *io).poll_write_vectored(cx, &slices[..n]))?;
        if written == 0 {
            return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
        }
        advance(batch, written);
    }
    Pin::new(io).poll_flush(cx)
}

/// Drops fully written frames and trims a partly written one.
fn advance(batch: &mut VecDeque<Bytes>, mut written: usize) {
    while written > 0 {
        let front = batch.front_mut().expect("wrote more than was queued");
        if written >= front.len() {
            written -= front.len();
            batch.pop_front();
        } else {
            front.advance(written);
            written = 0;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::queue::Limits;
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
        let latency = Histogram::new([0.1]);
        let options = WriterOptions {
            write_timeout: Duration::from_secs(5),
            latency,
            coalesce: Duration::ZERO,
        };
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
}
