//! The REST API under `/api/chat-api/`: accounts, users, groups, direct
//! conversations, and the server-side publish API. JSON in and out; every
//! refusal is `{"error":{"code","message","field"?}}` with its status.
//!
//! | method and path | who | what |
//! |---|---|---|
//! | `POST auth/register` | anyone | `{"username","password","display_name"}` → 201 user |
//! | `POST auth/login` | anyone | `{"username","password"}` → `{"token","expires_at","user"}` |
//! | `GET me`, `PATCH me` | user | the caller; `{"display_name"}` |
//! | `POST me/password` | user | `{"old_password","new_password"}` → a new token; older ones stop working |
//! | `GET users`, `GET users/{id}` | token (any, with auth on) | users with `online` |
//! | `GET groups`, `POST groups` | user | mine; `{"name"}` → 201 group (caller owns it) |
//! | `POST groups/{id}/members` | owner | `{"user_id"}` |
//! | `DELETE groups/{id}/members/{user_id}` | owner | removed at once on every node |
//! | `POST groups/{id}/leave` | member | |
//! | `GET` or `POST dm/{user_id}` | user | the pair's conversation (one per pair) |
//! | `POST server/publish` | `api.keys` | `{"room","type":"chat"\|"notification","data"}` |

use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use serde::{Deserialize, Serialize};
use std::rc::Rc;

use super::{client_addr, json, to_json};
use crate::accounts::{AccountError, Accounts, Identity, Login, Origin};
use crate::chat::conversations::{self, ServerMessage};
use crate::chat::ChatError;
use crate::files::{FileError, Variant};
use crate::node::Node;
use crate::protocol::RoomName;
use crate::shard::Shard;
use crate::store::directory::{ConversationKind, User};

use super::error::{self, refusal, wrong_method};
use super::Body;

fn invalid(field: &'static str, message: &'static str) -> AccountError {
    AccountError::Invalid { field, message }
}

/// The request body as `T`, at most `limits.max_message_size` bytes.
async fn body<T: serde::de::DeserializeOwned>(
    req: Request<Incoming>,
    max: usize,
) -> Result<T, AccountError> {
    let bytes = Limited::new(req.into_body(), max)
        .collect()
        .await
        .map_err(|_| invalid("body", "the body is too large or was cut off"))?
        .to_bytes();
    sonic_rs::from_slice(&bytes).map_err(|_| invalid("body", "the body is not the JSON expected"))
}

#[derive(Serialize)]
struct UserView<'a> {
    id: &'a str,
    username: &'a str,
    display_name: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    avatar_file_id: Option<&'a str>,
    created_at: i64,
    online: bool,
}

fn user_view<'a>(accounts: &Accounts, u: &'a User) -> UserView<'a> {
    UserView {
        id: &u.id,
        username: &u.username,
        display_name: &u.display_name,
        avatar_file_id: u.avatar_file_id.as_deref(),
        created_at: u.created_at,
        online: accounts.online.is_online(&u.id),
    }
}

#[derive(Serialize)]
struct LoginView<'a> {
    token: &'a str,
    /// RFC 3339.
    expires_at: String,
    user: UserView<'a>,
}

fn login_view(accounts: &Accounts, login: &Login) -> Response<Body> {
    let view = LoginView {
        token: &login.token,
        expires_at: humantime::format_rfc3339_seconds(login.expires_at).to_string(),
        user: user_view(accounts, &login.user),
    };
    json(StatusCode::OK, to_json(&view))
}

#[derive(Deserialize)]
struct Register {
    username: String,
    password: String,
    display_name: String,
}

#[derive(Deserialize)]
struct Credentials {
    username: String,
    password: String,
}

#[derive(Deserialize)]
struct Profile {
    display_name: Option<String>,
    /// An image the user uploaded; it becomes readable by anyone.
    avatar_file_id: Option<String>,
}

#[derive(Deserialize)]
struct PasswordChange {
    old_password: String,
    new_password: String,
}

#[derive(Deserialize)]
struct NewGroup {
    name: String,
}

#[derive(Deserialize)]
struct NewMember {
    user_id: String,
}

#[derive(Deserialize)]
struct ServerPublish {
    room: String,
    #[serde(rename = "type")]
    kind: String,
    data: sonic_rs::Value,
    #[serde(default)]
    client_msg_id: Option<String>,
}

