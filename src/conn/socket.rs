//! A plain connection's socket, shared by its read side and its writer.
//!
//! tokio's `into_split` puts the stream in an `Arc` of its own; the
//! connection's task also needs a shared flag for its read side
//! ([`Shared`]). Here both are one allocation: each half holds an `Arc` of
//! the same [`Shared`] and reaches the socket through it. (40 bytes less per
//! connection, and the flag the task checks on every wake-up shares a
//! cache line with the socket the writer touches anyway.)

use bytes::BytesMut;
use std::future::Future;
use std::io::{self, IoSlice};
use std::os::fd::{AsFd, BorrowedFd};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll, Waker};
use tokio::io::{AsyncRead, AsyncWrite, Interest, ReadBuf};
use tokio::net::TcpStream;

use super::task::Shared;
use crate::ws::ReadSource;

/// The read side's handle on the shared socket.
pub struct SocketRead(pub Arc<Shared<TcpStream>>);

/// The writer's handle on the shared socket.
pub struct SocketWrite(pub Arc<Shared<TcpStream>>);

impl SocketRead {
    fn stream(&self) -> &TcpStream {
        &self.0.io
    }
}

impl SocketWrite {
    fn stream(&self) -> &TcpStream {
        &self.0.io
    }
}

/// The read side waits with a waker that holds the [`Shared`] (and so the
/// socket); tokio keeps it in the socket's own registration. Left there, it
/// would keep the socket alive forever: a connection the server closed while
/// its read side still waited (a client that never answered the Close)
/// leaked its socket and memory (test: `lifecycle::a_closed_connection_
/// frees_its_socket`). Going, the read side swaps in a waker that holds
/// nothing (no-op if the socket is ready: then nothing is stored).
impl Drop for SocketRead {
    fn drop(&mut self) {
        let stream = self.stream();
        let swap = std::future::poll_fn(|cx| {
            let _ = stream.poll_read_ready(cx);
            Poll::Ready(())
        });
        // Outside tokio's cooperative budget: with the task's budget spent,
        // the poll would return before it replaced the waker.
        let swap = std::pin::pin!(tokio::task::unconstrained(swap));
        let _ = swap.poll(&mut Context::from_waker(Waker::noop()));
    }
}

/// One non-blocking read of at most `spare` bytes (`read` does it). A read
/// that returned fewer drained the socket, so its read readiness is cleared
/// then, as tokio's own `TcpStream::poll_read` does: the next wait goes
/// straight to epoll. Kept set, the next read would be a `recv` that finds
/// nothing (and the read side would take and give back a buffer for it):
/// one wasted syscall per upgrade and per client message. (Cleared inside
/// `try_io`, against the readiness seen before the read: an event that came
/// in meanwhile is not lost.)
pub fn read_drained(
    stream: &TcpStream,
    spare: usize,
    read: impl FnOnce(&TcpStream) -> io::Result<usize>,
) -> io::Result<usize> {
    let mut result = Err(io::ErrorKind::WouldBlock.into());
    let _ = stream.try_io(Interest::READABLE, || {
        result = read(stream);
        match &result {
            Ok(n) if *n > 0 && *n < spare => Err(io::ErrorKind::WouldBlock.into()),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                Err(io::ErrorKind::WouldBlock.into())
            }
            _ => Ok(()),
        }
    });
    result
}

