//! permessage-deflate (RFC 7692): the offer a client makes in its upgrade,
//! a broadcast frame compressed once for every recipient that agreed to it,
//! and a client's compressed message inflated.
//!
//! The server always answers `server_no_context_takeover` and
//! `client_no_context_takeover` (RFC 7692 §7.1.1 lets a server add both to
//! any accepted offer). Without context takeover each message is a deflate
//! stream of its own, and that is what makes compress-once possible: a
//! room's message compresses to the same bytes for every recipient, so it is
//! framed once and shared as a refcount clone like an uncompressed frame.
//! It also means a connection keeps no compression state between messages:
//! the compressors and the inflater belong to the shard thread, reset per
//! message, and an idle connection pays nothing for having negotiated.

use bytes::Bytes;
use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress, Status};
use std::cell::RefCell;

use super::frame::{self, HEADROOM};

/// The extension's name in `Sec-WebSocket-Extensions`.
const NAME: &str = "permessage-deflate";

/// What a sync flush ends a message with; RFC 7692 §7.2.1 has the sender
/// drop it and the receiver add it back.
const TAIL: [u8; 4] = [0x00, 0x00, 0xff, 0xff];

/// The largest LZ77 window a client may have the server use for its
/// messages (`server_max_window_bits`): 8..=15, 15 when it named none.
///
/// zlib (and zlib-rs) cannot compress with an 8-bit window; asked for 8,
/// the server compresses with 9, whose matches never reach back more than
/// 250 bytes (the window less zlib's 262-byte lookahead), within the 256 the
/// client asked for. That is also what zlib itself does with 8.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window(u8);

impl Window {
    pub const DEFAULT: Window = Window(15);

    pub fn bits(self) -> u8 {
        self.0
    }

    /// The window the compressor uses (9..=15).
    fn compress_bits(self) -> u8 {
        self.0.max(9)
    }

    /// Index of this window's shared frame (0..[`Window::COUNT`]).
    pub fn index(self) -> usize {
        usize::from(self.compress_bits() - 9)
    }

    /// The window of a shared frame's index (the inverse of [`Self::index`]
    /// up to 8 and 9, which compress alike).
    pub fn from_index(index: usize) -> Window {
        Window(9 + index.min(Self::COUNT - 1) as u8)
    }

    /// Distinct compressor windows (9..=15).
    pub const COUNT: usize = 7;
}

/// An accepted offer: how to compress for this connection, and the
/// `Sec-WebSocket-Extensions` value that says so in the 101.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Agreement {
    pub window: Window,
    pub response: String,
}

/// Picks the first acceptable `permessage-deflate` offer among the request's
/// `Sec-WebSocket-Extensions` values (in order; several header lines and
/// comma-separated lists alike). An offer with an unknown or repeated
/// parameter or a bad value is declined (RFC 7692 §7.1), and so is the
/// extension when no offer is acceptable: the connection goes on without it.
pub fn negotiate<'a>(values: impl IntoIterator<Item = &'a [u8]>) -> Option<Agreement> {
    values
        .into_iter()
        .filter_map(|v| std::str::from_utf8(v).ok())
        .flat_map(|v| v.split(','))
        .find_map(accept)
}

/// The parameters of one offer that the answer depends on.
#[derive(Default)]
struct Offer {
    server_no_context_takeover: bool,
    client_no_context_takeover: bool,
    server_max_window_bits: Option<u8>,
    client_max_window_bits: Option<Option<u8>>,
}

fn accept(offer: &str) -> Option<Agreement> {
    let mut parts = offer.split(';').map(str::trim);
    if !parts.next()?.eq_ignore_ascii_case(NAME) {
        return None;
    }
    let mut o = Offer::default();
    for param in parts {
        let (name, value) = match param.split_once('=') {
            Some((n, v)) => (n.trim(), Some(unquote(v.trim())?)),
            None => (param, None),
        };
        match (name.to_ascii_lowercase().as_str(), value) {
            ("server_no_context_takeover", None) if !o.server_no_context_takeover => {
                o.server_no_context_takeover = true
            }
            ("client_no_context_takeover", None) if !o.client_no_context_takeover => {
                o.client_no_context_takeover = true
            }
            ("server_max_window_bits", Some(v)) if o.server_max_window_bits.is_none() => {
                o.server_max_window_bits = Some(window_bits(v)?)
            }
            ("client_max_window_bits", v) if o.client_max_window_bits.is_none() => {
                o.client_max_window_bits = Some(match v {
                    Some(v) => Some(window_bits(v)?),
                    None => None,
                })
            }
            _ => return None,
        }
    }
    // Both no-context-takeover answers always; the window only when asked
    // (the answer must then name it). `client_max_window_bits` needs no
    // answer: the inflater takes any window up to 15.
    let mut response = format!("{NAME}; server_no_context_takeover; client_no_context_takeover");
    let window = match o.server_max_window_bits {
        Some(bits) => {
            response.push_str(&format!("; server_max_window_bits={bits}"));
            Window(bits)
        }
        None => Window::DEFAULT,
    };
    Some(Agreement { window, response })
}

