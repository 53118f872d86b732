//! Watches feeding caches: each keeps only the objects its decisions read ([`Filter`]) and of
//! those only what decisions read (no managed fields, no last-applied copies), and tells its
//! caller what changed.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use ballast_runtime::Service;
use futures::StreamExt;
use kube::Api;
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::{Error, Result};

/// What a watch saw.
pub enum Change<'a, K> {
    /// Listed while (re)starting: the pass after [`Change::Synced`] covers it.
    Listed(&'a K),
    Applied(&'a K),
    /// Deleted, no longer matching the watch's selector, or no longer kept by its filter; the
    /// last state known.
    Deleted(&'a K),
    /// The (re)list is complete.
    Synced,
}

/// Which objects a watch caches, beyond its selectors.
pub struct Filter<K> {
    /// Whether to cache an object; one that stops being kept leaves the cache.
    pub keep: Box<dyn Fn(&K) -> bool + Send + Sync>,
    /// When notified, the watch lists everything again: what `keep` reads has changed, and an
    /// object passed over before may be kept now.
    pub relist: Option<Arc<Notify>>,
    /// Awaited before the first list: what `keep` reads must be there first. (Not another
    /// cache's `Store::wait_until_ready`: its future wakes only the last of several tasks
    /// waiting at once, and the controller waits on every cache too.)
    pub after: Option<Pin<Box<dyn Future<Output = ()> + Send>>>,
}

impl<K> Filter<K> {
    /// Every object the selectors let through.
    pub fn all() -> Self {
        Self {
            keep: Box::new(|_| true),
            relist: None,
            after: None,
        }
    }
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
    watch_filtered(api, config, svc, what, Filter::all(), on)
}

/// [`watch`], caching only what `filter` keeps.
pub fn watch_filtered<K>(
    api: Api<K>,
    config: watcher::Config,
    svc: &mut Service<Error>,
    what: &'static str,
    filter: Filter<K>,
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
    let shutdown = svc.shutdown();
    svc.spawn(what, drive(api, config, writer, filter, on, shutdown));
    store
}

async fn drive<K>(
    api: Api<K>,
    config: watcher::Config,
    mut writer: reflector::store::Writer<K>,
    filter: Filter<K>,
    mut on: impl FnMut(Change<'_, K>) + Send,
    shutdown: CancellationToken,
) -> Result<()>
where
    K: kube::Resource<DynamicType = ()>
        + Clone
        + std::fmt::Debug
        + serde::de::DeserializeOwned
        + Send
        + Sync
        + 'static,
{
    let kind = K::kind(&()).into_owned();
    let Filter {
        keep,
        relist,
        after,
    } = filter;
    if let Some(after) = after {
        tokio::select! {
            _ = shutdown.cancelled() => return Ok(()),
            _ = after => {}
        }
    }
    let cached = writer.as_reader();
    loop {
        let stream = watcher(api.clone(), config.clone())
            .backoff(ballast_runtime::watch::backoff())
            .modify(ballast_runtime::watch::lean::<K>);
        let mut stream = std::pin::pin!(stream);
        loop {
            let relisting = async {
                match &relist {
                    Some(n) => n.notified().await,
                    None => std::future::pending().await,
                }
            };
            let item = tokio::select! {
                _ = shutdown.cancelled() => return Ok(()),
                _ = relisting => break,
                item = stream.next() => item,
            };
            match item {
                Some(Ok(event)) => apply(&mut writer, &cached, &*keep, event, &mut on),
                Some(Err(e)) => {
                    tracing::warn!(kind, error = %e, "watch failed; retrying with backoff")
                }
                None => return Ok(()),
            }
        }
        // A fresh watch lists everything; the cache swaps in what it keeps once listed.
        tracing::debug!(kind, "listing again: the watch's filter changed");
    }
}

/// Takes one event into the cache through `keep`, then tells `on`.
fn apply<K>(
    writer: &mut reflector::store::Writer<K>,
    cached: &Store<K>,
    keep: &(dyn Fn(&K) -> bool + Send + Sync),
    event: watcher::Event<K>,
    on: &mut impl FnMut(Change<'_, K>),
) where
    K: kube::Resource<DynamicType = ()> + Clone + 'static,
{
    use watcher::Event;
    let is_cached = |o: &K| cached.get(&ObjectRef::from_obj(o)).is_some();
    let event = match event {
        Event::InitApply(o) if !keep(&o) => return,
        // No longer kept: it leaves the cache as if deleted.
        Event::Apply(o) if !keep(&o) => match is_cached(&o) {
            true => Event::Delete(o),
            false => return,
        },
        Event::Delete(o) if !keep(&o) && !is_cached(&o) => return,
        other => other,
    };
    writer.apply_watcher_event(&event);
    match &event {
        Event::Init => {}
        Event::InitApply(o) => on(Change::Listed(o)),
        Event::InitDone => on(Change::Synced),
        Event::Apply(o) => on(Change::Applied(o)),
        Event::Delete(o) => on(Change::Deleted(o)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::objects::CachedClaim;
    use watcher::Event;

    fn claim(name: &str, class: &str) -> CachedClaim {
        serde_json::from_value(serde_json::json!({
            "metadata": {"namespace": "ns", "name": name},
            "spec": {"storageClassName": class},
        }))
        .unwrap()
    }

    #[test]
    fn a_filtered_cache_holds_only_what_it_keeps_and_drops_what_stops_being_kept() {
        let (store, mut writer) = reflector::store::<CachedClaim>();
        let keep = |c: &CachedClaim| crate::objects::claim_class(c) == "mine";
        let mut told = Vec::new();
        let mut on = |c: Change<'_, CachedClaim>| {
            let name = |o: &CachedClaim| o.metadata.name.clone().unwrap_or_default();
            told.push(match c {
                Change::Listed(o) => format!("listed {}", name(o)),
                Change::Applied(o) => format!("applied {}", name(o)),
                Change::Deleted(o) => format!("deleted {}", name(o)),
                Change::Synced => "synced".to_owned(),
            });
        };
        let names = |s: &Store<CachedClaim>| {
            let mut n: Vec<String> = s
                .state()
                .iter()
                .filter_map(|c| c.metadata.name.clone())
                .collect();
            n.sort();
            n
        };
        for event in [
            Event::Init,
            Event::InitApply(claim("a", "mine")),
            Event::InitApply(claim("b", "theirs")),
            Event::InitDone,
        ] {
            apply(&mut writer, &store, &keep, event, &mut on);
        }
        assert_eq!(names(&store), ["a"]);
        futures::executor::block_on(store.wait_until_ready()).expect("ready once listed");
        for event in [
            Event::Apply(claim("c", "theirs")),
            Event::Apply(claim("d", "mine")),
            // `a` no longer kept: it leaves the cache as if deleted.
            Event::Apply(claim("a", "theirs")),
            Event::Delete(claim("c", "theirs")),
            Event::Delete(claim("d", "mine")),
        ] {
            apply(&mut writer, &store, &keep, event, &mut on);
        }
        assert!(names(&store).is_empty());
        assert_eq!(
            told,
            ["listed a", "synced", "applied d", "deleted a", "deleted d"]
        );
    }
}
