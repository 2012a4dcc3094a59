//! A nesting-depth bound for client JSON, checked before any parser sees it.
//!
//! sonic-rs (like serde_json) recurses once per `[` or `{`, including inside
//! fields the target type ignores, so one text frame of ten thousand `[`
//! overflowed a shard's stack and aborted the whole process. This scan is
//! iterative, allocation-free and linear: it tracks only whether it is inside
//! a string (and after a backslash there) and the current depth. It does not
//! validate the JSON; the parser still does that, on input now known to be
//! shallow enough to parse safely.

/// Input nests arrays and objects deeper than allowed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TooDeep;

/// Whether `text` nests arrays and objects at most `max` levels deep.
/// Brackets inside strings do not count.
pub fn check(text: &[u8], max: usize) -> Result<(), TooDeep> {
    let mut depth = 0usize;
    let mut in_string = false;
    let mut escaped = false;
    for &b in text {
        if in_string {
            if escaped {
                escaped = false;
            } else if b == b'\\' {
                escaped = true;
            } else if b == b'"' {
                in_string = false;
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'[' | b'{' => {
                depth += 1;
                if depth > max {
                    return Err(TooDeep);
                }
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_only_structure_outside_strings() {
        assert_eq!(check(br#"{"a":[1,{"b":2}]}"#, 3), Ok(()));
        assert_eq!(check(br#"{"a":[1,{"b":2}]}"#, 2), Err(TooDeep));
        assert_eq!(check(br#"{"a":"[[[[[[[[\"[[[["}"#, 1), Ok(()));
        assert_eq!(check(br#"{"a":"\\"}"#, 1), Ok(()));
        assert_eq!(check(br#"{"a":"\\",  "b":[[]]}"#, 2), Err(TooDeep));
    }

    #[test]
    fn the_reported_crashes_are_refused() {
        let open = vec![b'['; 9_500];
        assert_eq!(check(&open, 32), Err(TooDeep));
        let objects = "{\"\":".repeat(12_000);
        assert_eq!(check(objects.as_bytes(), 32), Err(TooDeep));
        // Balanced but shallow input of any length passes.
        let wide = "[]".repeat(50_000);
        assert_eq!(check(wide.as_bytes(), 1), Ok(()));
    }
}
