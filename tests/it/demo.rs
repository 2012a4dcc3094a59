//! The redis-chat-demo dialect: one test per flow of its spec with the exact
//! JSON shapes, dialect selection (`/demo/ws`, `Sec-WebSocket-Protocol`,
//! `server.default_protocol`), and the same users, rooms and history as the
//! native protocol and REST.

use serde_json::{json, Value};
use std::net::SocketAddr;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

use crate::common::{connect, connect_raw, http_json, Client};
use crate::store::Db;

/// A server with a store and cheap password hashing.
fn server(db: &Db, extra: &[&str]) -> chatd::Server {
    db.server(extra)
}

/// A demo session: its `ready` read, its session id.
async fn session(addr: SocketAddr, path: &str) -> (Client, String) {
    let mut c = connect_raw(addr, path).await;
    let ready = c.recv().await;
    assert_eq!(ready["type"], "ready", "{ready}");
    let id = ready["ready"]["sessionUUID"].as_str().unwrap().to_owned();
    assert!(uuid_like(&id), "{ready}");
    (c, id)
}

fn uuid_like(s: &str) -> bool {
    s.len() == 36 && s.chars().filter(|c| *c == '-').count() == 4
}

/// Signs in (creating the user): (userUUID, accessKey).
async fn sign_in(c: &mut Client, suuid: &str, name: &str) -> (String, String) {
    c.send_json(
        json!({"SUUID":suuid,"type":"signIn","signIn":{"username":name,"password":"password-1"}}),
    )
    .await;
    let a = c.recv().await;
    assert_eq!(a["type"], "authorized", "{a}");
    (
        a["authorized"]["userUUID"].as_str().unwrap().to_owned(),
        a["authorized"]["accessKey"].as_str().unwrap().to_owned(),
    )
}

/// A request carrying the user's credentials.
fn req(kind: &str, user: &str, key: &str, body: Value) -> Value {
    let mut v = json!({"SUUID":"s","type":kind,"userUUID":user,"accessKey":key});
    v[kind] = body;
    v
}

/// The next message of `kind` (skipping others).
async fn next(c: &mut Client, kind: &str) -> Value {
    c.recv_type(kind).await
}

