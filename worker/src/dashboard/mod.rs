//! `buildbot dashboard`: a live web view of every job, built from the
//! events exchange alone. As stateless as the workers: it keeps the last
//! jobs in memory (bounded), starts empty, and several can run side by
//! side (each binds its own private queue).
//!
//! - `state`: the bounded view, pure.
//! - `feed`: the AMQP side (events in, queue depths).
//! - `http`: the page, its JSON and the live stream (SSE), with the
//!   security headers and the optional basic auth.

mod feed;
mod http;
mod state;

pub(crate) use http::Access;
pub(crate) use state::Bounds;

use buildbot_protocol::amqp::brokers::Brokers;
use buildbot_protocol::Event;
use feed::QueueDepths;
use state::{Jobs, Update};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;

/// Live updates buffered per page; a page that falls further behind is
/// told to reload.
const UPDATES_BUFFERED: usize = 4096;

/// What `buildbot dashboard` runs with.
pub(crate) struct Settings {
    pub(crate) brokers: Brokers,
    /// The job queue whose depths the overview shows.
    pub(crate) queue: String,
    /// Which events to follow (`#`: every job).
    pub(crate) binding_key: String,
    pub(crate) http_addr: SocketAddr,
    pub(crate) access: Access,
    pub(crate) bounds: Bounds,
}

/// The view and its live updates, shared by the feed and the pages.
#[derive(Clone)]
pub(crate) struct Shared {
    inner: Arc<Inner>,
}

struct Inner {
    jobs: Mutex<Jobs>,
    depths: Mutex<QueueDepths>,
    connected: Mutex<bool>,
    updates: broadcast::Sender<Arc<Update>>,
}

impl Shared {
    fn new(bounds: Bounds, queue: &str) -> Self {
        let (updates, _) = broadcast::channel(UPDATES_BUFFERED);
        Self {
            inner: Arc::new(Inner {
                jobs: Mutex::new(Jobs::new(bounds)),
                depths: Mutex::new(QueueDepths {
                    queue: queue.to_owned(),
                    ..Default::default()
                }),
                connected: Mutex::new(false),
                updates,
            }),
        }
    }

    fn apply(&self, routing_key: &str, event: Event) {
        let Some(update) = lock(&self.inner.jobs).apply(routing_key, event) else {
            return;
        };
        // No page open: nobody to tell.
        let _ = self.inner.updates.send(Arc::new(update));
    }

    fn jobs(&self) -> MutexGuard<'_, Jobs> {
        lock(&self.inner.jobs)
    }

    fn subscribe(&self) -> broadcast::Receiver<Arc<Update>> {
        self.inner.updates.subscribe()
    }

    fn set_depths(&self, depths: QueueDepths) {
        *lock(&self.inner.depths) = depths;
    }

    fn depths(&self) -> QueueDepths {
        let mut depths = lock(&self.inner.depths).clone();
        depths.running = self.jobs().running();
        depths
    }

    fn connected(&self, connected: bool) {
        *lock(&self.inner.connected) = connected;
    }

    fn is_connected(&self) -> bool {
        *lock(&self.inner.connected)
    }
}

/// Each update is one assignment or map operation: a panic elsewhere
/// cannot leave the view half-written, so a poisoned lock is used as is.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}

/// Serves the dashboard until `shutdown`.
pub(crate) async fn run(settings: Settings, shutdown: CancellationToken) -> std::io::Result<()> {
    let shared = Shared::new(settings.bounds, &settings.queue);
    let bound = http::serve(
        settings.http_addr,
        settings.access,
        shared.clone(),
        shutdown.clone(),
    )
    .await?;
    tracing::info!(addr = %bound, brokers = %settings.brokers, "dashboard serving http://{bound}/");
    let follow = feed::Follow {
        queue: settings.queue,
        binding_key: settings.binding_key,
    };
    feed::run(settings.brokers, follow, shared, shutdown).await;
    Ok(())
}
