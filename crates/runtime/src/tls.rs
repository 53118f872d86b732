//! TLS serving with rustls: certificate and key from PEM files, swapped in place when the files
//! change (cert-manager rotates them) without dropping the listener; TLS 1.2+; HTTP/2 and
//! HTTP/1.1 offered by ALPN. Also generates a CA and serving certificate for tests, the demo and
//! the self-signed bootstrap.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use rustls::crypto::CryptoProvider;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio_util::sync::CancellationToken;

use crate::error::{Error, Result};

/// File names inside a certificate directory, as cert-manager and kubebuilder write them.
pub const CERT_FILE_NAME: &str = "tls.crt";
pub const KEY_FILE_NAME: &str = "tls.key";

/// Installs ring as the process-wide rustls provider (kube's client needs one). Idempotent.
pub fn install_crypto_provider() {
    // Err only means a provider is already installed.
    drop(rustls::crypto::ring::default_provider().install_default());
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Where the certificate and key are: explicit files win over the directory.
pub fn cert_paths(
    cert_dir: &Path,
    cert_file: Option<&Path>,
    key_file: Option<&Path>,
) -> (PathBuf, PathBuf) {
    (
        cert_file.map_or_else(|| cert_dir.join(CERT_FILE_NAME), Path::to_path_buf),
        key_file.map_or_else(|| cert_dir.join(KEY_FILE_NAME), Path::to_path_buf),
    )
}

/// The serving-certificate flags every webhook shares, for `#[command(flatten)]`. The defaults
/// are controller-runtime's, so manifests written for kubebuilder webhooks keep working.
#[derive(clap::Args, Clone, Debug, PartialEq, Eq)]
pub struct ServingCertArgs {
    /// Directory holding the serving certificate `tls.crt` and key `tls.key`.
    #[arg(long, env = "CERT_DIR", default_value = DEFAULT_CERT_DIR)]
    pub cert_dir: PathBuf,
    /// Serving certificate file (PEM); overrides `<cert-dir>/tls.crt`.
    #[arg(long, env = "TLS_CERT_FILE")]
    pub tls_cert_file: Option<PathBuf>,
    /// Serving key file (PEM); overrides `<cert-dir>/tls.key`.
    #[arg(long, env = "TLS_KEY_FILE")]
    pub tls_key_file: Option<PathBuf>,
}

/// controller-runtime's default certificate directory.
pub const DEFAULT_CERT_DIR: &str = "/tmp/k8s-webhook-server/serving-certs";

impl Default for ServingCertArgs {
    fn default() -> Self {
        Self {
            cert_dir: PathBuf::from(DEFAULT_CERT_DIR),
            tls_cert_file: None,
            tls_key_file: None,
        }
    }
}

impl ServingCertArgs {
    /// The certificate and key paths these flags name.
    pub fn paths(&self) -> (PathBuf, PathBuf) {
        cert_paths(
            &self.cert_dir,
            self.tls_cert_file.as_deref(),
            self.tls_key_file.as_deref(),
        )
    }
}

/// A serving certificate that can be swapped while the listener keeps running.
#[derive(Clone)]
pub struct ReloadingTls {
    inner: Arc<Inner>,
}

struct Inner {
    cert_path: PathBuf,
    key_path: PathBuf,
    current: ArcSwap<Loaded>,
}

struct Loaded {
    key: Arc<CertifiedKey>,
    /// The PEM bytes it came from, to tell a real change from a touched file.
    source: (Vec<u8>, Vec<u8>),
}

impl fmt::Debug for ReloadingTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReloadingTls")
            .field("cert", &self.inner.cert_path)
            .field("key", &self.inner.key_path)
            .finish()
    }
}

impl ReloadingTls {
    /// Loads the certificate chain and key; fails with the file and reason when they are missing
    /// or unusable.
    pub fn load(cert_path: &Path, key_path: &Path) -> Result<Self> {
        let source = read_pair(cert_path, key_path)?;
        let key = certified_key(cert_path, key_path, &source)?;
        Ok(Self {
            inner: Arc::new(Inner {
                cert_path: cert_path.to_path_buf(),
                key_path: key_path.to_path_buf(),
                current: ArcSwap::from_pointee(Loaded { key, source }),
            }),
        })
    }

    /// A rustls server configuration whose certificate follows every reload.
    pub fn server_config(&self) -> Arc<rustls::ServerConfig> {
        let mut config = rustls::ServerConfig::builder_with_provider(provider())
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
            .expect("ring supports TLS 1.2 and 1.3")
            .with_no_client_auth()
            .with_cert_resolver(Arc::new(self.clone()));
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Arc::new(config)
    }

    /// Re-reads the files. Returns whether the certificate changed. On an unreadable or invalid
    /// pair (a rotation caught half-written) the current certificate stays in use.
    pub fn reload(&self) -> Result<bool> {
        let source = read_pair(&self.inner.cert_path, &self.inner.key_path)?;
        if self.inner.current.load().source == source {
            return Ok(false);
        }
        let key = certified_key(&self.inner.cert_path, &self.inner.key_path, &source)?;
        self.inner.current.store(Arc::new(Loaded { key, source }));
        Ok(true)
    }

    /// Polls the files every `interval` until `shutdown`. Polling rather than inotify because
    /// Kubernetes swaps Secret volumes through a symlink, which file watchers often miss.
    pub fn spawn_reloader(
        &self,
        interval: Duration,
        shutdown: CancellationToken,
    ) -> tokio::task::JoinHandle<()> {
        let this = self.clone();
        tokio::spawn(async move {
            let mut ticker = tokio::time::interval(interval);
            ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = ticker.tick() => {}
                }
                match this.reload() {
                    Ok(true) => tracing::info!(
                        cert = %this.inner.cert_path.display(),
                        "serving certificate reloaded"
                    ),
                    Ok(false) => {}
                    Err(err) => tracing::warn!(
                        error = %err,
                        "failed to reload the serving certificate; keeping the current one"
                    ),
                }
            }
        })
    }

    /// The leaf certificate currently served (DER), for tests and diagnostics.
    pub fn current_leaf(&self) -> Option<CertificateDer<'static>> {
        self.inner.current.load().key.cert.first().cloned()
    }
}

