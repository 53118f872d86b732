//! Keeps a service's webhook configuration fit to call it, continuously rather than once at
//! start-up: the `caBundle` of every webhook equals the CA the service serves under (self-signed
//! mode: the CA in its Secret, regenerated when the Secret is deleted, and the serving files
//! rewritten when it changes), and webhooks that fail closed do so only while a ready replica
//! serves them.
//!
//! Such webhooks ship with `failurePolicy: Ignore`, so that between `kubectl apply` and the first
//! ready replica (an image that cannot be pulled, a crash loop, no caBundle yet) the API server
//! lets requests through instead of refusing them cluster-wide. A ready replica switches them to
//! `Fail`; a configuration whose webhooks have no CA to trust is switched back to `Ignore`, since
//! every call would fail anyway. A replica that is not ready (starting, or draining after
//! SIGTERM) changes no policy: another replica may be serving.
//!
//! The decision is [`plan`] (pure); [`run`] polls and patches around it.

use std::path::PathBuf;
use std::time::Duration;

use base64::Engine;
use kube::Api;
use kube::api::{ApiResource, DynamicObject, GroupVersionKind, Patch, PatchParams};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use crate::admin::Readiness;
use crate::bootstrap::{self, WebhookKind};
use crate::tls::{GeneratedCert, ReloadingTls};

/// How often the configuration (and, self-signed, the Secret) is checked.
pub const RECONCILE_INTERVAL: Duration = Duration::from_secs(3);
/// How often readiness is looked at between passes, so a replica that turns ready switches the
/// policy at once.
const READINESS_POLL: Duration = Duration::from_millis(200);
/// Self-signed: how long a new CA must have been in every webhook's `caBundle` before the
/// service serves a certificate it signed (the API server's webhook client follows a
/// configuration change within about a second).
pub const CA_PROPAGATION: Duration = Duration::from_secs(5);

/// What the configuration should look like.
#[derive(Clone, Copy, Debug)]
pub struct Wanted<'a> {
    /// The CA every webhook must trust, PEM; `None` when someone else injects it (cert-manager's
    /// CA injector): then only its presence is checked.
    pub ca_pem: Option<&'a str>,
    /// Names of the webhooks that fail closed while the service serves.
    pub fail_closed: &'a [&'a str],
    /// Whether this replica is ready to answer (and not draining).
    pub ready: bool,
}

fn ca_of(webhook: &Value) -> Option<Vec<u8>> {
    let b64 = webhook.pointer("/clientConfig/caBundle")?.as_str()?;
    base64::engine::general_purpose::STANDARD
        .decode(b64)
        .ok()
        .filter(|ca| !ca.is_empty())
}

/// The JSON patch bringing `webhooks` (the configuration's `webhooks` list, as the API returns
/// it) to `wanted`; empty when nothing needs to change. Every change is preceded by a `test` of
/// the webhook's name at that index, so a list reordered meanwhile makes the patch fail rather
/// than change the wrong webhook.
pub fn plan(webhooks: &[Value], wanted: &Wanted<'_>) -> Vec<Value> {
    let mut ops = Vec::new();
    for (i, webhook) in webhooks.iter().enumerate() {
        let name = webhook.get("name").and_then(Value::as_str).unwrap_or("");
        let mut changes = Vec::new();
        let current = ca_of(webhook);
        let trusted = match wanted.ca_pem {
            Some(ca) => {
                if current.as_deref() != Some(ca.as_bytes()) {
                    changes.push(json!({
                        "op": "add",
                        "path": format!("/webhooks/{i}/clientConfig/caBundle"),
                        "value": base64::engine::general_purpose::STANDARD.encode(ca),
                    }));
                }
                true
            }
            None => current.is_some(),
        };
        if wanted.fail_closed.contains(&name) {
            let policy = webhook.get("failurePolicy").and_then(Value::as_str);
            let target = if !trusted {
                Some("Ignore")
            } else if wanted.ready {
                Some("Fail")
            } else {
                None
            };
            if let Some(target) = target
                && policy != Some(target)
            {
                changes.push(json!({
                    "op": "add",
                    "path": format!("/webhooks/{i}/failurePolicy"),
                    "value": target,
                }));
            }
        }
        if !changes.is_empty() {
            ops.push(json!({"op": "test", "path": format!("/webhooks/{i}/name"), "value": name}));
            ops.extend(changes);
        }
    }
    ops
}

