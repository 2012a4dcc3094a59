//! Accounts and private conversations, on both store backends: register and
//! login, profiles, online flags, tokens (forged, expired, `alg:none`,
//! revoked by a password change), groups and DMs that only members see,
//! notifications, the server publish API.

use serde_json::{json, Value};
use std::net::SocketAddr;

use crate::common::{connect, http_json, Client};
use crate::store::Db;

const SECRET: &str = "accounts-test-secret-accounts-test-secret";

/// A server on `db` with a fixed token key, cheap password hashing (tests,
/// not production parameters) and `extra` settings.
fn server(db: &Db, extra: &[&str]) -> chatd::Server {
    let secret = format!("auth.jwt_secret={SECRET}");
    let mut all = vec![secret.as_str()];
    all.extend_from_slice(extra);
    db.server(&all)
}

/// Registers `name` (password `name-password`) and logs in: (id, token).
async fn user(addr: SocketAddr, name: &str) -> (String, String) {
    crate::common::register_and_login(addr, name, &format!("{name}-password")).await
}

/// A WebSocket of the token's user, greeting consumed, notification channel
/// joined.
async fn ws(addr: SocketAddr, token: &str, path: &str) -> Client {
    let sep = if path.contains('?') { '&' } else { '?' };
    let mut c = connect(addr, &format!("{path}{sep}token={token}")).await;
    let joined = c.recv_type("system").await;
    assert_eq!(joined["data"]["event"], "joined", "{joined}");
    assert!(joined["room"].as_str().unwrap().starts_with("user:"));
    c
}

/// The first message of `kind`, skipping presence and system chatter.
async fn next_of(c: &mut Client, kind: &str) -> Value {
    c.recv_type(kind).await
}

on_every_store!(
    register_and_login_validate_every_field_and_do_not_tell_which_was_wrong,
    users_are_online_while_connected,
    a_group_is_seen_only_by_its_members_and_a_removal_takes_effect_at_once,
    a_direct_conversation_is_one_per_pair_and_private,
    a_password_change_revokes_older_tokens,
    notifications_reach_every_connection_and_are_recovered,
    server_publish_needs_a_key_and_goes_through_the_store,
    forged_expired_and_unsigned_tokens_are_refused_on_rest_and_upgrade,
    empty_lists_are_empty_not_errors,
    an_anonymous_connection_cannot_claim_a_registered_user_s_id,
    names_and_schemes_that_deceive_are_handled,
    reading_a_direct_conversation_does_not_make_it,
    logging_out_ends_that_session_only_and_sessions_are_listed_and_ended,
);

/// A login from a client with a `User-Agent`: its token.
async fn login_as(addr: SocketAddr, name: &str, agent: &str) -> String {
    let body = json!({"username":name,"password":format!("{name}-password")}).to_string();
    let req = format!(
        "POST /api/chat-api/auth/login HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\
         User-Agent: {agent}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    let (status, answer) = crate::common::http_raw(addr, &req).await;
    assert_eq!(status, 200, "{answer}");
    let login: Value = serde_json::from_str(&answer).unwrap();
    login["token"].as_str().unwrap().to_owned()
}

/// `token` is refused (401) on REST and on a WebSocket upgrade.
async fn refused_everywhere(addr: SocketAddr, token: &str, what: &str) {
    let (status, e) = http_json(addr, "GET", "/api/chat-api/me", Some(token), None).await;
    assert_eq!(status, 401, "{what} is refused on REST: {e}");
    match tokio_tungstenite::connect_async(format!("ws://{addr}/ws?token={token}")).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => assert_eq!(resp.status(), 401),
        other => panic!("{what} is refused on upgrade: {other:?}"),
    }
}

/// The caller's sessions (`GET me/sessions`).
async fn sessions(addr: SocketAddr, token: &str) -> Vec<Value> {
    let (status, list) =
        http_json(addr, "GET", "/api/chat-api/me/sessions", Some(token), None).await;
    assert_eq!(status, 200, "{list}");
    list.as_array().unwrap().clone()
}

