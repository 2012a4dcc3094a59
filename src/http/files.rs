//! `POST /api/chat-api/files` (a raw body with `?name=`, or a
//! `multipart/form-data` upload) and `GET|HEAD /api/chat-api/files/{id}`
//! (and `/thumbnail`): ETag, `If-None-Match`, single `Range` requests.
//! Who may read a file is `chat::files::may_read`.

use bytes::Bytes;
use futures_util::TryStreamExt;
use http_body_util::{BodyExt, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::header::{self, HeaderMap, HeaderValue};
use hyper::{Request, Response, StatusCode};
use std::ops::Range;

use super::error;
use super::linger::{Linger, LingeringBody};
use super::{query_param, to_json, Body};
use crate::accounts::Identity;
use crate::chat::files::{may_read, FileAccess, FileView};
use crate::files::image::THUMBNAIL_TYPE;
use crate::files::{name, sniff, FileError, Variant};
use crate::node::Node;
use crate::store::directory::FileRecord;

/// Room for a multipart body's headers and boundaries beyond the file.
const MULTIPART_OVERHEAD: u64 = 1 << 20;

/// A file error as its HTTP answer.
fn refusal(e: &FileError) -> Response<Body> {
    let (status, code) = match e {
        FileError::TooLarge(_) => (StatusCode::PAYLOAD_TOO_LARGE, "TOO_LARGE"),
        FileError::Empty | FileError::Aborted => (StatusCode::BAD_REQUEST, "VALIDATION"),
        FileError::NotFound => (StatusCode::NOT_FOUND, "NOT_FOUND"),
        FileError::NoStore => (StatusCode::NOT_FOUND, "UNSUPPORTED"),
        FileError::BadRange => (StatusCode::RANGE_NOT_SATISFIABLE, "BAD_RANGE"),
        FileError::Storage => (StatusCode::SERVICE_UNAVAILABLE, "UNAVAILABLE"),
    };
    error::json(status, code, &e.to_string(), None)
}

fn access_refusal(e: &FileAccess) -> Response<Body> {
    match e {
        FileAccess::Forbidden => {
            error::json(StatusCode::FORBIDDEN, "FORBIDDEN", &e.to_string(), None)
        }
        FileAccess::File(e) => refusal(e),
    }
}

/// Stores an upload; 201 with the file's description.
pub async fn upload(req: Request<Incoming>, node: &Node, identity: &Identity) -> Response<Body> {
    let max = node.config.files.max_size;
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    let multipart = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|ct| multer::parse_boundary(ct).ok());
    let limit = if multipart.is_some() {
        max + MULTIPART_OVERHEAD
    } else {
        max
    };
    let server = &node.config.server;
    let linger = Linger {
        time: server.linger_time,
        bytes: server.linger_bytes,
    };
    let uploader = identity.user().map(|u| u.id.clone());
    let named = query_param(req.uri().query(), "name").map(percent_decode);
    // Whatever answers before the body's end, the rest is still read (so
    // the client reads the answer, not a reset) and the connection closed.
    let body = LingeringBody::new(req.into_body(), linger);
    if declared.is_some_and(|len| len > limit) {
        node.metrics.files.refused.inc();
        return closing(refusal(&FileError::TooLarge(max)));
    }
    let stored = match multipart {
        None => {
            let name = named.unwrap_or_default();
            node.files.upload(body, &name, uploader).await
        }
        Some(boundary) => {
            let mut form = multer::Multipart::new(body, boundary);
            let field = loop {
                match form.next_field().await {
                    Ok(Some(f)) if f.file_name().is_some() || f.name() == Some("file") => break f,
                    Ok(Some(_)) => continue,
                    Ok(None) | Err(_) => {
                        let message = "a multipart upload needs a file field";
                        let refused =
                            error::json(StatusCode::BAD_REQUEST, "VALIDATION", message, None);
                        return closing(refused);
                    }
                }
            };
            let name = named
                .or_else(|| field.file_name().map(str::to_owned))
                .unwrap_or_default();
            node.files.upload(field, &name, uploader).await
        }
    };
    match stored {
        Ok(record) => super::json(StatusCode::CREATED, to_json(&FileView::of(&record))),
        Err(e) => closing(refusal(&e)),
    }
}

/// An answer that may come before the request's body has all arrived: the
/// connection closes after it (the rest of the body is drained meanwhile).
fn closing(mut resp: Response<Body>) -> Response<Body> {
    resp.headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("close"));
    resp
}