/// Where a self-signed replica is in a change of CA (the Secret replaced, or deleted and
/// regenerated): the new CA is trusted alongside the served one first, served only once the API
/// server has had time to trust it, and the old one kept a while after, for replicas that
/// switch later — so no admission call fails on an unknown authority.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Rotation {
    /// When this replica first saw every webhook trust the Secret's new CA.
    pub trusted_since: Option<std::time::Instant>,
    /// The CA served before the last switch, trusted until the instant given.
    pub previous: Option<(String, std::time::Instant)>,
}

/// What a pass does about the certificate (pure): whether to serve the Secret's certificate
/// now, and the CA bundle every webhook must carry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CertStep {
    pub switch: bool,
    pub bundle: String,
}

/// PEM certificates, one after the other, each ending in a newline.
fn join_pem(first: &str, second: &str) -> String {
    format!("{}\n{}\n", first.trim_end(), second.trim_end())
}

/// Decides the certificate step of a pass. `served_ca`: the CA of the certificate served now
/// (None before the first); `secret`: the Secret's CA and whether its leaf differs from the
/// served one; `trusted`: whether every webhook's bundle already holds the Secret's CA;
/// `overlap`: how long the previous CA stays trusted after the switch.
pub fn cert_step(
    served_ca: Option<&str>,
    secret_ca: &str,
    new_leaf: bool,
    trusted: bool,
    rotation: &mut Rotation,
    now: std::time::Instant,
    overlap: Duration,
) -> CertStep {
    let previous = rotation
        .previous
        .take()
        .filter(|(ca, until)| now < *until && ca.trim_end() != secret_ca.trim_end());
    match served_ca {
        // a new CA: trusted first, served after CA_PROPAGATION of being trusted
        Some(old) if old.trim_end() != secret_ca.trim_end() => {
            if trusted {
                let since = *rotation.trusted_since.get_or_insert(now);
                if now.saturating_duration_since(since) >= CA_PROPAGATION {
                    rotation.trusted_since = None;
                    rotation.previous = Some((old.to_owned(), now + overlap));
                    return CertStep {
                        switch: true,
                        bundle: join_pem(secret_ca, old),
                    };
                }
            } else {
                rotation.trusted_since = None;
            }
            rotation.previous = previous;
            CertStep {
                switch: false,
                bundle: join_pem(secret_ca, old),
            }
        }
        // the same CA (a new leaf is served at once), or nothing served yet
        _ => {
            rotation.trusted_since = None;
            let bundle = match &previous {
                Some((old, _)) => join_pem(secret_ca, old),
                None => format!("{}\n", secret_ca.trim_end()),
            };
            rotation.previous = previous;
            CertStep {
                switch: new_leaf || served_ca.is_none(),
                bundle,
            }
        }
    }
}

/// Self-signed mode: where the certificate lives and where it is served from.
#[derive(Clone, Debug)]
pub struct SelfSigned {
    pub namespace: String,
    pub secret: String,
    pub dns_name: String,
    /// Directory the serving files are written to (read by `tls`).
    pub cert_dir: PathBuf,
}

/// One service's registration, reconciled by [`run`].
#[derive(Clone, Debug)]
pub struct Registration {
    pub kind: WebhookKind,
    /// The webhook configuration's name.
    pub configuration: String,
    /// Webhooks switched to `Fail` while a ready replica serves them.
    pub fail_closed: Vec<String>,
    pub self_signed: Option<SelfSigned>,
    /// The served certificate, reloaded at once when the Secret changes.
    pub tls: Option<ReloadingTls>,
    pub readiness: Readiness,
    pub interval: Duration,
}

