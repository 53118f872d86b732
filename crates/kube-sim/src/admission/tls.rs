//! Server certificate verification for webhook calls, answering as the API server's Go client
//! (`crypto/x509` under `crypto/tls`) does rather than as plain webpki does.
//!
//! Where they differ: Go trusts a serving certificate that is itself in the caBundle (a
//! self-signed certificate given as its own CA), even with `CA:TRUE`, where webpki refuses it
//! with `CaUsedAsEndEntity`. Go checks, in this order, the leaf's validity period, its names,
//! then the chain; the error texts are Go's, so a failed call reads as on a real cluster.
//!
//! A leaf with `CA:TRUE` that is not itself in the bundle (Go accepts it, webpki cannot build
//! that path) is accepted when a bundle certificate signed it directly; through intermediates
//! it is refused as signed by an unknown authority.

use std::fmt;
use std::net::IpAddr;
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::server::ParsedCertificate;
use rustls::{CertificateError, DigitallySignedStruct, Error, RootCertStore, SignatureScheme};
use x509_parser::extensions::GeneralName;
use x509_parser::prelude::{FromDer, X509Certificate};

/// Go's `x509.UnknownAuthorityError` text.
const UNKNOWN_AUTHORITY: &str = "x509: certificate signed by unknown authority";

/// A certificate verification failure, worded as Go's `crypto/x509` words it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct X509Error(pub String);

impl fmt::Display for X509Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for X509Error {}

fn refuse(text: impl Into<String>) -> Error {
    Error::InvalidCertificate(CertificateError::Other(rustls::OtherError(Arc::new(
        X509Error(text.into()),
    ))))
}

/// Verifies webhook serving certificates against a caBundle as the API server does.
#[derive(Debug)]
pub struct GoLikeVerifier {
    /// The bundle's certificates, to recognise a leaf that is itself trusted.
    anchors_der: Vec<Vec<u8>>,
    roots: Arc<RootCertStore>,
    provider: Arc<CryptoProvider>,
}

impl GoLikeVerifier {
    /// A verifier trusting the PEM certificates of `bundle` (none: nothing is trusted, as a
    /// Go client with an empty pool). Errors name what could not be parsed.
    pub fn new(bundle: &[u8]) -> Result<Self, String> {
        let mut roots = RootCertStore::empty();
        let mut anchors_der = Vec::new();
        for cert in rustls_pemfile::certs(&mut &bundle[..]) {
            let cert = cert.map_err(|e| format!("unable to load root certificates: {e}"))?;
            roots
                .add(cert.clone())
                .map_err(|e| format!("unable to load root certificates: {e}"))?;
            anchors_der.push(cert.as_ref().to_vec());
        }
        if anchors_der.is_empty() && !bundle.iter().all(u8::is_ascii_whitespace) {
            return Err(
                "unable to load root certificates: unable to parse bytes as PEM block".into(),
            );
        }
        Ok(Self {
            anchors_der,
            roots: Arc::new(roots),
            provider: Arc::new(rustls::crypto::ring::default_provider()),
        })
    }

    /// The rustls client configuration using this verifier, offering HTTP/2 and HTTP/1.1.
    pub fn client_config(self) -> Result<rustls::ClientConfig, String> {
        let mut config = rustls::ClientConfig::builder_with_provider(self.provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| format!("failed to configure TLS: {e}"))?
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(self))
            .with_no_client_auth();
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(config)
    }
}

impl GoLikeVerifier {
    /// Whether a bundle certificate named as `leaf`'s issuer signed it and is itself valid now.
    fn signed_by_anchor(&self, leaf: &X509Certificate<'_>, now: i64) -> Result<(), String> {
        let mut issuer_expired = None;
        for der in &self.anchors_der {
            let Ok((_, anchor)) = X509Certificate::from_der(der) else {
                continue;
            };
            if anchor.subject().as_raw() != leaf.issuer().as_raw()
                || leaf.verify_signature(Some(anchor.public_key())).is_err()
            {
                continue;
            }
            match check_validity(&anchor, now) {
                Ok(()) => return Ok(()),
                Err(e) => issuer_expired = Some(e),
            }
        }
        Err(issuer_expired.unwrap_or_else(|| UNKNOWN_AUTHORITY.to_owned()))
    }
}

/// Go's RFC 3339 rendering of a Unix time in UTC.
fn rfc3339(secs: i64) -> String {
    chrono::DateTime::from_timestamp(secs, 0)
        .map(|t| t.format("%Y-%m-%dT%H:%M:%SZ").to_string())
        .unwrap_or_else(|| secs.to_string())
}

/// Go's `Certificate.isValid` for the leaf: the validity period.
fn check_validity(cert: &X509Certificate<'_>, now: i64) -> Result<(), String> {
    let validity = cert.validity();
    let (not_before, not_after) = (
        validity.not_before.timestamp(),
        validity.not_after.timestamp(),
    );
    let expired = "x509: certificate has expired or is not yet valid";
    if now < not_before {
        return Err(format!(
            "{expired}: current time {} is before {}",
            rfc3339(now),
            rfc3339(not_before)
        ));
    }
    if now > not_after {
        return Err(format!(
            "{expired}: current time {} is after {}",
            rfc3339(now),
            rfc3339(not_after)
        ));
    }
    Ok(())
}