/// `POST auth/logout` ends the session of the token it carries: that token
/// is refused on REST and upgrade, and the sockets opened with it close
/// (4001), while the user's other sessions go on. `GET me/sessions` lists
/// each login with its device; `DELETE me/sessions/{id}` ends one (only
/// the user's own); a password change ends them all.
async fn logging_out_ends_that_session_only_and_sessions_are_listed_and_ended(
    new_db: fn(&str) -> Db,
) {
    let db = new_db("logout");
    let s = server(&db, &["auth.enabled=true"]);
    let addr = s.addr();
    let (_, laptop) = user(addr, "alice").await;
    let phone = login_as(addr, "alice", "phone-app/1.0").await;
    let listed = sessions(addr, &laptop).await;
    assert_eq!(listed.len(), 2, "{listed:?}");
    assert_eq!(listed[0]["current"], true, "{listed:?}");
    assert_eq!(
        (
            &listed[1]["current"],
            &listed[1]["device"],
            &listed[1]["address"]
        ),
        (&json!(false), &json!("phone-app/1.0"), &json!("127.0.0.1")),
        "{listed:?}"
    );
    let mut on_laptop = ws(addr, &laptop, "/ws").await;
    let mut on_phone = ws(addr, &phone, "/ws").await;

    let (status, _) = http_json(
        addr,
        "POST",
        "/api/chat-api/auth/logout",
        Some(&laptop),
        None,
    )
    .await;
    assert_eq!(status, 204);
    assert_eq!(on_laptop.expect_close().await, 4001);
    refused_everywhere(addr, &laptop, "the logged-out token").await;
    // The other session goes on, socket included.
    on_phone.send_json(json!({"type":"ping"})).await;
    assert_eq!(on_phone.recv_type("pong").await["type"], "pong");
    let listed = sessions(addr, &phone).await;
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_eq!(listed[0]["current"], true);

    // Ending a session from another one.
    let tablet = login_as(addr, "alice", "tablet").await;
    let mut on_tablet = ws(addr, &tablet, "/ws").await;
    let listed = sessions(addr, &phone).await;
    let tablet_session = listed
        .iter()
        .find(|s| s["device"] == "tablet")
        .expect("the tablet's session is listed")["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let (_, bob) = user(addr, "bob").await;
    let path = format!("/api/chat-api/me/sessions/{tablet_session}");
    let (status, _) = http_json(addr, "DELETE", &path, Some(&bob), None).await;
    assert_eq!(status, 404, "another user's session is not bob's to end");
    let (status, _) = http_json(addr, "GET", "/api/chat-api/me", Some(&tablet), None).await;
    assert_eq!(status, 200, "bob's attempt ended nothing");
    let (status, _) = http_json(addr, "DELETE", &path, Some(&phone), None).await;
    assert_eq!(status, 204);
    assert_eq!(on_tablet.expect_close().await, 4001);
    refused_everywhere(addr, &tablet, "the ended session's token").await;
    let (status, _) = http_json(addr, "DELETE", &path, Some(&phone), None).await;
    assert_eq!(status, 404, "an ended session is gone");
    for id in ["not-a-session", "%2e%2e", "x:y"] {
        let path = format!("/api/chat-api/me/sessions/{id}");
        let (status, _) = http_json(addr, "DELETE", &path, Some(&phone), None).await;
        assert_eq!(status, 404, "{id}");
    }

    // A password change ends every session; the caller goes on in a new one.
    let other = login_as(addr, "alice", "other").await;
    let body = json!({"old_password":"alice-password","new_password":"a-new-password"});
    let (status, fresh) = http_json(
        addr,
        "POST",
        "/api/chat-api/me/password",
        Some(&phone),
        Some(body),
    )
    .await;
    assert_eq!(status, 200, "{fresh}");
    assert_eq!(on_phone.expect_close().await, 4001);
    let listed = sessions(addr, fresh["token"].as_str().unwrap()).await;
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_eq!(listed[0]["current"], true);
    refused_everywhere(addr, &other, "a session the password change ended").await;
    s.shutdown().await;
}

/// `Authorization: bearer` (the scheme in any case) is accepted; display
/// names with bidirectional or zero-width characters are refused; a room
/// named with a reserved prefix in another case (`DM:…`) is no public room.
async fn names_and_schemes_that_deceive_are_handled(new_db: fn(&str) -> Db) {
    let db = new_db("deceive");
    let s = server(&db, &[]);
    let addr = s.addr();
    let (id, token) = user(addr, "plain").await;
    for scheme in ["bearer", "BEARER", "Bearer"] {
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let req = format!(
            "GET /api/chat-api/me HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\
             Authorization: {scheme} {token}\r\n\r\n"
        );
        s.write_all(req.as_bytes()).await.unwrap();
        let mut answer = String::new();
        s.read_to_string(&mut answer).await.unwrap();
        assert!(answer.starts_with("HTTP/1.1 200"), "{scheme}: {answer}");
        assert!(answer.contains(&id), "{answer}");
    }
    for name in ["\u{202e}gpj.exe", "zero\u{200b}width", "\u{2066}iso"] {
        let body = json!({"username":"sneaky","password":"password-1","display_name":name});
        let (status, e) = http_json(
            addr,
            "POST",
            "/api/chat-api/auth/register",
            None,
            Some(body),
        )
        .await;
        assert_eq!(
            (status, e["error"]["field"].as_str()),
            (400, Some("display_name")),
            "{e}"
        );
    }
    let mut c = connect(addr, "/ws").await;
    for room in [
        "DM:0190b2a4-1d2e-7c3b-9a5f-2b9c7e1d4f60",
        "User:x",
        "Group:g",
    ] {
        c.send_json(json!({"type":"join","room":room})).await;
        let refused = next_of(&mut c, "error").await;
        assert_eq!(refused["data"]["code"], "FORBIDDEN", "{room}: {refused}");
    }
}

/// `GET dm/{user}` reads (404 when there is none) and tells nobody; the
/// `POST` makes the conversation and notifies the other user.
async fn reading_a_direct_conversation_does_not_make_it(new_db: fn(&str) -> Db) {
    let db = new_db("dm-get");
    let s = server(&db, &[]);
    let addr = s.addr();
    let (_, alice) = user(addr, "alice").await;
    let (bob, bob_token) = user(addr, "bob").await;
    let mut bob_ws = ws(addr, &bob_token, "/ws").await;
    let path = format!("/api/chat-api/dm/{bob}");
    let (status, _) = http_json(addr, "GET", &path, Some(&alice), None).await;
    assert_eq!(status, 404);
    let (status, list) = http_json(
        addr,
        "GET",
        "/api/chat-api/conversations",
        Some(&alice),
        None,
    )
    .await;
    assert_eq!((status, list), (200, json!([])), "a GET made nothing");
    let (status, made) = http_json(addr, "POST", &path, Some(&alice), None).await;
    assert_eq!(status, 200, "{made}");
    let notice = next_of(&mut bob_ws, "notification").await;
    assert_eq!(notice["data"]["event"], "dm_created", "{notice}");
    let (status, read) = http_json(addr, "GET", &path, Some(&alice), None).await;
    assert_eq!((status, &read["id"]), (200, &made["id"]));
}

/// With auth off, an anonymous connection that names a registered user's id
/// as its `client_id` is refused (it would post as them, and poison their
/// `client_msg_id`s); other ids, UUIDs of nobody included, still work.
async fn an_anonymous_connection_cannot_claim_a_registered_user_s_id(new_db: fn(&str) -> Db) {
    let db = new_db("impostor");
    let s = server(&db, &[]);
    let addr = s.addr();
    let (victim, token) = user(addr, "victim").await;
    let (status, body) = crate::common::http_get(addr, &format!("/ws/r?client_id={victim}")).await;
    assert_eq!(status, 403, "{body}");
    let url = format!("ws://{addr}/ws/r?client_id={victim}");
    assert!(tokio_tungstenite::connect_async(url).await.is_err());
    // The victim's own connection (their token) and its client_msg_id work.
    let mut own = ws(addr, &token, "/ws").await;
    own.send_json(json!({"type":"join","room":"r"})).await;
    own.send_json(json!({"type":"chat","room":"r","client_msg_id":"x","data":{"content":"mine"}}))
        .await;
    let ack = next_of(&mut own, "ack").await;
    assert_eq!(ack["data"]["client_msg_id"], "x");
    // Any other id, a UUID nobody has among them, is still an anonymous name.
    for other in ["alice", &uuid::Uuid::new_v4().to_string()] {
        let c = connect(addr, &format!("/ws/r?client_id={other}")).await;
        assert_eq!(c.id, other);
    }
}

/// Found on the Redis store: listing nothing (no users yet, a user in no
/// conversation) sent Redis an empty pipeline, and the answer was 503.
async fn empty_lists_are_empty_not_errors(new_db: fn(&str) -> Db) {
    let db = new_db("empty");
    let s = server(&db, &[]);
    let addr = s.addr();
    let (status, users) = http_json(addr, "GET", "/api/chat-api/users", None, None).await;
    assert_eq!((status, users), (200, json!([])));
    let (_, token) = user(addr, "loner").await;
    for path in ["/api/chat-api/conversations", "/api/chat-api/groups"] {
        let (status, list) = http_json(addr, "GET", path, Some(&token), None).await;
        assert_eq!((status, list), (200, json!([])), "{path}");
    }
}

async fn register_and_login_validate_every_field_and_do_not_tell_which_was_wrong(
    new_db: fn(&str) -> Db,
) {
    let db = new_db("register");
    let s = server(&db, &[]);
    let addr = s.addr();
    let register = |body: Value| {
        http_json(
            addr,
            "POST",
            "/api/chat-api/auth/register",
            None,
            Some(body),
        )
    };
    let ok = json!({"username":"Alice","password":"long-enough","display_name":"Alice A."});
    let (status, alice) = register(ok).await;
    assert_eq!(status, 201, "{alice}");
    assert_eq!(alice["username"], "alice", "folded to lower case");
    assert_eq!(alice["display_name"], "Alice A.");
    assert!(alice["created_at"].is_i64() && alice["id"].is_string());
    assert!(alice.get("password_hash").is_none());
    let cases = [
        (
            json!({"username":"ALICE","password":"long-enough","display_name":"x"}),
            409,
            "username",
        ),
        (
            json!({"username":"al","password":"long-enough","display_name":"x"}),
            400,
            "username",
        ),
        (
            json!({"username":"al ice","password":"long-enough","display_name":"x"}),
            400,
            "username",
        ),
        (
            json!({"username":"a".repeat(33),"password":"long-enough","display_name":"x"}),
            400,
            "username",
        ),
        (
            json!({"username":"bob","password":"short","display_name":"x"}),
            400,
            "password",
        ),
        (
            json!({"username":"bob","password":"p".repeat(257),"display_name":"x"}),
            400,
            "password",
        ),
        (
            json!({"username":"bob","password":"long-enough","display_name":""}),
            400,
            "display_name",
        ),
        (
            json!({"username":"bob","password":"long-enough","display_name":"a\u{7}b"}),
            400,
            "display_name",
        ),
        (
            json!({"username":"bob","password":"long-enough","display_name":"d".repeat(65)}),
            400,
            "display_name",
        ),
        (json!({"username":"bob"}), 400, "body"),
    ];
    for (body, status, field) in cases {
        let (got, answer) = register(body.clone()).await;
        assert_eq!(got, status, "{body} → {answer}");
        assert_eq!(answer["error"]["field"], field, "{answer}");
        assert!(answer["error"]["message"].is_string());
    }
    let login = |body: Value| http_json(addr, "POST", "/api/chat-api/auth/login", None, Some(body));
    let wrong_password = login(json!({"username":"alice","password":"not-the-one"})).await;
    let unknown_user = login(json!({"username":"nobody","password":"not-the-one"})).await;
    assert_eq!(wrong_password.0, 401);
    assert_eq!(wrong_password, unknown_user, "the same answer either way");
    let (status, ok) = login(json!({"username":"ALICE","password":"long-enough"})).await;
    assert_eq!(status, 200, "{ok}");
    assert!(ok["expires_at"].as_str().unwrap().ends_with('Z'));
    let token = ok["token"].as_str().unwrap();
    let (status, me) = http_json(addr, "GET", "/api/chat-api/me", Some(token), None).await;
    assert_eq!((status, &me["username"]), (200, &json!("alice")));
    let patch = json!({"display_name":"Alice B."});
    let (status, me) = http_json(addr, "PATCH", "/api/chat-api/me", Some(token), Some(patch)).await;
    assert_eq!((status, &me["display_name"]), (200, &json!("Alice B.")));
    let (status, _) = http_json(addr, "GET", "/api/chat-api/me", None, None).await;
    assert_eq!(status, 401, "me needs a token");
    s.shutdown().await;
}

async fn users_are_online_while_connected(new_db: fn(&str) -> Db) {
    let db = new_db("online");
    let s = server(&db, &[]);
    let addr = s.addr();
    let (alice, token) = user(addr, "alice").await;
    let (bob, _) = user(addr, "bob").await;
    let online = |id: String| async move {
        let (status, users) = http_json(addr, "GET", "/api/chat-api/users", None, None).await;
        assert_eq!(status, 200);
        let users = users.as_array().unwrap().clone();
        users.iter().find(|u| u["id"] == id.as_str()).unwrap()["online"]
            .as_bool()
            .unwrap()
    };
    assert!(!online(alice.clone()).await);
    let c = ws(addr, &token, "/ws").await;
    assert!(online(alice.clone()).await);
    assert!(!online(bob.clone()).await);
    let (status, one) = http_json(
        addr,
        "GET",
        &format!("/api/chat-api/users/{alice}"),
        None,
        None,
    )
    .await;
    assert_eq!((status, &one["online"]), (200, &json!(true)));
    c.close().await;
    crate::common::eventually_async("alice offline", || {
        let id = alice.clone();
        async move { !online(id).await }
    })
    .await;
    s.shutdown().await;
}

async fn a_group_is_seen_only_by_its_members_and_a_removal_takes_effect_at_once(
    new_db: fn(&str) -> Db,
) {
    let db = new_db("group");
    let s = server(&db, &[]);
    let addr = s.addr();
    let (_, alice_token) = user(addr, "alice").await;
    let (bob, bob_token) = user(addr, "bob").await;
    let (_, carol_token) = user(addr, "carol").await;
    let (status, group) = http_json(
        addr,
        "POST",
        "/api/chat-api/groups",
        Some(&alice_token),
        Some(json!({"name":"team"})),
    )
    .await;
    assert_eq!(status, 201, "{group}");
    let id = group["id"].as_str().unwrap().to_owned();
    assert!(id.starts_with("group:"));
    let members = format!("/api/chat-api/groups/{id}/members");
    // Only the owner adds.
    let add_bob = json!({"user_id":bob});
    let (status, _) = http_json(
        addr,
        "POST",
        &members,
        Some(&carol_token),
        Some(add_bob.clone()),
    )
    .await;
    assert_eq!(status, 403);
    let (status, group) =
        http_json(addr, "POST", &members, Some(&alice_token), Some(add_bob)).await;
    assert_eq!(status, 200, "{group}");
    assert_eq!(group["members"].as_array().unwrap().len(), 2);
    let (_, mine) = http_json(addr, "GET", "/api/chat-api/groups", Some(&bob_token), None).await;
    assert_eq!(mine[0]["id"], id.as_str());

    let mut a = ws(addr, &alice_token, "/ws").await;
    let mut b = ws(addr, &bob_token, "/ws").await;
    let mut c = ws(addr, &carol_token, "/ws").await;
    a.join(&id).await;
    b.join(&id).await;
    // Not a member: no join, no history (WebSocket and REST), no upgrade.
    c.send_json(json!({"type":"join","room":id})).await;
    assert_eq!(next_of(&mut c, "error").await["data"]["code"], "FORBIDDEN");
    c.send_json(json!({"type":"history","room":id})).await;
    assert_eq!(next_of(&mut c, "error").await["data"]["code"], "FORBIDDEN");
    let history = format!("/api/chat-api/rooms/{id}/messages");
    let (status, _) = http_json(addr, "GET", &history, Some(&carol_token), None).await;
    assert_eq!(status, 403);
    let (status, _) = http_json(addr, "GET", &history, None, None).await;
    assert_eq!(status, 403, "anonymous");
    let upgrade = format!("ws://{addr}/ws/{id}?token={carol_token}");
    assert!(tokio_tungstenite::connect_async(upgrade).await.is_err());

    a.chat(Some(&id), "hello team").await;
    assert_eq!(
        next_of(&mut b, "chat").await["data"]["content"],
        "hello team"
    );
    let (status, page) = http_json(addr, "GET", &history, Some(&bob_token), None).await;
    assert_eq!(
        (status, page["messages"].as_array().unwrap().len()),
        (200, 1)
    );

    // Removed: told at once, hears nothing more, cannot post.
    let remove = format!("{members}/{bob}");
    let (status, _) = http_json(addr, "DELETE", &remove, Some(&alice_token), None).await;
    assert_eq!(status, 204);
    let removed = next_of(&mut b, "system").await;
    assert_eq!(
        (removed["data"]["event"].as_str(), removed["room"].as_str()),
        (Some("removed"), Some(id.as_str()))
    );
    a.chat(Some(&id), "after removal").await;
    next_of(&mut a, "chat").await;
    b.send_json(json!({"type":"chat","room":id,"data":{"content":"still here?"}}))
        .await;
    let refused = next_of(&mut b, "error").await;
    assert_eq!(refused["data"]["code"], "FORBIDDEN", "{refused}");
    b.send_json(json!({"type":"join","room":id})).await;
    assert_eq!(next_of(&mut b, "error").await["data"]["code"], "FORBIDDEN");
    // Bob's next chat is not the one sent after his removal.
    b.send_json(json!({"type":"ping"})).await;
    loop {
        let m = b.recv().await;
        assert_ne!(m["type"], "chat", "{m}");
        if m["type"] == "pong" {
            break;
        }
    }
    s.shutdown().await;
}

async fn a_direct_conversation_is_one_per_pair_and_private(new_db: fn(&str) -> Db) {
    let db = new_db("dm");
    let s = server(&db, &[]);
    let addr = s.addr();
    let (alice, alice_token) = user(addr, "alice").await;
    let (bob, bob_token) = user(addr, "bob").await;
    let (_, carol_token) = user(addr, "carol").await;
    let (status, dm) = http_json(
        addr,
        "POST",
        &format!("/api/chat-api/dm/{bob}"),
        Some(&alice_token),
        None,
    )
    .await;
    assert_eq!(status, 200, "{dm}");
    let (_, again) = http_json(
        addr,
        "GET",
        &format!("/api/chat-api/dm/{alice}"),
        Some(&bob_token),
        None,
    )
    .await;
    assert_eq!(dm["id"], again["id"], "one conversation per pair");
    let id = dm["id"].as_str().unwrap().to_owned();
    assert!(id.starts_with("dm:"));
    let (status, _) = http_json(
        addr,
        "GET",
        "/api/chat-api/dm/not-a-user",
        Some(&alice_token),
        None,
    )
    .await;
    assert_eq!(status, 404);
    let mut a = ws(addr, &alice_token, "/ws").await;
    let mut b = ws(addr, &bob_token, &format!("/ws/{id}")).await;
    assert_eq!(next_of(&mut b, "system").await["data"]["event"], "joined");
    a.join(&id).await;
    a.chat(Some(&id), "just us").await;
    let got = next_of(&mut b, "chat").await;
    assert_eq!(
        (got["from"].as_str(), got["data"]["content"].as_str()),
        (Some(alice.as_str()), Some("just us"))
    );
    let mut c = ws(addr, &carol_token, "/ws").await;
    c.send_json(json!({"type":"join","room":id})).await;
    assert_eq!(next_of(&mut c, "error").await["data"]["code"], "FORBIDDEN");
    let (status, _) = http_json(
        addr,
        "GET",
        &format!("/api/chat-api/rooms/{id}/messages"),
        Some(&carol_token),
        None,
    )
    .await;
    assert_eq!(status, 403);
    s.shutdown().await;
}

async fn a_password_change_revokes_older_tokens(new_db: fn(&str) -> Db) {
    let db = new_db("password");
    let s = server(&db, &["auth.enabled=true"]);
    let addr = s.addr();
    let (_, old) = user(addr, "alice").await;
    let change = |old_password: &str, token: &str| {
        let body = json!({"old_password":old_password,"new_password":"a-new-password"});
        let token = token.to_owned();
        async move {
            http_json(
                addr,
                "POST",
                "/api/chat-api/me/password",
                Some(&token),
                Some(body),
            )
            .await
        }
    };
    let (status, wrong) = change("not-it-at-all", &old).await;
    assert_eq!(
        (status, &wrong["error"]["field"]),
        (400, &json!("old_password"))
    );
    // Sockets opened with the old token: native and FastChat.
    let mut native = ws(addr, &old, "/ws").await;
    let (_, me) = http_json(addr, "GET", "/api/chat-api/me", Some(&old), None).await;
    let mut fastchat = crate::common::connect_raw(addr, &format!("/fastchat/ws?token={old}")).await;
    fastchat
        .send_json(json!({"type":"HELLO","data":{"user_id":me["id"],"display_name":"Alice"}}))
        .await;
    assert_eq!(fastchat.recv_type("HELLO_ACK").await["type"], "HELLO_ACK");
    let (status, fresh) = change("alice-password", &old).await;
    assert_eq!(status, 200, "{fresh}");
    // ...are closed: their token is revoked.
    assert_eq!(native.expect_close().await, 4001);
    assert_eq!(fastchat.expect_close().await, 4001);
    let new = fresh["token"].as_str().unwrap();
    refused_everywhere(addr, &old, "the old token").await;
    let (status, _) = http_json(addr, "GET", "/api/chat-api/me", Some(new), None).await;
    assert_eq!(status, 200);
    let body = json!({"username":"alice","password":"a-new-password"});
    let (status, _) = http_json(addr, "POST", "/api/chat-api/auth/login", None, Some(body)).await;
    assert_eq!(status, 200);
    // With auth on, every call but register and login needs a token.
    let (status, _) = http_json(addr, "GET", "/api/chat-api/users", None, None).await;
    assert_eq!(status, 401);
    s.shutdown().await;
}

async fn notifications_reach_every_connection_and_are_recovered(new_db: fn(&str) -> Db) {
    let db = new_db("notify");
    let s = server(&db, &[]);
    let addr = s.addr();
    let (_, alice_token) = user(addr, "alice").await;
    let (bob, bob_token) = user(addr, "bob").await;
    let mut b1 = ws(addr, &bob_token, "/ws").await;
    let mut b2 = ws(addr, &bob_token, "/ws").await;
    let (_, group) = http_json(
        addr,
        "POST",
        "/api/chat-api/groups",
        Some(&alice_token),
        Some(json!({"name":"g"})),
    )
    .await;
    let id = group["id"].as_str().unwrap().to_owned();
    let members = format!("/api/chat-api/groups/{id}/members");
    http_json(
        addr,
        "POST",
        &members,
        Some(&alice_token),
        Some(json!({"user_id":bob})),
    )
    .await;
    for b in [&mut b1, &mut b2] {
        let n = next_of(b, "notification").await;
        assert_eq!(n["data"]["event"], "group_added", "{n}");
        assert_eq!(n["data"]["conversation"], id.as_str());
        assert!(n["seq"].as_u64().is_some(), "stored: {n}");
    }
    // A mention of a member notifies them.
    let mut a = ws(addr, &alice_token, "/ws").await;
    a.join(&id).await;
    a.chat(Some(&id), "ping @bob please").await;
    let n = next_of(&mut b1, "notification").await;
    assert_eq!(
        (
            n["data"]["event"].as_str(),
            n["data"]["conversation"].as_str()
        ),
        (Some("mention"), Some(id.as_str()))
    );
    let last_seen = n["seq"].as_u64().unwrap();
    b1.close().await;
    b2.close().await;
    // Missed while away: a DM from alice.
    http_json(
        addr,
        "POST",
        &format!("/api/chat-api/dm/{bob}"),
        Some(&alice_token),
        None,
    )
    .await;
    let mut back = connect(
        addr,
        &format!("/ws?token={bob_token}&notifications_since={last_seen}"),
    )
    .await;
    let n = next_of(&mut back, "notification").await;
    assert_eq!(n["data"]["event"], "dm_created", "{n}");
    assert_eq!(n["seq"].as_u64(), Some(last_seen + 1));
    // Nobody else may listen on bob's channel.
    let mut a2 = ws(addr, &alice_token, "/ws").await;
    a2.send_json(json!({"type":"join","room":format!("user:{bob}")}))
        .await;
    assert_eq!(next_of(&mut a2, "error").await["data"]["code"], "FORBIDDEN");
    s.shutdown().await;
}

async fn server_publish_needs_a_key_and_goes_through_the_store(new_db: fn(&str) -> Db) {
    let db = new_db("publish");
    let s = server(&db, &["api.keys=[\"backend-key-1\"]"]);
    let addr = s.addr();
    let mut c = connect(addr, "/ws/news").await;
    c.recv_type("system").await;
    let publish = json!({"room":"news","type":"chat","data":{"content":"from the backend"}});
    let (status, _) = http_json(
        addr,
        "POST",
        "/api/chat-api/server/publish",
        Some("wrong"),
        Some(publish.clone()),
    )
    .await;
    assert_eq!(status, 401);
    let (status, _) = http_json(
        addr,
        "POST",
        "/api/chat-api/server/publish",
        None,
        Some(publish.clone()),
    )
    .await;
    assert_eq!(status, 401);
    let (status, ok) = http_json(
        addr,
        "POST",
        "/api/chat-api/server/publish",
        Some("backend-key-1"),
        Some(publish),
    )
    .await;
    assert_eq!(status, 202, "{ok}");
    let got = c.recv_type("chat").await;
    assert_eq!(
        (got["from"].as_str(), got["data"]["content"].as_str()),
        (Some("server"), Some("from the backend"))
    );
    assert_eq!(got["seq"], 1);
    let (_, page) = http_json(addr, "GET", "/api/chat-api/rooms/news/messages", None, None).await;
    assert_eq!(page["messages"][0]["data"]["content"], "from the backend");
    let bad = json!({"room":"news","type":"shout","data":{}});
    let (status, answer) = http_json(
        addr,
        "POST",
        "/api/chat-api/server/publish",
        Some("backend-key-1"),
        Some(bad),
    )
    .await;
    assert_eq!((status, &answer["error"]["field"]), (400, &json!("type")));
    s.shutdown().await;
}

/// base64url without padding (what a JWT's parts are).
fn b64(data: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::new();
    for chunk in data.chunks(3) {
        let n = chunk.iter().fold(0u32, |n, b| (n << 8) | u32::from(*b)) << (8 * (3 - chunk.len()));
        for i in 0..=chunk.len() {
            out.push(A[(n >> (18 - 6 * i) & 63) as usize] as char);
        }
    }
    out
}

async fn forged_expired_and_unsigned_tokens_are_refused_on_rest_and_upgrade(
    new_db: fn(&str) -> Db,
) {
    let db = new_db("tokens");
    let s = server(&db, &["auth.enabled=true"]);
    let addr = s.addr();
    let (alice, good) = user(addr, "alice").await;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let sign = |claims: Value, key: &str| {
        jsonwebtoken::encode(
            &jsonwebtoken::Header::default(),
            &claims,
            &jsonwebtoken::EncodingKey::from_secret(key.as_bytes()),
        )
        .unwrap()
    };
    let forged = sign(
        json!({"sub":alice,"exp":now + 300}),
        "another-secret-another-secret-another",
    );
    let expired = sign(json!({"sub":alice,"exp":now - 3600}), SECRET);
    let claims = json!({"sub":alice,"exp":now + 300}).to_string();
    let unsigned = format!(
        "{}.{}.",
        b64(br#"{"alg":"none","typ":"JWT"}"#),
        b64(claims.as_bytes())
    );
    for (what, token) in [
        ("none", None),
        ("forged", Some(&forged)),
        ("expired", Some(&expired)),
        ("alg none", Some(&unsigned)),
    ] {
        let (status, body) = http_json(
            addr,
            "GET",
            "/api/chat-api/me",
            token.map(String::as_str),
            None,
        )
        .await;
        assert_eq!(status, 401, "{what}: {body}");
        assert_eq!(body["error"]["code"], "UNAUTHORIZED", "{what}");
        let (status, _) = http_json(
            addr,
            "GET",
            "/api/chat-api/users",
            token.map(String::as_str),
            None,
        )
        .await;
        assert_eq!(status, 401, "{what}");
        let url = match token {
            Some(t) => format!("ws://{addr}/ws?token={t}"),
            None => format!("ws://{addr}/ws"),
        };
        match tokio_tungstenite::connect_async(url).await {
            Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => {
                assert_eq!(resp.status(), 401, "{what}")
            }
            other => panic!("{what}: upgrade not refused: {other:?}"),
        }
    }
    let (status, _) = http_json(addr, "GET", "/api/chat-api/me", Some(&good), None).await;
    assert_eq!(status, 200);
    s.shutdown().await;
}
