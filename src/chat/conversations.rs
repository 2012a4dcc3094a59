//! Private conversations and what the server itself says: groups (an owner
//! adds and removes members), direct messages (one conversation per pair),
//! notifications to a user's channel, removals that take effect on every
//! node at once, and the server-side publish API.
//!
//! A conversation is a room named by its id (`group:<uuid>`, `dm:<uuid>`):
//! its messages are stored, sequenced, acked and recovered like any room's.

use serde::Serialize;
use std::sync::Arc;

use super::ChatError;
use crate::accounts::access::{personal_room, DM_PREFIX, GROUP_PREFIX};
use crate::accounts::{AccountError, Accounts};
use crate::broker::{Origin, Payload, Publish};
use crate::model::{Event, Topic};
use crate::node::Node;
use crate::protocol::{ClientId, RoomName};
use crate::store::directory::{Conversation, ConversationKind, DirectoryRequest, User};

/// Group names: 1 to 64 characters, no control characters.
pub(crate) fn check_group_name(name: &str) -> Result<(), AccountError> {
    let n = name.chars().count();
    if !(1..=64).contains(&n) || name.chars().any(char::is_control) || name.trim().is_empty() {
        return Err(AccountError::Invalid {
            field: "name",
            message: "name must be 1-64 characters without control characters",
        });
    }
    Ok(())
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

fn room_of(node: &Node, id: &str) -> Result<RoomName, AccountError> {
    RoomName::parse(id, node.config.limits.max_name_length).map_err(|_| AccountError::Invalid {
        field: "id",
        message: "not a conversation id",
    })
}

/// The sender name of what the server says itself.
fn server_sender() -> ClientId {
    ClientId::parse("server", 64).expect("a valid name")
}

/// A conversation as REST answers it.
#[derive(Serialize)]
pub struct ConversationView {
    pub id: String,
    pub kind: &'static str,
    pub name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
    pub members: Vec<String>,
    pub created_at: i64,
}

async fn view(accounts: &Accounts, c: Conversation) -> Result<ConversationView, AccountError> {
    let id = c.id.clone();
    let members = accounts
        .ask(|tx| DirectoryRequest::Members(id, tx))
        .await??;
    Ok(ConversationView {
        id: c.id,
        kind: c.kind.as_str(),
        name: c.name,
        owner: c.owner,
        members,
        created_at: c.created_at,
    })
}

/// The group `id`, if `caller` may manage it (its owner).
async fn owned_group(
    accounts: &Accounts,
    caller: &User,
    id: &str,
) -> Result<Conversation, AccountError> {
    let group = group(accounts, id).await?;
    if group.owner.as_deref() != Some(caller.id.as_str()) {
        return Err(AccountError::Forbidden);
    }
    Ok(group)
}

async fn group(accounts: &Accounts, id: &str) -> Result<Conversation, AccountError> {
    let key = id.to_owned();
    match accounts
        .ask(|tx| DirectoryRequest::Conversation(key, tx))
        .await??
    {
        Some(c) if c.kind == ConversationKind::Group => Ok(c),
        _ => Err(AccountError::NotFound("group")),
    }
}

pub async fn create_group(
    node: &Node,
    owner: &User,
    name: &str,
) -> Result<ConversationView, AccountError> {
    check_group_name(name)?;
    let accounts = &node.accounts;
    let group = Conversation {
        id: format!("{GROUP_PREFIX}{}", uuid::Uuid::new_v4()),
        kind: ConversationKind::Group,
        name: name.to_owned(),
        owner: Some(owner.id.clone()),
        created_at: now_ms(),
    };
    let (g, members) = (group.clone(), vec![owner.id.clone()]);
    accounts
        .ask(|tx| DirectoryRequest::CreateConversation(g, members, tx))
        .await??;
    view(accounts, group).await
}

pub async fn add_member(
    node: &Node,
    caller: &User,
    group_id: &str,
    user_id: &str,
) -> Result<ConversationView, AccountError> {
    let accounts = &node.accounts;
    let group = owned_group(accounts, caller, group_id).await?;
    accounts.user(user_id).await?;
    let (g, u) = (group.id.clone(), user_id.to_owned());
    let added = accounts
        .ask(|tx| DirectoryRequest::AddMember(g, u, tx))
        .await??;
    if added {
        notify(node, user_id, &Notice::group("group_added", &group)).await;
    }
    view(accounts, group).await
}

/// Removes `user_id` from the group (the owner may remove anyone but
/// themselves; anyone may leave): they stop receiving at once on every node.
pub async fn remove_member(
    node: &Node,
    shard: usize,
    caller: &User,
    group_id: &str,
    user_id: &str,
) -> Result<(), AccountError> {
    let accounts = &node.accounts;
    let group = if caller.id == user_id {
        group(accounts, group_id).await?
    } else {
        owned_group(accounts, caller, group_id).await?
    };
    if group.owner.as_deref() == Some(user_id) {
        return Err(AccountError::Invalid {
            field: "user_id",
            message: "the owner cannot leave or be removed from their group",
        });
    }
    let (g, u) = (group.id.clone(), user_id.to_owned());
    let removed = accounts
        .ask(|tx| DirectoryRequest::RemoveMember(g, u, tx))
        .await??;
    if !removed {
        return Err(AccountError::NotFound("member"));
    }
    revoke(node, shard, &group.id, user_id)?;
    notify(node, user_id, &Notice::group("group_removed", &group)).await;
    Ok(())
}

/// The caller's conversations, oldest first: groups only, or (`kind`
/// `None`) groups and direct conversations.
pub async fn conversations(
    node: &Node,
    caller: &User,
    kind: Option<ConversationKind>,
) -> Result<Vec<ConversationView>, AccountError> {
    let accounts = &node.accounts;
    let id = caller.id.clone();
    let all = accounts
        .ask(|tx| DirectoryRequest::ConversationsOf(id, tx))
        .await??;
    let mut out = Vec::new();
    for c in all.into_iter().filter(|c| kind.is_none_or(|k| c.kind == k)) {
        out.push(view(accounts, c).await?);
    }
    Ok(out)
}

/// The direct conversation of `caller` and `other_id` if there is one
/// (`GET dm/{user}`: reading changes nothing; `POST` makes it).
pub async fn find_direct(
    node: &Node,
    caller: &User,
    other_id: &str,
) -> Result<ConversationView, AccountError> {
    let dms = conversations(node, caller, Some(ConversationKind::Direct)).await?;
    dms.into_iter()
        .find(|c| c.members.iter().any(|m| m == other_id) && other_id != caller.id)
        .ok_or(AccountError::NotFound("direct conversation"))
}

/// The direct conversation of `caller` and `other_id`: one per pair, made
/// by whoever asks first (the other is notified then).
pub async fn direct(
    node: &Node,
    caller: &User,
    other_id: &str,
) -> Result<ConversationView, AccountError> {
    let accounts = &node.accounts;
    let other = accounts.user(other_id).await?;
    if other.id == caller.id {
        return Err(AccountError::Invalid {
            field: "user_id",
            message: "a direct conversation needs another user",
        });
    }
    let (a, b) = if caller.id < other.id {
        (caller.id.clone(), other.id.clone())
    } else {
        (other.id.clone(), caller.id.clone())
    };
    let key = format!("{a}:{b}");
    let candidate = Conversation {
        id: format!("{DM_PREFIX}{}", uuid::Uuid::new_v4()),
        kind: ConversationKind::Direct,
        name: format!("{} & {}", caller.username, other.username),
        owner: None,
        created_at: now_ms(),
    };
    let (conversation, created) = accounts
        .ask(|tx| DirectoryRequest::Direct(key, candidate, [a, b], tx))
        .await??;
    if created {
        let notice = Notice {
            event: "dm_created",
            conversation: Some(&conversation.id),
            name: Some(&conversation.name),
            from: Some(&caller.id),
            excerpt: None,
        };
        notify(node, &other.id, &notice).await;
    }
    view(accounts, conversation).await
}

/// A notification's `data`.
#[derive(Serialize)]
pub struct Notice<'a> {
    pub event: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub conversation: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub from: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub excerpt: Option<&'a str>,
}

