//! Reading client frames: header checks, unmasking, fragment reassembly with a
//! limit on the whole message, UTF-8 and close-frame validation.
//!
//! The reader is written here rather than taken from `fastwebsockets` because
//! the server needs three things that crate's read half does not give: a limit
//! on the *assembled* message (its fragment collector has none), a read half
//! that never writes (writes go through the connection's queue so that they are
//! batched and ordered with broadcasts), and no buffer held by an idle socket.

use bytes::{Buf, Bytes, BytesMut};
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};
use tokio::io::AsyncRead;

use super::deflate::{self, InflateError};
use super::frame::{OpCode, RSV1};

/// How much to ask the socket for when the buffer has no room.
const READ_CHUNK: usize = 4096;

/// Most buffer grown ahead of data for a frame that is not all there yet. A
/// frame's announced length is never reserved up front: 200 connections
/// announcing 16 MiB frames used to reserve 3.2 GB before sending a byte.
const MAX_READ_AHEAD: usize = 64 * 1024;

/// One complete message or control frame from the client.
#[derive(Debug, PartialEq, Eq)]
pub enum Message {
    Text(Bytes),
    Binary(Bytes),
    Ping(Bytes),
    Pong(Bytes),
    /// The peer's Close; `None` when it carried no status code.
    Close(Option<u16>),
}

