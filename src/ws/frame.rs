//! Server-side frame encoding.
//!
//! Server frames are never masked (RFC 6455 §5.1), so a complete frame, header
//! plus payload, is the same byte string for every recipient. That is what lets
//! a broadcast be framed once into one [`Bytes`] and handed to every queue as a
//! refcount clone.

use bytes::{BufMut, Bytes, BytesMut};

/// Room reserved in front of a payload for the longest server frame header
/// (2 bytes + 8-byte extended length), so the header can be written in place
/// and the frame needs no second allocation or copy.
pub const HEADROOM: usize = 10;

/// The opcodes this server sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpCode {
    Continuation = 0x0,
    Text = 0x1,
    Binary = 0x2,
    Close = 0x8,
    Ping = 0x9,
    Pong = 0xA,
}

impl OpCode {
    pub fn from_u8(b: u8) -> Option<OpCode> {
        Some(match b {
            0x0 => OpCode::Continuation,
            0x1 => OpCode::Text,
            0x2 => OpCode::Binary,
            0x8 => OpCode::Close,
            0x9 => OpCode::Ping,
            0xA => OpCode::Pong,
            _ => return None,
        })
    }

    pub fn is_control(self) -> bool {
        (self as u8) & 0x8 != 0
    }
}

/// A payload being written with [`HEADROOM`] bytes kept free in front of it.
///
/// Serialise into [`Outgoing::writer`], hand [`Outgoing::payload`] to a remote
/// bus if needed, then call [`Outgoing::into_frame`] once: the frame header is
/// written into the headroom and the whole frame is frozen into one `Bytes`.
#[derive(Debug)]
pub struct Outgoing {
    buf: BytesMut,
}

impl Default for Outgoing {
    fn default() -> Self {
        Self::with_capacity(256)
    }
}

impl Outgoing {
    pub fn with_capacity(payload_capacity: usize) -> Outgoing {
        let mut buf = BytesMut::with_capacity(HEADROOM + payload_capacity);
        buf.put_bytes(0, HEADROOM);
        Outgoing { buf }
    }

    /// Copies an already-encoded payload (e.g. one received from a bus).
    pub fn from_payload(payload: &[u8]) -> Outgoing {
        let mut out = Outgoing::with_capacity(payload.len());
        out.buf.extend_from_slice(payload);
        out
    }

    /// A writer appending to the payload (`sonic_rs::to_writer` accepts it).
    pub fn writer(&mut self) -> bytes::buf::Writer<&mut BytesMut> {
        (&mut self.buf).writer()
    }

    pub fn payload(&self) -> &[u8] {
        &self.buf[HEADROOM..]
    }

    /// Writes the header in front of the payload and returns the whole frame.
    pub fn into_frame(mut self, opcode: OpCode) -> Bytes {
        let start = place_header(&mut self.buf, FIN | opcode as u8);
        self.buf.freeze().slice(start..)
    }
}

/// The final-fragment bit of a frame's first byte.
const FIN: u8 = 0x80;

/// The first byte's RSV1 bit: with permessage-deflate, "this message is
/// compressed".
pub const RSV1: u8 = 0x40;

/// Writes a frame header starting with `first` into the [`HEADROOM`] in front
/// of `buf`'s payload, right before it; returns where the frame starts.
pub(super) fn place_header(buf: &mut [u8], first: u8) -> usize {
    let len = buf.len() - HEADROOM;
    let mut header = [0u8; HEADROOM];
    let hlen = write_header(&mut header, first, len);
    let start = HEADROOM - hlen;
    buf[start..HEADROOM].copy_from_slice(&header[..hlen]);
    start
}

/// The opcode and payload of a complete, unfragmented server data frame
/// (`None` for control frames and anything else).
pub fn data_payload(frame: &[u8]) -> Option<(OpCode, &[u8])> {
    let (&b0, rest) = frame.split_first()?;
    let opcode = OpCode::from_u8(b0 & 0x0F)?;
    if b0 & FIN == 0 || !matches!(opcode, OpCode::Text | OpCode::Binary) {
        return None;
    }
    let hlen = match rest.first()? & 0x7F {
        126 => 4,
        127 => 10,
        _ => 2,
    };
    Some((opcode, frame.get(hlen..)?))
}

/// Writes an unmasked frame header whose first byte is `first`; returns its
/// length.
fn write_header(out: &mut [u8; HEADROOM], first: u8, len: usize) -> usize {
    out[0] = first;
    if len < 126 {
        out[1] = len as u8;
        2
    } else if len <= u16::MAX as usize {
        out[1] = 126;
        out[2..4].copy_from_slice(&(len as u16).to_be_bytes());
        4
    } else {
        out[1] = 127;
        out[2..10].copy_from_slice(&(len as u64).to_be_bytes());
        10
    }
}

/// Frames a payload in one allocation (used for small control and error frames).
pub fn encode(opcode: OpCode, payload: &[u8]) -> Bytes {
    let mut header = [0u8; HEADROOM];
    let hlen = write_header(&mut header, FIN | opcode as u8, payload.len());
    let mut buf = BytesMut::with_capacity(hlen + payload.len());
    buf.extend_from_slice(&header[..hlen]);
    buf.extend_from_slice(payload);
    buf.freeze()
}

/// A Close frame with a status code and a reason (truncated to fit the
/// 125-byte control frame limit on a character boundary).
pub fn close(code: u16, reason: &str) -> Bytes {
    let mut end = reason.len().min(123);
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    let mut payload = Vec::with_capacity(2 + end);
    payload.extend_from_slice(&code.to_be_bytes());
    payload.extend_from_slice(&reason.as_bytes()[..end]);
    encode(OpCode::Close, &payload)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_lengths_match_rfc_boundaries() {
        for (len, hlen) in [(0, 2), (125, 2), (126, 4), (65535, 4), (65536, 10)] {
            let mut out = Outgoing::with_capacity(len);
            out.buf.put_bytes(b'x', len);
            let frame = out.into_frame(OpCode::Text);
            assert_eq!(frame.len(), hlen + len, "payload {len}");
            assert_eq!(frame[0], 0x81);
        }
    }

    #[test]
    fn encode_and_outgoing_agree() {
        let mut out = Outgoing::default();
        std::io::Write::write_all(&mut out.writer(), b"hello").unwrap();
        assert_eq!(out.payload(), b"hello");
        assert_eq!(
            out.into_frame(OpCode::Binary),
            encode(OpCode::Binary, b"hello")
        );
    }

    #[test]
    fn close_reason_is_truncated_on_char_boundary() {
        let frame = close(1008, &"é".repeat(100));
        assert_eq!(frame[1] as usize, frame.len() - 2);
        assert!(frame.len() - 2 <= 125);
        assert!(std::str::from_utf8(&frame[4..]).is_ok());
    }
}
