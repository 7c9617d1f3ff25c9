//! What a store, its readers and its write sessions share: the backend, the configuration and the
//! background tasks. Its own module so that `read` and `write` depend on it and not on `store`,
//! which depends on them.

use std::sync::atomic::{AtomicBool, Ordering};

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::backends::Backend;
use crate::config::StoreConfig;
use crate::error::{Reason, Result};
use crate::outbox::EventOrigin;
use crate::types::{now_ms, ChangeContext};

pub(crate) struct Inner {
    pub backend: Backend,
    pub config: StoreConfig,
    /// Chunk size for new files (the embedded backend trims it to fit redb's pages).
    pub chunk_size: u64,
    pub tasks: TaskTracker,
    pub shutdown: CancellationToken,
    /// Set by [`Store::simulate_crash`](crate::Store::simulate_crash): nothing is cleaned up any more, as after `kill -9`.
    pub crashed: AtomicBool,
    /// The newest event recorded through this process (events of other gateways do not show here).
    pub last_seq: tokio::sync::watch::Sender<u64>,
}

impl Inner {
    /// Like `note`, and tells anyone watching for new events (the publisher) about the change.
    pub fn note_seq(&self, result: Result<u64>) -> Result<u64> {
        let result = self.note(result);
        if let Ok(seq) = &result {
            self.recorded(*seq);
        }
        result
    }

    pub fn recorded(&self, seq: u64) {
        self.last_seq.send_if_modified(|last| {
            let newer = seq > *last;
            if newer {
                *last = seq;
            }
            newer
        });
    }

    /// Makes a full outbox loud: it means events are not being delivered and changes are refused.
    pub fn note<T>(&self, result: Result<T>) -> Result<T> {
        if let Err(e) = &result {
            if e.reason() == Some(Reason::OutboxFull) {
                tracing::error!(error = %e, limit = self.config.outbox_limit, "refusing a change: the event outbox is full");
            }
        }
        result
    }

    /// Runs `fut` in the background, owned by the store's task tracker, if a runtime is still there.
    pub fn spawn_cleanup(&self, fut: impl std::future::Future<Output = ()> + Send + 'static) {
        if self.crashed.load(Ordering::SeqCst) {
            return;
        }
        if let Ok(handle) = tokio::runtime::Handle::try_current() {
            self.tasks.spawn_on(fut, &handle);
        }
    }
}

pub(crate) fn origin(ctx: &ChangeContext) -> EventOrigin {
    EventOrigin::new(ctx, now_ms())
}