/// The error and its sources in one line.
fn chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

fn api_resource(kind: WebhookKind) -> ApiResource {
    let (kind, plural) = match kind {
        WebhookKind::Validating => (
            "ValidatingWebhookConfiguration",
            "validatingwebhookconfigurations",
        ),
        WebhookKind::Mutating => (
            "MutatingWebhookConfiguration",
            "mutatingwebhookconfigurations",
        ),
    };
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("admissionregistration.k8s.io", "v1", kind),
        plural,
    )
}

/// What one pass saw, so a loop logs only changes.
#[derive(Debug, Default, PartialEq, Eq)]
struct Seen {
    missing: bool,
    failing: Option<String>,
}

impl Registration {
    fn ready(&self) -> bool {
        self.readiness.is_ready() && !crate::shutdown::terminating()
    }

    /// Self-signed: the CA bundle the webhooks must carry for the Secret's certificate
    /// (regenerated if the Secret is gone), serving it — files written, TLS reloaded — when
    /// [`cert_step`] says so. `None` outside self-signed mode.
    async fn sync_certificate(
        &self,
        client: &kube::Client,
        webhooks: &[Value],
        served: &mut Option<GeneratedCert>,
        rotation: &mut Rotation,
    ) -> Result<Option<String>, String> {
        let Some(s) = &self.self_signed else {
            return Ok(None);
        };
        let cert = bootstrap::ensure_certificate(client, &s.namespace, &s.secret, &[&s.dns_name])
            .await
            .map_err(|e| chain(&e))?;
        let new_leaf = served
            .as_ref()
            .is_some_and(|old| old.cert_pem != cert.cert_pem || old.key_pem != cert.key_pem);
        let new_ca = cert.ca_pem.trim_end();
        let trusted = !webhooks.is_empty()
            && webhooks
                .iter()
                .all(|w| ca_of(w).is_some_and(|ca| String::from_utf8_lossy(&ca).contains(new_ca)));
        let step = cert_step(
            served.as_ref().map(|c| c.ca_pem.as_str()),
            &cert.ca_pem,
            new_leaf,
            trusted,
            rotation,
            std::time::Instant::now(),
            self.interval * 2 + CA_PROPAGATION,
        );
        let secret = format!("{}/{}", s.namespace, s.secret);
        if step.switch {
            cert.write_to(&s.cert_dir).map_err(|e| chain(&e))?;
            if let Some(tls) = &self.tls
                && tls.reload().map_err(|e| chain(&e))?
            {
                tracing::info!(%secret, "serving certificate changed in the Secret; now serving the new one");
            }
            *served = Some(cert);
        } else if new_leaf && !trusted {
            tracing::info!(
                %secret,
                "the Secret holds a certificate of a new CA; trusting it alongside the current one before serving it"
            );
        }
        Ok(Some(step.bundle))
    }

