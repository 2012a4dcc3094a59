//! File names as a client gave them, made safe to store, show and put in a
//! `Content-Disposition` header.

/// Longest name kept, in bytes (cut at a character boundary).
const MAX_NAME: usize = 200;

/// The last path component of `raw`, without control characters, quotes or
/// backslashes, and without bidirectional or zero-width characters (a
/// right-to-left override shows `\u{202e}gpj.exe` as `exe.jpg`), trimmed of
/// spaces and dots at either end; `file` if nothing is left.
pub fn sanitise(raw: &str) -> String {
    let last = raw.rsplit(['/', '\\']).next().unwrap_or("");
    let cleaned: String = last
        .chars()
        .filter(|&c| !crate::protocol::names::is_invisible_format(c))
        .map(|c| match c {
            c if c.is_control() => '_',
            '"' | '\\' | ';' => '_',
            c => c,
        })
        .collect();
    let trimmed = cleaned.trim_matches(|c: char| c == '.' || c.is_whitespace());
    let mut end = trimmed.len().min(MAX_NAME);
    while !trimmed.is_char_boundary(end) {
        end -= 1;
    }
    match &trimmed[..end] {
        "" => "file".to_owned(),
        name => name.to_owned(),
    }
}

/// `Content-Disposition` for a sanitised `name`: `inline` or `attachment`,
/// an ASCII fallback and the exact name as RFC 8187 `filename*`.
pub fn content_disposition(name: &str, inline: bool) -> String {
    let kind = if inline { "inline" } else { "attachment" };
    let ascii: String = name
        .chars()
        .map(|c| {
            if c.is_ascii() && !c.is_ascii_control() {
                c
            } else {
                '_'
            }
        })
        .collect();
    let mut encoded = String::with_capacity(name.len() * 3);
    for b in name.bytes() {
        if b.is_ascii_alphanumeric() || b"!#$&+-.^_`|~".contains(&b) {
            encoded.push(b as char);
        } else {
            encoded.push_str(&format!("%{b:02X}"));
        }
    }
    format!("{kind}; filename=\"{ascii}\"; filename*=UTF-8''{encoded}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_only_a_safe_last_component() {
        assert_eq!(sanitise("../../etc/passwd"), "passwd");
        assert_eq!(sanitise("C:\\Users\\me\\cat.png"), "cat.png");
        assert_eq!(sanitise("a\"b;c\r\n.txt"), "a_b_c__.txt");
        assert_eq!(sanitise(" .. "), "file");
        assert_eq!(sanitise(""), "file");
        assert_eq!(sanitise("résumé.pdf"), "résumé.pdf");
        // A right-to-left override would show this as `exe.jpg`.
        assert_eq!(sanitise("\u{202e}gpj.exe"), "gpj.exe");
        assert_eq!(
            sanitise("in\u{200b}voice\u{2066}.pdf\u{feff}"),
            "invoice.pdf"
        );
        let long = "é".repeat(300);
        let cut = sanitise(&long);
        assert!(cut.len() <= MAX_NAME && cut.chars().all(|c| c == 'é'));
    }

    #[test]
    fn disposition_has_an_ascii_fallback_and_the_exact_name() {
        assert_eq!(
            content_disposition("résumé 1.pdf", false),
            "attachment; filename=\"r_sum_ 1.pdf\"; filename*=UTF-8''r%C3%A9sum%C3%A9%201.pdf"
        );
        assert!(content_disposition("a.png", true).starts_with("inline; "));
    }
}
