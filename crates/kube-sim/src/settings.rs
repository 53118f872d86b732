//! Tunables of the simulation that the API layer reads.

use std::time::Duration;

/// Tunables of simulated behaviour the API layer needs.
#[derive(Debug, Clone)]
pub struct Settings {
    /// tolerationSeconds of the default not-ready/unreachable tolerations added to pods.
    pub default_toleration_seconds: u64,
    /// How often watches with `allowWatchBookmarks` get a BOOKMARK.
    pub bookmark_interval: Duration,
    /// Whether the PV controller runs (new claims and volumes get protection finalizers).
    pub pv_binder: bool,
}
