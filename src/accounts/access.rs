//! Which conversations a room name is, and who may use them.
//!
//! Room names are public rooms, except three reserved prefixes: `group:` and
//! `dm:` name private conversations (members only), `user:` a user's own
//! notification channel (that user only).

use super::{AccountError, Accounts, Identity};
use crate::protocol::RoomName;
use crate::store::directory::DirectoryRequest;

/// What a room name is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RoomKind<'a> {
    Public,
    /// A group or direct conversation: its id.
    Private(&'a str),
    /// A user's notification channel: the user's id.
    Personal(&'a str),
    /// The server's own (e.g. FastChat's presence lobby): no client joins
    /// it by name.
    Internal,
}

pub const GROUP_PREFIX: &str = "group:";
pub const DM_PREFIX: &str = crate::rooms::encode::DM_PREFIX;
pub const USER_PREFIX: &str = "user:";
pub const INTERNAL_PREFIX: &str = "fastchat:";

pub fn kind(room: &RoomName) -> RoomKind<'_> {
    let name = room.as_str();
    // A reserved prefix in another case (`DM:…`, `User:…`) is no public
    // room: it would look like the conversation or channel to people.
    let reserved = [GROUP_PREFIX, DM_PREFIX, USER_PREFIX, INTERNAL_PREFIX];
    if reserved.iter().any(|p| {
        name.len() >= p.len()
            && name.as_bytes()[..p.len()].eq_ignore_ascii_case(p.as_bytes())
            && !name.starts_with(p)
    }) {
        return RoomKind::Internal;
    }
    if name.starts_with(GROUP_PREFIX) || name.starts_with(DM_PREFIX) {
        RoomKind::Private(name)
    } else if let Some(user) = name.strip_prefix(USER_PREFIX) {
        RoomKind::Personal(user)
    } else if name.starts_with(INTERNAL_PREFIX) {
        RoomKind::Internal
    } else {
        RoomKind::Public
    }
}

/// A user's notification channel.
pub fn personal_room(user_id: &str, max_name: usize) -> Option<RoomName> {
    RoomName::parse(&format!("{USER_PREFIX}{user_id}"), max_name).ok()
}

impl Accounts {
    /// Whether `identity` may join, read or post to `room`: anyone for a
    /// public room, members for a private conversation, the user for their
    /// own channel.
    pub async fn may_use(&self, identity: &Identity, room: &RoomName) -> Result<(), AccountError> {
        match kind(room) {
            RoomKind::Public => Ok(()),
            RoomKind::Internal => Err(AccountError::Forbidden),
            RoomKind::Personal(owner) => match identity.user() {
                Some(u) if u.id == owner => Ok(()),
                _ => Err(AccountError::Forbidden),
            },
            RoomKind::Private(conversation) => {
                let Some(user) = identity.user() else {
                    return Err(AccountError::Forbidden);
                };
                let (c, u) = (conversation.to_owned(), user.id.clone());
                match self
                    .ask(|tx| DirectoryRequest::IsMember(c, u, tx))
                    .await??
                {
                    true => Ok(()),
                    false => Err(AccountError::Forbidden),
                }
            }
        }
    }
}