    /// One pass; `Ok(true)` when the configuration was patched.
    async fn pass(
        &self,
        client: &kube::Client,
        served: &mut Option<GeneratedCert>,
        rotation: &mut Rotation,
        seen: &mut Seen,
    ) -> Result<bool, String> {
        let api: Api<DynamicObject> = Api::all_with(client.clone(), &api_resource(self.kind));
        let config = api
            .get_opt(&self.configuration)
            .await
            .map_err(|e| chain(&e))?;
        let webhooks = config
            .as_ref()
            .and_then(|c| c.data.get("webhooks"))
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        let ca = self
            .sync_certificate(client, &webhooks, served, rotation)
            .await?;
        if config.is_none() {
            if !seen.missing {
                tracing::warn!(
                    webhook_configuration = %self.configuration,
                    "webhook configuration not found; waiting for it to be created"
                );
            }
            seen.missing = true;
            return Ok(false);
        }
        seen.missing = false;
        let fail_closed: Vec<&str> = self.fail_closed.iter().map(String::as_str).collect();
        let wanted = Wanted {
            ca_pem: ca.as_deref(),
            fail_closed: &fail_closed,
            ready: self.ready(),
        };
        let ops = plan(&webhooks, &wanted);
        if ops.is_empty() {
            return Ok(false);
        }
        let patch: json_patch::Patch =
            serde_json::from_value(Value::Array(ops.clone())).map_err(|e| e.to_string())?;
        api.patch(
            &self.configuration,
            &PatchParams::default(),
            &Patch::<()>::Json(patch),
        )
        .await
        .map_err(|e| chain(&e))?;
        let changes: Vec<String> = ops
            .iter()
            .filter(|op| op["op"] != "test")
            .map(|op| {
                let path = op["path"].as_str().unwrap_or_default();
                let index: usize = path
                    .split('/')
                    .nth(2)
                    .and_then(|i| i.parse().ok())
                    .unwrap_or_default();
                let hook = webhooks
                    .get(index)
                    .and_then(|w| w.get("name"))
                    .and_then(Value::as_str)
                    .unwrap_or_default();
                if path.ends_with("/caBundle") {
                    format!("{hook}: caBundle set")
                } else {
                    format!(
                        "{hook}: failurePolicy {}",
                        op["value"].as_str().unwrap_or_default()
                    )
                }
            })
            .collect();
        tracing::info!(
            webhook_configuration = %self.configuration,
            changes = %changes.join(", "),
            ready = wanted.ready,
            "webhook configuration reconciled"
        );
        Ok(true)
    }
}