impl AsyncRead for SocketRead {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let stream = self.stream();
        loop {
            ready!(stream.poll_read_ready(cx))?;
            let unfilled = buf.initialize_unfilled();
            let spare = unfilled.len();
            match read_drained(stream, spare, |s| s.try_read(unfilled)) {
                Ok(n) => {
                    buf.advance(n);
                    return Poll::Ready(Ok(()));
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
    }
}

impl ReadSource for SocketRead {
    /// Waits through the socket's single read-waker slot (the one
    /// `poll_read` uses) rather than tokio's `readable()` waiter list: that
    /// slot may still hold the waker of an HTTP task that read the upgrade
    /// request (hyper's), which keeps the finished task's memory (~900
    /// bytes) alive until something replaces it. A readiness flag left over
    /// from the handshake can be stale, so the read is a non-blocking attempt
    /// and a buffer taken for nothing is given back before waiting again.
    /// (Both found with valgrind massif on 5000 idle connections.)
    fn poll_read_when_ready(
        &mut self,
        cx: &mut Context<'_>,
        buf: &mut BytesMut,
        reserve: usize,
    ) -> Poll<io::Result<usize>> {
        let stream = self.stream();
        loop {
            ready!(stream.poll_read_ready(cx))?;
            buf.reserve(reserve);
            let spare = buf.capacity() - buf.len();
            match read_drained(stream, spare, |s| s.try_read_buf(buf)) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => *buf = BytesMut::new(),
                done => return Poll::Ready(done),
            }
        }
    }
}

/// The shard's fan-out writes through to a parked writer's socket
/// (`ClientQueue::flush`), which the queue holds by this.
impl AsFd for Shared<TcpStream> {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.io.as_fd()
    }
}

impl AsyncWrite for SocketWrite {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.poll_write_vectored(cx, &[IoSlice::new(buf)])
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let stream = self.stream();
        loop {
            ready!(stream.poll_write_ready(cx))?;
            match stream.try_write_vectored(bufs) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                done => return Poll::Ready(done),
            }
        }
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    /// Nothing is buffered here.
    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    /// Ends the sending side (FIN); the read side stays open for the
    /// client's Close.
    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(socket2::SockRef::from(self.stream()).shutdown(std::net::Shutdown::Write))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;

    /// A connected loopback pair: (client, server).
    async fn pair() -> (TcpStream, TcpStream) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (server, _) = listener.accept().await.unwrap();
        (client, server)
    }

    fn read_ready(stream: &TcpStream) -> bool {
        let mut cx = Context::from_waker(Waker::noop());
        stream.poll_read_ready(&mut cx).is_ready()
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_short_read_clears_readiness_and_new_data_sets_it_again() {
        let (mut client, server) = pair().await;

        client.write_all(b"hello").await.unwrap();
        server.readable().await.unwrap();
        let mut buf = BytesMut::with_capacity(64);
        let spare = buf.capacity();
        let n = read_drained(&server, spare, |s| s.try_read_buf(&mut buf)).unwrap();
        assert_eq!(&buf[..n], b"hello");
        // Drained: no readiness left for a recv that would find nothing.
        assert!(!read_ready(&server));

        // The next bytes are seen (the clear lost no event).
        client.write_all(b"again").await.unwrap();
        tokio::time::timeout(std::time::Duration::from_secs(5), server.readable())
            .await
            .expect("readable again")
            .unwrap();
        let mut more = [0u8; 64];
        let n = read_drained(&server, more.len(), |s| s.try_read(&mut more)).unwrap();
        assert_eq!(&more[..n], b"again");
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_full_read_keeps_readiness_for_the_rest() {
        let (mut client, server) = pair().await;

        client.write_all(b"0123456789").await.unwrap();
        server.readable().await.unwrap();
        // Wait until all ten bytes are there, so the first read fills its 4.
        while server.peek(&mut [0u8; 16]).await.unwrap() < 10 {}
        let mut first = [0u8; 4];
        let n = read_drained(&server, first.len(), |s| s.try_read(&mut first)).unwrap();
        assert_eq!(n, 4);
        // The buffer was filled: more may be waiting, so readiness stays.
        assert!(read_ready(&server));
        let mut rest = [0u8; 64];
        let n = read_drained(&server, rest.len(), |s| s.try_read(&mut rest)).unwrap();
        assert_eq!(&rest[..n], b"456789");
        assert!(!read_ready(&server));
    }
}