impl<'a> Notice<'a> {
    fn group(event: &'static str, group: &'a Conversation) -> Notice<'a> {
        Notice {
            event,
            conversation: Some(&group.id),
            name: Some(&group.name),
            from: None,
            excerpt: None,
        }
    }
}

/// Sends `notice` to every connection of `user_id` on every node: stored in
/// the user's channel (so a reconnecting user can catch up), or, without a
/// store, delivered live only. A failure is logged: the change it reports
/// is made either way.
pub async fn notify<T: Serialize>(node: &Node, user_id: &str, notice: &T) {
    let Some(room) = personal_room(user_id, node.config.limits.max_name_length) else {
        return;
    };
    let data = sonic_rs::to_string(notice).expect("plain structs serialise");
    let event = Event::notification(room, server_sender(), &data);
    if let Err(e) = publish_event(node, event, None) {
        tracing::warn!(user = user_id, error = %e, "notification not sent");
    }
}

/// Stores (with a store) and fans out a server-made event; `client_msg_id`
/// makes a retry idempotent.
fn publish_event(
    node: &Node,
    event: Event,
    client_msg_id: Option<RoomName>,
) -> Result<(), ChatError> {
    if let Some(store) = &node.store {
        return store
            .append(event, Origin::server(client_msg_id))
            .map_err(ChatError::NotStored);
    }
    let topic = event.topic.clone();
    let publish = Publish {
        topic: &topic,
        payload: Payload::Event(Arc::new(event)),
        origin: None,
    };
    node.broker
        .publish(0, publish)
        .map_err(ChatError::NotDelivered)
}

