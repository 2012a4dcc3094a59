//! A request body that, dropped before its end, is still read to its end
//! (bounded): a lingering close.
//!
//! Why: chatd answers some requests before their body has arrived (a `413`
//! for an upload over `files.max_size`). If the connection then closes with
//! the client's data still unread, the kernel answers it with a reset, and a
//! client that sends its whole body before reading (most HTTP libraries,
//! every browser's `fetch`) sees the reset, never the answer. So the rest of
//! the body is read and dropped in the background for at most
//! `server.linger_time` and `server.linger_bytes`, while hyper sends the
//! answer; the connection closes after that (the answer says
//! `Connection: close`).

use bytes::Bytes;
use futures_util::Stream;
use http_body_util::BodyExt;
use hyper::body::{Body as _, Incoming};
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

/// How much of an abandoned body is still read.
#[derive(Debug, Clone, Copy)]
pub struct Linger {
    pub time: Duration,
    pub bytes: u64,
}

/// The data of a request body; if dropped before the body ended, the rest
/// is read and dropped in the background (within [`Linger`]).
pub struct LingeringBody {
    body: Option<Incoming>,
    linger: Linger,
    /// The body ended (or failed): nothing left to read.
    done: bool,
}

impl LingeringBody {
    pub fn new(body: Incoming, linger: Linger) -> LingeringBody {
        LingeringBody {
            body: Some(body),
            linger,
            done: false,
        }
    }
}

impl Stream for LingeringBody {
    type Item = Result<Bytes, hyper::Error>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        let Some(body) = this.body.as_mut() else {
            return Poll::Ready(None);
        };
        loop {
            match Pin::new(&mut *body).poll_frame(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(None) => {
                    this.done = true;
                    return Poll::Ready(None);
                }
                Poll::Ready(Some(Err(e))) => {
                    this.done = true;
                    return Poll::Ready(Some(Err(e)));
                }
                // Trailers are not data: read past them.
                Poll::Ready(Some(Ok(frame))) => {
                    if let Ok(data) = frame.into_data() {
                        return Poll::Ready(Some(Ok(data)));
                    }
                }
            }
        }
    }
}

impl Drop for LingeringBody {
    fn drop(&mut self) {
        let (Some(body), false) = (self.body.take(), self.done) else {
            return;
        };
        // Outside a runtime (never, while serving) the body just goes.
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        runtime.spawn(drain(body, self.linger));
    }
}

/// Reads and drops `body` until it ends, fails, or passes `linger`'s bounds.
async fn drain(mut body: Incoming, linger: Linger) {
    let mut read = 0u64;
    let reading = async {
        while let Some(Ok(frame)) = body.frame().await {
            if let Some(data) = frame.data_ref() {
                read += data.len() as u64;
                if read > linger.bytes {
                    return;
                }
            }
        }
    };
    let _ = tokio::time::timeout(linger.time, reading).await;
}
