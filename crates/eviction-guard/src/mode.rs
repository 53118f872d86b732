//! The interception mode, persisted in a ConfigMap in the guard's namespace so every replica
//! agrees and a restart keeps it. Writes carry the resourceVersion read just before; a conflict
//! means another replica wrote first, so the ConfigMap is read again and the change re-applied.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use k8s_openapi::api::core::v1::ConfigMap;
use kube::Api;
use kube::api::{ObjectMeta, PostParams};

use crate::error::{Error, Result};
use crate::storm::Mode;

/// Default name of the ConfigMap holding the mode.
pub const DEFAULT_CONFIGMAP: &str = "eviction-guard-mode";
/// Attempts at a conflicting write before giving up (each re-reads first).
const WRITE_ATTEMPTS: usize = 5;

const KEY_MODE: &str = "mode";
const KEY_CHANGED_BY: &str = "changedBy";
const KEY_REASON: &str = "reason";
const KEY_CHANGED_AT: &str = "changedAt";

/// The mode and who set it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ModeRecord {
    pub mode: Mode,
    pub changed_by: String,
    pub reason: String,
    pub changed_at: Option<DateTime<Utc>>,
}

impl ModeRecord {
    /// Reads the ConfigMap data; an unreadable mode falls back to AUTO (the safe default: the
    /// guard keeps watching) and says so in the reason.
    pub fn from_data(data: &BTreeMap<String, String>) -> Self {
        let (mode, reason) = match data.get(KEY_MODE).map(|m| m.parse::<Mode>()) {
            None => (
                Mode::Auto,
                data.get(KEY_REASON).cloned().unwrap_or_default(),
            ),
            Some(Ok(mode)) => (mode, data.get(KEY_REASON).cloned().unwrap_or_default()),
            Some(Err(e)) => (Mode::Auto, format!("stored mode ignored: {e}")),
        };
        ModeRecord {
            mode,
            changed_by: data.get(KEY_CHANGED_BY).cloned().unwrap_or_default(),
            reason,
            changed_at: data
                .get(KEY_CHANGED_AT)
                .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
                .map(|t| t.with_timezone(&Utc)),
        }
    }

    pub fn to_data(&self) -> BTreeMap<String, String> {
        let mut data = BTreeMap::from([
            (KEY_MODE.to_owned(), self.mode.as_str().to_owned()),
            (KEY_CHANGED_BY.to_owned(), self.changed_by.clone()),
            (KEY_REASON.to_owned(), self.reason.clone()),
        ]);
        if let Some(t) = self.changed_at {
            data.insert(
                KEY_CHANGED_AT.to_owned(),
                t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            );
        }
        data
    }
}

/// Reads and writes the mode ConfigMap.
#[derive(Clone)]
pub struct ModeStore {
    api: Api<ConfigMap>,
    namespace: String,
    name: String,
}

impl ModeStore {
    pub fn new(client: kube::Client, namespace: &str, name: &str) -> Self {
        ModeStore {
            api: Api::namespaced(client, namespace),
            namespace: namespace.to_owned(),
            name: name.to_owned(),
        }
    }

    pub fn api(&self) -> &Api<ConfigMap> {
        &self.api
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// The stored mode; AUTO when the ConfigMap does not exist yet.
    pub async fn load(&self) -> Result<ModeRecord> {
        let cm = self
            .api
            .get_opt(&self.name)
            .await
            .map_err(|source| Error::ReadMode {
                namespace: self.namespace.clone(),
                name: self.name.clone(),
                source,
            })?;
        Ok(cm
            .and_then(|cm| cm.data)
            .map(|d| ModeRecord::from_data(&d))
            .unwrap_or_default())
    }

    /// Writes `record` with resourceVersion preconditions, re-reading on conflict.
    pub async fn store(&self, record: &ModeRecord) -> Result<()> {
        let write_err = |source| Error::WriteMode {
            namespace: self.namespace.clone(),
            name: self.name.clone(),
            source,
        };
        for _ in 0..WRITE_ATTEMPTS {
            let current = self
                .api
                .get_opt(&self.name)
                .await
                .map_err(|source| Error::ReadMode {
                    namespace: self.namespace.clone(),
                    name: self.name.clone(),
                    source,
                })?;
            let result = match current {
                None => {
                    let cm = ConfigMap {
                        metadata: ObjectMeta {
                            name: Some(self.name.clone()),
                            namespace: Some(self.namespace.clone()),
                            labels: Some(BTreeMap::from([(
                                "app.kubernetes.io/name".to_owned(),
                                "eviction-guard".to_owned(),
                            )])),
                            ..ObjectMeta::default()
                        },
                        data: Some(record.to_data()),
                        ..ConfigMap::default()
                    };
                    self.api.create(&PostParams::default(), &cm).await
                }
                Some(mut cm) => {
                    // metadata.resourceVersion from the read is the precondition
                    cm.data = Some(record.to_data());
                    self.api
                        .replace(&self.name, &PostParams::default(), &cm)
                        .await
                }
            };
            match result {
                Ok(_) => return Ok(()),
                Err(kube::Error::Api(s)) if s.code == 409 => {
                    tracing::info!(
                        namespace = %self.namespace,
                        name = %self.name,
                        "mode ConfigMap changed concurrently; reading it again"
                    );
                }
                Err(e) => return Err(write_err(e)),
            }
        }
        Err(Error::ModeConflict {
            namespace: self.namespace.clone(),
            name: self.name.clone(),
            attempts: WRITE_ATTEMPTS,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mode_record_round_trips_through_configmap_data() {
        let record = ModeRecord {
            mode: Mode::Forced,
            changed_by: "system:serviceaccount:ops:oncall".to_owned(),
            reason: "rack 4 maintenance".to_owned(),
            changed_at: DateTime::from_timestamp(1_800_000_000, 0),
        };
        let data = record.to_data();
        assert_eq!(data["mode"], "forced");
        assert_eq!(data["changedAt"], "2027-01-15T08:00:00Z");
        assert_eq!(ModeRecord::from_data(&data), record);
    }

    #[test]
    fn unreadable_stored_mode_falls_back_to_auto_and_says_so() {
        let data = BTreeMap::from([("mode".to_owned(), "off".to_owned())]);
        let record = ModeRecord::from_data(&data);
        assert_eq!(record.mode, Mode::Auto);
        assert!(
            record
                .reason
                .starts_with("stored mode ignored: unknown mode \"off\"")
        );
        assert_eq!(
            ModeRecord::from_data(&BTreeMap::new()),
            ModeRecord::default()
        );
    }
}
