//! Logging: JSON lines in a cluster (stderr is not a terminal), human lines on a terminal.
//! `LOG_FORMAT=json` or `LOG_FORMAT=text` chooses explicitly; `RUST_LOG` sets the filter
//! (default `info`, e.g. `RUST_LOG=info,kube=debug`).

use std::io::IsTerminal;
use tracing_subscriber::EnvFilter;

/// The filter used when `RUST_LOG` is unset.
const DEFAULT_FILTER: &str = "info";

/// Installs the global tracing subscriber. `RUST_LOG` sets the filter. Safe to call more than
/// once (tests start several services in one process): later calls do nothing.
pub fn init() {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(DEFAULT_FILTER));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let json = match std::env::var("LOG_FORMAT").ok().as_deref().map(str::trim) {
        Some("json") => true,
        Some("text") => false,
        _ => !std::io::stderr().is_terminal(),
    };
    let result = if !json {
        builder.try_init()
    } else {
        builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .try_init()
    };
    // An error only means a subscriber is already installed, which is what we want.
    drop(result);
}
