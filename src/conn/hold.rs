//! Holds back a `101 Switching Protocols` response so that it leaves in the
//! same write as the connection's first frame (the greeting).
//!
//! Most plain upgrades are answered by `http::head`, which queues its own
//! 101 ahead of the greeting. This covers the plain upgrades hyper answers
//! (a head over `http::head::MAX_HEAD`, or a second request on a keep-alive
//! connection): hyper writes and flushes the 101 itself, and the writer
//! would then send the greeting in a second send, which on loopback also
//! pays for the receiver's TCP work. This wrapper sits between hyper and the
//! socket: everything else passes through, a 101 is kept, and the
//! connection takes it back ([`HoldUpgrade::into_parts`]) and queues it
//! ahead of its first frame.

use bytes::{Bytes, BytesMut};
use std::io::{self, IoSlice};
use std::pin::Pin;
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// How hyper starts a 101 response.
const SWITCHING: &[u8] = b"HTTP/1.1 101 ";

pub struct HoldUpgrade<T> {
    io: T,
    /// The 101 response, once one was written.
    held: Option<BytesMut>,
}

impl<T> HoldUpgrade<T> {
    pub fn new(io: T) -> Self {
        HoldUpgrade { io, held: None }
    }

    /// The socket, and the held response (empty if there was none).
    pub fn into_parts(self) -> (T, Bytes) {
        (self.io, self.held.map_or_else(Bytes::new, BytesMut::freeze))
    }

    /// Whether this write is (part of) a 101 response; starts holding.
    fn holds(&mut self, first: &[u8]) -> Option<&mut BytesMut> {
        if self.held.is_none() && first.starts_with(SWITCHING) {
            self.held = Some(BytesMut::with_capacity(256));
        }
        self.held.as_mut()
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for HoldUpgrade<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for HoldUpgrade<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        match this.holds(buf) {
            Some(held) => {
                held.extend_from_slice(buf);
                Poll::Ready(Ok(buf.len()))
            }
            None => Pin::new(&mut this.io).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let first = bufs
            .iter()
            .find(|b| !b.is_empty())
            .map_or(&[][..], |b| &b[..]);
        match this.holds(first) {
            Some(held) => {
                let mut n = 0;
                for b in bufs {
                    held.extend_from_slice(b);
                    n += b.len();
                }
                Poll::Ready(Ok(n))
            }
            None => Pin::new(&mut this.io).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.held.is_some() {
            // Held on purpose: the connection sends it with its first frame.
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut this.io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        // Shut down without handing over (the upgrade was abandoned): send
        // what was held first, so the peer sees the response.
        let this = self.get_mut();
        while let Some(held) = this.held.as_mut().filter(|h| !h.is_empty()) {
            let n = std::task::ready!(Pin::new(&mut this.io).poll_write(cx, held))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            let _ = held.split_to(n);
        }
        Pin::new(&mut this.io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn holds_a_101_and_passes_the_rest() {
        let (client, server) = tokio::io::duplex(1024);
        let mut io = HoldUpgrade::new(server);
        io.write_all(b"HTTP/1.1 200 OK\r\n\r\n").await.unwrap();
        io.flush().await.unwrap();
        io.write_all(b"HTTP/1.1 101 Switching Protocols\r\n")
            .await
            .unwrap();
        io.write_all(b"Upgrade: websocket\r\n\r\n").await.unwrap();
        io.flush().await.unwrap();
        let (server, held) = io.into_parts();
        assert_eq!(
            &held[..],
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n"
        );
        drop(server);
        let mut got = Vec::new();
        let mut client = client;
        client.read_to_end(&mut got).await.unwrap();
        assert_eq!(got, b"HTTP/1.1 200 OK\r\n\r\n");
    }

    #[tokio::test]
    async fn shutdown_sends_what_was_held() {
        let (mut client, server) = tokio::io::duplex(1024);
        let mut io = HoldUpgrade::new(server);
        io.write_all(b"HTTP/1.1 101 Switching Protocols\r\n\r\n")
            .await
            .unwrap();
        io.shutdown().await.unwrap();
        let mut got = Vec::new();
        client.read_to_end(&mut got).await.unwrap();
        assert_eq!(got, b"HTTP/1.1 101 Switching Protocols\r\n\r\n");
    }
}
