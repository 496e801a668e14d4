//! TLS 1.3 with mutual authentication: loading certificates, generating the
//! development CA and certificates on first start, building quinn configs,
//! and reading a client's role from its certificate.

use crate::limits::{
    ALPN, IDLE_TIMEOUT, KEEP_ALIVE, MAX_STREAMS_PER_CONNECTION, MAX_STREAM_WINDOW_BYTES,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// The organizational unit that marks a writer: only a client certificate
/// whose subject has this OU (and not [`READ_ONLY_OU`]) may change the ledger.
pub const WRITER_OU: &str = "tally-writer";
/// The organizational unit of the development read-only certificate. Any
/// certificate without [`WRITER_OU`] is read-only; this OU also overrides a
/// writer OU in the same subject.
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
    crate::private::create_dir(&dir)?;
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
    let client = issue(vec![], "tally client", Some(WRITER_OU), false)?;
    let reader = issue(vec![], "tally reader", Some(READ_ONLY_OU), false)?;
    let write = |name: &str, text: &str, secret: bool| -> Result<(), String> {
        let mode = if secret { 0o600 } else { 0o644 };
        crate::private::write_new(&dir.join(name), text.as_bytes(), mode)
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
    // What QUIC itself buffers of a stream the server has not read yet (a
    // stream waiting for the connection's byte budget): bounded per stream.
    t.stream_receive_window((MAX_STREAM_WINDOW_BYTES as u32).into());
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

/// The role a connection's client certificate grants (see [`role_of_der`]).
pub fn role_of(conn: &quinn::Connection) -> Role {
    let Some(leaf) = peer_leaf(conn) else {
        return Role::ReadOnly;
    };
    role_of_der(&leaf)
}

/// The client's leaf certificate, as verified by the handshake.
pub fn peer_leaf(conn: &quinn::Connection) -> Option<CertificateDer<'static>> {
    let identity = conn.peer_identity()?;
    let certs = identity.downcast::<Vec<CertificateDer<'static>>>().ok()?;
    certs.first().cloned()
}

/// Fails closed: a writer only if the subject has an OU [`WRITER_OU`] and no
/// OU [`READ_ONLY_OU`], and every OU could be read (UTF8String,
/// PrintableString, IA5String, NumericString, BMPString, UniversalString or
/// T61String). Anything else, an unparsable certificate included, is
/// read-only.
pub fn role_of_der(der: &[u8]) -> Role {
    let Ok((_, cert)) = x509_parser::parse_x509_certificate(der) else {
        return Role::ReadOnly;
    };
    let mut writer = false;
    for ou in cert.subject().iter_organizational_unit() {
        match directory_string(ou.attr_value()) {
            Some(s) if s == READ_ONLY_OU => return Role::ReadOnly,
            Some(s) if s == WRITER_OU => writer = true,
            Some(_) => {}
            // An OU we cannot read might say read-only: grant the least.
            None => return Role::ReadOnly,
        }
    }
    if writer {
        Role::Writer
    } else {
        Role::ReadOnly
    }
}

/// The text of an X.520 DirectoryString in any of its encodings.
fn directory_string(v: &x509_parser::der_parser::asn1_rs::Any) -> Option<String> {
    use x509_parser::der_parser::asn1_rs::Tag;
    let data = v.data;
    match v.tag() {
        Tag::Utf8String | Tag::PrintableString | Tag::Ia5String | Tag::NumericString => {
            std::str::from_utf8(data).ok().map(str::to_owned)
        }
        Tag::BmpString => {
            if data.len() % 2 != 0 {
                return None;
            }
            let units = data
                .chunks_exact(2)
                .map(|c| u16::from_be_bytes([c[0], c[1]]));
            char::decode_utf16(units)
                .collect::<Result<String, _>>()
                .ok()
        }
        Tag::UniversalString => {
            if data.len() % 4 != 0 {
                return None;
            }
            data.chunks_exact(4)
                .map(|c| char::from_u32(u32::from_be_bytes([c[0], c[1], c[2], c[3]])))
                .collect()
        }
        // T.61 (Teletex) as used in practice: Latin-1.
        Tag::T61String => Some(data.iter().map(|&b| char::from(b)).collect()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cert_with(ou: Option<rcgen::DnValue>) -> Vec<u8> {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut p = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        p.distinguished_name.push(rcgen::DnType::CommonName, "c");
        if let Some(ou) = ou {
            p.distinguished_name
                .push(rcgen::DnType::OrganizationalUnitName, ou);
        }
        p.self_signed(&key).unwrap().der().to_vec()
    }

    #[test]
    fn roles_fail_closed() {
        use rcgen::DnValue;
        let utf8 = |s: &str| DnValue::Utf8String(s.into());
        assert_eq!(role_of_der(&cert_with(Some(utf8(WRITER_OU)))), Role::Writer);
        assert_eq!(role_of_der(&cert_with(None)), Role::ReadOnly);
        assert_eq!(role_of_der(&cert_with(Some(utf8("ops")))), Role::ReadOnly);
        assert_eq!(
            role_of_der(&cert_with(Some(utf8(READ_ONLY_OU)))),
            Role::ReadOnly
        );
        let bmp = |s: &str| DnValue::BmpString(rcgen::BmpString::try_from(s).unwrap());
        assert_eq!(
            role_of_der(&cert_with(Some(bmp(READ_ONLY_OU)))),
            Role::ReadOnly
        );
        assert_eq!(role_of_der(&cert_with(Some(bmp(WRITER_OU)))), Role::Writer);
        let t61 = |s: &str| DnValue::TeletexString(rcgen::TeletexString::try_from(s).unwrap());
        assert_eq!(
            role_of_der(&cert_with(Some(t61(READ_ONLY_OU)))),
            Role::ReadOnly
        );
        assert_eq!(role_of_der(&cert_with(Some(t61(WRITER_OU)))), Role::Writer);
        assert_eq!(role_of_der(b"not a certificate"), Role::ReadOnly);
    }

    #[test]
    fn a_read_only_ou_beats_a_writer_ou() {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut p = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        p.distinguished_name
            .push(rcgen::DnType::OrganizationalUnitName, WRITER_OU);
        // A second OU attribute (rcgen keeps one value per type).
        p.distinguished_name
            .push(rcgen::DnType::CustomDnType(vec![2, 5, 4, 11]), READ_ONLY_OU);
        let der = p.self_signed(&key).unwrap().der().to_vec();
        assert_eq!(role_of_der(&der), Role::ReadOnly);
    }
}
