//! Fixture builders for unit tests: `mk_pm("web", 3, "nginx:1.21")`, `mk_pod("web-0").ready()`.

use k8s_openapi::api::core::v1::{Container, Pod, PodCondition, PodSpec, PodStatus};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use k8s_openapi::jiff::Timestamp;

use crate::crd::{PodManager, PodManagerSpec};

/// A PodManager in namespace `default` with uid `uid-<name>` at generation 1.
pub fn mk_pm(name: &str, replicas: i32, image: &str) -> PodManager {
    let mut pm = PodManager::new(
        name,
        PodManagerSpec {
            replicas,
            image: image.to_string(),
        },
    );
    pm.metadata.namespace = Some("default".into());
    pm.metadata.uid = Some(format!("uid-{name}"));
    pm.metadata.generation = Some(1);
    pm
}

/// A pending pod running `nginx:1.21`, not scheduled.
pub fn mk_pod(name: &str) -> Pod {
    Pod {
        metadata: ObjectMeta {
            name: Some(name.into()),
            namespace: Some("default".into()),
            ..ObjectMeta::default()
        },
        spec: Some(PodSpec {
            containers: vec![Container {
                name: "app".into(),
                image: Some("nginx:1.21".into()),
                ..Container::default()
            }],
            ..PodSpec::default()
        }),
        status: Some(PodStatus {
            phase: Some("Pending".into()),
            ..PodStatus::default()
        }),
    }
}

/// Chainable changes to a fixture pod.
pub trait PodFixture {
    fn ready(self) -> Pod;
    fn on(self, node: &str) -> Pod;
    fn image(self, image: &str) -> Pod;
    fn phase(self, phase: &str) -> Pod;
    fn terminating(self) -> Pod;
}

impl PodFixture for Pod {
    fn ready(mut self) -> Pod {
        let status = self.status.get_or_insert_with(PodStatus::default);
        status.phase = Some("Running".into());
        status.conditions = Some(vec![PodCondition {
            type_: "Ready".into(),
            status: "True".into(),
            ..PodCondition::default()
        }]);
        if self.spec.as_ref().is_some_and(|s| s.node_name.is_none()) {
            self = self.on("node-1");
        }
        self
    }

    fn on(mut self, node: &str) -> Pod {
        if let Some(spec) = self.spec.as_mut() {
            spec.node_name = Some(node.into());
        }
        self
    }

    fn image(mut self, image: &str) -> Pod {
        if let Some(c) = self.spec.as_mut().and_then(|s| s.containers.first_mut()) {
            c.image = Some(image.into());
        }
        self
    }

    fn phase(mut self, phase: &str) -> Pod {
        self.status.get_or_insert_with(PodStatus::default).phase = Some(phase.into());
        self
    }

    fn terminating(mut self) -> Pod {
        self.metadata.deletion_timestamp = Some(Time(Timestamp::UNIX_EPOCH));
        self
    }
}