/// The methods a path of the API takes (the `Allow` of a `405`), `None`
/// for a path it does not have. Checked before the caller is identified:
/// a wrong method is `405`, not `401` or `404`.
fn allowed(segments: &[&str]) -> Option<&'static str> {
    Some(match segments {
        ["server", "publish"] | ["auth", "register" | "login" | "logout"] | ["me", "password"] => {
            "POST"
        }
        ["me", "sessions"] => "GET",
        ["me", "sessions", _] => "DELETE",
        ["users"] | ["users", _] | ["conversations"] => "GET",
        ["files"] | ["groups", _, "members"] | ["groups", _, "leave"] => "POST",
        ["files", _] | ["files", _, "thumbnail"] => "GET, HEAD",
        ["me"] => "GET, PATCH",
        ["groups"] | ["dm", _] => "GET, POST",
        ["groups", _, "members", _] => "DELETE",
        _ => return None,
    })
}

/// One API request (`rest` is the path after `/api/chat-api/`).
pub async fn handle(req: Request<Incoming>, shard: Rc<Shard>, rest: &str) -> Response<Body> {
    let node = shard.node.clone();
    let segments: Vec<&str> = rest.split('/').collect();
    let method = req.method().clone();
    match allowed(&segments) {
        None => return refusal(&AccountError::NotFound("endpoint")),
        Some(allow) if !allow.split(", ").any(|m| m == method.as_str()) => {
            return wrong_method(allow)
        }
        Some(_) => {}
    }
    let outcome = match (&method, segments.as_slice()) {
        (&Method::POST, ["server", "publish"]) => return server_publish(req, &node).await,
        (&Method::POST, ["auth", "register"]) => register(req, &node).await,
        (&Method::POST, ["auth", "login"]) => login(req, &node).await,
        _ => match super::identify(&req, &node, req.uri().query()).await {
            Err(e) => Err(e),
            Ok(identity) => route(req, &node, shard.index, &segments, identity).await,
        },
    };
    outcome.unwrap_or_else(|e| refusal(&e))
}

async fn register(req: Request<Incoming>, node: &Node) -> Result<Response<Body>, AccountError> {
    let from = client_addr(&req);
    let r: Register = body(req, node.config.limits.max_message_size).await?;
    let accounts = &node.accounts;
    let user = accounts
        .register(&r.username, r.password, &r.display_name, from)
        .await?;
    Ok(json(
        StatusCode::CREATED,
        to_json(&user_view(accounts, &user)),
    ))
}

async fn login(req: Request<Incoming>, node: &Node) -> Result<Response<Body>, AccountError> {
    let device = user_agent(&req);
    let origin = origin(&req, &device);
    let c: Credentials = body(req, node.config.limits.max_message_size).await?;
    let accounts = &node.accounts;
    let login = accounts.login(&c.username, c.password, origin).await?;
    Ok(login_view(accounts, &login))
}

/// Where a login request comes from: its address, and `device` (its
/// [`user_agent`]).
fn origin<'a, B>(req: &Request<B>, device: &'a str) -> Origin<'a> {
    Origin {
        address: client_addr(req),
        device,
    }
}