/// A parameter value, unquoted if it is a quoted string (RFC 7692 §7.1
/// allows `server_max_window_bits="10"`).
fn unquote(v: &str) -> Option<&str> {
    match v.strip_prefix('"') {
        Some(rest) => rest.strip_suffix('"'),
        None => Some(v),
    }
}

/// 8..=15 in plain decimal (no sign, no leading zero).
fn window_bits(v: &str) -> Option<u8> {
    if v.is_empty() || v.len() > 2 || v.starts_with('0') || !v.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    v.parse().ok().filter(|b| (8..=15).contains(b))
}

thread_local! {
    /// One compressor per window size, made on first use: compression runs
    /// on the shard thread, one message at a time, reset between messages.
    static COMPRESSORS: RefCell<[Option<Compress>; Window::COUNT]> = Default::default();
    /// The shard's inflater, reset per message (no client context takeover).
    static INFLATER: RefCell<Option<Decompress>> = const { RefCell::new(None) };
}

/// `frame` (a complete, unfragmented server data frame, as [`frame`] makes
/// them) with its payload compressed for `window`: `None` when the payload
/// is shorter than `threshold`, is not a data frame, or would not shrink
/// (then the plain frame goes out; a message may always be sent
/// uncompressed).
pub fn compress_frame(plain: &Bytes, window: Window, threshold: usize) -> Option<Bytes> {
    let (opcode, payload) = frame::data_payload(plain)?;
    if payload.len() < threshold {
        return None;
    }
    let mut out = Vec::with_capacity(HEADROOM + payload.len() / 2 + 64);
    out.resize(HEADROOM, 0);
    COMPRESSORS.with_borrow_mut(|all| {
        let c = all[window.index()].get_or_insert_with(|| {
            Compress::new_with_window_bits(Compression::default(), false, window.compress_bits())
        });
        c.reset();
        deflate(c, payload, &mut out)
    })?;
    // Drop the sync flush's tail (RFC 7692 §7.2.1).
    let compressed = out.len() - HEADROOM - TAIL.len();
    if !out.ends_with(&TAIL) || compressed >= payload.len() {
        return None;
    }
    out.truncate(HEADROOM + compressed);
    let start = frame::place_header(&mut out, 0x80 | frame::RSV1 | opcode as u8);
    Some(Bytes::from(out).slice(start..))
}

/// Compresses all of `input` with a sync flush, appending to `out`.
fn deflate(c: &mut Compress, input: &[u8], out: &mut Vec<u8>) -> Option<()> {
    let start = c.total_in();
    loop {
        let done = (c.total_in() - start) as usize;
        if out.capacity() - out.len() < 64 {
            out.reserve(input.len() / 2 + 64);
        }
        let had = out.len();
        c.compress_vec(&input[done..], out, FlushCompress::Sync)
            .ok()?;
        let taken = (c.total_in() - start) as usize;
        // The flush is complete once all input went in and it did not fill
        // the room it had.
        if taken == input.len() && out.len() < out.capacity() {
            return Some(());
        }
        if taken == done && out.len() == had {
            return None;
        }
    }
}

/// Why a compressed message could not be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InflateError {
    /// Not a valid deflate stream.
    Corrupt,
    /// It inflates to more than the message limit.
    TooBig,
}

/// A client's compressed message inflated, at most `max` bytes (checked as
/// it inflates, so a small bomb never becomes a large buffer).
pub fn inflate(data: &[u8], max: usize) -> Result<Bytes, InflateError> {
    INFLATER.with_borrow_mut(|slot| {
        let d = slot.get_or_insert_with(|| Decompress::new(false));
        d.reset(false);
        let mut out = Vec::with_capacity((data.len() * 3).max(256).min(max.saturating_add(1)));
        for chunk in [data, &TAIL[..]] {
            if !inflate_into(d, chunk, &mut out, max)? {
                break;
            }
        }
        Ok(Bytes::from(out))
    })
}

