//! wss:// and https:// with a certificate made in the test.

use futures_util::{SinkExt, StreamExt};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::rustls::pki_types::{pem::PemObject, CertificateDer, ServerName};
use tokio_rustls::rustls::{ClientConfig, RootCertStore};
use tokio_tungstenite::tungstenite::Message;

use crate::common::{refused_start, start, WAIT};

/// Writes a self-signed certificate for localhost; returns (dir, cert PEM).
fn make_cert(tag: &str) -> (PathBuf, String) {
    let dir = std::env::temp_dir().join(format!("chatd-tls-{tag}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let ck = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    let cert = ck.cert.pem();
    std::fs::write(dir.join("cert.pem"), &cert).unwrap();
    std::fs::write(dir.join("key.pem"), ck.signing_key.serialize_pem()).unwrap();
    (dir, cert)
}

async fn tls_connect(
    addr: SocketAddr,
    cert_pem: &str,
) -> tokio_rustls::client::TlsStream<TcpStream> {
    let mut roots = RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_slice(cert_pem.as_bytes()).unwrap())
        .unwrap();
    let provider = Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
    let config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = TcpStream::connect(addr).await.unwrap();
    connector
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
        .expect("TLS handshake")
}

async fn next_json<S>(ws: &mut tokio_tungstenite::WebSocketStream<S>) -> serde_json::Value
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    loop {
        match tokio::time::timeout(WAIT, ws.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap()
        {
            Message::Text(t) => return serde_json::from_str(&t).unwrap(),
            _ => continue,
        }
    }
}

#[tokio::test]
async fn wss_and_https_work_and_plain_http_is_not_served() {
    let (dir, cert) = make_cert("ok");
    let cert_file = format!("server.tls.cert_file={}", dir.join("cert.pem").display());
    let key_file = format!("server.tls.key_file={}", dir.join("key.pem").display());
    let server = start(&["server.tls.enabled=true", &cert_file, &key_file]);
    let addr = server.addr();

    // wss: a real TLS WebSocket client, a chat round trip.
    let tls = tls_connect(addr, &cert).await;
    let (mut ws, _) = tokio_tungstenite::client_async("wss://localhost/ws/secure", tls)
        .await
        .unwrap();
    assert_eq!(next_json(&mut ws).await["data"]["event"], "connected");
    let chat = serde_json::json!({"type":"chat","data":{"content":"over tls"}}).to_string();
    ws.send(Message::text(chat)).await.unwrap();
    let echoed = loop {
        let v = next_json(&mut ws).await;
        if v["type"] == "chat" {
            break v;
        }
    };
    assert_eq!(echoed["data"]["content"], "over tls");

    // https: plain HTTP inside TLS.
    let mut tls = tls_connect(addr, &cert).await;
    tls.write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut resp = String::new();
    tokio::time::timeout(WAIT, tls.read_to_string(&mut resp))
        .await
        .unwrap()
        .ok();
    assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");

    // Plain HTTP on the TLS port gets no HTTP answer.
    let mut plain = TcpStream::connect(addr).await.unwrap();
    plain
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .await
        .unwrap();
    let mut raw = Vec::new();
    let _ = tokio::time::timeout(WAIT, plain.read_to_end(&mut raw))
        .await
        .expect("server drops the connection");
    assert!(
        !raw.starts_with(b"HTTP/"),
        "plain HTTP was served: {:?}",
        String::from_utf8_lossy(&raw)
    );
    server.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn a_bad_certificate_path_or_key_stops_the_start_with_a_clear_message() {
    let missing = chatd::Config::load(
        Some(std::path::Path::new("/dev/null")),
        [],
        &[
            "server.tls.enabled=true".into(),
            "server.tls.cert_file=/nonexistent/cert.pem".into(),
            "server.port=0".into(),
        ],
    )
    .unwrap();
    let err = chatd::start(missing)
        .err()
        .expect("start fails")
        .to_string();
    assert!(
        err.contains("server.tls.cert_file /nonexistent/cert.pem"),
        "{err}"
    );

    let (dir, _) = make_cert("badkey");
    std::fs::write(dir.join("key.pem"), "not a key").unwrap();
    let stderr = refused_start(
        tokio::process::Command::new(env!("CARGO_BIN_EXE_chatd"))
            .arg("--port=0")
            .args([
                "--set",
                "server.tls.enabled=true",
                "--set",
                "metrics.enabled=false",
            ])
            .arg("--set")
            .arg(format!(
                "server.tls.cert_file={}",
                dir.join("cert.pem").display()
            ))
            .arg("--set")
            .arg(format!(
                "server.tls.key_file={}",
                dir.join("key.pem").display()
            )),
    )
    .await;
    let _ = std::fs::remove_dir_all(&dir);
    assert!(stderr.contains("server.tls.key_file"), "{stderr}");
}
