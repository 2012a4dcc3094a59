//! Files (`POST /api/chat-api/files`, `GET .../files/{id}`) and attachments,
//! against both storage backends: a local directory, and a real
//! S3-compatible server (moto) started on loopback. Metadata is in SQLite.

use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use std::net::SocketAddr;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::common::{connect, http_json, register_and_login, Client};
use crate::s3_harness::Moto;
use crate::store::Db;

const BUCKET: &str = "chatd-files";

/// A server with SQLite and the files on `backend`: (server, what keeps the
/// storage alive).
enum Storage {
    Local,
    S3,
}

struct Setup {
    server: chatd::Server,
    _db: Db,
    _moto: Option<Moto>,
}

impl Setup {
    async fn new(name: &str, storage: Storage, extra: &[&str]) -> Setup {
        let label = match storage {
            Storage::Local => "local",
            Storage::S3 => "s3",
        };
        let db = Db::sqlite(&format!("files-{name}-{label}"));
        let moto = match storage {
            Storage::Local => None,
            Storage::S3 => Some(Moto::start(BUCKET).await),
        };
        let mut settings: Vec<String> = extra.iter().map(|s| s.to_string()).collect();
        if let Some(m) = &moto {
            settings.extend(m.overrides(BUCKET));
        }
        let refs: Vec<&str> = settings.iter().map(String::as_str).collect();
        let server = db.server(&refs);
        Setup {
            server,
            _db: db,
            _moto: moto,
        }
    }

    fn addr(&self) -> SocketAddr {
        self.server.addr()
    }

    /// What the storage holds: files (or objects), and (S3) multipart
    /// uploads left open. A local directory's staging files count as files.
    async fn stored(&self) -> (usize, usize) {
        match &self._moto {
            None => {
                let dir = self._db.files_dir();
                (std::fs::read_dir(&dir).map_or(0, |d| d.count()), 0)
            }
            Some(moto) => moto.contents(BUCKET).await,
        }
    }
}

/// Every file test, once per storage backend.
macro_rules! on_both_storages {
    ($($name:ident),* $(,)?) => {$(
        mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn local() {
                super::$name(super::Storage::Local).await
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn s3() {
                super::$name(super::Storage::S3).await
            }
        }
    )*};
}

on_both_storages!(
    a_file_round_trips_with_etag_and_ranges_and_only_its_readers_read_it,
    a_large_multipart_upload_streams_and_round_trips,
    an_image_gets_dimensions_and_a_thumbnail_and_rides_a_chat,
    uploads_over_files_max_size_get_413_declared_or_streamed,
    a_client_that_sends_a_too_large_body_whole_before_reading_gets_its_413,
    with_auth_off_files_posted_in_public_rooms_are_public,
    an_upload_cut_off_by_the_client_leaves_nothing,
    a_slow_upload_outlives_the_http_idle_timeout,
);

/// One HTTP answer.
struct Answer {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Answer {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|_| panic!("not JSON: {}", String::from_utf8_lossy(&self.body)))
    }
}

/// A raw HTTP/1.1 request with a binary body (sent `chunked` when asked).
async fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
    chunked: bool,
) -> Answer {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let mut head = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    if chunked {
        head.push_str("Transfer-Encoding: chunked\r\n\r\n");
    } else {
        head.push_str(&format!("Content-Length: {}\r\n\r\n", body.len()));
    }
    s.write_all(head.as_bytes()).await.unwrap();
    // The server may answer (413) and close before taking the whole body.
    if chunked {
        for part in body.chunks(1000) {
            let frame = [format!("{:x}\r\n", part.len()).as_bytes(), part, b"\r\n"].concat();
            if s.write_all(&frame).await.is_err() {
                break;
            }
        }
        let _ = s.write_all(b"0\r\n\r\n").await;
    } else {
        let _ = s.write_all(body).await;
    }
    let mut raw = Vec::new();
    let read = tokio::time::timeout(crate::common::WAIT, s.read_to_end(&mut raw)).await;
    if !matches!(read, Ok(Ok(_))) && raw.is_empty() {
        panic!("no answer to {method} {path}");
    }
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("a complete head");
    let head = String::from_utf8_lossy(&raw[..split]).into_owned();
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|s| s.parse().ok())
        .expect("status line");
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
        .collect();
    Answer {
        status,
        headers,
        body: raw[split + 4..].to_vec(),
    }
}

fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

async fn upload(addr: SocketAddr, token: &str, name: &str, body: &[u8]) -> Answer {
    let auth = bearer(token);
    let path = format!("/api/chat-api/files?name={name}");
    request(
        addr,
        "POST",
        &path,
        &[("Authorization", &auth)],
        body,
        false,
    )
    .await
}

async fn get(
    addr: SocketAddr,
    token: Option<&str>,
    path: &str,
    headers: &[(&str, &str)],
) -> Answer {
    let auth = token.map(bearer);
    let mut all: Vec<(&str, &str)> = headers.to_vec();
    if let Some(a) = &auth {
        all.push(("Authorization", a));
    }
    request(addr, "GET", path, &all, b"", false).await
}

fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Bytes no sniffer takes for a known type.
fn noise(n: usize) -> Vec<u8> {
    let mut x: u32 = 0x2545_f491;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            (x >> 24) as u8 | 0x80
        })
        .collect()
}

fn png(width: u32, height: u32) -> Vec<u8> {
    let img = image::RgbImage::from_fn(width, height, |x, y| {
        image::Rgb([(x % 251) as u8, (y % 241) as u8, 120])
    });
    let mut out = std::io::Cursor::new(Vec::new());
    image::DynamicImage::ImageRgb8(img)
        .write_to(&mut out, image::ImageFormat::Png)
        .unwrap();
    out.into_inner()
}

async fn a_file_round_trips_with_etag_and_ranges_and_only_its_readers_read_it(storage: Storage) {
    let s = Setup::new("roundtrip", storage, &[]).await;
    let addr = s.addr();
    let (_, alice) = register_and_login(addr, "alice", "password1").await;
    let (_, bob) = register_and_login(addr, "bob", "password1").await;
    let bytes = noise(3000);
    let up = upload(
        addr,
        &alice,
        "..%2F..%2Fr%C3%A9sum%C3%A9%20%22x%22.bin",
        &bytes,
    )
    .await;
    assert_eq!(up.status, 201, "{}", String::from_utf8_lossy(&up.body));
    let file = up.json();
    assert_eq!(file["name"], "résumé _x_.bin", "{file}");
    assert_eq!(file["size"], 3000);
    assert_eq!(file["content_type"], "application/octet-stream");
    assert_eq!(file["sha256"], sha256_hex(&bytes));
    let url = file["url"].as_str().unwrap().to_owned();
    assert_eq!(
        url,
        format!("/api/chat-api/files/{}", file["id"].as_str().unwrap())
    );

    let got = get(addr, Some(&alice), &url, &[]).await;
    assert_eq!(got.status, 200);
    assert_eq!(got.body, bytes);
    assert_eq!(got.header("content-length"), Some("3000"));
    assert_eq!(got.header("content-type"), Some("application/octet-stream"));
    assert_eq!(got.header("x-content-type-options"), Some("nosniff"));
    assert!(got.header("cache-control").unwrap().contains("immutable"));
    assert!(
        got.header("content-disposition")
            .unwrap()
            .starts_with("attachment; "),
        "{:?}",
        got.header("content-disposition")
    );
    let etag = got.header("etag").unwrap().to_owned();
    assert_eq!(etag, format!("\"{}\"", sha256_hex(&bytes)));

    let cached = get(addr, Some(&alice), &url, &[("If-None-Match", &etag)]).await;
    assert_eq!(cached.status, 304);
    assert!(cached.body.is_empty());

    let part = get(addr, Some(&alice), &url, &[("Range", "bytes=10-19")]).await;
    assert_eq!(part.status, 206);
    assert_eq!(part.body, bytes[10..20]);
    assert_eq!(part.header("content-range"), Some("bytes 10-19/3000"));
    let tail = get(addr, Some(&alice), &url, &[("Range", "bytes=-100")]).await;
    assert_eq!((tail.status, tail.body.as_slice()), (206, &bytes[2900..]));
    let outside = get(addr, Some(&alice), &url, &[("Range", "bytes=5000-")]).await;
    assert_eq!(outside.status, 416);
    assert_eq!(outside.header("content-range"), Some("bytes */3000"));
    // If-Range with another version: the whole file.
    let stale = [("Range", "bytes=0-1"), ("If-Range", "\"other\"")];
    let whole = get(addr, Some(&alice), &url, &stale).await;
    assert_eq!((whole.status, whole.body.len()), (200, 3000));

    // Not posted anywhere: only its uploader reads it.
    let refused = get(addr, Some(&bob), &url, &[]).await;
    assert_eq!(refused.status, 403);
    assert_eq!(refused.json()["error"]["code"], "FORBIDDEN");
    assert_eq!(get(addr, None, &url, &[]).await.status, 403);
    let unknown = "/api/chat-api/files/0f8fad5b-d9cb-469f-a165-70867728950e";
    assert_eq!(get(addr, Some(&alice), unknown, &[]).await.status, 404);
    let malformed = "/api/chat-api/files/..%2F..%2Fetc%2Fpasswd";
    assert_eq!(get(addr, Some(&alice), malformed, &[]).await.status, 404);

    // Sniffed from the bytes, whatever the name and declared type say.
    let auth = bearer(&alice);
    let headers = [
        ("Authorization", auth.as_str()),
        ("Content-Type", "text/plain"),
    ];
    let image = png(4, 4);
    let posted = request(
        addr,
        "POST",
        "/api/chat-api/files?name=notes.txt",
        &headers,
        &image,
        false,
    )
    .await;
    assert_eq!(posted.json()["content_type"], "image/png");
    let text = upload(addr, &alice, "a.png", "plain words\n".as_bytes()).await;
    assert_eq!(text.json()["content_type"], "text/plain; charset=utf-8");
    let empty = upload(addr, &alice, "empty", b"").await;
    assert_eq!(empty.status, 400);
}