/// Go's `HostnameError` text for a certificate not valid for `host`.
fn hostname_error(cert: &X509Certificate<'_>, host: &str) -> String {
    let (mut dns, mut ips) = (Vec::new(), Vec::new());
    let san = cert.subject_alternative_name();
    if matches!(san, Ok(None)) {
        let normalise = |s: &str| s.trim_end_matches('.').to_ascii_lowercase();
        let legacy = cert
            .subject()
            .iter_common_name()
            .filter_map(|cn| cn.as_str().ok())
            .any(|cn| normalise(cn) == normalise(host));
        if legacy {
            return "x509: certificate relies on legacy Common Name field, use SANs instead".into();
        }
    }
    if let Ok(Some(san)) = san {
        for name in &san.value.general_names {
            match name {
                GeneralName::DNSName(d) => dns.push((*d).to_string()),
                GeneralName::IPAddress(raw) => {
                    let ip = match raw.len() {
                        4 => <[u8; 4]>::try_from(*raw).ok().map(IpAddr::from),
                        16 => <[u8; 16]>::try_from(*raw).ok().map(IpAddr::from),
                        _ => None,
                    };
                    if let Some(ip) = ip {
                        ips.push(ip.to_string());
                    }
                }
                _ => {}
            }
        }
    }
    let valid = if host.parse::<IpAddr>().is_ok() {
        if ips.is_empty() {
            return format!(
                "x509: cannot validate certificate for {host} because it doesn't contain any IP SANs"
            );
        }
        ips.join(", ")
    } else {
        dns.join(", ")
    };
    if valid.is_empty() {
        format!("x509: certificate is not valid for any names, but wanted to match {host}")
    } else {
        format!("x509: certificate is valid for {valid}, not {host}")
    }
}

/// Go refuses a chain whose leaf names extended key usages without server auth (or any).
fn check_server_auth_usage(cert: &X509Certificate<'_>) -> Result<(), String> {
    match cert.extended_key_usage() {
        Ok(Some(eku)) if !(eku.value.server_auth || eku.value.any) => {
            Err("x509: certificate specifies an incompatible key usage".into())
        }
        _ => Ok(()),
    }
}

/// The Go text for a webpki chain failure.
fn chain_error(e: &Error, now: i64) -> String {
    match e {
        Error::InvalidCertificate(CertificateError::ExpiredContext { not_after, .. }) => format!(
            "x509: certificate has expired or is not yet valid: current time {} is after {}",
            rfc3339(now),
            rfc3339(not_after.as_secs() as i64)
        ),
        Error::InvalidCertificate(CertificateError::NotValidYetContext { not_before, .. }) => {
            format!(
                "x509: certificate has expired or is not yet valid: current time {} is before {}",
                rfc3339(now),
                rfc3339(not_before.as_secs() as i64)
            )
        }
        Error::InvalidCertificate(CertificateError::InvalidPurpose)
        | Error::InvalidCertificate(CertificateError::InvalidPurposeContext { .. }) => {
            "x509: certificate specifies an incompatible key usage".into()
        }
        _ => UNKNOWN_AUTHORITY.into(),
    }
}

impl ServerCertVerifier for GoLikeVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, Error> {
        let now_secs = now.as_secs() as i64;
        let (_, leaf) = X509Certificate::from_der(end_entity.as_ref())
            .map_err(|e| refuse(format!("x509: malformed certificate: {e}")))?;
        check_validity(&leaf, now_secs).map_err(refuse)?;
        let parsed = ParsedCertificate::try_from(end_entity)?;
        if rustls::client::verify_server_name(&parsed, server_name).is_err() {
            return Err(refuse(hostname_error(&leaf, &server_name.to_str())));
        }
        if self.anchors_der.iter().any(|a| a == end_entity.as_ref()) {
            // Go: a certificate in the root pool is a chain of its own.
            check_server_auth_usage(&leaf).map_err(refuse)?;
            return Ok(ServerCertVerified::assertion());
        }
        if self.anchors_der.is_empty() {
            return Err(refuse(UNKNOWN_AUTHORITY));
        }
        let leaf_is_ca = matches!(leaf.basic_constraints(), Ok(Some(bc)) if bc.value.ca);
        if leaf_is_ca {
            // Go accepts a CA certificate as the leaf; webpki cannot build that path, so check
            // the one-link chain to a bundle certificate here.
            return self
                .signed_by_anchor(&leaf, now_secs)
                .and_then(|()| check_server_auth_usage(&leaf))
                .map(|()| ServerCertVerified::assertion())
                .map_err(refuse);
        }
        rustls::client::verify_server_cert_signed_by_trust_anchor(
            &parsed,
            &self.roots,
            intermediates,
            now,
            self.provider.signature_verification_algorithms.all,
        )
        .map_err(|e| refuse(chain_error(&e, now_secs)))?;
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// The Go text of a TLS verification failure found in `err`'s source chain
/// (`tls: failed to verify certificate: x509: ...`), if that is why a call failed.
pub fn verification_failure(err: &(dyn std::error::Error + 'static)) -> Option<String> {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(e) = cur {
        // io::Error hides its inner error from `source()`; look inside explicitly.
        let inner = e
            .downcast_ref::<std::io::Error>()
            .and_then(|io| io.get_ref())
            .map(|i| i as &(dyn std::error::Error + 'static));
        for candidate in [Some(e), inner].into_iter().flatten() {
            if let Some(Error::InvalidCertificate(cert_err)) = candidate.downcast_ref::<Error>() {
                let text = match cert_err {
                    CertificateError::Other(other) => other.0.to_string(),
                    other => format!("{other:?}"),
                };
                return Some(format!("tls: failed to verify certificate: {text}"));
            }
        }
        cur = inner.or_else(|| e.source());
    }
    None
}

#[cfg(test)]
mod tests;
