//! Self-signed bootstrap for clusters without cert-manager: a webhook service generates a CA and
//! serving certificate once, keeps them in a Secret (so every replica and every restart serves
//! the same certificate), writes them where the TLS loader reads them, and puts the CA into its
//! own webhook configuration's `caBundle`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use base64::Engine;
use k8s_openapi::ByteString;
use k8s_openapi::api::admissionregistration::v1::{
    MutatingWebhookConfiguration, ValidatingWebhookConfiguration,
};
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::Api;
use kube::api::{Patch, PatchParams, PostParams};

use crate::tls::GeneratedCert;

/// Secret keys, as cert-manager names them, so switching to cert-manager needs no new layout.
const CA_KEY: &str = "ca.crt";
const CERT_KEY: &str = "tls.crt";
const PRIVATE_KEY: &str = "tls.key";

/// Flags of the self-signed mode, for services to `#[command(flatten)]`.
#[derive(clap::Args, Clone, Debug, Default, PartialEq, Eq)]
pub struct SelfSignedArgs {
    /// Generate the serving certificate at start-up (no cert-manager), keep it in this Secret in
    /// the service's namespace, and inject its CA into the webhook configuration.
    #[arg(long, env = "SELF_SIGNED_SECRET")]
    pub self_signed_secret: Option<String>,
    /// The webhook configuration (validating or mutating, as the service serves) this service
    /// keeps fit to call it: its caBundle set to the serving CA in self-signed mode, and webhooks
    /// shipped failing closed switched from `failurePolicy: Ignore` to `Fail` while a ready
    /// replica serves them (back to `Ignore` when they have no CA to trust).
    #[arg(long, env = "WEBHOOK_CONFIGURATION")]
    pub webhook_configuration: Option<String>,
    /// DNS name of the webhook Service, e.g. eviction-guard.ballast-system.svc.
    #[arg(long, env = "WEBHOOK_SERVICE_DNS")]
    pub webhook_service_dns: Option<String>,
}

/// Which kind of webhook configuration to patch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WebhookKind {
    Validating,
    Mutating,
}

/// Errors of the self-signed bootstrap.
#[derive(Debug, thiserror::Error)]
pub enum BootstrapError {
    #[error("failed to read or write Secret {namespace}/{name}")]
    Secret {
        namespace: String,
        name: String,
        #[source]
        source: kube::Error,
    },
    #[error("Secret {namespace}/{name} lacks key {key}")]
    SecretIncomplete {
        namespace: String,
        name: String,
        key: &'static str,
    },
    #[error("failed to patch the caBundle of webhook configuration {name}")]
    Patch {
        name: String,
        #[source]
        source: kube::Error,
    },
    #[error("self-signed mode needs --webhook-service-dns")]
    MissingServiceDns,
    #[error(transparent)]
    Runtime(#[from] crate::Error),
}

/// Gets the certificate from the Secret, creating both when missing. Replicas racing to create
/// it settle on the first one written (the others get AlreadyExists and read it back).
pub async fn ensure_certificate(
    client: &kube::Client,
    namespace: &str,
    secret: &str,
    dns_names: &[&str],
) -> Result<GeneratedCert, BootstrapError> {
    let api: Api<Secret> = Api::namespaced(client.clone(), namespace);
    let err = |source| BootstrapError::Secret {
        namespace: namespace.into(),
        name: secret.into(),
        source,
    };
    if let Some(existing) = api.get_opt(secret).await.map_err(err)? {
        return from_secret(namespace, secret, &existing);
    }
    let generated = crate::tls::generate(dns_names)?;
    let object = Secret {
        metadata: ObjectMeta {
            name: Some(secret.into()),
            namespace: Some(namespace.into()),
            ..ObjectMeta::default()
        },
        type_: Some("kubernetes.io/tls".into()),
        data: Some(BTreeMap::from([
            (
                CA_KEY.into(),
                ByteString(generated.ca_pem.clone().into_bytes()),
            ),
            (
                CERT_KEY.into(),
                ByteString(generated.cert_pem.clone().into_bytes()),
            ),
            (
                PRIVATE_KEY.into(),
                ByteString(generated.key_pem.clone().into_bytes()),
            ),
        ])),
        ..Secret::default()
    };
    match api.create(&PostParams::default(), &object).await {
        Ok(_) => {
            tracing::info!(secret = %format!("{namespace}/{secret}"), "generated a self-signed serving certificate");
            Ok(generated)
        }
        Err(kube::Error::Api(status)) if status.code == 409 => {
            let existing = api.get(secret).await.map_err(err)?;
            from_secret(namespace, secret, &existing)
        }
        Err(source) => Err(err(source)),
    }
}

fn from_secret(
    namespace: &str,
    name: &str,
    secret: &Secret,
) -> Result<GeneratedCert, BootstrapError> {
    let get = |key: &'static str| {
        secret
            .data
            .as_ref()
            .and_then(|d| d.get(key))
            .and_then(|v| String::from_utf8(v.0.clone()).ok())
            .ok_or(BootstrapError::SecretIncomplete {
                namespace: namespace.into(),
                name: name.into(),
                key,
            })
    };
    Ok(GeneratedCert {
        ca_pem: get(CA_KEY)?,
        cert_pem: get(CERT_KEY)?,
        key_pem: get(PRIVATE_KEY)?,
    })
}

