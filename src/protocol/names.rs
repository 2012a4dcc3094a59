//! Validated identifiers: room names and client ids.
//!
//! Both share one rule so that they are safe in logs, URLs and Redis channel
//! names: 1 to `max_len` characters from `A-Z a-z 0-9 _ - . : @`.

use std::borrow::Borrow;
use std::fmt;
use std::sync::Arc;

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    #[error("must not be empty")]
    Empty,
    #[error("longer than {0} characters")]
    TooLong(usize),
    #[error("may only contain letters, digits and _ - . : @")]
    BadChar,
}

fn check(name: &str, max_len: usize) -> Result<(), NameError> {
    if name.is_empty() {
        return Err(NameError::Empty);
    }
    if name.len() > max_len {
        return Err(NameError::TooLong(max_len));
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.' | b':' | b'@'))
    {
        return Err(NameError::BadChar);
    }
    Ok(())
}

/// A room name; cheap to clone (shared) because every member map and every
/// cross-shard message carries one.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RoomName(Arc<str>);

impl RoomName {
    pub fn parse(name: &str, max_len: usize) -> Result<RoomName, NameError> {
        check(name, max_len)?;
        Ok(RoomName(Arc::from(name)))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl Borrow<str> for RoomName {
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for RoomName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The id a connection's messages carry in `from`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ClientId(Arc<str>);

impl ClientId {
    pub fn parse(id: &str, max_len: usize) -> Result<ClientId, NameError> {
        check(id, max_len)?;
        Ok(ClientId(Arc::from(id)))
    }

    /// A fresh random id for a client that did not bring one.
    pub fn generate() -> ClientId {
        let mut buf = uuid::Uuid::encode_buffer();
        ClientId(Arc::from(
            &*uuid::Uuid::new_v4().hyphenated().encode_lower(&mut buf),
        ))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ClientId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Characters that change how text around them is shown without being
/// seen: bidirectional overrides and isolates (`\u{202e}gpj.exe` shows as
/// `exe.jpg`), zero-width characters and the byte order mark. Refused in
/// display names, dropped from file names.
pub fn is_invisible_format(c: char) -> bool {
    matches!(c,
        '\u{061c}' | '\u{200b}'..='\u{200f}' | '\u{202a}'..='\u{202e}'
        | '\u{2060}'..='\u{2064}' | '\u{2066}'..='\u{2069}' | '\u{feff}')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn room_rules() {
        assert!(RoomName::parse("general", 64).is_ok());
        assert!(RoomName::parse("team-1.dev:ops@x_y", 64).is_ok());
        assert_eq!(RoomName::parse("", 64), Err(NameError::Empty));
        assert_eq!(RoomName::parse("a b", 64), Err(NameError::BadChar));
        assert_eq!(RoomName::parse("ré", 64), Err(NameError::BadChar));
        assert_eq!(
            RoomName::parse(&"a".repeat(65), 64),
            Err(NameError::TooLong(64))
        );
    }

    #[test]
    fn generated_ids_are_valid_and_distinct() {
        let (a, b) = (ClientId::generate(), ClientId::generate());
        assert_ne!(a, b);
        assert!(ClientId::parse(a.as_str(), 64).is_ok());
    }
}
