//! Watches feeding caches: each keeps only the objects its decisions read ([`Filter`]) and of
//! those only what decisions read (no managed fields, no last-applied copies), and tells its
//! caller what changed.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use ballast_runtime::Service;
use futures::StreamExt;
use kube::Api;
use kube::runtime::{WatchStreamExt, watcher};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::cache::{self, Cache, Cached, Keyed, Writer};
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
    /// Awaited before the first list: what `keep` reads must be there first.
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
pub fn watch<C: Cached>(
    api: Api<C::Object>,
    config: watcher::Config,
    svc: &mut Service<Error>,
    what: &'static str,
    on: impl FnMut(Change<'_, C>) + Send + 'static,
) -> Cache<C> {
    watch_filtered(api, config, svc, what, Filter::all(), on)
}

/// [`watch`], caching only what `filter` keeps.
pub fn watch_filtered<C: Cached>(
    api: Api<C::Object>,
    config: watcher::Config,
    svc: &mut Service<Error>,
    what: &'static str,
    filter: Filter<C>,
    on: impl FnMut(Change<'_, C>) + Send + 'static,
) -> Cache<C> {
    let (cache, writer) = cache::new();
    let shutdown = svc.shutdown();
    svc.spawn(what, drive(api, config, writer, filter, on, shutdown));
    cache
}

async fn drive<C: Cached>(
    api: Api<C::Object>,
    config: watcher::Config,
    mut writer: Writer<C>,
    filter: Filter<C>,
    mut on: impl FnMut(Change<'_, C>) + Send,
    shutdown: CancellationToken,
) -> Result<()> {
    let kind = <C::Object as kube::Resource>::kind(&()).into_owned();
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
    loop {
        let stream = watcher(api.clone(), config.clone())
            .backoff(ballast_runtime::watch::backoff())
            .modify(ballast_runtime::watch::lean::<C::Object>);
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
                Some(Ok(event)) => apply(&mut writer, &*keep, cached(event), &mut on),
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

/// A watch event with its object in the cached shape.
fn cached<C: Cached>(event: watcher::Event<C::Object>) -> watcher::Event<Arc<C>> {
    use watcher::Event;
    let shape = |o| Arc::new(C::cached(o));
    match event {
        Event::Apply(o) => Event::Apply(shape(o)),
        Event::Delete(o) => Event::Delete(shape(o)),
        Event::Init => Event::Init,
        Event::InitApply(o) => Event::InitApply(shape(o)),
        Event::InitDone => Event::InitDone,
    }
}

/// Takes one event into the cache through `keep`, then tells `on`.
fn apply<C: Keyed>(
    writer: &mut Writer<C>,
    keep: &(dyn Fn(&C) -> bool + Send + Sync),
    event: watcher::Event<Arc<C>>,
    on: &mut impl FnMut(Change<'_, C>),
) {
    use watcher::Event;
    let event = match event {
        Event::InitApply(o) if !keep(&o) => return,
        // No longer kept: it leaves the cache as if deleted.
        Event::Apply(o) if !keep(&o) => match writer.contains(&o) {
            true => Event::Delete(o),
            false => return,
        },
        Event::Delete(o) if !keep(&o) && !writer.contains(&o) => return,
        other => other,
    };
    writer.apply(&event);
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

    fn claim(name: &str, class: &str) -> Arc<CachedClaim> {
        Arc::new(
            serde_json::from_value(serde_json::json!({
                "metadata": {"namespace": "ns", "name": name},
                "spec": {"storageClassName": class},
            }))
            .unwrap(),
        )
    }

    #[test]
    fn a_filtered_cache_holds_only_what_it_keeps_and_drops_what_stops_being_kept() {
        let (store, mut writer) = cache::new::<CachedClaim>();
        let keep = |c: &CachedClaim| crate::objects::claim_class(c) == "mine";
        let mut told = Vec::new();
        let mut on = |c: Change<'_, CachedClaim>| {
            let name = |o: &CachedClaim| o.name().to_owned();
            told.push(match c {
                Change::Listed(o) => format!("listed {}", name(o)),
                Change::Applied(o) => format!("applied {}", name(o)),
                Change::Deleted(o) => format!("deleted {}", name(o)),
                Change::Synced => "synced".to_owned(),
            });
        };
        let names = |s: &Cache<CachedClaim>| {
            let mut n: Vec<String> = s.state().iter().map(|c| c.name().to_owned()).collect();
            n.sort();
            n
        };
        for event in [
            Event::Init,
            Event::InitApply(claim("a", "mine")),
            Event::InitApply(claim("b", "theirs")),
            Event::InitDone,
        ] {
            apply(&mut writer, &keep, event, &mut on);
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
            apply(&mut writer, &keep, event, &mut on);
        }
        assert!(names(&store).is_empty());
        assert_eq!(
            told,
            ["listed a", "synced", "applied d", "deleted a", "deleted d"]
        );
    }
}
