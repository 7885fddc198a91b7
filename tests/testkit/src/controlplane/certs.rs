//! Throw-away PKI for one control plane: serving CA and certificate, client CA and admin
//! certificate, and the service-account signing key.

use anyhow::{Context, Result};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};

/// PEM-encoded key material for one control plane.
pub(crate) struct Pki {
    /// CA that signed the serving certificate (goes into the kubeconfig).
    pub(crate) serving_ca: String,
    /// kube-apiserver serving certificate, SANs `localhost` and `127.0.0.1`.
    pub(crate) serving_cert: String,
    /// Private key of the serving certificate.
    pub(crate) serving_key: String,
    /// CA for client-certificate authentication (`--client-ca-file`).
    pub(crate) client_ca: String,
    /// Client certificate for `admin` in `system:masters`.
    pub(crate) admin_cert: String,
    /// Private key of the admin client certificate.
    pub(crate) admin_key: String,
    /// Service-account token signing key (PKCS#8).
    pub(crate) sa_key: String,
    /// Public half of the service-account key.
    pub(crate) sa_pub: String,
}

impl Pki {
    /// Generates fresh ECDSA P-256 keys and certificates.
    pub(crate) fn generate() -> Result<Pki> {
        let (serving_ca, serving_issuer) = ca("zmo-envtest-serving-ca")?;
        let (serving_cert, serving_key) = leaf(
            &serving_issuer,
            "kube-apiserver",
            None,
            vec!["localhost".into(), "127.0.0.1".into()],
            ExtendedKeyUsagePurpose::ServerAuth,
        )?;
        let (client_ca, client_issuer) = ca("zmo-envtest-client-ca")?;
        let (admin_cert, admin_key) = leaf(
            &client_issuer,
            "admin",
            Some("system:masters"),
            Vec::new(),
            ExtendedKeyUsagePurpose::ClientAuth,
        )?;
        let sa = KeyPair::generate().context("generating the service-account key")?;
        Ok(Pki {
            serving_ca,
            serving_cert,
            serving_key,
            client_ca,
            admin_cert,
            admin_key,
            sa_key: sa.serialize_pem(),
            sa_pub: sa.public_key_pem(),
        })
    }
}

/// A self-signed CA: its PEM certificate and an issuer to sign leaves with.
fn ca(common_name: &str) -> Result<(String, Issuer<'static, KeyPair>)> {
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params
        .distinguished_name
        .push(DnType::CommonName, common_name);
    params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
    ];
    let key = KeyPair::generate().context("generating a CA key")?;
    let cert = params
        .self_signed(&key)
        .with_context(|| format!("self-signing {common_name}"))?;
    Ok((cert.pem(), Issuer::new(params, key)))
}

/// A leaf certificate signed by `issuer`: PEM certificate and PEM (PKCS#8) key.
fn leaf(
    issuer: &Issuer<'static, KeyPair>,
    common_name: &str,
    organization: Option<&str>,
    sans: Vec<String>,
    usage: ExtendedKeyUsagePurpose,
) -> Result<(String, String)> {
    let mut params = CertificateParams::new(sans)?;
    params
        .distinguished_name
        .push(DnType::CommonName, common_name);
    if let Some(org) = organization {
        params
            .distinguished_name
            .push(DnType::OrganizationName, org);
    }
    params.use_authority_key_identifier_extension = true;
    params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    params.extended_key_usages = vec![usage];
    let key = KeyPair::generate().context("generating a certificate key")?;
    let cert = params
        .signed_by(&key, issuer)
        .with_context(|| format!("signing the {common_name} certificate"))?;
    Ok((cert.pem(), key.serialize_pem()))
}
