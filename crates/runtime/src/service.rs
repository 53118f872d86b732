//! The one shape of every Ballast service: `Config` → `start(config, shutdown) -> Running` →
//! `running.wait()`. A service's `start` builds a [`Service`], which
//! - builds the Kubernetes client from the shared kube flags ([`KubeAccess`]),
//! - binds listeners and reports the bound address (port 0 picks a free one),
//! - holds the readiness checks served on `/readyz`,
//! - serves the admin routes, and routers over HTTP or TLS with certificate reload,
//! - owns every task, with one failure policy: a task's error or panic stops the whole service
//!   and [`Tasks::wait`] returns that error (the first one);
//! - runs leader-only work with [`Service::run_while_leading`], and releases every Lease only
//!   after all the service's tasks have stopped, so no replica takes over while this one still
//!   acts.
//!
//! A failure stops this service only: its token is a child of the caller's, so the demo and the
//! tests can run several services on one token.

use std::future::Future;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use axum::Router;
use futures::FutureExt;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio_util::sync::{CancellationToken, DropGuard};

use crate::admin::Readiness;
use crate::error::{Error, Result, chain};
use crate::kubeclient::KubeAccess;
use crate::leader::{self, LeaseConfig};
use crate::tls::ReloadingTls;

/// How often serving certificate files are checked for rotation.
pub const TLS_RELOAD_INTERVAL: Duration = Duration::from_secs(10);
/// Longest wait for leader-only work to finish once told to stop (below a pod's default 30s
/// grace period); work past it is dropped.
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(20);
/// Pause before restarting leader-only work that ended on its own, so a failure cannot spin.
pub const RESTART_DELAY: Duration = Duration::from_secs(1);