/// Every node closes `user`'s connections now: their tokens were revoked
/// (a password change: every `session`, `None`; a logout or an ended
/// session: that one), and a socket opened with one must not go on.
pub fn sign_out_everywhere(node: &Node, shard: usize, user: &User, session: Option<&str>) {
    let Ok(client) = ClientId::parse(&user.id, node.config.limits.max_name_length) else {
        return;
    };
    let publish = Publish {
        topic: &Topic::Global,
        payload: Payload::Event(Arc::new(Event::sign_out(client, session))),
        origin: None,
    };
    if let Err(e) = node.broker.publish(shard, publish) {
        tracing::warn!(user = %user.id, error = %e, "sign-out not published");
    }
}

/// Every node drops `user_id`'s memberships in `conversation` now.
fn revoke(
    node: &Node,
    shard: usize,
    conversation: &str,
    user_id: &str,
) -> Result<(), AccountError> {
    let room = room_of(node, conversation)?;
    let user = ClientId::parse(user_id, node.config.limits.max_name_length)
        .map_err(|_| AccountError::NotFound("user"))?;
    let topic = Topic::Room(room.clone());
    let publish = Publish {
        topic: &topic,
        payload: Payload::Event(Arc::new(Event::revoke(room, user))),
        origin: None,
    };
    node.broker.publish(shard, publish).map_err(|e| {
        tracing::warn!(error = %e, "removal not published");
        AccountError::Unavailable
    })
}

/// Notifies each member of the private conversation `room` named as
/// `@username` in `body` (not the sender).
pub async fn mentions(node: Arc<Node>, room: RoomName, sender: ClientId, body: String) {
    let accounts = &node.accounts;
    for name in mentioned_names(&body) {
        let Ok(Ok(Some(user))) = accounts
            .ask(|tx| DirectoryRequest::UserByName(name, tx))
            .await
        else {
            continue;
        };
        if user.user.id == sender.as_str() {
            continue;
        }
        let (c, u) = (room.as_str().to_owned(), user.user.id.clone());
        if !matches!(
            accounts
                .ask(|tx| DirectoryRequest::IsMember(c, u, tx))
                .await,
            Ok(Ok(true))
        ) {
            continue;
        }
        let excerpt: String = body.chars().take(140).collect();
        let notice = Notice {
            event: "mention",
            conversation: Some(room.as_str()),
            name: None,
            from: Some(sender.as_str()),
            excerpt: Some(&excerpt),
        };
        notify(&node, &user.user.id, &notice).await;
    }
}

/// Most users one message may mention (each costs store lookups).
const MAX_MENTIONS: usize = 16;

/// The distinct valid usernames written as `@name` in `body` (a trailing
/// `.` ends a sentence, not a name), at most [`MAX_MENTIONS`].
pub(crate) fn mentioned_names(body: &str) -> Vec<String> {
    let mut names: Vec<String> = body
        .split('@')
        .skip(1)
        .filter_map(|rest| {
            let name: String = rest
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || "_.-".contains(*c))
                .collect();
            crate::accounts::check_username(name.trim_end_matches('.')).ok()
        })
        .collect();
    names.sort();
    names.dedup();
    names.truncate(MAX_MENTIONS);
    names
}

/// What an application backend may publish (`POST
/// /api/chat-api/server/publish`).
pub enum ServerMessage {
    /// A chat in the room, from `server`, with this content.
    Chat(String),
    /// A notification in the room with this JSON `data`.
    Notification(String),
}

/// Publishes an application's message to `room` through the same path as a
/// client's: stored, sequenced, fanned out on every node.
pub fn server_publish(
    node: &Node,
    room: RoomName,
    message: ServerMessage,
    client_msg_id: Option<RoomName>,
) -> Result<(), ChatError> {
    let event = match message {
        ServerMessage::Chat(content) => Event::chat(Topic::Room(room), server_sender(), &content),
        ServerMessage::Notification(data) => Event::notification(room, server_sender(), &data),
    };
    publish_event(node, event, client_msg_id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mentions_are_valid_distinct_names() {
        let names = mentioned_names("hi @Bob and @bob. also @al, @carol_1 and @x y@z");
        assert_eq!(names, ["bob", "carol_1"]);
        let many: String = (0..40).map(|i| format!("@user{i:02} ")).collect();
        assert_eq!(mentioned_names(&many).len(), MAX_MENTIONS);
    }
}
