//! TLS 1.3 with mutual authentication: loading certificates, generating the
//! development CA and certificates on first start, building quinn configs,
//! and reading a client's role from its certificate.

use crate::limits::{ALPN, IDLE_TIMEOUT, KEEP_ALIVE, MAX_STREAMS_PER_CONNECTION};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// The organizational unit that marks a read-only client certificate.
pub const READ_ONLY_OU: &str = "tally-read-only";

/// Certificate files: the CA to trust, and this side's certificate and key.
#[derive(Clone, Debug)]
pub struct TlsFiles {
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// What a client may do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    Writer,
    ReadOnly,
}

/// The development certificates in `DATA_DIR/certs`.
pub fn dev_dir(data_dir: &Path) -> PathBuf {
    data_dir.join("certs")
}

pub fn dev_server_files(data_dir: &Path) -> TlsFiles {
    let d = dev_dir(data_dir);
    TlsFiles {
        ca: d.join("ca.pem"),
        cert: d.join("server.pem"),
        key: d.join("server.key"),
    }
}

pub fn dev_client_files(data_dir: &Path) -> TlsFiles {
    let d = dev_dir(data_dir);
    TlsFiles {
        ca: d.join("ca.pem"),
        cert: d.join("client.pem"),
        key: d.join("client.key"),
    }
}

/// The read-only development client certificate.
pub fn dev_reader_files(data_dir: &Path) -> TlsFiles {
    let d = dev_dir(data_dir);
    TlsFiles {
        ca: d.join("ca.pem"),
        cert: d.join("reader.pem"),
        key: d.join("reader.key"),
    }
}

/// Creates the development CA, a server certificate (for `localhost` and
/// 127.0.0.1/::1), a writer client certificate and a read-only one under
/// `DATA_DIR/certs`, unless the server's files exist. Returns whether it
/// created them.
pub fn ensure_dev_certs(data_dir: &Path) -> Result<bool, String> {
    let files = dev_server_files(data_dir);
    if files.ca.exists() && files.cert.exists() && files.key.exists() {
        return Ok(false);
    }
    let dir = dev_dir(data_dir);
    std::fs::create_dir_all(&dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
    let err = |e: rcgen::Error| format!("generating development certificates: {e}");
    let ca_key = rcgen::KeyPair::generate().map_err(err)?;
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).map_err(err)?;
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "Tally development CA");
    ca_params.key_usages = vec![
        rcgen::KeyUsagePurpose::KeyCertSign,
        rcgen::KeyUsagePurpose::CrlSign,
    ];
    let ca = ca_params.self_signed(&ca_key).map_err(err)?;

    let issue = |names: Vec<String>,
                 cn: &str,
                 ou: Option<&str>,
                 server: bool|
     -> Result<(String, String), String> {
        let key = rcgen::KeyPair::generate().map_err(err)?;
        let mut p = rcgen::CertificateParams::new(names).map_err(err)?;
        p.distinguished_name.push(rcgen::DnType::CommonName, cn);
        if let Some(ou) = ou {
            p.distinguished_name
                .push(rcgen::DnType::OrganizationalUnitName, ou);
        }
        p.extended_key_usages = vec![if server {
            rcgen::ExtendedKeyUsagePurpose::ServerAuth
        } else {
            rcgen::ExtendedKeyUsagePurpose::ClientAuth
        }];
        let cert = p.signed_by(&key, &ca, &ca_key).map_err(err)?;
        Ok((cert.pem(), key.serialize_pem()))
    };
    let server = issue(
        vec!["localhost".into(), "127.0.0.1".into(), "::1".into()],
        "tallyd",
        None,
        true,
    )?;
    let client = issue(vec![], "tally client", None, false)?;
    let reader = issue(vec![], "tally reader", Some(READ_ONLY_OU), false)?;
    let write = |name: &str, text: &str, secret: bool| -> Result<(), String> {
        let path = dir.join(name);
        std::fs::write(&path, text).map_err(|e| format!("writing {}: {e}", path.display()))?;
        if secret {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))
                .map_err(|e| format!("restricting {}: {e}", path.display()))?;
        }
        Ok(())
    };
    write("ca.pem", &ca.pem(), false)?;
    write("ca.key", &ca_key.serialize_pem(), true)?;
    write("client.pem", &client.0, false)?;
    write("client.key", &client.1, true)?;
    write("reader.pem", &reader.0, false)?;
    write("reader.key", &reader.1, true)?;
    // The server's files last: their presence means the set is complete.
    write("server.key", &server.1, true)?;
    write("server.pem", &server.0, false)?;
    Ok(true)
}

fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs: Vec<_> = CertificateDer::pem_file_iter(path)
        .map_err(|e| format!("reading certificates from {}: {e}", path.display()))?
        .collect::<Result<_, _>>()
        .map_err(|e| format!("reading certificates from {}: {e}", path.display()))?;
    if certs.is_empty() {
        return Err(format!("{} holds no certificate", path.display()));
    }
    Ok(certs)
}

fn load_key(path: &Path) -> Result<PrivateKeyDer<'static>, String> {
    PrivateKeyDer::from_pem_file(path)
        .map_err(|e| format!("reading a private key from {}: {e}", path.display()))
}

fn roots(ca: &Path) -> Result<Arc<rustls::RootCertStore>, String> {
    let mut store = rustls::RootCertStore::empty();
    for c in load_certs(ca)? {
        store
            .add(c)
            .map_err(|e| format!("{}: not a usable CA certificate: {e}", ca.display()))?;
    }
    Ok(Arc::new(store))
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn transport() -> Arc<quinn::TransportConfig> {
    let mut t = quinn::TransportConfig::default();
    t.max_concurrent_bidi_streams(MAX_STREAMS_PER_CONNECTION.into());
    t.max_concurrent_uni_streams(0u8.into());
    // IDLE_TIMEOUT is far below the protocol's bound, so this cannot fail.
    t.max_idle_timeout(quinn::IdleTimeout::try_from(IDLE_TIMEOUT).ok());
    t.keep_alive_interval(Some(KEEP_ALIVE));
    Arc::new(t)
}

/// The server's QUIC configuration: TLS 1.3 only, client certificates
/// required and checked against the CA, ALPN `tally/1`, no 0-RTT.
pub fn server_config(files: &TlsFiles) -> Result<quinn::ServerConfig, String> {
    let verifier =
        rustls::server::WebPkiClientVerifier::builder_with_provider(roots(&files.ca)?, provider())
            .build()
            .map_err(|e| format!("client verifier: {e}"))?;
    let mut tls = rustls::ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| format!("TLS: {e}"))?
        .with_client_cert_verifier(verifier)
        .with_single_cert(load_certs(&files.cert)?, load_key(&files.key)?)
        .map_err(|e| format!("server certificate {}: {e}", files.cert.display()))?;
    tls.alpn_protocols = vec![ALPN.to_vec()];
    tls.max_early_data_size = 0;
    let quic = quinn::crypto::rustls::QuicServerConfig::try_from(tls)
        .map_err(|e| format!("QUIC TLS: {e}"))?;
    let mut config = quinn::ServerConfig::with_crypto(Arc::new(quic));
    config.transport_config(transport());
    Ok(config)
}

/// A client's QUIC configuration: trusts only the CA, presents its
/// certificate.
pub fn client_config(files: &TlsFiles) -> Result<quinn::ClientConfig, String> {
    let mut tls = rustls::ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| format!("TLS: {e}"))?
        .with_root_certificates(roots(&files.ca)?)
        .with_client_auth_cert(load_certs(&files.cert)?, load_key(&files.key)?)
        .map_err(|e| format!("client certificate {}: {e}", files.cert.display()))?;
    tls.alpn_protocols = vec![ALPN.to_vec()];
    tls.enable_early_data = false;
    let quic = quinn::crypto::rustls::QuicClientConfig::try_from(tls)
        .map_err(|e| format!("QUIC TLS: {e}"))?;
    let mut config = quinn::ClientConfig::new(Arc::new(quic));
    config.transport_config(transport());
    Ok(config)
}

/// The role a connection's client certificate grants: read-only when its
/// subject has the organizational unit [`READ_ONLY_OU`].
pub fn role_of(conn: &quinn::Connection) -> Role {
    let Some(identity) = conn.peer_identity() else {
        return Role::ReadOnly;
    };
    let Ok(certs) = identity.downcast::<Vec<CertificateDer<'static>>>() else {
        return Role::ReadOnly;
    };
    let Some(leaf) = certs.first() else {
        return Role::ReadOnly;
    };
    role_of_der(leaf)
}

pub fn role_of_der(der: &[u8]) -> Role {
    match x509_parser::parse_x509_certificate(der) {
        Ok((_, cert)) => {
            let read_only = cert
                .subject()
                .iter_organizational_unit()
                .any(|ou| ou.as_str().is_ok_and(|s| s == READ_ONLY_OU));
            if read_only {
                Role::ReadOnly
            } else {
                Role::Writer
            }
        }
        // Verified by the handshake yet unparsable here: grant the least.
        Err(_) => Role::ReadOnly,
    }
}