async fn a_large_multipart_upload_streams_and_round_trips(storage: Storage) {
    let s = Setup::new("multipart", storage, &[]).await;
    let addr = s.addr();
    let (_, alice) = register_and_login(addr, "alice", "password1").await;
    // Over one 5 MiB part: a multipart upload in the object store.
    let bytes = noise(11 * 1024 * 1024 + 123);
    let boundary = "chatdtestboundary";
    let mut body = format!(
        "--{boundary}\r\nContent-Disposition: form-data; name=\"note\"\r\n\r\nignored\r\n\
         --{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"big.bin\"\r\n\
         Content-Type: application/x-whatever\r\n\r\n"
    )
    .into_bytes();
    body.extend_from_slice(&bytes);
    body.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    let auth = bearer(&alice);
    let ct = format!("multipart/form-data; boundary={boundary}");
    let headers = [
        ("Authorization", auth.as_str()),
        ("Content-Type", ct.as_str()),
    ];
    let up = request(addr, "POST", "/api/chat-api/files", &headers, &body, false).await;
    assert_eq!(up.status, 201, "{}", String::from_utf8_lossy(&up.body));
    let file = up.json();
    assert_eq!(file["name"], "big.bin");
    assert_eq!(file["size"], bytes.len());
    assert_eq!(file["sha256"], sha256_hex(&bytes));
    let got = get(addr, Some(&alice), file["url"].as_str().unwrap(), &[]).await;
    assert_eq!(got.status, 200);
    assert!(got.body == bytes, "the download differs from the upload");
}