/// What one task returned: its name and result.
type Outcome<E> = (&'static str, std::result::Result<(), E>);

/// A Lease election owned by a service: stopped once every task of the service has.
struct Election {
    stop: CancellationToken,
    task: tokio::task::JoinHandle<()>,
    /// Stops the election if the service is dropped without being waited for.
    _guard: DropGuard,
}

/// A service being started: its name, its stop token, readiness checks and tasks. `E` is the
/// service's error type; runtime errors and panics convert into it.
pub struct Service<E> {
    name: &'static str,
    shutdown: CancellationToken,
    readiness: Readiness,
    tasks: JoinSet<Outcome<E>>,
    elections: Vec<Election>,
}

impl<E> Service<E>
where
    E: From<Error> + std::error::Error + Send + 'static,
{
    /// A service named `name` (for logs and build info) that stops when `shutdown` is cancelled
    /// or one of its tasks fails. Installs the Prometheus recorder and the build-info metric.
    pub fn new(name: &'static str, version: &'static str, shutdown: &CancellationToken) -> Self {
        crate::metrics::prometheus();
        crate::metrics::build_info(name, version);
        Service {
            name,
            shutdown: shutdown.child_token(),
            readiness: Readiness::new(),
            tasks: JoinSet::new(),
            elections: Vec::new(),
        }
    }

    /// The client these flags describe (or the one handed in).
    pub async fn client(&self, kube: &KubeAccess) -> Result<kube::Client, E> {
        Ok(kube.client().await?)
    }

    /// This service's stop token: cancelled on the caller's shutdown or a task's failure.
    pub fn shutdown(&self) -> CancellationToken {
        self.shutdown.clone()
    }

    /// The readiness checks `/readyz` reports.
    pub fn readiness(&self) -> &Readiness {
        &self.readiness
    }

    /// Binds `addr`; `what` names the listener (and its flag) in the error.
    pub async fn bind(
        &self,
        what: &'static str,
        addr: SocketAddr,
    ) -> Result<(TcpListener, SocketAddr), E> {
        let err = |source| Error::Bind { what, addr, source };
        let listener = TcpListener::bind(addr).await.map_err(err)?;
        let local = listener.local_addr().map_err(err)?;
        Ok((listener, local))
    }

    /// Runs `task` until it ends. An error (or a panic) stops the service with that error.
    pub fn spawn<T, F>(&mut self, what: &'static str, task: F)
    where
        F: Future<Output = std::result::Result<(), T>> + Send + 'static,
        E: From<T>,
    {
        let service = self.name;
        self.tasks.spawn(async move {
            let result = match std::panic::AssertUnwindSafe(task).catch_unwind().await {
                Ok(result) => result.map_err(E::from),
                Err(panic) => Err(E::from(Error::Panicked {
                    service,
                    task: what,
                    message: panic_message(panic.as_ref()),
                })),
            };
            (what, result)
        });
    }

    /// Serves `/healthz`, `/readyz` and `/metrics` on `listener`.
    pub fn serve_admin(&mut self, listener: TcpListener) {
        let (readiness, shutdown) = (self.readiness.clone(), self.shutdown.clone());
        self.spawn(
            "admin server",
            crate::admin::serve(listener, readiness, shutdown),
        );
    }

    /// Serves `router` on `listener`, over TLS when `tls` is given.
    pub fn serve(
        &mut self,
        what: &'static str,
        listener: TcpListener,
        router: Router,
        tls: Option<ReloadingTls>,
    ) {
        let shutdown = self.shutdown.clone();
        self.spawn(what, crate::http::serve(listener, router, tls, shutdown));
    }

    /// Loads the serving certificate and key, and keeps them reloaded when the files change.
    pub fn tls(&mut self, cert: &Path, key: &Path) -> Result<ReloadingTls, E> {
        let tls = ReloadingTls::load(cert, key)?;
        let reloader = tls.spawn_reloader(TLS_RELOAD_INTERVAL, self.shutdown.clone());
        let service = self.name;
        self.spawn("certificate reloader", async move {
            reloader.await.map_err(|join| Error::Panicked {
                service,
                task: "certificate reloader",
                message: join.to_string(),
            })
        });
        Ok(tls)
    }

    /// Takes part in the election of `lease`. The receiver says whether this replica leads
    /// now. The Lease is released once every task of the service has stopped.
    pub fn elect(&mut self, client: &kube::Client, lease: LeaseConfig) -> watch::Receiver<bool> {
        let stop = CancellationToken::new();
        let (leading, task) = leader::spawn(client.clone(), lease, stop.clone());
        self.elections.push(Election {
            _guard: stop.clone().drop_guard(),
            stop,
            task,
        });
        leading
    }

    /// Runs `work` while this replica holds `lease` (always, without one): started with a
    /// token of its own when leadership is gained, told to stop (and given [`DRAIN_TIMEOUT`]
    /// to finish) when it is lost or the service stops, restarted after [`RESTART_DELAY`]
    /// when it ends on its own. The receiver says whether this replica leads.
    pub fn run_while_leading<F, Fut>(
        &mut self,
        what: &'static str,
        client: &kube::Client,
        lease: Option<LeaseConfig>,
        work: F,
    ) -> watch::Receiver<bool>
    where
        F: FnMut(CancellationToken) -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let shutdown = self.shutdown.clone();
        let (leading, keep) = match lease {
            Some(lease) => (self.elect(client, lease), None),
            None => {
                let (tx, rx) = watch::channel(true);
                (rx, Some(tx))
            }
        };
        let flag = leading.clone();
        self.spawn(what, async move {
            lead(what, flag, work, shutdown).await;
            drop(keep);
            Ok::<(), Error>(())
        });
        leading
    }

    /// Every task is started: the service runs until [`Tasks::wait`] sees it stop.
    pub fn into_tasks(self) -> Tasks<E> {
        let Service {
            name,
            shutdown,
            readiness: _,
            tasks,
            elections,
        } = self;
        Tasks {
            name,
            shutdown,
            tasks,
            elections,
        }
    }
}

/// The running tasks of a started service.
pub struct Tasks<E> {
    name: &'static str,
    shutdown: CancellationToken,
    tasks: JoinSet<Outcome<E>>,
    elections: Vec<Election>,
}

impl<E> Tasks<E>
where
    E: From<Error> + std::error::Error + Send + 'static,
{
    /// Stops the service (as its shutdown token would) without waiting.
    pub fn stop(&self) {
        self.shutdown.cancel();
    }

    /// Ends every task at once, as a crash (SIGKILL) would: nothing drains, no Lease is
    /// released — another replica takes over only once it expires. For fault tests.
    pub fn abort(mut self) {
        self.tasks.abort_all();
        for election in self.elections.drain(..) {
            election.task.abort();
        }
        tracing::warn!(service = self.name, "aborted");
    }

    /// Waits until every task has stopped, then releases the service's Leases. The first
    /// task to fail (error or panic) stops the others, and its error is returned.
    pub async fn wait(mut self) -> std::result::Result<(), E> {
        let mut first: Option<E> = None;
        while let Some(joined) = self.tasks.join_next().await {
            let (task, result) = match joined {
                Ok(outcome) => outcome,
                // Tasks catch their own panics; only an abort (runtime shutting down) lands here.
                Err(join) => (
                    "a task",
                    Err(E::from(Error::Panicked {
                        service: self.name,
                        task: "a task",
                        message: join.to_string(),
                    })),
                ),
            };
            let Err(err) = result else { continue };
            if first.is_none() {
                tracing::error!(service = self.name, task, error = %chain(&err), "a task failed; stopping the service");
                self.shutdown.cancel();
                first = Some(err);
            } else {
                tracing::warn!(service = self.name, task, error = %chain(&err), "another task failed while stopping");
            }
        }
        for election in self.elections.drain(..) {
            election.stop.cancel();
            if let Err(join) = election.task.await {
                tracing::warn!(service = self.name, error = %join, "the leader election ended abnormally");
            }
        }
        tracing::info!(service = self.name, "stopped");
        first.map_or(Ok(()), Err)
    }
}

/// Runs `work` whenever `leading` is true, until `shutdown`.
async fn lead<F, Fut>(
    what: &'static str,
    mut leading: watch::Receiver<bool>,
    mut work: F,
    shutdown: CancellationToken,
) where
    F: FnMut(CancellationToken) -> Fut,
    Fut: Future<Output = ()>,
{
    loop {
        // biased: once shutdown is cancelled, never start the work again.
        tokio::select! {
            biased;
            _ = shutdown.cancelled() => return,
            ok = until(&mut leading, true) => if !ok { return },
        }
        tracing::info!(work = what, "leading: starting");
        let stop = shutdown.child_token();
        let run = work(stop.clone());
        tokio::pin!(run);
        tokio::select! {
            biased;
            _ = shutdown.cancelled() => {
                drain(what, run).await;
                return;
            }
            () = &mut run => {
                if shutdown.is_cancelled() {
                    return;
                }
                tracing::warn!(work = what, "ended on its own; restarting");
                tokio::time::sleep(RESTART_DELAY).await;
            }
            _ = until(&mut leading, false) => {
                tracing::info!(work = what, "lost leadership: stopping");
                stop.cancel();
                drain(what, run).await;
            }
        }
    }
}

/// Lets stopped work finish within [`DRAIN_TIMEOUT`]: a controller whose caches never synced
/// does not finish by itself.
async fn drain(what: &'static str, work: impl Future<Output = ()>) {
    if tokio::time::timeout(DRAIN_TIMEOUT, work).await.is_err() {
        tracing::warn!(work = what, "did not stop in time; dropping it");
    }
}

/// Waits until the flag equals `want`; false when the flag's sender is gone.
async fn until(flag: &mut watch::Receiver<bool>, want: bool) -> bool {
    flag.wait_for(|v| *v == want).await.is_ok()
}

fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = panic.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = panic.downcast_ref::<String>() {
        s.clone()
    } else {
        "a panic without a message".to_owned()
    }
}

#[cfg(test)]
mod tests;