/// The JSON patch setting `caBundle` on every webhook of a configuration with `count` webhooks.
pub fn ca_bundle_patch(count: usize, ca_pem: &str) -> json_patch::Patch {
    let encoded = base64::engine::general_purpose::STANDARD.encode(ca_pem);
    let ops = (0..count)
        .map(|i| {
            serde_json::json!({
                "op": "add",
                "path": format!("/webhooks/{i}/clientConfig/caBundle"),
                "value": encoded,
            })
        })
        .collect::<Vec<_>>();
    serde_json::from_value(serde_json::Value::Array(ops)).unwrap_or_default()
}

/// Sets `caBundle` on every webhook of the named configuration.
pub async fn inject_ca_bundle(
    client: &kube::Client,
    kind: WebhookKind,
    name: &str,
    ca_pem: &str,
) -> Result<(), BootstrapError> {
    let err = |source| BootstrapError::Patch {
        name: name.into(),
        source,
    };
    let client = client.clone();
    match kind {
        WebhookKind::Validating => {
            patch_webhooks::<ValidatingWebhookConfiguration>(client, name, ca_pem, |c| {
                c.webhooks.as_ref().map_or(0, Vec::len)
            })
            .await
        }
        WebhookKind::Mutating => {
            patch_webhooks::<MutatingWebhookConfiguration>(client, name, ca_pem, |c| {
                c.webhooks.as_ref().map_or(0, Vec::len)
            })
            .await
        }
    }
    .map_err(err)?;
    tracing::info!(webhook_configuration = %name, "injected the CA bundle");
    Ok(())
}

async fn patch_webhooks<K>(
    client: kube::Client,
    name: &str,
    ca_pem: &str,
    count: impl Fn(&K) -> usize,
) -> Result<(), kube::Error>
where
    K: kube::Resource<Scope = k8s_openapi::ClusterResourceScope>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug,
    K::DynamicType: Default,
{
    let api: Api<K> = Api::all(client);
    let webhooks = count(&api.get(name).await?);
    let patch = Patch::<()>::Json(ca_bundle_patch(webhooks, ca_pem));
    api.patch(name, &PatchParams::default(), &patch).await?;
    Ok(())
}

/// The whole self-signed start-up: certificate from (or into) the Secret, files written into
/// `cert_dir`, CA injected. Returns the certificate and key paths. Does nothing and returns
/// `None` when `args.self_signed_secret` is unset.
pub async fn prepare(
    args: &SelfSignedArgs,
    client: &kube::Client,
    namespace: &str,
    kind: WebhookKind,
    cert_dir: &Path,
) -> Result<Option<(PathBuf, PathBuf)>, BootstrapError> {
    let Some(secret) = args.self_signed_secret.as_deref() else {
        return Ok(None);
    };
    let dns = args
        .webhook_service_dns
        .as_deref()
        .ok_or(BootstrapError::MissingServiceDns)?;
    let cert = ensure_certificate(client, namespace, secret, &[dns]).await?;
    let paths = cert.write_to(cert_dir)?;
    if let Some(config) = args.webhook_configuration.as_deref() {
        inject_ca_bundle(client, kind, config, &cert.ca_pem).await?;
    }
    Ok(Some(paths))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ca_bundle_patch_sets_every_webhook() {
        let patch = serde_json::to_value(ca_bundle_patch(2, "PEM")).unwrap();
        assert_eq!(
            patch,
            serde_json::json!([
                {"op": "add", "path": "/webhooks/0/clientConfig/caBundle", "value": "UEVN"},
                {"op": "add", "path": "/webhooks/1/clientConfig/caBundle", "value": "UEVN"},
            ])
        );
    }

    #[test]
    fn an_incomplete_secret_names_the_missing_key() {
        let secret = Secret {
            data: Some(BTreeMap::from([(CA_KEY.into(), ByteString(b"x".to_vec()))])),
            ..Secret::default()
        };
        let err = from_secret("ns", "s", &secret).unwrap_err();
        assert_eq!(err.to_string(), "Secret ns/s lacks key tls.crt");
    }
}
