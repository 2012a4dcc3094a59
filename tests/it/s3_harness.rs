//! A real S3-compatible server for the file tests: moto in server mode on
//! loopback (`pip install 'moto[server]'`; scripts/test.sh installs it).

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::redis_harness::free_port;

pub struct Moto {
    child: Child,
    pub port: u16,
}

impl Moto {
    /// Starts moto and creates `bucket`; a missing moto fails the test.
    pub async fn start(bucket: &str) -> Moto {
        let port = free_port();
        let child = Command::new("moto_server")
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect(
                "moto_server is required (scripts/test.sh installs it: pip install 'moto[server]')",
            );
        let moto = Moto { child, port };
        let addr: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            // Creating the bucket is the readiness probe.
            let req = format!(
                "PUT /{bucket} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: 0\r\n\r\n"
            );
            if let Ok(Ok((200, _))) =
                tokio::time::timeout(Duration::from_secs(2), try_raw(addr, &req)).await
            {
                return moto;
            }
            assert!(
                Instant::now() < deadline,
                "moto did not start on port {port}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The settings that point chatd's files at this server.
    pub fn overrides(&self, bucket: &str) -> Vec<String> {
        vec![
            "files.backend=s3".into(),
            format!("files.s3.endpoint=http://127.0.0.1:{}", self.port),
            format!("files.s3.bucket={bucket}"),
            "files.s3.region=us-east-1".into(),
            "files.s3.access_key_id=test".into(),
            "files.s3.secret_access_key=test".into(),
        ]
    }
}

impl Moto {
    /// Objects in `bucket`, and multipart uploads begun and not completed
    /// or aborted (a cut-off upload must leave neither).
    pub async fn contents(&self, bucket: &str) -> (usize, usize) {
        let addr: std::net::SocketAddr = format!("127.0.0.1:{}", self.port).parse().unwrap();
        let get = |query: &str| {
            format!("GET /{bucket}?{query} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n")
        };
        let (status, objects) = try_raw(addr, &get("list-type=2")).await.unwrap();
        assert_eq!(status, 200, "{objects}");
        let (status, uploads) = try_raw(addr, &get("uploads")).await.unwrap();
        assert_eq!(status, 200, "{uploads}");
        (
            objects.matches("<Key>").count(),
            uploads.matches("<UploadId>").count(),
        )
    }
}

async fn try_raw(addr: std::net::SocketAddr, req: &str) -> std::io::Result<(u16, String)> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await?;
    s.write_all(req.as_bytes()).await?;
    let mut out = String::new();
    s.read_to_string(&mut out).await?;
    let status = out
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    Ok((status, out))
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
