//! What a file is, read from its first bytes (never from what the client
//! says it is).

/// How many leading bytes the sniffer looks at.
pub const HEAD: usize = 8192;

/// The MIME type of a file that starts with `head`.
pub fn content_type(head: &[u8]) -> &'static str {
    if let Some(kind) = infer::get(head) {
        return kind.mime_type();
    }
    if looks_like_text(head) {
        "text/plain; charset=utf-8"
    } else {
        "application/octet-stream"
    }
}

/// Raster images chatd decodes (dimensions, thumbnail) and serves inline.
pub fn is_image(content_type: &str) -> bool {
    matches!(
        content_type,
        "image/png" | "image/jpeg" | "image/gif" | "image/webp"
    )
}

/// UTF-8 (a character cut at the end of `head` is fine) without control
/// characters other than whitespace.
fn looks_like_text(head: &[u8]) -> bool {
    let valid = match std::str::from_utf8(head) {
        Ok(s) => s,
        // At most 3 bytes of one character cut off by the end of the head.
        Err(e) if e.error_len().is_none() && head.len() - e.valid_up_to() < 4 => {
            std::str::from_utf8(&head[..e.valid_up_to()]).unwrap_or("")
        }
        Err(_) => return false,
    };
    !head.is_empty()
        && valid
            .chars()
            .all(|c| !c.is_control() || matches!(c, '\t' | '\n' | '\r' | '\x0c'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_bytes_not_the_name() {
        let png = b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR";
        assert_eq!(content_type(png), "image/png");
        assert_eq!(content_type(b"\xff\xd8\xff\xe0\0\x10JFIF\0"), "image/jpeg");
        assert_eq!(content_type(b"GIF89a\x01\0\x01\0"), "image/gif");
        assert_eq!(content_type(b"%PDF-1.7\n"), "application/pdf");
        assert_eq!(
            content_type("héllo\n".as_bytes()),
            "text/plain; charset=utf-8"
        );
        // A character cut by the end of the head is still text.
        assert_eq!(
            content_type(&"é".as_bytes()[..1]),
            "text/plain; charset=utf-8"
        );
        assert_eq!(content_type(b"\0\x01\x02\x03"), "application/octet-stream");
        assert_eq!(content_type(b""), "application/octet-stream");
        assert!(is_image("image/webp") && !is_image("image/svg+xml"));
    }
}