/// Serves a file (or its thumbnail) to whoever may read it.
pub async fn download(
    headers: &HeaderMap,
    node: &Node,
    identity: &Identity,
    id: &str,
    variant: Variant,
) -> Response<Body> {
    let record = match node.files.record(id).await {
        Ok(r) => r,
        Err(e) => return refusal(&e),
    };
    if let Err(e) = may_read(node, identity, &record).await {
        return access_refusal(&e);
    }
    if variant == Variant::Thumbnail && !record.thumbnail {
        return refusal(&FileError::NotFound);
    }
    let etag = match variant {
        Variant::Original => format!("\"{}\"", record.sha256),
        Variant::Thumbnail => format!("\"{}-thumb\"", record.sha256),
    };
    let cached = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.trim() == "*" || v.split(',').any(|t| t.trim() == etag));
    let mut resp = Response::new(super::full(Bytes::new()));
    describe(resp.headers_mut(), &record, variant, &etag);
    if cached {
        *resp.status_mut() = StatusCode::NOT_MODIFIED;
        return resp;
    }
    // A Range applies to the original only (its size is known here), and
    // only while If-Range (if sent) still names this file.
    let range_allowed = variant == Variant::Original
        && headers
            .get(header::IF_RANGE)
            .and_then(|v| v.to_str().ok())
            .is_none_or(|v| v.trim() == etag);
    let range = match headers.get(header::RANGE).and_then(|v| v.to_str().ok()) {
        Some(spec) if range_allowed => match parse_range(spec, record.size) {
            Ok(range) => range,
            Err(()) => {
                let mut resp = refusal(&FileError::BadRange);
                let all = format!("bytes */{}", record.size);
                resp.headers_mut()
                    .insert(header::CONTENT_RANGE, header_value(&all));
                return resp;
            }
        },
        _ => None,
    };
    let opened = match node.files.open(&record, variant, range.clone()).await {
        Ok(o) => o,
        Err(e) => return refusal(&e),
    };
    let total = opened.meta.size;
    let served = opened.range.clone();
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_LENGTH,
        HeaderValue::from(served.end - served.start),
    );
    if range.is_some() {
        *resp.status_mut() = StatusCode::PARTIAL_CONTENT;
        let value = format!("bytes {}-{}/{total}", served.start, served.end - 1);
        resp.headers_mut()
            .insert(header::CONTENT_RANGE, header_value(&value));
    }
    let stream = opened
        .into_stream()
        .map_ok(Frame::data)
        .map_err(std::io::Error::other);
    *resp.body_mut() = BodyExt::boxed_unsync(StreamBody::new(stream));
    resp
}

/// The headers every answer about a file carries.
fn describe(h: &mut HeaderMap, record: &FileRecord, variant: Variant, etag: &str) {
    let (content_type, inline) = match variant {
        Variant::Thumbnail => (THUMBNAIL_TYPE, true),
        Variant::Original => (
            record.content_type.as_str(),
            sniff::is_image(&record.content_type),
        ),
    };
    h.insert(header::CONTENT_TYPE, header_value(content_type));
    h.insert(header::ETAG, header_value(etag));
    h.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    // A file's bytes never change under its id.
    h.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("private, max-age=31536000, immutable"),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    // An uploaded HTML or SVG file opened directly runs nothing.
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static("default-src 'none'; sandbox"),
    );
    let disposition = name::content_disposition(&record.name, inline);
    h.insert(header::CONTENT_DISPOSITION, header_value(&disposition));
}

fn header_value(s: &str) -> HeaderValue {
    HeaderValue::from_str(s).unwrap_or_else(|_| HeaderValue::from_static("invalid"))
}

/// One `bytes=` range of a file of `size` bytes: `Ok(None)` for what is not
/// a single byte range (served whole, as RFC 9110 allows), `Err` when it
/// is one but lies outside the file (416).
pub fn parse_range(spec: &str, size: u64) -> Result<Option<Range<u64>>, ()> {
    let Some(set) = spec.trim().strip_prefix("bytes=") else {
        return Ok(None);
    };
    if set.contains(',') {
        return Ok(None);
    }
    let Some((first, last)) = set.trim().split_once('-') else {
        return Ok(None);
    };
    let number = |s: &str| s.trim().parse::<u64>().ok();
    let range = match (first.trim(), last.trim()) {
        ("", "") => return Ok(None),
        ("", suffix) => match number(suffix) {
            Some(0) => return Err(()),
            Some(n) => size.saturating_sub(n)..size,
            None => return Ok(None),
        },
        (start, "") => match number(start) {
            Some(s) => s..size,
            None => return Ok(None),
        },
        (start, end) => match (number(start), number(end)) {
            (Some(s), Some(e)) if s <= e => s..(e.saturating_add(1)).min(size),
            _ => return Ok(None),
        },
    };
    if range.start >= size || range.is_empty() {
        return Err(());
    }
    Ok(Some(range))
}

/// `%XX` escapes and `+` (a space) of a query value; invalid UTF-8 is
/// replaced.
pub(crate) fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                let hex = |b: u8| (b as char).to_digit(16);
                match (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                    (Some(h), Some(l)) => {
                        out.push((h * 16 + l) as u8);
                        i += 2;
                    }
                    _ => out.push(b'%'),
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges() {
        assert_eq!(parse_range("bytes=0-9", 100), Ok(Some(0..10)));
        assert_eq!(parse_range("bytes=90-", 100), Ok(Some(90..100)));
        assert_eq!(parse_range("bytes=-10", 100), Ok(Some(90..100)));
        assert_eq!(parse_range("bytes=-500", 100), Ok(Some(0..100)));
        assert_eq!(parse_range("bytes=95-200", 100), Ok(Some(95..100)));
        assert_eq!(parse_range("bytes=100-", 100), Err(()));
        assert_eq!(parse_range("bytes=-0", 100), Err(()));
        // Not a single byte range: the whole file.
        assert_eq!(parse_range("bytes=0-1,5-6", 100), Ok(None));
        assert_eq!(parse_range("items=0-1", 100), Ok(None));
        assert_eq!(parse_range("bytes=9-1", 100), Ok(None));
        assert_eq!(parse_range("bytes=x-1", 100), Ok(None));
    }

    #[test]
    fn query_values_are_percent_decoded() {
        assert_eq!(percent_decode("r%C3%A9sum%C3%A9+1.pdf"), "résumé 1.pdf");
        assert_eq!(percent_decode("100%"), "100%");
        assert_eq!(percent_decode("%zz%4"), "%zz%4");
        assert_eq!(percent_decode("%FF"), "\u{fffd}");
        assert_eq!(percent_decode("%é%"), "%é%");
    }
}