/// The request's `User-Agent` (a session's `device`), or empty.
fn user_agent<B>(req: &Request<B>) -> String {
    req.headers()
        .get(hyper::header::USER_AGENT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned()
}

/// Everything that needs the caller's identity.
async fn route(
    req: Request<Incoming>,
    node: &Node,
    shard: usize,
    segments: &[&str],
    identity: Identity,
) -> Result<Response<Body>, AccountError> {
    let accounts = &node.accounts;
    let max = node.config.limits.max_message_size;
    let method = req.method().clone();
    let ok = |value: String| json(StatusCode::OK, value);
    match (&method, segments) {
        (&Method::GET, ["users"]) => {
            let users = accounts.users().await?;
            let views: Vec<UserView> = users.iter().map(|u| user_view(accounts, u)).collect();
            Ok(ok(to_json(&views)))
        }
        (&Method::GET, ["users", id]) => {
            let user = accounts.user(id).await?;
            Ok(ok(to_json(&user_view(accounts, &user))))
        }
        (&Method::POST, ["files"]) => Ok(super::files::upload(req, node, &identity).await),
        (&Method::GET | &Method::HEAD, ["files", id]) => {
            let headers = req.headers();
            Ok(super::files::download(headers, node, &identity, id, Variant::Original).await)
        }
        (&Method::GET | &Method::HEAD, ["files", id, "thumbnail"]) => {
            let headers = req.headers();
            Ok(super::files::download(headers, node, &identity, id, Variant::Thumbnail).await)
        }
        (&Method::POST, ["auth", "logout"]) => {
            super::sessions::log_out(node, shard, &identity).await
        }
        (&Method::GET, ["me", "sessions"]) => super::sessions::list(node, &identity).await,
        (&Method::DELETE, ["me", "sessions", id]) => {
            super::sessions::end(node, shard, &identity, id).await
        }
        _ => {
            let user = Accounts::require_user(&identity)?;
            user_route(req, node, shard, segments, user, max).await
        }
    }
}

/// Makes `file` (an image `user` uploaded) their avatar.
async fn set_avatar(node: &Node, user: &User, file: &str) -> Result<(), AccountError> {
    let invalid = invalid("avatar_file_id", "must be an image you uploaded");
    let record = match node.files.record(file).await {
        Ok(r) => r,
        Err(FileError::NotFound) => return Err(invalid),
        Err(_) => return Err(AccountError::Unavailable),
    };
    if record.uploader.as_deref() != Some(&user.id) || record.dimensions.is_none() {
        return Err(invalid);
    }
    match node.files.set_avatar(&user.id, &record.id).await {
        Ok(true) => Ok(()),
        Ok(false) => Err(AccountError::NotFound("user")),
        Err(_) => Err(AccountError::Unavailable),
    }
}

/// Everything only a registered user may do.
async fn user_route(
    req: Request<Incoming>,
    node: &Node,
    shard: usize,
    segments: &[&str],
    user: &User,
    max: usize,
) -> Result<Response<Body>, AccountError> {
    let accounts = &node.accounts;
    let method = req.method().clone();
    let ok = |value: String| json(StatusCode::OK, value);
    match (&method, segments) {
        (&Method::GET, ["me"]) => Ok(ok(to_json(&user_view(accounts, user)))),
        (&Method::PATCH, ["me"]) => {
            let p: Profile = body(req, max).await?;
            let mut updated = match p.display_name {
                Some(name) => accounts.set_display_name(user, &name).await?,
                None => user.clone(),
            };
            if let Some(file) = p.avatar_file_id {
                set_avatar(node, user, &file).await?;
                updated = accounts.user(&user.id).await?;
            }
            Ok(ok(to_json(&user_view(accounts, &updated))))
        }
        (&Method::POST, ["me", "password"]) => {
            let device = user_agent(&req);
            let origin = origin(&req, &device);
            let p: PasswordChange = body(req, max).await?;
            let login = accounts
                .change_password(user, [p.old_password, p.new_password], origin)
                .await?;
            // Sockets opened with the old tokens close, on every node.
            conversations::sign_out_everywhere(node, shard, user, None);
            Ok(login_view(accounts, &login))
        }
        (&Method::GET, ["conversations"]) => {
            let all = conversations::conversations(node, user, None).await?;
            Ok(ok(to_json(&all)))
        }
        (&Method::GET, ["groups"]) => {
            let groups =
                conversations::conversations(node, user, Some(ConversationKind::Group)).await?;
            Ok(ok(to_json(&groups)))
        }
        (&Method::POST, ["groups"]) => {
            let g: NewGroup = body(req, max).await?;
            let group = conversations::create_group(node, user, &g.name).await?;
            Ok(json(StatusCode::CREATED, to_json(&group)))
        }
        (&Method::POST, ["groups", id, "members"]) => {
            let id = id.to_string();
            let m: NewMember = body(req, max).await?;
            let group = conversations::add_member(node, user, &id, &m.user_id).await?;
            Ok(ok(to_json(&group)))
        }
        (&Method::DELETE, ["groups", id, "members", member]) => {
            conversations::remove_member(node, shard, user, id, member).await?;
            Ok(json(StatusCode::NO_CONTENT, String::new()))
        }
        (&Method::POST, ["groups", id, "leave"]) => {
            conversations::remove_member(node, shard, user, id, &user.id).await?;
            Ok(json(StatusCode::NO_CONTENT, String::new()))
        }
        // A GET reads (404 if there is none yet); the POST makes it.
        (&Method::GET, ["dm", other]) => {
            let dm = conversations::find_direct(node, user, other).await?;
            Ok(ok(to_json(&dm)))
        }
        (&Method::POST, ["dm", other]) => {
            let dm = conversations::direct(node, user, other).await?;
            Ok(ok(to_json(&dm)))
        }
        _ => Err(AccountError::NotFound("endpoint")),
    }
}

/// Whether `presented` is one of the keys, compared in constant time (per
/// key: the time does not tell how much of a key matched).
fn key_matches(keys: &[String], presented: &str) -> bool {
    use subtle::ConstantTimeEq;
    keys.iter().fold(false, |found, key| {
        found | bool::from(key.as_bytes().ct_eq(presented.as_bytes()))
    })
}

async fn server_publish(req: Request<Incoming>, node: &Node) -> Response<Body> {
    let keys = &node.config.api.keys;
    if keys.is_empty() {
        return error::json(
            StatusCode::NOT_FOUND,
            "UNSUPPORTED",
            "the server API is off (api.keys is empty)",
            None,
        );
    }
    let presented = crate::auth::Authenticator::token(req.headers(), None).unwrap_or("");
    if !key_matches(keys, presented) {
        // The key itself is never logged.
        tracing::warn!(
            path = req.uri().path(),
            "server API call with a missing or wrong key"
        );
        return error::json(
            StatusCode::UNAUTHORIZED,
            "UNAUTHORIZED",
            "a valid API key is required: Authorization: Bearer <key>",
            None,
        );
    }
    let max_name = node.config.limits.max_name_length;
    let p: ServerPublish = match body(req, node.config.limits.max_message_size).await {
        Ok(p) => p,
        Err(e) => return refusal(&e),
    };
    let Ok(room) = RoomName::parse(&p.room, max_name) else {
        return refusal(&invalid("room", "room must be a valid room name"));
    };
    let id = match p
        .client_msg_id
        .as_deref()
        .map(|c| RoomName::parse(c, max_name))
    {
        None => None,
        Some(Ok(id)) => Some(id),
        Some(Err(_)) => return refusal(&invalid("client_msg_id", "client_msg_id is invalid")),
    };
    use sonic_rs::JsonValueTrait;
    let message = match p.kind.as_str() {
        "chat" => match p.data.get("content").and_then(|c| c.as_str()) {
            Some(content) if !content.is_empty() => ServerMessage::Chat(content.to_owned()),
            _ => return refusal(&invalid("data", "a chat needs data.content")),
        },
        "notification" => ServerMessage::Notification(p.data.to_string()),
        _ => return refusal(&invalid("type", "type must be chat or notification")),
    };
    match conversations::server_publish(node, room, message, id) {
        Ok(()) => json(StatusCode::ACCEPTED, r#"{"status":"accepted"}"#.into()),
        Err(ChatError::NotStored(_) | ChatError::NotDelivered(_)) => error::json(
            StatusCode::SERVICE_UNAVAILABLE,
            "MESSAGE_FAILED",
            "the message could not be taken; try again",
            None,
        ),
        Err(e) => error::json(StatusCode::BAD_REQUEST, "VALIDATION", &e.to_string(), None),
    }
}

/// Every request body the API reads, parsed from `data` and validated as
/// the handlers do (for the `api` fuzz target: never a panic).
pub(crate) fn parse_bodies(data: &[u8]) {
    if let Ok(r) = sonic_rs::from_slice::<Register>(data) {
        let _ = crate::accounts::check_username(&r.username);
        let _ = crate::accounts::check_password(&r.password, "password");
        let _ = crate::accounts::check_display_name(&r.display_name);
    }
    let _ = sonic_rs::from_slice::<Credentials>(data);
    if let Ok(Profile {
        display_name: Some(name),
        ..
    }) = sonic_rs::from_slice::<Profile>(data)
    {
        let _ = crate::accounts::check_display_name(&name);
    }
    let _ = sonic_rs::from_slice::<PasswordChange>(data);
    if let Ok(g) = sonic_rs::from_slice::<NewGroup>(data) {
        let _ = conversations::check_group_name(&g.name);
    }
    let _ = sonic_rs::from_slice::<NewMember>(data);
    if let Ok(p) = sonic_rs::from_slice::<ServerPublish>(data) {
        use sonic_rs::JsonValueTrait;
        let _ = p.data.get("content").and_then(|c| c.as_str());
        let _ = p.data.to_string();
    }
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = conversations::mentioned_names(text);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn api_keys_match_only_exactly() {
        let keys = vec!["first-key".to_owned(), "second-key".to_owned()];
        assert!(key_matches(&keys, "second-key"));
        assert!(!key_matches(&keys, "second-ke"));
        assert!(!key_matches(&keys, ""));
        assert!(!key_matches(&[], "x"));
    }

    #[test]
    fn every_path_names_its_methods() {
        assert_eq!(allowed(&["auth", "login"]), Some("POST"));
        assert_eq!(allowed(&["files", "f1"]), Some("GET, HEAD"));
        assert_eq!(allowed(&["groups", "g", "members", "u"]), Some("DELETE"));
        assert_eq!(allowed(&["dm", "u"]), Some("GET, POST"));
        assert_eq!(allowed(&["nope"]), None);
        assert_eq!(allowed(&["users", "a", "b"]), None);
    }
}
