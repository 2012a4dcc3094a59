//! TLS to the databases, each server started with a certificate from a CA
//! the test makes: Redis on its TLS port (`rediss://`, the store and the
//! bus, `broker.redis.ca_file`), PostgreSQL with `ssl=on`
//! (`sslmode=verify-full&sslrootcert=`), MariaDB with TLS
//! (`ssl-mode=VERIFY_IDENTITY&ssl-ca=`). A chat is acked and kept through
//! each; and without the CA, chatd refuses the server's certificate (which
//! also shows the connection was TLS: a plain one has no certificate to
//! refuse).

use serde_json::json;
use std::path::PathBuf;

use crate::common::{connect_room, eventually_async, http_get, start, try_start};
use crate::mysql_harness::Mariadb;
use crate::pg_harness::Postgres;
use crate::redis_harness::{require_redis, Redis};

/// A CA and a server certificate it signed for `localhost` and
/// `127.0.0.1`, as PEM, with the CA's also in a file.
struct Pki {
    dir: PathBuf,
    ca: String,
    cert: String,
    key: String,
}

impl Pki {
    fn new(tag: &str) -> Pki {
        let dir = std::env::temp_dir().join(format!("chatd-pki-{tag}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "chatd test CA");
        let ca =
            rcgen::CertifiedIssuer::self_signed(ca_params, rcgen::KeyPair::generate().unwrap())
                .unwrap();
        let key = rcgen::KeyPair::generate().unwrap();
        let names = vec!["localhost".to_string(), "127.0.0.1".to_string()];
        let cert = rcgen::CertificateParams::new(names)
            .unwrap()
            .signed_by(&key, &ca)
            .unwrap();
        let pki = Pki {
            dir,
            ca: ca.pem(),
            cert: cert.pem(),
            key: key.serialize_pem(),
        };
        std::fs::write(pki.ca_file(), &pki.ca).unwrap();
        std::fs::write(pki.dir.join("server.crt"), &pki.cert).unwrap();
        std::fs::write(pki.dir.join("server.key"), &pki.key).unwrap();
        pki
    }

    fn ca_file(&self) -> PathBuf {
        self.dir.join("ca.pem")
    }
}

impl Drop for Pki {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A chat in a room of `s` is acked with a `seq` and is in the history.
async fn a_chat_is_kept(s: &chatd::Server) {
    let addr = s.addr();
    let mut c = connect_room(addr, "secure").await;
    c.send_json(json!({"type":"chat","client_msg_id":"m1","data":{"content":"over tls"}}))
        .await;
    let ack = c.recv_type("ack").await;
    assert_eq!(ack["data"]["seq"], 1, "{ack}");
    let (status, body) = http_get(addr, "/api/chat-api/rooms/secure/messages").await;
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("over tls"), "{body}");
}

/// The start's error, as text (the server must not start).
fn refused(settings: &[&str]) -> String {
    match try_start(settings) {
        Ok(_) => panic!("chatd started with a server certificate it cannot trust"),
        Err(e) => format!("{e:#}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_over_tls_checks_the_server_certificate() {
    require_redis();
    let pki = Pki::new("redis");
    let redis = Redis::start_tls(&pki.dir.join("server.crt"), &pki.dir.join("server.key"));
    let url = format!("broker.redis.url={}", redis.tls_url());
    let ca = format!("broker.redis.ca_file={}", pki.ca_file().display());
    // The store and the bus both on rediss://.
    let s = start(&[&url, &ca, "store.backend=redis"]);
    a_chat_is_kept(&s).await;
    // The bus connects on its own (the chat above needed only the store).
    let addr = s.addr();
    let ready = || async move { http_get(addr, "/readyz").await.0 == 200 };
    eventually_async("the bus connects over TLS too (/readyz 200)", ready).await;
    s.shutdown().await;
    let error = refused(&[&url, "store.backend=redis"]);
    assert!(error.contains("store"), "{error}");
}

/// A store on `backend` keeps a chat through `verified` (a URL naming the
/// CA), and will not start on `untrusted` (the same without it).
async fn verified_but_not_untrusted(backend: &str, verified: &str, untrusted: &str) {
    let store = format!("store.backend={backend}");
    let url = |u: &str| format!("store.{backend}.url={u}");
    let s = start(&[&store, &url(verified)]);
    a_chat_is_kept(&s).await;
    s.shutdown().await;
    let error = refused(&[&store, &url(untrusted)]);
    assert!(error.contains("store"), "{error}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_over_tls_checks_the_server_certificate() {
    let pki = Pki::new("postgres");
    let mut pg = Postgres::start();
    pg.enable_tls(&pki.cert, &pki.key);
    let ca = pki.ca_file();
    let verified = format!(
        "{}?sslmode=verify-full&sslrootcert={}",
        pg.url(),
        ca.display()
    );
    let untrusted = format!("{}?sslmode=verify-full", pg.url());
    verified_but_not_untrusted("postgres", &verified, &untrusted).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mysql_over_tls_checks_the_server_certificate() {
    let pki = Pki::new("mysql");
    let mut db = Mariadb::start();
    db.enable_tls(&pki.ca, &pki.cert, &pki.key);
    let ca = pki.ca_file();
    let verified = format!(
        "{}?ssl-mode=VERIFY_IDENTITY&ssl-ca={}",
        db.url(),
        ca.display()
    );
    let untrusted = format!("{}?ssl-mode=VERIFY_IDENTITY", db.url());
    verified_but_not_untrusted("mysql", &verified, &untrusted).await;
}
