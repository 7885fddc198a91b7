//! Serving the emulator over TLS with a throw-away CA ([`TlsMaterial`], [`Emulator::start_tls`]),
//! to test that clients verify certificates (CA bundles, server names).
//!
//! Connections over TLS cannot be reset by [`super::FaultKind::Reset`]; every other fault works.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use axum::serve::ListenerExt as _;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls::ServerConfig;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

use super::Emulator;

/// How long one TLS handshake may take before the connection is dropped.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);

/// A CA and a server certificate it signed.
#[derive(Clone, Debug)]
pub struct TlsMaterial {
    /// The CA certificate (PEM): what a client must trust.
    pub ca_pem: String,
    /// The server certificate (PEM).
    pub cert_pem: String,
    /// DER of the server certificate.
    cert_der: Vec<u8>,
    /// PKCS#8 DER of the server key.
    key_der: Vec<u8>,
    /// The DNS names / IP addresses the certificate is valid for.
    pub names: Vec<String>,
}

impl TlsMaterial {
    /// A fresh ECDSA P-256 CA and a server certificate for `names` (DNS names or IP addresses).
    ///
    /// # Errors
    /// If key generation or signing fails.
    pub fn generate(names: &[&str]) -> anyhow::Result<TlsMaterial> {
        let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(DnType::CommonName, "zmo-emulator-test-ca");
        ca_params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
        ];
        let ca_key = KeyPair::generate().context("generating the CA key")?;
        let ca_cert = ca_params
            .self_signed(&ca_key)
            .context("self-signing the CA")?;
        let issuer = Issuer::new(ca_params, ca_key);

        let names: Vec<String> = names.iter().map(|n| (*n).to_owned()).collect();
        let mut params = CertificateParams::new(names.clone())?;
        params
            .distinguished_name
            .push(DnType::CommonName, "zitadel-emulator");
        params.use_authority_key_identifier_extension = true;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let key = KeyPair::generate().context("generating the server key")?;
        let cert = params
            .signed_by(&key, &issuer)
            .context("signing the server certificate")?;
        Ok(TlsMaterial {
            ca_pem: ca_cert.pem(),
            cert_pem: cert.pem(),
            cert_der: cert.der().to_vec(),
            key_der: key.serialize_der(),
            names,
        })
    }

    fn server_config(&self) -> anyhow::Result<ServerConfig> {
        let provider = Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
        let mut config = ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .context("TLS protocol versions")?
            .with_no_client_auth()
            .with_single_cert(
                vec![CertificateDer::from(self.cert_der.clone())],
                PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(self.key_der.clone())),
            )
            .context("TLS server certificate")?;
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(config)
    }
}

/// A TCP listener that completes a TLS handshake before handing a connection to axum. Failed
/// handshakes (e.g. a client that does not trust the CA) are dropped.
struct TlsListener {
    tcp: TcpListener,
    acceptor: TlsAcceptor,
}

impl axum::serve::Listener for TlsListener {
    type Io = tokio_rustls::server::TlsStream<tokio::net::TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            let (stream, peer) = match self.tcp.accept().await {
                Ok(accepted) => accepted,
                Err(_) => {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            };
            if let Ok(Ok(tls)) =
                tokio::time::timeout(HANDSHAKE_TIMEOUT, self.acceptor.accept(stream)).await
            {
                return (tls, peer);
            }
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        self.tcp.local_addr()
    }
}

impl Emulator {
    /// Starts an emulator on `127.0.0.1` (OS-assigned port) that speaks HTTPS only, with the
    /// certificate of `tls`, and empty state. Its issuer (JWT `aud`) is
    /// `https://<first name of the certificate>:<port>`; reach it with [`Emulator::https_url`].
    ///
    /// # Errors
    /// If binding or the TLS configuration fails.
    pub async fn start_tls(tls: &TlsMaterial) -> anyhow::Result<Emulator> {
        let addr = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 0);
        let (tcp, addr) = Emulator::bind(addr).await?;
        // `tap_io` makes `ConnectInfo<SocketAddr>` available to the handlers.
        let listener = TlsListener {
            tcp,
            acceptor: TlsAcceptor::from(Arc::new(tls.server_config()?)),
        }
        .tap_io(|_| ());
        let core = Emulator::new_core();
        let emulator = Emulator::serve(listener, core, addr, "ZITADEL emulator (TLS)");
        let host = tls.names.first().map_or("localhost", String::as_str);
        let issuer = format!("https://{host}:{}", addr.port());
        emulator.with_state(|st| st.issuer = issuer);
        Ok(emulator)
    }

    /// `https://<host>:<port>` of this emulator, for a TLS emulator ([`Emulator::start_tls`]).
    pub fn https_url(&self, host: &str) -> String {
        format!("https://{host}:{}", self.handle.addr.port())
    }
}