impl ResolvesServerCert for ReloadingTls {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.inner.current.load().key.clone())
    }
}

fn read_pair(cert_path: &Path, key_path: &Path) -> Result<(Vec<u8>, Vec<u8>)> {
    let read = |path: &Path| {
        std::fs::read(path).map_err(|source| Error::ReadFile {
            path: path.to_path_buf(),
            source,
        })
    };
    Ok((read(cert_path)?, read(key_path)?))
}

fn certified_key(
    cert_path: &Path,
    key_path: &Path,
    (cert_pem, key_pem): &(Vec<u8>, Vec<u8>),
) -> Result<Arc<CertifiedKey>> {
    let certs = CertificateDer::pem_slice_iter(cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|err| Error::TlsMaterial {
            path: cert_path.to_path_buf(),
            reason: err.to_string(),
        })?;
    if certs.is_empty() {
        return Err(Error::TlsMaterial {
            path: cert_path.to_path_buf(),
            reason: "no CERTIFICATE block found".into(),
        });
    }
    let key = PrivateKeyDer::from_pem_slice(key_pem).map_err(|err| Error::TlsMaterial {
        path: key_path.to_path_buf(),
        reason: err.to_string(),
    })?;
    let signing_key = provider()
        .key_provider
        .load_private_key(key)
        .map_err(|err| Error::TlsMaterial {
            path: key_path.to_path_buf(),
            reason: err.to_string(),
        })?;
    let certified = CertifiedKey::new(certs, signing_key);
    certified.keys_match().map_err(|err| Error::TlsMaterial {
        path: key_path.to_path_buf(),
        reason: format!("key does not match the certificate: {err}"),
    })?;
    Ok(Arc::new(certified))
}

/// A CA and a serving certificate signed by it, as PEM.
#[derive(Clone)]
pub struct GeneratedCert {
    pub ca_pem: String,
    pub cert_pem: String,
    pub key_pem: String,
}

impl fmt::Debug for GeneratedCert {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GeneratedCert").finish_non_exhaustive()
    }
}

/// A certificate authority that issues serving certificates: a fresh one per self-signed
/// bootstrap, and in tests a CA whose leaf is rotated (as cert-manager does).
pub struct Authority {
    issuer: rcgen::Issuer<'static, rcgen::KeyPair>,
    ca_pem: String,
}

impl fmt::Debug for Authority {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Authority").finish_non_exhaustive()
    }
}

impl Authority {
    /// A new CA (`CN=ballast-ca`).
    pub fn generate() -> Result<Self> {
        use rcgen::{
            BasicConstraints, CertificateParams, DistinguishedName, DnType, IsCa, Issuer, KeyPair,
            KeyUsagePurpose,
        };
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).map_err(Error::CertGen)?;
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let mut ca_name = DistinguishedName::new();
        ca_name.push(DnType::CommonName, "ballast-ca");
        ca_params.distinguished_name = ca_name;
        let ca_key = KeyPair::generate().map_err(Error::CertGen)?;
        let ca_cert = ca_params.self_signed(&ca_key).map_err(Error::CertGen)?;
        Ok(Authority {
            ca_pem: ca_cert.pem(),
            issuer: Issuer::new(ca_params, ca_key),
        })
    }

    /// A new serving certificate for `names` (DNS names or IP addresses), with a key of its own.
    pub fn issue(&self, names: &[&str]) -> Result<GeneratedCert> {
        use rcgen::{
            CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, KeyPair,
        };
        let mut leaf_params =
            CertificateParams::new(names.iter().map(|n| (*n).to_owned()).collect::<Vec<_>>())
                .map_err(Error::CertGen)?;
        let mut leaf_name = DistinguishedName::new();
        leaf_name.push(
            DnType::CommonName,
            names.first().copied().unwrap_or("ballast"),
        );
        leaf_params.distinguished_name = leaf_name;
        leaf_params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let leaf_key = KeyPair::generate().map_err(Error::CertGen)?;
        let leaf = leaf_params
            .signed_by(&leaf_key, &self.issuer)
            .map_err(Error::CertGen)?;
        Ok(GeneratedCert {
            ca_pem: self.ca_pem.clone(),
            cert_pem: leaf.pem(),
            key_pem: leaf_key.serialize_pem(),
        })
    }
}

/// Generates a fresh CA and a serving certificate for `names` (DNS names or IP addresses).
pub fn generate(names: &[&str]) -> Result<GeneratedCert> {
    Authority::generate()?.issue(names)
}

impl GeneratedCert {
    /// Writes `tls.crt` and `tls.key` into `dir` (created if missing) and returns their paths.
    pub fn write_to(&self, dir: &Path) -> Result<(PathBuf, PathBuf)> {
        std::fs::create_dir_all(dir).map_err(|source| Error::WriteFile {
            path: dir.to_path_buf(),
            source,
        })?;
        let (cert, key) = cert_paths(dir, None, None);
        for (path, body) in [(&cert, &self.cert_pem), (&key, &self.key_pem)] {
            std::fs::write(path, body).map_err(|source| Error::WriteFile {
                path: path.clone(),
                source,
            })?;
        }
        Ok((cert, key))
    }
}

#[cfg(test)]
mod tests;
