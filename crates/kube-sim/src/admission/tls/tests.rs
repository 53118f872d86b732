use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair,
};

use super::*;

/// 2026-11-28T12:00:00Z, inside the validity of every certificate below except the expired one.
const NOW: u64 = 1_795_867_200;

struct Made {
    der: CertificateDer<'static>,
    pem: String,
}

fn params(sans: &[&str], ca: bool) -> CertificateParams {
    let mut p =
        CertificateParams::new(sans.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, "webhook");
    p.distinguished_name = dn;
    p.not_before = rcgen::date_time_ymd(2026, 1, 1);
    p.not_after = rcgen::date_time_ymd(2027, 1, 1);
    if ca {
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    }
    p
}

fn self_signed(p: CertificateParams) -> Made {
    let key = KeyPair::generate().unwrap();
    let cert = p.self_signed(&key).unwrap();
    Made {
        der: cert.der().clone(),
        pem: cert.pem(),
    }
}

/// A CA, and a function signing leaf parameters with it.
fn ca() -> (Made, impl Fn(CertificateParams) -> Made) {
    ca_named("webhook-ca")
}

fn ca_named(name: &str) -> (Made, impl Fn(CertificateParams) -> Made) {
    let key = KeyPair::generate().unwrap();
    let mut p = params(&[], true);
    p.distinguished_name.push(DnType::CommonName, name);
    let cert = p.self_signed(&key).unwrap();
    let made = Made {
        der: cert.der().clone(),
        pem: cert.pem(),
    };
    let issuer = Issuer::new(p, key);
    (made, move |leaf: CertificateParams| {
        let key = KeyPair::generate().unwrap();
        let cert = leaf.signed_by(&key, &issuer).unwrap();
        Made {
            der: cert.der().clone(),
            pem: cert.pem(),
        }
    })
}

fn verify(bundle: &str, leaf: &Made, host: &str) -> Result<(), String> {
    let verifier = GoLikeVerifier::new(bundle.as_bytes())?;
    let name = ServerName::try_from(host.to_string()).unwrap();
    verifier
        .verify_server_cert(
            &leaf.der,
            &[],
            &name,
            &[],
            UnixTime::since_unix_epoch(std::time::Duration::from_secs(NOW)),
        )
        .map(|_| ())
        .map_err(|e| match e {
            Error::InvalidCertificate(CertificateError::Other(o)) => o.0.to_string(),
            other => format!("not a Go-worded error: {other}"),
        })
}

#[test]
fn accepts_a_self_signed_ca_certificate_given_as_its_own_bundle() {
    let leaf = self_signed(params(&["127.0.0.1", "localhost"], true));
    assert_eq!(verify(&leaf.pem, &leaf, "127.0.0.1"), Ok(()));
    assert_eq!(verify(&leaf.pem, &leaf, "localhost"), Ok(()));
}

#[test]
fn accepts_a_self_signed_leaf_without_the_ca_flag_given_as_its_own_bundle() {
    let leaf = self_signed(params(&["127.0.0.1"], false));
    assert_eq!(verify(&leaf.pem, &leaf, "127.0.0.1"), Ok(()));
}

#[test]
fn accepts_a_leaf_signed_by_a_ca_in_the_bundle_for_its_ip_and_dns_sans() {
    let (ca, sign) = ca();
    let leaf = sign(params(&["10.96.0.10", "webhook.ballast-system.svc"], false));
    assert_eq!(verify(&ca.pem, &leaf, "10.96.0.10"), Ok(()));
    assert_eq!(verify(&ca.pem, &leaf, "webhook.ballast-system.svc"), Ok(()));
}

#[test]
fn refuses_a_wrong_ip_san_with_gos_message() {
    let (ca, sign) = ca();
    let leaf = sign(params(&["10.0.0.1", "10.0.0.2"], false));
    assert_eq!(
        verify(&ca.pem, &leaf, "127.0.0.1"),
        Err("x509: certificate is valid for 10.0.0.1, 10.0.0.2, not 127.0.0.1".into())
    );
}

#[test]
fn refuses_an_ip_when_the_certificate_has_only_dns_names() {
    let (ca, sign) = ca();
    let leaf = sign(params(&["localhost"], false));
    assert_eq!(
        verify(&ca.pem, &leaf, "127.0.0.1"),
        Err(
            "x509: cannot validate certificate for 127.0.0.1 because it doesn't contain any IP SANs"
                .into()
        )
    );
}

#[test]
fn refuses_a_wrong_dns_name_with_gos_message() {
    let (ca, sign) = ca();
    let leaf = sign(params(&["webhook.example"], false));
    assert_eq!(
        verify(&ca.pem, &leaf, "other.example"),
        Err("x509: certificate is valid for webhook.example, not other.example".into())
    );
    // A self-signed certificate in the bundle is still checked for its names.
    let own = self_signed(params(&["10.0.0.1"], true));
    assert_eq!(
        verify(&own.pem, &own, "127.0.0.1"),
        Err("x509: certificate is valid for 10.0.0.1, not 127.0.0.1".into())
    );
}