fn db() -> Db {
    Db::sqlite(&format!("demo-{}", uuid::Uuid::new_v4()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sign_up_sign_in_sign_out_and_users() {
    let db = db();
    let s = server(&db, &[]);
    let addr = s.addr();
    let (mut c, suuid) = session(addr, "/demo/ws").await;
    c.send_json(
        json!({"SUUID":suuid,"type":"signUp","signUp":{"username":"Mary","password":"password-1"}}),
    )
    .await;
    let a = c.recv().await;
    assert_eq!(a["type"], "authorized", "{a}");
    let mary = a["authorized"]["userUUID"].as_str().unwrap().to_owned();
    assert!(a["authorized"]["accessKey"].is_string());
    // Taken: an error with code and both texts.
    c.send_json(
        json!({"SUUID":suuid,"type":"signUp","signUp":{"username":"mary","password":"password-1"}}),
    )
    .await;
    let e = c.recv().await;
    assert_eq!(e["type"], "error");
    assert!(e["error"]["code"].is_u64());
    assert_eq!(e["error"]["message"], e["error"]["error"]);
    // signIn with the README's misspelt key; the wrong password is refused.
    let (mut d, dsuuid) = session(addr, "/demo/ws").await;
    d.send_json(json!({"SUUID":dsuuid,"type":"signIn","signId":{"username":"MARY","password":"wrong-pass"}}))
        .await;
    assert_eq!(d.recv().await["type"], "error");
    let (again, key) = sign_in(&mut d, &dsuuid, "mary").await;
    assert_eq!(again, mary);
    // signIn of an unknown name creates the user.
    let (mut p, psuuid) = session(addr, "/demo/ws").await;
    let (pablo, pkey) = sign_in(&mut p, &psuuid, "Pablo").await;
    assert_ne!(pablo, mary);
    // users: before sign-in too (the shipped client asks then).
    let (mut anon, asuuid) = session(addr, "/demo/ws").await;
    anon.send_json(json!({"SSUID":asuuid,"type":"users"})).await;
    let u = anon.recv().await;
    assert_eq!(u["type"], "users", "{u}");
    assert_eq!(
        (
            u["users"]["total"].as_u64(),
            u["users"]["received"].as_u64()
        ),
        (Some(2), Some(2))
    );
    let list = u["users"]["users"].as_array().unwrap();
    let m = list.iter().find(|x| x["UUID"] == mary.as_str()).unwrap();
    assert_eq!(
        (
            m["Username"].as_str(),
            m["username"].as_str(),
            m["OnLine"].as_bool()
        ),
        (Some("Mary"), Some("Mary"), Some(true)),
        "the name as typed at sign-up"
    );
    let shown = list.iter().find(|x| x["UUID"] == pablo.as_str()).unwrap();
    assert_eq!(
        (shown["Username"].as_str(), shown["username"].as_str()),
        (Some("Pablo"), Some("Pablo")),
        "signed in as Pablo: shown as Pablo, not pablo"
    );
    assert!(m.get("Password").is_none() && m.get("accessKey").is_none());
    // The access key is a login token: good on REST until signOut.
    let me = |key: String| async move {
        crate::common::http_json(addr, "GET", "/api/chat-api/me", Some(&key), None)
            .await
            .0
    };
    assert_eq!(me(pkey.clone()).await, 200);
    // signOut: unauthorized, and the key no longer works on this session,
    // nor anywhere else (its login session ended).
    p.send_json(json!({"SUUID":psuuid,"type":"signOut","userUUID":pablo,"userAccessKey":pkey}))
        .await;
    let out = p.recv().await;
    assert_eq!(
        out,
        json!({"type":"unauthorized","unauthorized":{"userUUID":pablo}})
    );
    p.send_json(req(
        "channelJoin",
        &pablo,
        &pkey,
        json!({"recipientUUID":""}),
    ))
    .await;
    assert_eq!(p.recv().await["type"], "error");
    assert_eq!(
        me(pkey.clone()).await,
        401,
        "the signed-out key is refused on REST"
    );
    assert_eq!(me(key.clone()).await, 200, "mary's session goes on");
    drop((c, key));
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn public_channel_join_message_history_and_leave_rules() {
    let db = db();
    let s = server(&db, &[]);
    let addr = s.addr();
    let (mut a, asu) = session(addr, "/demo/ws").await;
    let (joe, jkey) = sign_in(&mut a, &asu, "joe").await;
    // Not signed in: the join fails (the shipped client's first join).
    a.send_json(json!({"SUUID":asu,"type":"channelJoin","userUUID":"","accessKey":"","channelJoin":{"recipientUUID":""}}))
        .await;
    assert_eq!(a.recv().await["error"]["code"], 100);
    for public in [json!(""), json!("0"), json!(0)] {
        a.send_json(req(
            "channelJoin",
            &joe,
            &jkey,
            json!({"recipientUUID":public}),
        ))
        .await;
        let j = next(&mut a, "channelJoin").await;
        // Answered in the form it was asked in.
        assert_eq!(j["channelJoin"]["recipientUUID"], public, "{j}");
        assert!(j["channelJoin"]["messages"].is_array() && j["channelJoin"]["users"].is_array());
    }
    // A native client in the public room (`general`) and a second demo user.
    let mut native = connect(addr, "/ws/general").await;
    native.recv_type("system").await;
    let (mut b, bsu) = session(addr, "/demo/ws").await;
    let (alex, akey) = sign_in(&mut b, &bsu, "alex").await;
    b.send_json(req(
        "channelJoin",
        &alex,
        &akey,
        json!({"recipientUUID":""}),
    ))
    .await;
    next(&mut b, "channelJoin").await;
    a.send_json(req(
        "channelMessage",
        &joe,
        &jkey,
        json!({"recipientUUID":"","message":"hi all"}),
    ))
    .await;
    for c in [&mut a, &mut b] {
        let m = next(c, "channelMessage").await;
        let m = &m["channelMessage"];
        assert_eq!(
            (m["Message"].as_str(), m["message"].as_str()),
            (Some("hi all"), Some("hi all"))
        );
        assert_eq!(
            (m["SenderUUID"].as_str(), m["senderUUID"].as_str()),
            (Some(joe.as_str()), Some(joe.as_str()))
        );
        assert_eq!(
            (m["RecipientUUID"].as_str(), m["recipientUUID"].as_str()),
            (Some(""), Some(""))
        );
        assert!(
            m["CreatedAt"].as_str().unwrap().ends_with('Z')
                && uuid_like(m["UUID"].as_str().unwrap())
        );
    }
    let n = native.recv_type("chat").await;
    assert_eq!(
        (n["from"].as_str(), n["data"]["content"].as_str()),
        (Some(joe.as_str()), Some("hi all"))
    );
    native.chat(Some("general"), "from native").await;
    let m = next(&mut b, "channelMessage").await;
    assert_eq!(m["channelMessage"]["Message"], "from native");
    // History: newest first, offset and limit, totals.
    for n in 1..=3 {
        a.send_json(req(
            "channelMessage",
            &joe,
            &jkey,
            json!({"recipientUUID":"","message":format!("m{n}")}),
        ))
        .await;
        next(&mut a, "channelMessage").await;
    }
    a.send_json(req(
        "channelMessages",
        &joe,
        &jkey,
        json!({"recipientUUID":"","offset":1,"limit":2}),
    ))
    .await;
    let r = next(&mut a, "channelRead").await;
    let page = &r["channelMessages"];
    assert_eq!(
        (
            page["messagesTotal"].as_u64(),
            page["messagesReceived"].as_u64()
        ),
        (Some(5), Some(2)),
        "{r}"
    );
    let texts: Vec<&str> = page["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["message"].as_str().unwrap())
        .collect();
    assert_eq!(texts, ["m2", "m1"]);
    a.send_json(req(
        "channelMessages",
        &joe,
        &jkey,
        json!({"recipientUUID":"","limit":100}),
    ))
    .await;
    assert_eq!(next(&mut a, "error").await["error"]["code"], 110);
    // The same history over REST (demo messages are the room's messages).
    let (_, rest) = http_json(
        addr,
        "GET",
        "/api/chat-api/rooms/general/messages?limit=1",
        None,
        None,
    )
    .await;
    assert_eq!(rest["messages"][0]["data"]["content"], "m3");
    // The public channel cannot be left.
    a.send_json(req(
        "channelLeave",
        &joe,
        &jkey,
        json!({"recipientUUID":""}),
    ))
    .await;
    assert_eq!(next(&mut a, "error").await["error"]["code"], 105);
    a.send_json(json!({"type":"nonsense"})).await;
    assert_eq!(next(&mut a, "error").await["type"], "error");
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_private_channel_is_the_pair_s_direct_conversation() {
    let db = db();
    let s = server(&db, &[]);
    let addr = s.addr();
    let (mut a, asu) = session(addr, "/demo/ws").await;
    let (joe, jkey) = sign_in(&mut a, &asu, "joe").await;
    let (mut b, bsu) = session(addr, "/demo/ws").await;
    let (mary, mkey) = sign_in(&mut b, &bsu, "mary").await;
    let (mut c, csu) = session(addr, "/demo/ws").await;
    let (alex, xkey) = sign_in(&mut c, &csu, "alex").await;
    a.send_json(req(
        "channelJoin",
        &joe,
        &jkey,
        json!({"recipientUUID":mary}),
    ))
    .await;
    let j = next(&mut a, "channelJoin").await;
    assert_eq!(j["channelJoin"]["recipientUUID"], mary.as_str());
    let users: Vec<&str> = j["channelJoin"]["users"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["UUID"].as_str().unwrap())
        .collect();
    assert!(users.contains(&joe.as_str()) && users.contains(&mary.as_str()) && users.len() == 2);
    b.send_json(req(
        "channelJoin",
        &mary,
        &mkey,
        json!({"recipientUUID":joe}),
    ))
    .await;
    next(&mut b, "channelJoin").await;
    c.send_json(req(
        "channelJoin",
        &alex,
        &xkey,
        json!({"recipientUUID":""}),
    ))
    .await;
    next(&mut c, "channelJoin").await;
    a.send_json(req(
        "channelMessage",
        &joe,
        &jkey,
        json!({"recipientUUID":mary,"message":"just us"}),
    ))
    .await;
    let got = next(&mut b, "channelMessage").await;
    let m = &got["channelMessage"];
    assert_eq!(
        (
            m["SenderUUID"].as_str(),
            m["RecipientUUID"].as_str(),
            m["Message"].as_str()
        ),
        (Some(joe.as_str()), Some(mary.as_str()), Some("just us"))
    );
    // The same conversation as REST's dm/{id}: the history is there.
    let (_, login) = http_json(
        addr,
        "POST",
        "/api/chat-api/auth/login",
        None,
        Some(json!({"username":"mary","password":"password-1"})),
    )
    .await;
    let token = login["token"].as_str().unwrap();
    let (_, dm) = http_json(
        addr,
        "GET",
        &format!("/api/chat-api/dm/{joe}"),
        Some(token),
        None,
    )
    .await;
    let id = dm["id"].as_str().unwrap();
    let (status, page) = http_json(
        addr,
        "GET",
        &format!("/api/chat-api/rooms/{id}/messages"),
        Some(token),
        None,
    )
    .await;
    assert_eq!(
        (status, &page["messages"][0]["data"]["content"]),
        (200, &json!("just us"))
    );
    // History seen from mary: the recipient is whoever did not send it.
    b.send_json(req(
        "channelMessages",
        &mary,
        &mkey,
        json!({"recipientUUID":joe}),
    ))
    .await;
    let r = next(&mut b, "channelRead").await;
    assert_eq!(
        r["channelMessages"]["messages"][0]["recipientUUID"],
        mary.as_str()
    );
    // Leave: answered, and no more messages.
    b.send_json(json!({"SUUID":bsu,"type":"channelLeave","userUUID":mary,"userAccessKey":mkey,"channelLeave":{"recipientUUID":joe,"senderUUID":mary}})).await;
    assert_eq!(
        next(&mut b, "channelLeave").await,
        json!({"type":"channelLeave","channelLeave":{"recipientUUID":joe}})
    );
    // Alex (public only) never saw the private message: his next
    // channelMessage is a public one.
    a.send_json(req(
        "channelMessage",
        &joe,
        &jkey,
        json!({"recipientUUID":"","message":"public"}),
    ))
    .await;
    assert_eq!(
        next(&mut c, "channelMessage").await["channelMessage"]["Message"],
        "public"
    );
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dialect_is_chosen_by_path_subprotocol_or_default() {
    let db = db();
    let s = server(&db, &[]);
    let addr = s.addr();
    // Sec-WebSocket-Protocol on /ws: the demo, echoed in the 101.
    let mut request = format!("ws://{addr}/ws").into_client_request().unwrap();
    request
        .headers_mut()
        .insert("Sec-WebSocket-Protocol", "redis-chat-demo".parse().unwrap());
    let (mut ws, resp) = tokio_tungstenite::connect_async(request).await.unwrap();
    assert_eq!(resp.headers()["sec-websocket-protocol"], "redis-chat-demo");
    use futures_util::StreamExt;
    let first = ws.next().await.unwrap().unwrap().into_text().unwrap();
    assert!(first.contains(r#""type":"ready""#), "{first}");
    // A bare /ws is native by default...
    let native = connect(addr, "/ws").await;
    assert!(!native.id.is_empty());
    s.shutdown().await;
    // ...and the demo with server.default_protocol.
    let db2 = self::db();
    let s = server(&db2, &["server.default_protocol=redis-chat-demo"]);
    let (_c, _) = session(s.addr(), "/ws").await;
    // The setting governs a bare /ws only: the native endpoints (the web
    // client's among them) stay native.
    for path in [
        "/api/chat-api/ws",
        "/api/chat-api/ws/general",
        "/ws/general",
    ] {
        let native = connect(s.addr(), path).await;
        assert!(!native.id.is_empty(), "{path}");
    }
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_registered_over_rest_signs_in_through_the_demo() {
    let db = db();
    let s = server(&db, &[]);
    let addr = s.addr();
    let (nora, _) = crate::common::register_and_login(addr, "nora", "password-1").await;
    let (mut c, su) = session(addr, "/demo/ws").await;
    let (id, _) = sign_in(&mut c, &su, "nora").await;
    assert_eq!(id, nora);
    s.shutdown().await;
}

/// Each connection hears the public channel in the form it joined it
/// (`""`, `"0"` or `0`): a client written from the README, which joins as
/// `0`, files public messages under the channel it joined.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_connection_hears_the_public_channel_as_it_named_it() {
    let db = db();
    let s = server(&db, &[]);
    let addr = s.addr();
    let mut clients = Vec::new();
    for (name, public) in [("alex", json!("")), ("joe", json!("0")), ("mary", json!(0))] {
        let (mut c, su) = session(addr, "/demo/ws").await;
        let (id, key) = sign_in(&mut c, &su, name).await;
        c.send_json(req(
            "channelJoin",
            &id,
            &key,
            json!({"recipientUUID":public}),
        ))
        .await;
        let j = next(&mut c, "channelJoin").await;
        assert_eq!(j["channelJoin"]["recipientUUID"], public, "{j}");
        clients.push((c, id, key, public));
    }
    let (sender, id, key, _) = &mut clients[1];
    sender
        .send_json(req(
            "channelMessage",
            id,
            key,
            json!({"recipientUUID":"0","message":"to everyone"}),
        ))
        .await;
    for (c, id, key, public) in &mut clients {
        let m = next(c, "channelMessage").await;
        let m = &m["channelMessage"];
        assert_eq!(m["message"], "to everyone");
        assert_eq!(
            (&m["RecipientUUID"], &m["recipientUUID"]),
            (&*public, &*public),
            "{m}"
        );
        // History pages name it the same way.
        c.send_json(req(
            "channelMessages",
            id,
            key,
            json!({"recipientUUID":public.clone(),"limit":1}),
        ))
        .await;
        let r = next(c, "channelRead").await;
        assert_eq!(
            r["channelMessages"]["messages"][0]["recipientUUID"],
            *public
        );
    }
    s.shutdown().await;
}

on_every_store!(messages_total_counts_what_the_store_holds);

/// `messagesTotal` is how many messages the store holds for the channel,
/// not its newest `seq`: once retention removed the oldest they differ.
async fn messages_total_counts_what_the_store_holds(new_db: fn(&str) -> Db) {
    let db = new_db("demo-total");
    let s = db.server(&[
        "store.retention.max_messages=3",
        "store.retention.interval=100ms",
    ]);
    let addr = s.addr();
    let (mut c, su) = session(addr, "/demo/ws").await;
    let (id, key) = sign_in(&mut c, &su, "joe").await;
    c.send_json(req("channelJoin", &id, &key, json!({"recipientUUID":""})))
        .await;
    next(&mut c, "channelJoin").await;
    for n in 1..=5 {
        let message = format!("m{n}");
        c.send_json(req(
            "channelMessage",
            &id,
            &key,
            json!({"recipientUUID":"","message":message}),
        ))
        .await;
        next(&mut c, "channelMessage").await;
    }
    let deadline = tokio::time::Instant::now() + crate::common::WAIT;
    loop {
        c.send_json(req(
            "channelMessages",
            &id,
            &key,
            json!({"recipientUUID":"","limit":10}),
        ))
        .await;
        let r = next(&mut c, "channelRead").await;
        let page = &r["channelMessages"];
        // (Retention may run between the answer's count and its page: asked
        // again until both are after it.)
        if page["messagesReceived"] == 3 && page["messagesTotal"] == 3 {
            let texts: Vec<&str> = page["messages"]
                .as_array()
                .unwrap()
                .iter()
                .map(|m| m["message"].as_str().unwrap())
                .collect();
            assert_eq!(texts, ["m5", "m4", "m3"]);
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "messagesTotal never became the count the store holds (3, not the newest seq 5): {r}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    s.shutdown().await;
}

/// A public-channel message reads no list that grows with the users (it
/// read the whole user table on every message: 22-34 messages a second
/// with 3,000 users).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_public_message_does_not_read_the_user_list() {
    let db = db();
    let s = server(&db, &[]);
    let addr = s.addr();
    let (mut c, su) = session(addr, "/demo/ws").await;
    let (id, key) = sign_in(&mut c, &su, "joe").await;
    c.send_json(req("channelJoin", &id, &key, json!({"recipientUUID":""})))
        .await;
    next(&mut c, "channelJoin").await;
    let lists = || async {
        crate::metrics::scrape(s.metrics_addr().unwrap()).await["chatd_accounts_user_lists_total"]
    };
    let before = lists().await;
    for n in 0..5 {
        let message = format!("m{n}");
        c.send_json(req(
            "channelMessage",
            &id,
            &key,
            json!({"recipientUUID":"","message":message}),
        ))
        .await;
        next(&mut c, "channelMessage").await;
    }
    assert_eq!(lists().await, before, "a message read the user list");
    s.shutdown().await;
}
