//! TLS through rustls with the ring provider: the certificate for wss://
//! and https://, and Redis clients for rediss:// with their CA.

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use std::path::Path;
use std::sync::Arc;
use tokio_rustls::TlsAcceptor;

use crate::config::TlsConfig;

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("server.tls.cert_file {path}: {reason}")]
    Cert { path: String, reason: String },
    #[error("server.tls.key_file {path}: {reason}")]
    Key { path: String, reason: String },
    #[error("TLS setup: the certificate and key do not make a valid server config: {0}")]
    Config(#[from] rustls::Error),
}

/// Loads the PEM certificate chain and private key named in the config.
pub fn acceptor(config: &TlsConfig) -> Result<TlsAcceptor, TlsError> {
    let shown = |p: &Path| p.display().to_string();
    let cert_err = |reason: String| TlsError::Cert {
        path: shown(&config.cert_file),
        reason,
    };
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&config.cert_file)
        .map_err(|e| cert_err(e.to_string()))?
        .collect::<Result<_, _>>()
        .map_err(|e| cert_err(e.to_string()))?;
    if certs.is_empty() {
        return Err(cert_err("no PEM certificate in the file".into()));
    }
    let key = PrivateKeyDer::from_pem_file(&config.key_file).map_err(|e| TlsError::Key {
        path: shown(&config.key_file),
        reason: e.to_string(),
    })?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut server = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(certs, key)?;
    server.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(server)))
}

/// The trust for a `rediss://` server: the PEM CA certificates in
/// `ca_file`, or (empty path) `None`: the system's roots.
fn redis_certs(ca_file: &Path) -> redis::RedisResult<Option<redis::TlsCertificates>> {
    if ca_file.as_os_str().is_empty() {
        return Ok(None);
    }
    let root = std::fs::read(ca_file).map_err(|e| {
        let detail = format!("{}: {e}", ca_file.display());
        redis::RedisError::from((redis::ErrorKind::Io, "cannot read the CA file", detail))
    })?;
    Ok(Some(redis::TlsCertificates {
        client_tls: None,
        root_cert: Some(root),
    }))
}

/// A Redis client for `url`: `rediss://` connects with TLS, the server's
/// certificate checked against `ca_file` (empty: the system's roots).
pub fn redis_client(url: &str, ca_file: &Path) -> redis::RedisResult<redis::Client> {
    match redis_certs(ca_file)? {
        Some(certs) => redis::Client::build_with_tls(url, certs),
        None => redis::Client::open(url),
    }
}

/// A Redis Cluster client builder trusting `ca_file` for `rediss://` seeds.
pub fn redis_cluster(
    builder: redis::cluster::ClusterClientBuilder,
    ca_file: &Path,
) -> redis::RedisResult<redis::cluster::ClusterClientBuilder> {
    Ok(match redis_certs(ca_file)? {
        Some(certs) => builder.certs(certs),
        None => builder,
    })
}
