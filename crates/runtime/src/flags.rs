//! The flag and environment vocabulary every service shares, for `#[command(flatten)]`:
//! - `POD_NAMESPACE` / `POD_NAME` ([`PodArgs`]): the service's own namespace (its Lease, Secret,
//!   ConfigMap) and replica name, from the downward API; `WATCH_NAMESPACE` is only ever the
//!   namespace a controller watches;
//! - `LEADER_ELECT`, `LEASE_NAME`, `LEASE_DURATION`, `LEASE_RENEW_EVERY` ([`LeaderArgs`]);
//! - booleans accept `true`/`false`/`1`/`0` in flags and env alike ([`boolean`]);
//! - `RUST_LOG` (filter) and `LOG_FORMAT` (`json` or `text`) are read by [`crate::telemetry`].

use std::time::Duration;

use clap::ArgAction;

use crate::leader::LeaseConfig;

/// The namespace a service runs in when `POD_NAMESPACE` is unset.
pub const DEFAULT_NAMESPACE: &str = "ballast-system";

/// Parses a boolean flag or env value: `true`/`false`/`1`/`0`, any case, surrounding blanks
/// ignored.
pub fn boolean(value: &str) -> Result<bool, String> {
    match value.trim().to_ascii_lowercase().as_str() {
        "true" | "1" => Ok(true),
        "false" | "0" => Ok(false),
        other => Err(format!(
            "{other:?} is not a boolean: use true, false, 1 or 0"
        )),
    }
}

/// Where this replica runs: its namespace and its name (downward API).
#[derive(clap::Args, Clone, Debug, PartialEq, Eq)]
pub struct PodArgs {
    /// The service's own namespace: its Lease, Secret and ConfigMap live here.
    #[arg(
        long = "pod-namespace",
        alias = "lease-namespace",
        env = "POD_NAMESPACE",
        default_value = DEFAULT_NAMESPACE
    )]
    pub namespace: String,
    /// This replica's name, in the Lease and on Events; defaults to HOSTNAME (the pod name).
    #[arg(long, env = "POD_NAME")]
    pub identity: Option<String>,
}

impl Default for PodArgs {
    fn default() -> Self {
        PodArgs {
            namespace: DEFAULT_NAMESPACE.to_owned(),
            identity: None,
        }
    }
}

impl PodArgs {
    /// `POD_NAME`, else `HOSTNAME`, else `<service>-<pid>`.
    pub fn identity(&self, service: &str) -> String {
        self.identity
            .clone()
            .or_else(|| std::env::var("HOSTNAME").ok())
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| format!("{service}-{}", std::process::id()))
    }
}

/// Leader election on a Lease in the service's own namespace.
#[derive(clap::Args, Clone, Debug, PartialEq, Eq)]
pub struct LeaderArgs {
    /// Hold a Lease so that one replica at a time does the leader's work; false only for a
    /// single replica.
    #[arg(long, env = "LEADER_ELECT", default_value_t = true, action = ArgAction::Set,
          value_parser = boolean)]
    pub leader_elect: bool,
    /// Name of the Lease (default: the service's name).
    #[arg(long, env = "LEASE_NAME")]
    pub lease_name: Option<String>,
    /// How long the Lease stays valid without renewal (e.g. `15s`); the holder stops leading
    /// after 2/3 of it without a renewal.
    #[arg(long, env = "LEASE_DURATION", default_value = "15s",
          value_parser = humantime::parse_duration)]
    pub lease_duration: Duration,
    /// How often the holder renews the Lease and the others retry (e.g. `2s`).
    #[arg(long, env = "LEASE_RENEW_EVERY", default_value = "2s",
          value_parser = humantime::parse_duration)]
    pub lease_renew_every: Duration,
}

impl Default for LeaderArgs {
    fn default() -> Self {
        LeaderArgs {
            leader_elect: true,
            lease_name: None,
            lease_duration: Duration::from_secs(15),
            lease_renew_every: Duration::from_secs(2),
        }
    }
}

impl LeaderArgs {
    /// The Lease to hold, or None when leader election is off.
    pub fn lease(&self, pod: &PodArgs, default_name: &str, service: &str) -> Option<LeaseConfig> {
        self.leader_elect.then(|| LeaseConfig {
            namespace: pod.namespace.clone(),
            name: self
                .lease_name
                .clone()
                .filter(|n| !n.is_empty())
                .unwrap_or_else(|| default_name.to_owned()),
            identity: pod.identity(service),
            lease_duration: self.lease_duration,
            renew_every: self.lease_renew_every,
        })
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        pod: PodArgs,
        #[command(flatten)]
        leader: LeaderArgs,
    }

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("svc").chain(args.iter().copied()))
    }

    #[test]
    fn booleans_accept_true_false_one_and_zero() {
        for (text, want) in [
            ("true", true),
            ("1", true),
            ("FALSE", false),
            (" 0 ", false),
        ] {
            assert_eq!(boolean(text), Ok(want), "{text}");
        }
        assert_eq!(
            boolean("yes").unwrap_err(),
            "\"yes\" is not a boolean: use true, false, 1 or 0"
        );
        let off = parse(&["--leader-elect", "0"]).unwrap();
        assert!(!off.leader.leader_elect);
        assert!(parse(&["--leader-elect", "maybe"]).is_err());
    }

    #[test]
    fn the_lease_is_named_after_the_service_in_its_own_namespace_unless_set() {
        let cli = parse(&["--pod-namespace", "ops", "--identity", "svc-0"]).unwrap();
        let lease = cli
            .leader
            .lease(&cli.pod, "pvc-timing", "pvc-timing")
            .unwrap();
        assert_eq!(
            (
                lease.namespace.as_str(),
                lease.name.as_str(),
                lease.identity.as_str()
            ),
            ("ops", "pvc-timing", "svc-0")
        );
        assert_eq!(lease.lease_duration, Duration::from_secs(15));
        assert_eq!(lease.renew_every, Duration::from_secs(2));
        let cli = parse(&[
            "--lease-namespace",
            "old",
            "--lease-name",
            "mine",
            "--lease-duration",
            "30s",
        ])
        .unwrap();
        let lease = cli
            .leader
            .lease(&cli.pod, "pvc-timing", "pvc-timing")
            .unwrap();
        assert_eq!(lease.namespace, "old", "--lease-namespace stays an alias");
        assert_eq!(lease.name, "mine");
        assert_eq!(lease.lease_duration, Duration::from_secs(30));
        let off = parse(&["--leader-elect=false"]).unwrap();
        assert!(off.leader.lease(&off.pod, "x", "x").is_none());
    }
}
