//! A user's login sessions over REST: `POST auth/logout` ends the caller's
//! own, `GET me/sessions` lists them (one per login: device, address,
//! when), `DELETE me/sessions/{id}` ends one from another device. An ended
//! session's token is refused from then on, and the WebSockets opened with
//! it close (4001) on every node.

use hyper::{Response, StatusCode};
use serde::Serialize;

use super::{json, to_json, Body};
use crate::accounts::{AccountError, Accounts, Identity};
use crate::chat::conversations;
use crate::node::Node;

#[derive(Serialize)]
struct SessionView<'a> {
    id: &'a str,
    device: &'a str,
    address: &'a str,
    /// Milliseconds since the Unix epoch, as everywhere in the API.
    created_at: i64,
    expires_at: i64,
    /// The session of the token this request carries.
    current: bool,
}

/// `POST auth/logout`: ends the session of the token it carries.
pub async fn log_out(
    node: &Node,
    shard: usize,
    identity: &Identity,
) -> Result<Response<Body>, AccountError> {
    let user = Accounts::require_user(identity)?;
    let session = identity.session().ok_or(AccountError::Invalid {
        field: "token",
        message: "this token belongs to no session (log in again for one that does)",
    })?;
    node.accounts.end_session(user, session).await?;
    conversations::sign_out_everywhere(node, shard, user, Some(session));
    Ok(json(StatusCode::NO_CONTENT, String::new()))
}

/// `GET me/sessions`: the caller's live sessions, oldest first.
pub async fn list(node: &Node, identity: &Identity) -> Result<Response<Body>, AccountError> {
    let user = Accounts::require_user(identity)?;
    let sessions = node.accounts.sessions(user).await?;
    let views: Vec<SessionView> = sessions
        .iter()
        .map(|s| SessionView {
            id: &s.id,
            device: &s.device,
            address: &s.address,
            created_at: s.created_at,
            expires_at: s.expires_at,
            current: identity.session() == Some(s.id.as_str()),
        })
        .collect();
    Ok(json(StatusCode::OK, to_json(&views)))
}

/// `DELETE me/sessions/{id}`: ends one of the caller's sessions (`404` if
/// they have none by that id).
pub async fn end(
    node: &Node,
    shard: usize,
    identity: &Identity,
    id: &str,
) -> Result<Response<Body>, AccountError> {
    let user = Accounts::require_user(identity)?;
    // Session ids are UUIDs: anything else names none (and never reaches
    // the store, where it would be part of a key).
    if uuid::Uuid::parse_str(id).is_err() {
        return Err(AccountError::NotFound("session"));
    }
    node.accounts.end_session(user, id).await?;
    conversations::sign_out_everywhere(node, shard, user, Some(id));
    Ok(json(StatusCode::NO_CONTENT, String::new()))
}
