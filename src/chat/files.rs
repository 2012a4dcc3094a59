//! Files in the chat: who may read a file, and a chat's attachments (each
//! file checked and recorded as posted in the room, then described once in
//! the event every recipient gets).

use serde::Serialize;

use super::ChatError;
use crate::accounts::Identity;
use crate::files::FileError;
use crate::node::Node;
use crate::protocol::RoomName;
use crate::store::directory::FileRecord;

/// Where a file is read from, relative to the server.
pub fn url(id: &str) -> String {
    format!("/api/chat-api/files/{id}")
}

/// A file as clients see it (the upload's answer, an attachment).
#[derive(Serialize)]
pub struct FileView<'a> {
    pub id: &'a str,
    pub name: &'a str,
    pub size: u64,
    pub content_type: &'a str,
    pub sha256: &'a str,
    pub url: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub width: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub height: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub thumbnail_url: Option<String>,
}

impl<'a> FileView<'a> {
    pub fn of(f: &'a FileRecord) -> FileView<'a> {
        let url = url(&f.id);
        FileView {
            id: &f.id,
            name: &f.name,
            size: f.size,
            content_type: &f.content_type,
            sha256: &f.sha256,
            thumbnail_url: f.thumbnail.then(|| format!("{url}/thumbnail")),
            url,
            width: f.dimensions.map(|d| d.0),
            height: f.dimensions.map(|d| d.1),
        }
    }
}

/// Why a file may not be read or attached.
#[derive(Debug, thiserror::Error)]
pub enum FileAccess {
    #[error("not allowed to read this file")]
    Forbidden,
    #[error(transparent)]
    File(#[from] FileError),
}

/// Whether `identity` may read `file`: its uploader, anyone who may read a
/// room it was posted in (with auth off, anyone for a public room), anyone
/// for an avatar.
pub async fn may_read(
    node: &Node,
    identity: &Identity,
    file: &FileRecord,
) -> Result<(), FileAccess> {
    if file.public {
        return Ok(());
    }
    if let (Some(uploader), Some(user)) = (&file.uploader, identity.user()) {
        if *uploader == user.id {
            return Ok(());
        }
    }
    let max_name = node.config.limits.max_name_length;
    for room in node.files.rooms(&file.id).await? {
        let Ok(room) = RoomName::parse(&room, max_name) else {
            continue;
        };
        if node.accounts.may_use(identity, &room).await.is_ok() {
            return Ok(());
        }
    }
    Err(FileAccess::Forbidden)
}

/// Checks the files `ids` for a chat by `identity` in `room` and records
/// them as posted there: the JSON array the event carries. A file may be
/// attached by whoever may read it; an anonymous upload (auth off) by
/// anyone who has its id.
pub async fn attach(
    node: &Node,
    identity: &Identity,
    room: &RoomName,
    ids: &[String],
) -> Result<String, ChatError> {
    let max = node.config.files.max_attachments;
    if ids.len() > max {
        return Err(ChatError::Attachment(format!(
            "at most {max} attachments per message"
        )));
    }
    let mut records = Vec::with_capacity(ids.len());
    for id in ids {
        let refused = |e: FileAccess| match e {
            FileAccess::File(FileError::NotFound) => {
                ChatError::Attachment(format!("no such file {id}"))
            }
            FileAccess::File(FileError::NoStore) => {
                ChatError::Attachment("files need a store (store.backend is none)".into())
            }
            FileAccess::Forbidden => ChatError::Attachment(format!("not allowed to attach {id}")),
            FileAccess::File(_) => ChatError::Unavailable,
        };
        let record = node.files.record(id).await.map_err(|e| refused(e.into()))?;
        if record.uploader.is_some() {
            may_read(node, identity, &record).await.map_err(refused)?;
        }
        records.push(record);
    }
    for record in &records {
        node.files
            .posted(&record.id, room.as_str())
            .await
            .map_err(|_| ChatError::Unavailable)?;
    }
    let views: Vec<FileView> = records.iter().map(FileView::of).collect();
    Ok(sonic_rs::to_string(&views).expect("plain structs serialise"))
}