/// Reconciles `registration` every `interval`, and at once when this replica turns ready, until
/// `shutdown`. Failures are logged and retried on the next pass.
pub async fn run(registration: Registration, client: kube::Client, shutdown: CancellationToken) {
    let mut served: Option<GeneratedCert> = None;
    let mut rotation = Rotation::default();
    let mut seen = Seen::default();
    let mut was_ready = false;
    let mut next = tokio::time::Instant::now();
    loop {
        let ready = registration.ready();
        if tokio::time::Instant::now() >= next || ready != was_ready {
            was_ready = ready;
            next = tokio::time::Instant::now() + registration.interval;
            match registration
                .pass(&client, &mut served, &mut rotation, &mut seen)
                .await
            {
                Ok(_) => seen.failing = None,
                Err(error) => {
                    if seen.failing.as_deref() != Some(error.as_str()) {
                        tracing::warn!(
                            webhook_configuration = %registration.configuration,
                            %error,
                            "failed to reconcile the webhook configuration; retrying"
                        );
                    }
                    seen.failing = Some(error);
                }
            }
        }
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(READINESS_POLL) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const OLD: &str = "-----BEGIN CERTIFICATE-----\nOLD\n-----END CERTIFICATE-----\n";
    const NEW: &str = "-----BEGIN CERTIFICATE-----\nNEW\n-----END CERTIFICATE-----\n";
    const OVERLAP: Duration = Duration::from_secs(11);

    #[test]
    fn a_new_ca_is_trusted_alongside_the_old_and_served_only_once_trusted_for_a_while() {
        let t0 = std::time::Instant::now();
        let mut r = Rotation::default();
        let both = format!("{NEW}{OLD}");
        // the Secret changed: trust both, keep serving the old
        let step = cert_step(Some(OLD), NEW, true, false, &mut r, t0, OVERLAP);
        assert_eq!((step.switch, step.bundle.as_str()), (false, both.as_str()));
        // trusted now, but not for long enough
        let t1 = t0 + Duration::from_secs(3);
        let step = cert_step(Some(OLD), NEW, true, true, &mut r, t1, OVERLAP);
        assert!(!step.switch);
        let step = cert_step(
            Some(OLD),
            NEW,
            true,
            true,
            &mut r,
            t1 + Duration::from_secs(4),
            OVERLAP,
        );
        assert!(!step.switch, "4s trusted < CA_PROPAGATION");
        let t2 = t1 + CA_PROPAGATION;
        let step = cert_step(Some(OLD), NEW, true, true, &mut r, t2, OVERLAP);
        assert_eq!((step.switch, step.bundle.as_str()), (true, both.as_str()));
    }

    #[test]
    fn the_old_ca_stays_trusted_for_the_overlap_after_the_switch_then_goes() {
        let t0 = std::time::Instant::now();
        let mut r = Rotation {
            trusted_since: Some(t0),
            previous: None,
        };
        let step = cert_step(
            Some(OLD),
            NEW,
            true,
            true,
            &mut r,
            t0 + CA_PROPAGATION,
            OVERLAP,
        );
        assert!(step.switch);
        let after = t0 + CA_PROPAGATION;
        // serving the new one now
        let step = cert_step(
            Some(NEW),
            NEW,
            false,
            true,
            &mut r,
            after + OVERLAP / 2,
            OVERLAP,
        );
        assert_eq!(
            (step.switch, step.bundle),
            (false, format!("{NEW}{OLD}")),
            "the old CA is kept for replicas that switch later"
        );
        let step = cert_step(
            Some(NEW),
            NEW,
            false,
            true,
            &mut r,
            after + OVERLAP,
            OVERLAP,
        );
        assert_eq!((step.switch, step.bundle.as_str()), (false, NEW));
        assert_eq!(r, Rotation::default());
    }

    #[test]
    fn a_trust_lost_meanwhile_starts_the_wait_again() {
        let t0 = std::time::Instant::now();
        let mut r = Rotation::default();
        cert_step(Some(OLD), NEW, true, true, &mut r, t0, OVERLAP);
        // someone put the old bundle back: the new CA is not trusted any more
        cert_step(
            Some(OLD),
            NEW,
            true,
            false,
            &mut r,
            t0 + Duration::from_secs(3),
            OVERLAP,
        );
        let step = cert_step(
            Some(OLD),
            NEW,
            true,
            true,
            &mut r,
            t0 + CA_PROPAGATION,
            OVERLAP,
        );
        assert!(!step.switch, "trusted again only just now");
    }

    #[test]
    fn a_new_leaf_of_the_same_ca_or_the_first_certificate_is_served_at_once() {
        let now = std::time::Instant::now();
        let mut r = Rotation::default();
        let step = cert_step(Some(NEW), NEW, true, true, &mut r, now, OVERLAP);
        assert_eq!((step.switch, step.bundle.as_str()), (true, NEW));
        let step = cert_step(None, NEW, false, false, &mut r, now, OVERLAP);
        assert_eq!((step.switch, step.bundle.as_str()), (true, NEW));
        let step = cert_step(Some(NEW), NEW, false, true, &mut r, now, OVERLAP);
        assert!(!step.switch, "nothing new");
    }

    const DELETIONS: &str = "deletions.example";

    fn hook(name: &str, policy: &str, ca: Option<&str>) -> Value {
        let mut h =
            json!({"name": name, "failurePolicy": policy, "clientConfig": {"url": "https://x"}});
        if let Some(ca) = ca {
            h["clientConfig"]["caBundle"] =
                json!(base64::engine::general_purpose::STANDARD.encode(ca));
        }
        h
    }

    fn apply(webhooks: &[Value], ops: &[Value]) -> Vec<Value> {
        let mut doc = json!({"webhooks": webhooks});
        let patch: json_patch::Patch = serde_json::from_value(Value::Array(ops.to_vec())).unwrap();
        json_patch::patch(&mut doc, &patch).unwrap();
        doc["webhooks"].as_array().unwrap().clone()
    }

    fn wanted<'a>(ca: Option<&'a str>, ready: bool) -> Wanted<'a> {
        Wanted {
            ca_pem: ca,
            fail_closed: &[DELETIONS],
            ready,
        }
    }

    #[test]
    fn as_shipped_a_ready_replica_injects_its_ca_and_fails_closed() {
        let shipped = [
            hook(DELETIONS, "Ignore", None),
            hook("status", "Ignore", None),
        ];
        let ops = plan(&shipped, &wanted(Some("CA"), true));
        let after = apply(&shipped, &ops);
        assert_eq!(after[0]["failurePolicy"], "Fail");
        assert_eq!(
            after[1]["failurePolicy"], "Ignore",
            "only the named webhooks"
        );
        for h in &after {
            assert_eq!(ca_of(h).as_deref(), Some(&b"CA"[..]));
        }
        assert!(
            plan(&after, &wanted(Some("CA"), true)).is_empty(),
            "converged"
        );
    }

    #[test]
    fn a_replica_not_ready_injects_the_ca_but_never_fails_closed() {
        let shipped = [hook(DELETIONS, "Ignore", None)];
        let after = apply(&shipped, &plan(&shipped, &wanted(Some("CA"), false)));
        assert_eq!(after[0]["failurePolicy"], "Ignore");
        assert_eq!(ca_of(&after[0]).as_deref(), Some(&b"CA"[..]));
        // nor switches a configuration another ready replica set to Fail back
        let set = [hook(DELETIONS, "Fail", Some("CA"))];
        assert!(plan(&set, &wanted(Some("CA"), false)).is_empty());
    }

    #[test]
    fn a_rotated_or_removed_ca_is_put_back() {
        for current in [Some("OLD"), None] {
            let cfg = [hook(DELETIONS, "Fail", current)];
            let after = apply(&cfg, &plan(&cfg, &wanted(Some("NEW"), true)));
            assert_eq!(ca_of(&after[0]).as_deref(), Some(&b"NEW"[..]));
            assert_eq!(after[0]["failurePolicy"], "Fail");
        }
    }

    #[test]
    fn with_an_injected_ca_no_bundle_means_fail_open_whatever_the_readiness() {
        // cert-manager: the injector has not filled caBundle (or someone removed it)
        for ready in [true, false] {
            let cfg = [hook(DELETIONS, "Fail", None)];
            let after = apply(&cfg, &plan(&cfg, &wanted(None, ready)));
            assert_eq!(after[0]["failurePolicy"], "Ignore");
            assert!(
                ca_of(&after[0]).is_none(),
                "the injector's field is left alone"
            );
        }
        // once it has, a ready replica fails closed and never touches the bundle
        let cfg = [hook(DELETIONS, "Ignore", Some("INJECTED"))];
        let ops = plan(&cfg, &wanted(None, true));
        let after = apply(&cfg, &ops);
        assert_eq!(after[0]["failurePolicy"], "Fail");
        assert_eq!(ca_of(&after[0]).as_deref(), Some(&b"INJECTED"[..]));
        assert!(
            !ops.iter()
                .any(|op| op["path"].as_str().unwrap().ends_with("caBundle"))
        );
    }

    #[test]
    fn an_empty_or_undecodable_bundle_counts_as_none() {
        let mut cfg = hook(DELETIONS, "Fail", None);
        for bad in ["", "***not base64***"] {
            cfg["clientConfig"]["caBundle"] = json!(bad);
            assert!(ca_of(&cfg).is_none());
            let after = apply(&[cfg.clone()], &plan(&[cfg.clone()], &wanted(None, true)));
            assert_eq!(after[0]["failurePolicy"], "Ignore");
        }
    }

    #[test]
    fn a_list_reordered_since_it_was_read_makes_the_patch_fail_instead_of_changing_another_webhook()
    {
        let read = [
            hook(DELETIONS, "Ignore", Some("CA")),
            hook("status", "Ignore", Some("CA")),
        ];
        let ops = plan(&read, &wanted(Some("CA"), true));
        let mut now = json!({"webhooks": [read[1].clone(), read[0].clone()]});
        let patch: json_patch::Patch = serde_json::from_value(Value::Array(ops)).unwrap();
        assert!(json_patch::patch(&mut now, &patch).is_err());
        assert_eq!(now["webhooks"][0]["failurePolicy"], "Ignore");
    }
}