#[test]
fn refuses_an_expired_certificate_even_when_it_is_its_own_bundle() {
    let mut p = params(&["127.0.0.1"], true);
    p.not_before = rcgen::date_time_ymd(2025, 1, 1);
    p.not_after = rcgen::date_time_ymd(2026, 1, 1);
    let own = self_signed(p.clone());
    let expired = "x509: certificate has expired or is not yet valid: current time \
                   2026-11-28T12:00:00Z is after 2026-01-01T00:00:00Z";
    assert_eq!(verify(&own.pem, &own, "127.0.0.1"), Err(expired.into()));
    let (ca, sign) = ca();
    let leaf = sign(params_without_ca(p));
    assert_eq!(verify(&ca.pem, &leaf, "127.0.0.1"), Err(expired.into()));
}

fn params_without_ca(mut p: CertificateParams) -> CertificateParams {
    p.is_ca = IsCa::NoCa;
    p
}

#[test]
fn refuses_a_certificate_not_yet_valid() {
    let mut p = params(&["127.0.0.1"], false);
    p.not_before = rcgen::date_time_ymd(2027, 1, 1);
    p.not_after = rcgen::date_time_ymd(2028, 1, 1);
    let own = self_signed(p);
    assert_eq!(
        verify(&own.pem, &own, "127.0.0.1"),
        Err(
            "x509: certificate has expired or is not yet valid: current time \
             2026-11-28T12:00:00Z is before 2027-01-01T00:00:00Z"
                .into()
        )
    );
}

#[test]
fn refuses_an_unknown_authority() {
    let (_, sign) = ca();
    let (other_ca, _) = ca();
    let leaf = sign(params(&["127.0.0.1"], false));
    let unknown = Err("x509: certificate signed by unknown authority".to_string());
    assert_eq!(verify(&other_ca.pem, &leaf, "127.0.0.1"), unknown);
    assert_eq!(verify("", &leaf, "127.0.0.1"), unknown, "empty bundle");
    let own = self_signed(params(&["127.0.0.1"], true));
    assert_eq!(
        verify(&other_ca.pem, &own, "127.0.0.1"),
        unknown,
        "self-signed, not in the bundle"
    );
}

#[test]
fn refuses_a_certificate_only_for_client_auth() {
    let mut p = params(&["127.0.0.1"], false);
    p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    let own = self_signed(p.clone());
    let incompatible = Err("x509: certificate specifies an incompatible key usage".to_string());
    assert_eq!(verify(&own.pem, &own, "127.0.0.1"), incompatible);
    let (ca, sign) = ca();
    assert_eq!(verify(&ca.pem, &sign(p), "127.0.0.1"), incompatible);
}

#[test]
fn a_bundle_that_is_not_pem_is_refused_when_the_client_is_built() {
    assert_eq!(
        GoLikeVerifier::new(b"not a certificate").map(|_| ()),
        Err("unable to load root certificates: unable to parse bytes as PEM block".to_string())
    );
    let (ca, _) = ca();
    let two = format!(
        "{}{}",
        ca.pem,
        self_signed(params(&["a.example"], false)).pem
    );
    assert_eq!(
        GoLikeVerifier::new(two.as_bytes())
            .unwrap()
            .anchors_der
            .len(),
        2
    );
}

#[test]
fn a_certificate_naming_the_host_only_in_its_common_name_is_refused_as_go_does() {
    let (ca, sign) = ca();
    let mut p = params(&[], false);
    p.distinguished_name = DistinguishedName::new();
    p.distinguished_name
        .push(DnType::CommonName, "webhook.example");
    let leaf = sign(p);
    assert_eq!(
        verify(&ca.pem, &leaf, "webhook.example"),
        Err("x509: certificate relies on legacy Common Name field, use SANs instead".into())
    );
    assert_eq!(
        verify(&ca.pem, &leaf, "other.example"),
        Err(
            "x509: certificate is not valid for any names, but wanted to match other.example"
                .into()
        )
    );
}

#[test]
fn a_ca_flagged_leaf_signed_by_a_ca_in_the_bundle_is_accepted_as_go_does() {
    let (ca, sign) = ca();
    let leaf = sign(params(&["127.0.0.1"], true));
    assert_eq!(verify(&ca.pem, &leaf, "127.0.0.1"), Ok(()));
    let (other, _) = ca_named("another-ca");
    assert_eq!(
        verify(&other.pem, &leaf, "127.0.0.1"),
        Err("x509: certificate signed by unknown authority".into())
    );
    assert_eq!(
        verify(&ca.pem, &leaf, "10.0.0.9"),
        Err("x509: certificate is valid for 127.0.0.1, not 10.0.0.9".into())
    );
}
