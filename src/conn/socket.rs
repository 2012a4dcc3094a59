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
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll, Waker};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
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

impl AsyncRead for SocketRead {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let stream = self.stream();
        loop {
            ready!(stream.poll_read_ready(cx))?;
            match stream.try_read(buf.initialize_unfilled()) {
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
            match stream.try_read_buf(buf) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => *buf = BytesMut::new(),
                done => return Poll::Ready(done),
            }
        }
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
