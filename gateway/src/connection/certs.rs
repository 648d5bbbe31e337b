//! The server certificate for QUIC and TLS: from PEM files when configured, otherwise
//! a self-signed one generated into `<data_dir>/tls/` on first start and reused after.
//! Clients pin its SHA-256 fingerprint (printed at start-up) or trust a CA file.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use sha2::{Digest, Sha256};

/// The ALPN protocol id of Courier over QUIC and TLS.
pub const ALPN: &[u8] = b"courier/1";

/// Why the certificate could not be had.
#[derive(Debug, thiserror::Error)]
pub enum CertError {
    /// Reading or writing a PEM file failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// A PEM file holds no usable certificate or key.
    #[error("{0}")]
    Pem(String),
    /// Generating a self-signed certificate failed.
    #[error("generating a certificate: {0}")]
    Generate(#[from] rcgen::Error),
    /// rustls refused the certificate or key.
    #[error("tls: {0}")]
    Tls(#[from] rustls::Error),
}

/// A certificate chain with its key.
pub struct ServerCert {
    /// Leaf first.
    pub chain: Vec<CertificateDer<'static>>,
    /// The private key.
    pub key: PrivateKeyDer<'static>,
    /// Hex SHA-256 of the leaf certificate (what clients pin).
    pub fingerprint: String,
}

impl Clone for ServerCert {
    fn clone(&self) -> Self {
        Self {
            chain: self.chain.clone(),
            key: self.key.clone_key(),
            fingerprint: self.fingerprint.clone(),
        }
    }
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> CertError + '_ {
    move |source| CertError::Io {
        path: path.to_owned(),
        source,
    }
}

/// Loads the configured PEM files, or the generated certificate in `data_dir/tls`
/// (generating it the first time).
pub fn load_or_generate(
    cert_path: &str,
    key_path: &str,
    data_dir: &Path,
) -> Result<ServerCert, CertError> {
    let (cert_path, key_path) = if cert_path.is_empty() || key_path.is_empty() {
        let dir = data_dir.join("tls");
        let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
        if !cert.exists() || !key.exists() {
            std::fs::create_dir_all(&dir).map_err(io(&dir))?;
            let generated = rcgen::generate_simple_self_signed(vec![
                "localhost".to_owned(),
                "127.0.0.1".to_owned(),
                "::1".to_owned(),
            ])?;
            std::fs::write(&cert, generated.cert.pem()).map_err(io(&cert))?;
            write_private(&key, generated.key_pair.serialize_pem().as_bytes())?;
        }
        (cert, key)
    } else {
        (PathBuf::from(cert_path), PathBuf::from(key_path))
    };
    let cert_pem = std::fs::read(&cert_path).map_err(io(&cert_path))?;
    let key_pem = std::fs::read(&key_path).map_err(io(&key_path))?;
    let chain = rustls_pemfile::certs(&mut &cert_pem[..])
        .collect::<Result<Vec<_>, _>>()
        .map_err(io(&cert_path))?;
    let leaf = chain
        .first()
        .ok_or_else(|| CertError::Pem(format!("{}: no certificate", cert_path.display())))?;
    let fingerprint = hex::encode(Sha256::digest(leaf.as_ref()));
    let key = rustls_pemfile::private_key(&mut &key_pem[..])
        .map_err(io(&key_path))?
        .ok_or_else(|| CertError::Pem(format!("{}: no private key", key_path.display())))?;
    Ok(ServerCert {
        chain,
        key,
        fingerprint,
    })
}

fn write_private(path: &Path, bytes: &[u8]) -> Result<(), CertError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .map_err(io(path))?;
    f.write_all(bytes).map_err(io(path))
}

/// A rustls server configuration (TLS 1.3, ALPN `courier/1`, ring).
pub fn server_crypto(cert: &ServerCert) -> Result<rustls::ServerConfig, CertError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_no_client_auth()
        .with_single_cert(cert.chain.clone(), cert.key.clone_key())?;
    config.alpn_protocols = vec![ALPN.to_vec()];
    Ok(config)
}