/// Why reading stopped. Each variant maps to the close code the server sends.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("connection closed by peer without a close frame")]
    Eof,
    #[error("i/o error: {0}")]
    Io(#[from] io::Error),
    #[error("protocol error: {0}")]
    Protocol(&'static str),
    #[error("invalid UTF-8 in a text message or close reason")]
    InvalidUtf8,
    #[error("message larger than {0} bytes")]
    TooBig(usize),
}

/// A source that can wait for input before any buffer is committed to it, so
/// that thousands of idle connections do not each hold a read buffer.
pub trait ReadSource: AsyncRead + Unpin {
    /// Reads into `buf` once input is there, taking `reserve` bytes of
    /// capacity only then. The default reserves first and reads: right for
    /// sources (TLS) that cannot report readiness on their own.
    fn poll_read_when_ready(
        &mut self,
        cx: &mut Context<'_>,
        buf: &mut BytesMut,
        reserve: usize,
    ) -> Poll<io::Result<usize>> {
        buf.reserve(reserve);
        tokio_util::io::poll_read_buf(Pin::new(self), cx, buf)
    }
}

impl<T: AsyncRead + Unpin> ReadSource for tokio::io::ReadHalf<T> {}

/// In-memory input (the fuzz targets).
impl ReadSource for &[u8] {}

/// A fragmented data message being reassembled.
struct Partial {
    opcode: OpCode,
    /// Its first frame had RSV1 (permessage-deflate): inflate when complete.
    compressed: bool,
    data: BytesMut,
}

struct RawFrame {
    fin: bool,
    opcode: OpCode,
    compressed: bool,
    payload: Bytes,
}

pub struct FrameReader<R> {
    io: R,
    buf: BytesMut,
    /// (u32, like `missing`: 8 bytes less in every connection's task; a
    /// limit over 4 GiB is taken as 4 GiB.)
    max_message: u32,
    /// A fragmented message being assembled (boxed: rare, and the reader
    /// lives in every connection's task).
    partial: Option<Box<Partial>>,
    /// Bytes still missing from the frame at the front of `buf`.
    missing: u32,
    /// permessage-deflate was negotiated: RSV1 on a message's first frame
    /// means it is compressed.
    inflate: bool,
}

impl<R: ReadSource> FrameReader<R> {
    /// `initial` holds bytes already read past the HTTP upgrade request;
    /// `inflate`: the connection negotiated permessage-deflate.
    pub fn new(io: R, initial: Bytes, max_message: usize, inflate: bool) -> Self {
        FrameReader {
            io,
            buf: BytesMut::from(&initial[..]),
            max_message: u32::try_from(max_message).unwrap_or(u32::MAX),
            partial: None,
            missing: 0,
            inflate,
        }
    }

    /// The socket, for draining after a close.
    pub fn into_inner(self) -> R {
        self.io
    }

    /// Reads until one message or control frame is complete.
    pub fn next(&mut self) -> impl Future<Output = Result<Message, ReadError>> + '_ {
        std::future::poll_fn(move |cx| self.poll_next(cx))
    }

    /// [`FrameReader::next`] as a poll function: what the connection's read
    /// loop waits on keeps no future of its own (idle memory), only this
    /// reader's fields.
    pub fn poll_next(&mut self, cx: &mut Context<'_>) -> Poll<Result<Message, ReadError>> {
        loop {
            if let Some(msg) = self.try_parse()? {
                return Poll::Ready(Ok(msg));
            }
            let read = if self.buf.is_empty() && self.partial.is_none() {
                // Idle: give the (possibly large) buffer back before waiting.
                self.buf = BytesMut::new();
                ready!(self.io.poll_read_when_ready(cx, &mut self.buf, READ_CHUNK))?
            } else {
                // Grow with the data (the allocator doubles), never by what a
                // header announces.
                let ahead = (self.missing as usize).clamp(READ_CHUNK, MAX_READ_AHEAD);
                if self.buf.capacity() - self.buf.len() < ahead / 4 {
                    self.buf.reserve(ahead);
                }
                ready!(tokio_util::io::poll_read_buf(
                    Pin::new(&mut self.io),
                    cx,
                    &mut self.buf
                ))?
            };
            if read == 0 {
                return Poll::Ready(Err(ReadError::Eof));
            }
        }
    }

    fn try_parse(&mut self) -> Result<Option<Message>, ReadError> {
        while let Some(frame) = self.parse_frame()? {
            match frame.opcode {
                OpCode::Ping => return Ok(Some(Message::Ping(frame.payload))),
                OpCode::Pong => return Ok(Some(Message::Pong(frame.payload))),
                OpCode::Close => return parse_close(&frame.payload).map(Some),
                OpCode::Text | OpCode::Binary => {
                    if self.partial.is_some() {
                        return Err(ReadError::Protocol(
                            "new data frame inside a fragmented message",
                        ));
                    }
                    if frame.fin {
                        return self
                            .finish(frame.opcode, frame.compressed, frame.payload)
                            .map(Some);
                    }
                    let mut data = BytesMut::with_capacity(frame.payload.len() * 2);
                    data.extend_from_slice(&frame.payload);
                    self.partial = Some(Box::new(Partial {
                        opcode: frame.opcode,
                        compressed: frame.compressed,
                        data,
                    }));
                }
                OpCode::Continuation => {
                    let Some(partial) = self.partial.as_mut() else {
                        return Err(ReadError::Protocol(
                            "continuation frame without a message to continue",
                        ));
                    };
                    partial.data.extend_from_slice(&frame.payload);
                    if frame.fin {
                        let p = self.partial.take().expect("checked above");
                        return self
                            .finish(p.opcode, p.compressed, p.data.freeze())
                            .map(Some);
                    }
                }
            }
        }
        Ok(None)
    }

    /// Parses one frame from the buffer, or `None` if it is not all there yet.
    /// Size and header checks happen before the payload is awaited, so an
    /// oversize frame is refused without buffering it.
    fn parse_frame(&mut self) -> Result<Option<RawFrame>, ReadError> {
        let buf = &self.buf;
        if buf.len() < 2 {
            return Ok(None);
        }
        let (b0, b1) = (buf[0], buf[1]);
        let compressed = b0 & RSV1 != 0;
        if b0 & 0x30 != 0 || (compressed && !self.inflate) {
            return Err(ReadError::Protocol(
                "reserved bits set without a negotiated extension",
            ));
        }
        let fin = b0 & 0x80 != 0;
        let opcode = OpCode::from_u8(b0 & 0x0F).ok_or(ReadError::Protocol("unknown opcode"))?;
        if compressed && !matches!(opcode, OpCode::Text | OpCode::Binary) {
            return Err(ReadError::Protocol(
                "RSV1 on a control or continuation frame",
            ));
        }
        if b1 & 0x80 == 0 {
            return Err(ReadError::Protocol("client frames must be masked"));
        }
        let (len, mut header) = match b1 & 0x7F {
            126 => {
                if buf.len() < 4 {
                    return Ok(None);
                }
                (u16::from_be_bytes([buf[2], buf[3]]) as u64, 4)
            }
            127 => {
                if buf.len() < 10 {
                    return Ok(None);
                }
                let len = u64::from_be_bytes(buf[2..10].try_into().expect("8 bytes"));
                if len >> 63 != 0 {
                    return Err(ReadError::Protocol("64-bit length with the high bit set"));
                }
                (len, 10)
            }
            n => (n as u64, 2),
        };
        if opcode.is_control() {
            if !fin {
                return Err(ReadError::Protocol("fragmented control frame"));
            }
            if len > 125 {
                return Err(ReadError::Protocol("control frame payload over 125 bytes"));
            }
        } else {
            let already = self.partial.as_ref().map_or(0, |p| p.data.len() as u64);
            if already + len > u64::from(self.max_message) {
                return Err(ReadError::TooBig(self.max_message as usize));
            }
        }
        let len = len as usize;
        header += 4;
        if buf.len() < header + len {
            // Under the message limit, so it fits.
            self.missing = u32::try_from(header + len - buf.len()).unwrap_or(u32::MAX);
            return Ok(None);
        }
        self.missing = 0;
        let mask: [u8; 4] = buf[header - 4..header].try_into().expect("4 bytes");
        let mut payload = self.buf.split_to(header + len);
        payload.advance(header);
        unmask(&mut payload, mask);
        Ok(Some(RawFrame {
            fin,
            opcode,
            compressed,
            payload: payload.freeze(),
        }))
    }

    /// A complete data message: inflated if it was compressed (at most
    /// the message limit), its text checked.
    fn finish(
        &self,
        opcode: OpCode,
        compressed: bool,
        payload: Bytes,
    ) -> Result<Message, ReadError> {
        let payload = if compressed {
            let max = self.max_message as usize;
            deflate::inflate(&payload, max).map_err(|e| match e {
                InflateError::TooBig => ReadError::TooBig(max),
                InflateError::Corrupt => {
                    ReadError::Protocol("a compressed message that does not inflate")
                }
            })?
        } else {
            payload
        };
        check_text(opcode, payload)
    }
}

