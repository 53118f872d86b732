//! Watches feeding caches: each keeps only what decisions read (no managed fields, no
//! last-applied copies), and tells its caller what changed.

use ballast_runtime::Service;
use futures::{Stream, StreamExt};
use kube::Api;
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use tokio_util::sync::CancellationToken;

use crate::{Error, Result};

/// The annotation kubectl apply keeps on objects: a full copy of each, not needed here.
const LAST_APPLIED: &str = "kubectl.kubernetes.io/last-applied-configuration";

/// What a watch saw.
pub enum Change<'a, K> {
    /// Listed while (re)starting: the pass after [`Change::Synced`] covers it.
    Listed(&'a K),
    Applied(&'a K),
    /// Deleted, or no longer matching the watch's selector; the last state known.
    Deleted(&'a K),
    /// The (re)list is complete.
    Synced,
}

/// Starts a watch of `api` into a cache as a task of `svc` named `what`, calling `on` for every
/// change (after the cache has taken it in).
pub fn watch<K>(
    api: Api<K>,
    config: watcher::Config,
    svc: &mut Service<Error>,
    what: &'static str,
    on: impl FnMut(Change<'_, K>) + Send + 'static,
) -> Store<K>
where
    K: kube::Resource<DynamicType = ()>
        + Clone
        + std::fmt::Debug
        + serde::de::DeserializeOwned
        + Send
        + Sync
        + 'static,
{
    let (store, writer) = reflector::store();
    let stream = reflector::reflector(
        writer,
        watcher(api, config).default_backoff().modify(|o: &mut K| {
            let meta = o.meta_mut();
            meta.managed_fields = None;
            if let Some(a) = meta.annotations.as_mut() {
                a.remove(LAST_APPLIED);
            }
        }),
    );
    let shutdown = svc.shutdown();
    svc.spawn(what, drive(stream, K::kind(&()).into_owned(), on, shutdown));
    store
}

async fn drive<S, K>(
    stream: S,
    kind: String,
    mut on: impl FnMut(Change<'_, K>) + Send,
    shutdown: CancellationToken,
) -> Result<()>
where
    S: Stream<Item = std::result::Result<watcher::Event<K>, watcher::Error>> + Send,
{
    let mut stream = std::pin::pin!(stream);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return Ok(()),
            item = stream.next() => match item {
                Some(Ok(watcher::Event::Apply(o))) => on(Change::Applied(&o)),
                Some(Ok(watcher::Event::Delete(o))) => on(Change::Deleted(&o)),
                Some(Ok(watcher::Event::InitApply(o))) => on(Change::Listed(&o)),
                Some(Ok(watcher::Event::InitDone)) => on(Change::Synced),
                Some(Ok(watcher::Event::Init)) => {}
                Some(Err(e)) => tracing::warn!(kind, error = %e, "watch failed; retrying with backoff"),
                None => return Ok(()),
            },
        }
    }
}