/// Inflates `input` into `out`; `false` when the stream ended (a final
/// block: anything after it is ignored).
fn inflate_into(
    d: &mut Decompress,
    input: &[u8],
    out: &mut Vec<u8>,
    max: usize,
) -> Result<bool, InflateError> {
    let start = d.total_in();
    loop {
        if out.len() == out.capacity() {
            if out.len() > max {
                return Err(InflateError::TooBig);
            }
            // Grow with the output, never past one byte over the limit.
            let more = out.len().max(1024).min(max + 1 - out.len());
            out.reserve_exact(more);
        }
        let done = (d.total_in() - start) as usize;
        let had = out.len();
        let status = d
            .decompress_vec(&input[done..], out, FlushDecompress::Sync)
            .map_err(|_| InflateError::Corrupt)?;
        if out.len() > max {
            return Err(InflateError::TooBig);
        }
        let consumed_all = (d.total_in() - start) as usize == input.len();
        match status {
            Status::StreamEnd => return Ok(false),
            _ if consumed_all && out.len() < out.capacity() => return Ok(true),
            // No input taken and no output made with room left: stuck.
            _ if out.len() == had
                && out.len() < out.capacity()
                && (d.total_in() - start) as usize == done =>
            {
                return Err(InflateError::Corrupt)
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ws::OpCode;

    fn offer(v: &str) -> Option<Agreement> {
        negotiate([v.as_bytes()])
    }

    #[test]
    fn accepts_the_first_acceptable_offer_and_always_drops_both_contexts() {
        let a = offer("permessage-deflate; client_max_window_bits").unwrap();
        assert_eq!(a.window, Window::DEFAULT);
        assert_eq!(
            a.response,
            "permessage-deflate; server_no_context_takeover; client_no_context_takeover"
        );
        let a = offer("x-webkit-deflate-frame, permessage-deflate; server_max_window_bits=9; foo, permessage-deflate; server_max_window_bits=\"10\"").unwrap();
        assert_eq!(a.window.bits(), 10);
        assert!(a.response.ends_with("; server_max_window_bits=10"));
        let two_lines = negotiate([&b"foo"[..], &b"PerMessage-Deflate"[..]]).unwrap();
        assert_eq!(two_lines.window, Window::DEFAULT);
    }

    #[test]
    fn declines_bad_offers() {
        for bad in [
            "permessage-deflate; server_max_window_bits",
            "permessage-deflate; server_max_window_bits=7",
            "permessage-deflate; server_max_window_bits=16",
            "permessage-deflate; server_max_window_bits=09",
            "permessage-deflate; client_max_window_bits=1a",
            "permessage-deflate; server_no_context_takeover; server_no_context_takeover",
            "permessage-deflate; server_no_context_takeover=1",
            "permessage-deflate; unknown",
            "permessage-deflate; server_max_window_bits=\"10",
            "deflate-frame",
            "",
        ] {
            assert_eq!(offer(bad), None, "{bad}");
        }
    }

    fn text_frame(payload: &[u8]) -> Bytes {
        frame::encode(OpCode::Text, payload)
    }

    /// A compressed frame's payload, inflated back.
    fn roundtrip(plain: &Bytes, window: Window) -> Vec<u8> {
        let compressed = compress_frame(plain, window, 0).expect("compressible");
        assert_eq!(compressed[0], 0x80 | frame::RSV1 | OpCode::Text as u8);
        let (_, payload) = frame::data_payload(&compressed).unwrap();
        inflate(payload, 1 << 20).unwrap().to_vec()
    }

    #[test]
    fn a_frame_compresses_and_inflates_back_in_every_window() {
        let text =
            r#"{"type":"chat","room":"general","data":{"content":"hello hello hello hello"}}"#
                .repeat(40);
        let plain = text_frame(text.as_bytes());
        for bits in 8..=15 {
            assert_eq!(roundtrip(&plain, Window(bits)), text.as_bytes(), "{bits}");
        }
        // Twice in a row: the compressor is reset between messages.
        assert_eq!(roundtrip(&plain, Window::DEFAULT), text.as_bytes());
    }

    #[test]
    fn short_or_incompressible_payloads_stay_plain() {
        let short = text_frame(b"{\"a\":1}");
        assert_eq!(compress_frame(&short, Window::DEFAULT, 128), None);
        let mut x = 0x9E37_79B9_7F4A_7C15u64;
        let noise: Vec<u8> = (0..2000)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                (x >> 32) as u8
            })
            .collect();
        let noise = frame::encode(OpCode::Binary, &noise);
        assert_eq!(compress_frame(&noise, Window::DEFAULT, 0), None);
        let close = frame::close(1000, "bye bye bye bye bye bye bye bye");
        assert_eq!(compress_frame(&close, Window::DEFAULT, 0), None);
    }

    #[test]
    fn inflating_stops_at_the_limit_and_refuses_garbage() {
        let zeros = text_frame(&vec![b'a'; 100_000]);
        let compressed = compress_frame(&zeros, Window::DEFAULT, 0).unwrap();
        let (_, payload) = frame::data_payload(&compressed).unwrap();
        assert!(payload.len() < 1000);
        assert_eq!(inflate(payload, 99_999), Err(InflateError::TooBig));
        assert_eq!(inflate(payload, 100_000).unwrap().len(), 100_000);
        assert_eq!(inflate(&[0xff; 16], 1000), Err(InflateError::Corrupt));
        // An empty message is the empty stored block.
        assert_eq!(inflate(&[0x00], 10).unwrap().len(), 0);
    }
}