fn check_text(opcode: OpCode, payload: Bytes) -> Result<Message, ReadError> {
    if opcode == OpCode::Text {
        if std::str::from_utf8(&payload).is_ok() {
            Ok(Message::Text(payload))
        } else {
            Err(ReadError::InvalidUtf8)
        }
    } else {
        Ok(Message::Binary(payload))
    }
}

fn parse_close(payload: &[u8]) -> Result<Message, ReadError> {
    match payload.len() {
        0 => Ok(Message::Close(None)),
        1 => Err(ReadError::Protocol("close frame with a 1-byte payload")),
        _ => {
            let code = u16::from_be_bytes([payload[0], payload[1]]);
            if !valid_close_code(code) {
                return Err(ReadError::Protocol("invalid close code"));
            }
            if std::str::from_utf8(&payload[2..]).is_err() {
                return Err(ReadError::InvalidUtf8);
            }
            Ok(Message::Close(Some(code)))
        }
    }
}

/// Codes a peer may send (RFC 6455 §7.4).
fn valid_close_code(code: u16) -> bool {
    matches!(code, 1000..=1003 | 1007..=1011 | 3000..=4999)
}

/// XORs the payload with the masking key, eight bytes at a time.
fn unmask(data: &mut [u8], mask: [u8; 4]) {
    let wide = u64::from_ne_bytes([
        mask[0], mask[1], mask[2], mask[3], mask[0], mask[1], mask[2], mask[3],
    ]);
    let mut chunks = data.chunks_exact_mut(8);
    for chunk in &mut chunks {
        let v = u64::from_ne_bytes((&*chunk).try_into().expect("8 bytes")) ^ wide;
        chunk.copy_from_slice(&v.to_ne_bytes());
    }
    for (i, b) in chunks.into_remainder().iter_mut().enumerate() {
        *b ^= mask[i & 3];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Builds a masked client frame.
    fn client_frame(fin: bool, opcode: u8, payload: &[u8]) -> Vec<u8> {
        let mask = [1u8, 2, 3, 4];
        let mut out = vec![(if fin { 0x80 } else { 0 }) | opcode];
        match payload.len() {
            n if n < 126 => out.push(0x80 | n as u8),
            n if n <= 0xFFFF => {
                out.push(0x80 | 126);
                out.extend_from_slice(&(n as u16).to_be_bytes());
            }
            n => {
                out.push(0x80 | 127);
                out.extend_from_slice(&(n as u64).to_be_bytes());
            }
        }
        out.extend_from_slice(&mask);
        out.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
        out
    }

    async fn read_all(bytes: Vec<u8>, max: usize) -> Vec<Result<Message, String>> {
        let (mut a, b) = tokio::io::duplex(1 << 20);
        tokio::io::AsyncWriteExt::write_all(&mut a, &bytes)
            .await
            .unwrap();
        drop(a);
        let (rd, _wr) = tokio::io::split(b);
        let mut reader = FrameReader::new(rd, Bytes::new(), max, false);
        let mut out = Vec::new();
        loop {
            match reader.next().await {
                Ok(m) => out.push(Ok(m)),
                Err(ReadError::Eof) => return out,
                Err(e) => {
                    out.push(Err(e.to_string()));
                    return out;
                }
            }
        }
    }

    #[tokio::test]
    async fn reassembles_fragments_around_a_ping() {
        let mut bytes = client_frame(false, 0x1, b"hel");
        bytes.extend(client_frame(true, 0x9, b"p"));
        bytes.extend(client_frame(true, 0x0, b"lo"));
        let got = read_all(bytes, 100).await;
        assert_eq!(
            got,
            vec![
                Ok(Message::Ping(Bytes::from_static(b"p"))),
                Ok(Message::Text(Bytes::from_static(b"hello")))
            ]
        );
    }

    #[tokio::test]
    async fn limit_counts_the_whole_message_not_each_fragment() {
        let mut bytes = client_frame(false, 0x2, &[0; 60]);
        bytes.extend(client_frame(true, 0x0, &[0; 60]));
        let got = read_all(bytes, 100).await;
        assert_eq!(got, vec![Err("message larger than 100 bytes".into())]);
        let exact = read_all(client_frame(true, 0x2, &[7; 100]), 100).await;
        assert_eq!(exact, vec![Ok(Message::Binary(Bytes::from(vec![7; 100])))]);
    }

    #[tokio::test]
    async fn rejects_unmasked_reserved_and_bad_utf8() {
        let unmasked = vec![0x81, 0x01, b'a'];
        assert_eq!(
            read_all(unmasked, 10).await,
            vec![Err("protocol error: client frames must be masked".into())]
        );
        let mut rsv = client_frame(true, 0x1, b"a");
        rsv[0] |= 0x40;
        assert!(read_all(rsv, 10).await[0]
            .as_ref()
            .unwrap_err()
            .contains("reserved"));
        let bad = read_all(client_frame(true, 0x1, &[0xff, 0xfe]), 10).await;
        assert_eq!(bad, vec![Err(ReadError::InvalidUtf8.to_string())]);
    }

    #[tokio::test]
    async fn close_codes_are_validated() {
        let ok = read_all(client_frame(true, 0x8, &1000u16.to_be_bytes()), 10).await;
        assert_eq!(ok, vec![Ok(Message::Close(Some(1000)))]);
        let bad = read_all(client_frame(true, 0x8, &1005u16.to_be_bytes()), 10).await;
        assert_eq!(bad, vec![Err("protocol error: invalid close code".into())]);
    }

    /// Regression (issue 9, finding 5): the announced length of a frame was
    /// reserved before its data arrived.
    #[tokio::test]
    async fn an_announced_length_is_not_reserved_up_front() {
        let (mut a, b) = tokio::io::duplex(1 << 16);
        let mut head = vec![0x82, 0x80 | 127];
        head.extend_from_slice(&(16u64 << 20).to_be_bytes());
        head.extend_from_slice(&[1, 2, 3, 4, 0, 0, 0, 0]);
        tokio::io::AsyncWriteExt::write_all(&mut a, &head)
            .await
            .unwrap();
        let (rd, _wr) = tokio::io::split(b);
        let mut reader = FrameReader::new(rd, Bytes::new(), 32 << 20, false);
        let pending =
            tokio::time::timeout(std::time::Duration::from_millis(50), reader.next()).await;
        assert!(pending.is_err(), "the frame is not complete");
        assert!(
            reader.buf.capacity() <= 2 * MAX_READ_AHEAD,
            "reserved {} bytes for 4 of data",
            reader.buf.capacity()
        );
        drop(a);
    }

    #[test]
    fn unmask_matches_bytewise_xor() {
        let mask = [0xAA, 0x55, 0x0F, 0xF0];
        let original: Vec<u8> = (0..37u8).collect();
        let mut data = original.clone();
        unmask(&mut data, mask);
        let expected: Vec<u8> = original
            .iter()
            .enumerate()
            .map(|(i, b)| b ^ mask[i % 4])
            .collect();
        assert_eq!(data, expected);
    }
}