async fn an_image_gets_dimensions_and_a_thumbnail_and_rides_a_chat(storage: Storage) {
    let s = Setup::new("image", storage, &[]).await;
    let addr = s.addr();
    let (alice_id, alice) = register_and_login(addr, "alice", "password1").await;
    let (carol_id, carol) = register_and_login(addr, "carol", "password1").await;
    let (_, bob) = register_and_login(addr, "bob", "password1").await;
    let up = upload(addr, &alice, "wide.png", &png(800, 400)).await;
    assert_eq!(up.status, 201);
    let file = up.json();
    assert_eq!(
        (file["width"].as_u64(), file["height"].as_u64()),
        (Some(800), Some(400))
    );
    let thumb_url = file["thumbnail_url"]
        .as_str()
        .expect("a thumbnail")
        .to_owned();
    let thumb = get(addr, Some(&alice), &thumb_url, &[]).await;
    assert_eq!(thumb.status, 200);
    assert_eq!(thumb.header("content-type"), Some("image/jpeg"));
    let decoded = image::load_from_memory(&thumb.body).unwrap();
    assert_eq!((decoded.width(), decoded.height()), (320, 160));
    let original = get(addr, Some(&alice), file["url"].as_str().unwrap(), &[]).await;
    assert!(original
        .header("content-disposition")
        .unwrap()
        .starts_with("inline; "));

    // Alice posts it in her DM with Carol.
    let (status, dm) = http_json(
        addr,
        "POST",
        &format!("/api/chat-api/dm/{carol_id}"),
        Some(&alice),
        None,
    )
    .await;
    assert_eq!(status, 200, "{dm}");
    let room = dm["id"].as_str().unwrap().to_owned();
    let mut a = connect(addr, &format!("/ws?token={alice}")).await;
    let mut c = connect(addr, &format!("/ws?token={carol}")).await;
    for (client, _) in [(&mut a, &alice_id), (&mut c, &carol_id)] {
        join_room(client, &room).await;
    }
    let file_id = file["id"].as_str().unwrap();
    a.send_json(json!({"type":"chat","room":room,"client_msg_id":"m-1",
        "data":{"content":"look","attachments":[{"file_id":file_id}]}}))
        .await;
    let chat = c.recv_type("chat").await;
    assert_eq!(chat["data"]["content"], "look");
    let att = &chat["data"]["attachments"][0];
    assert_eq!(att["id"], file_id);
    assert_eq!(att["name"], "wide.png");
    assert_eq!(att["content_type"], "image/png");
    assert_eq!(att["size"], file["size"]);
    assert_eq!(
        (att["width"].as_u64(), att["height"].as_u64()),
        (Some(800), Some(400))
    );
    assert_eq!(att["url"], file["url"]);
    assert_eq!(att["thumbnail_url"], thumb_url);
    assert_eq!(a.recv_type("ack").await["data"]["client_msg_id"], "m-1");

    // Carol may read it now (a member of a room it was posted in); Bob not.
    let url = file["url"].as_str().unwrap();
    assert_eq!(get(addr, Some(&carol), url, &[]).await.status, 200);
    assert_eq!(get(addr, Some(&carol), &thumb_url, &[]).await.status, 200);
    assert_eq!(get(addr, Some(&bob), url, &[]).await.status, 403);

    // Stored with the chat: the history carries the same description.
    let (status, page) = http_json(
        addr,
        "GET",
        &format!("/api/chat-api/rooms/{room}/messages"),
        Some(&carol),
        None,
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(page["messages"][0]["data"]["attachments"][0], *att);

    // What may not be attached: an unknown file, someone else's unposted
    // file, too many; the chat is refused with its client_msg_id.
    let bobs = upload(addr, &bob, "b.bin", &noise(10)).await.json();
    for (id, ids) in [
        (
            "m-2",
            vec!["0f8fad5b-d9cb-469f-a165-70867728950e".to_owned()],
        ),
        ("m-3", vec![bobs["id"].as_str().unwrap().to_owned()]),
        ("m-4", vec![file_id.to_owned(); 11]),
    ] {
        let atts: Vec<Value> = ids.iter().map(|f| json!({"file_id": f})).collect();
        a.send_json(
            json!({"type":"chat","room":room,"client_msg_id":id,"data":{"attachments":atts}}),
        )
        .await;
        let err = a.recv_type("error").await;
        assert_eq!(err["data"]["code"], "VALIDATION", "{err}");
        assert_eq!(err["data"]["client_msg_id"], id);
    }
    assert_eq!(
        get(addr, Some(&carol), bobs["url"].as_str().unwrap(), &[])
            .await
            .status,
        403
    );

    // An avatar is readable by anyone signed in.
    let (status, me) = http_json(
        addr,
        "PATCH",
        "/api/chat-api/me",
        Some(&alice),
        Some(json!({"avatar_file_id": file_id})),
    )
    .await;
    assert_eq!(status, 200, "{me}");
    assert_eq!(me["avatar_file_id"], file_id);
    assert_eq!(get(addr, Some(&bob), url, &[]).await.status, 200);
    let (status, _) = http_json(
        addr,
        "PATCH",
        "/api/chat-api/me",
        Some(&bob),
        Some(json!({"avatar_file_id": file_id})),
    )
    .await;
    assert_eq!(status, 400, "only one's own upload");
}

async fn join_room(client: &mut Client, room: &str) {
    client.send_json(json!({"type":"join","room":room})).await;
    loop {
        let m = client.recv_type("system").await;
        if m["data"]["event"] == "joined" && m["room"] == room {
            return;
        }
    }
}

async fn uploads_over_files_max_size_get_413_declared_or_streamed(storage: Storage) {
    let s = Setup::new("limit", storage, &["files.max_size=1000"]).await;
    let addr = s.addr();
    let (_, alice) = register_and_login(addr, "alice", "password1").await;
    let declared = upload(addr, &alice, "big", &noise(2000)).await;
    assert_eq!(declared.status, 413);
    assert_eq!(declared.json()["error"]["code"], "TOO_LARGE");
    let auth = bearer(&alice);
    let headers = [("Authorization", auth.as_str())];
    let streamed = request(
        addr,
        "POST",
        "/api/chat-api/files?name=big",
        &headers,
        &noise(5000),
        true,
    )
    .await;
    assert_eq!(streamed.status, 413);
    assert_eq!(streamed.json()["error"]["code"], "TOO_LARGE");
    let at_limit = upload(addr, &alice, "ok", &noise(1000)).await;
    assert_eq!(at_limit.status, 201);
    // Nothing was left behind by the refused ones: one file stored.
    assert_eq!(s.stored().await, (1, 0));
    let samples = crate::metrics::scrape(s.server.metrics_addr().unwrap()).await;
    crate::metrics::expect(
        &samples,
        &[
            ("chatd_files_uploaded_total", 1.0),
            ("chatd_files_uploaded_bytes_total", 1000.0),
            ("chatd_files_refused_total", 2.0),
            ("chatd_files_failed_total", 0.0),
        ],
    );
}

/// A client that sends its whole body before reading (Python's httpx,
/// browsers' `fetch`, curl without `Expect`) gets the 413 chatd answers
/// while the body still arrives, not a connection reset: the rest of the
/// body is read and dropped (`server.linger_*`) before the connection
/// closes. The body is larger than loopback's socket buffers take, so the
/// client is still writing when the answer comes; every write must succeed.
async fn a_client_that_sends_a_too_large_body_whole_before_reading_gets_its_413(storage: Storage) {
    let max = 1 << 20;
    let limit = format!("files.max_size={max}");
    let s = Setup::new("whole", storage, &[&limit]).await;
    let addr = s.addr();
    let (_, alice) = register_and_login(addr, "alice", "password1").await;
    let body = noise(16 * max);
    for chunked in [false, true, false] {
        let mut conn = tokio::net::TcpStream::connect(addr).await.unwrap();
        let length = match chunked {
            false => format!("Content-Length: {}", body.len()),
            true => "Transfer-Encoding: chunked".to_owned(),
        };
        let head = format!(
            "POST /api/chat-api/files?name=big HTTP/1.1\r\nHost: {addr}\r\n\
             Authorization: Bearer {alice}\r\n{length}\r\n\r\n"
        );
        conn.write_all(head.as_bytes()).await.unwrap();
        if chunked {
            for part in body.chunks(64 * 1024) {
                let frame = [format!("{:x}\r\n", part.len()).as_bytes(), part, b"\r\n"].concat();
                conn.write_all(&frame)
                    .await
                    .expect("the whole body is taken");
            }
            conn.write_all(b"0\r\n\r\n")
                .await
                .expect("the whole body is taken");
        } else {
            conn.write_all(&body)
                .await
                .expect("the whole body is taken");
        }
        let mut answer = Vec::new();
        tokio::time::timeout(crate::common::WAIT, conn.read_to_end(&mut answer))
            .await
            .expect("an answer in time")
            .expect("the answer, not a reset");
        let text = String::from_utf8_lossy(&answer);
        assert!(text.starts_with("HTTP/1.1 413"), "{text}");
        assert!(
            text.to_ascii_lowercase().contains("connection: close"),
            "{text}"
        );
        assert!(text.contains(r#""code":"TOO_LARGE""#), "{text}");
    }
    assert_eq!(s.stored().await, (0, 0));
}

/// With auth off, an anonymous upload posted in a public room is public;
/// before that nobody but the poster's id holder can attach it.
async fn with_auth_off_files_posted_in_public_rooms_are_public(storage: Storage) {
    let s = Setup::new("public", storage, &[]).await;
    let addr = s.addr();
    let posted = request(
        addr,
        "POST",
        "/api/chat-api/files?name=n.txt",
        &[],
        b"hello\n",
        false,
    )
    .await;
    assert_eq!(posted.status, 201);
    let file = posted.json();
    let url = file["url"].as_str().unwrap();
    assert_eq!(get(addr, None, url, &[]).await.status, 403);
    let mut anon = connect(addr, "/ws/lobby").await;
    assert_eq!(anon.recv_type("system").await["data"]["event"], "joined");
    anon.send_json(json!({"type":"chat","room":"lobby","data":{"content":"","attachments":[{"file_id":file["id"]}]}}))
        .await;
    let chat = anon.recv_type("chat").await;
    assert_eq!(chat["data"]["attachments"][0]["name"], "n.txt");
    let got = get(addr, None, url, &[]).await;
    assert_eq!((got.status, got.body.as_slice()), (200, &b"hello\n"[..]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_web_client_is_served_with_a_strict_policy() {
    let s = Setup::new("web", Storage::Local, &[]).await;
    let addr = s.addr();
    let page = get(addr, None, "/", &[]).await;
    assert_eq!(page.status, 200);
    assert_eq!(
        page.header("content-type"),
        Some("text/html; charset=utf-8")
    );
    let policy = page.header("content-security-policy").unwrap();
    assert!(policy.contains("script-src 'self'"), "{policy}");
    let html = String::from_utf8(page.body.clone()).unwrap();
    assert!(
        html.contains("/app.js") && !html.contains("https://"),
        "no third-party origin"
    );
    let js = get(addr, None, "/app.js", &[]).await;
    assert_eq!(
        js.header("content-type"),
        Some("text/javascript; charset=utf-8")
    );
    let etag = js.header("etag").unwrap().to_owned();
    assert_eq!(
        get(addr, None, "/app.js", &[("If-None-Match", &etag)])
            .await
            .status,
        304
    );
    let off = Setup::new("web-off", Storage::Local, &["server.web_client=false"]).await;
    assert_eq!(get(off.addr(), None, "/", &[]).await.status, 404);
}

/// A client that goes away mid-upload (past the first 5 MiB part, so a
/// multipart upload was under way) leaves no file and no partial object.
async fn an_upload_cut_off_by_the_client_leaves_nothing(storage: Storage) {
    let s = Setup::new("cutoff", storage, &[]).await;
    let addr = s.addr();
    let (_, alice) = register_and_login(addr, "alice", "password1").await;
    let mut conn = tokio::net::TcpStream::connect(addr).await.unwrap();
    let head = format!(
        "POST /api/chat-api/files?name=cut.bin HTTP/1.1\r\nHost: {addr}\r\n\
         Authorization: Bearer {alice}\r\nContent-Length: {}\r\n\r\n",
        12 * 1024 * 1024
    );
    conn.write_all(head.as_bytes()).await.unwrap();
    conn.write_all(&noise(7 * 1024 * 1024)).await.unwrap();
    drop(conn);
    let metrics = s.server.metrics_addr().unwrap();
    crate::common::eventually_async("the cut-off upload is counted", || async {
        let m = crate::metrics::scrape(metrics).await;
        m.get("chatd_files_refused_total") == Some(&1.0)
    })
    .await;
    // No file, staging file, object or open multipart upload is left.
    crate::common::eventually_async("nothing of the upload is left", || async {
        s.stored().await == (0, 0)
    })
    .await;
    let samples = crate::metrics::scrape(metrics).await;
    crate::metrics::expect(&samples, &[("chatd_files_uploaded_total", 0.0)]);
}

/// Several nodes: one PostgreSQL, one Redis, one S3 bucket. A file uploaded
/// on one node and posted in a DM reaches a member on the other node, who
/// downloads it from there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_share_files_through_s3() {
    use crate::redis_harness::{require_redis, two_ready_nodes, Redis};
    require_redis();
    let redis = Redis::start();
    let pg = crate::pg_harness::PgDatabase::create();
    let moto = Moto::start(BUCKET).await;
    let mut settings = vec![
        "store.backend=postgres".to_owned(),
        format!("store.postgres.url={}", pg.url()),
        "auth.jwt_secret=files-nodes-secret-files-nodes-secret".to_owned(),
        "auth.argon2.memory_kib=1024".to_owned(),
        "auth.argon2.iterations=1".to_owned(),
    ];
    settings.extend(moto.overrides(BUCKET));
    let extra: Vec<&str> = settings.iter().map(String::as_str).collect();
    let (n1, n2) = two_ready_nodes(&redis.url(), &extra).await;
    let (_, alice) = register_and_login(n1.addr, "alice", "password1").await;
    let (bob_id, bob) = register_and_login(n2.addr, "bob", "password1").await;
    let bytes = noise(70_000);
    let file = upload(n1.addr, &alice, "shared.bin", &bytes).await.json();
    let (_, dm) = http_json(
        n1.addr,
        "POST",
        &format!("/api/chat-api/dm/{bob_id}"),
        Some(&alice),
        None,
    )
    .await;
    let room = dm["id"].as_str().unwrap().to_owned();
    let mut a = connect(n1.addr, &format!("/ws?token={alice}")).await;
    let mut b = connect(n2.addr, &format!("/ws?token={bob}")).await;
    join_room(&mut a, &room).await;
    join_room(&mut b, &room).await;
    a.send_json(json!({"type":"chat","room":room,"data":{"content":"here","attachments":[{"file_id":file["id"]}]}}))
        .await;
    let chat = b.recv_type("chat").await;
    let url = chat["data"]["attachments"][0]["url"]
        .as_str()
        .unwrap()
        .to_owned();
    let got = get(n2.addr, Some(&bob), &url, &[]).await;
    assert_eq!(got.status, 200);
    assert!(got.body == bytes, "node 2 serves node 1's upload");
}

/// An upload that takes longer than `server.http_idle_timeout` is not cut
/// off (it was: the idle timer counted from the request's start).
async fn a_slow_upload_outlives_the_http_idle_timeout(storage: Storage) {
    let s = Setup::new("slow", storage, &["server.http_idle_timeout=300ms"]).await;
    let addr = s.addr();
    let (_, alice) = register_and_login(addr, "alice", "password1").await;
    let bytes = noise(2000);
    let mut conn = tokio::net::TcpStream::connect(addr).await.unwrap();
    let head = format!(
        "POST /api/chat-api/files?name=slow.bin HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\
         Authorization: Bearer {alice}\r\nContent-Length: {}\r\n\r\n",
        bytes.len()
    );
    conn.write_all(head.as_bytes()).await.unwrap();
    // 1.2 s in all, four times the idle timeout.
    for part in bytes.chunks(200) {
        tokio::time::sleep(std::time::Duration::from_millis(120)).await;
        conn.write_all(part).await.unwrap();
    }
    let mut answer = String::new();
    conn.read_to_string(&mut answer).await.unwrap();
    assert!(answer.starts_with("HTTP/1.1 201"), "{answer}");
}
