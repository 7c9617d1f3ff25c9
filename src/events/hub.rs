//! The live event hub: one task per gateway tails the store's events and fans them out, as the same
//! CloudEvents documents MQTT carries, to the gateway's SSE and WebSocket streams
//! (`src/http/events.rs`); [`Subscription`] joins the history (replay) to the live tail.
//!
//! **Tailing.** The hub reads `events_page` after its cursor whenever this process records an event
//! (the store's watch, at once) and otherwise every [`POLL`], which is how events committed by other
//! gateways sharing a Redis namespace arrive. Polling rather than `XREAD BLOCK`: it works the same
//! on both backends, needs no connection parked per gateway (Redis Cluster and Sentinel links
//! included), and costs one small read per gateway four times a second; local events, the common
//! case, are not delayed by it.
//!
//! **Fan-out.** One `tokio::sync::broadcast` ring of [`LIVE_BUFFER`] events is shared by every
//! stream: memory is bounded by the ring, not by the number or speed of subscribers. A subscriber
//! that falls more than the ring behind gets `Lagged` and is disconnected; it resumes from the
//! history with its last id, losing nothing (or is told with 410 that the history no longer
//! reaches back that far).
//!
//! **The seam.** A subscriber takes the broadcast receiver and the hub's cursor under the same lock
//! the hub holds while it sends, so the receiver gets exactly the events after that cursor. Events
//! from the resume point up to the cursor come from the history; every event is passed on once,
//! in `seq` order: whatever is not newer than the last one handled is passed over.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use storage_backend::{Event, EventPage, Store, StoreError};
use tokio::sync::{broadcast, OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;

use super::cloudevent::{announce, payload};
use super::names::TempNames;
use crate::mqtt::Principal;

/// How often the hub looks for events other gateways recorded.
pub const POLL: Duration = Duration::from_millis(250);
/// Events the shared live ring holds; a stream further behind than this is disconnected.
pub const LIVE_BUFFER: usize = 1024;
/// Events read from the store at once (tailing and replay).
const PAGE: usize = 256;

/// One announced event, rendered once for every subscriber.
#[derive(Debug)]
pub struct Rendered {
    pub seq: u64,
    /// The store path the event is announced under (who may see it is decided by this path).
    pub path: String,
    /// The CloudEvents JSON document, byte for byte what MQTT publishes.
    pub json: Bytes,
    /// The same as one Server-Sent Events message (`id:` the seq, `data:` the document).
    pub sse: Bytes,
}

#[derive(Clone)]
enum Live {
    Event(Arc<Rendered>),
    /// The hub found events it could not read any more (trimmed before it got to them): every
    /// live stream ends, and resuming tells each client what is gone.
    Gap,
}

/// Why a stream or a page cannot start.
#[derive(Debug, thiserror::Error)]
pub enum Refused {
    #[error(
        "{0} live event streams are open on this gateway (events.max_streams); try again later"
    )]
    Busy(u32),
    #[error("events after {after} are no longer in the history; the oldest kept is {oldest_seq} (events.history_max, events.history_age)")]
    Gone { after: u64, oldest_seq: u64 },
    #[error("event {after} was never recorded: the newest is {last_seq}")]
    Future { after: u64, last_seq: u64 },
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Why a running stream ended.
#[derive(Debug, thiserror::Error)]
pub enum Ended {
    #[error("the stream fell too far behind the live events; resume with the last id")]
    Lagged,
    #[error("events after {0} are no longer in the history")]
    Gone(u64),
    #[error("the event hub stopped")]
    Closed,
    #[error(transparent)]
    Store(#[from] StoreError),
}

pub struct EventHub {
    store: Store,
    temp: TempNames,
    source: String,
    /// The last event handed to the ring (every event, announced or not), and the lock under
    /// which the hub sends and subscribers join.
    cursor: Mutex<u64>,
    tx: broadcast::Sender<Live>,
    streams: Arc<Semaphore>,
    max_streams: u32,
}

impl EventHub {
    /// A hub whose live tail starts after the newest event recorded now.
    pub async fn open(
        store: Store,
        temp: TempNames,
        source: String,
        max_streams: u32,
    ) -> Result<Arc<EventHub>, StoreError> {
        let last = store.outbox_status().await?.last_seq;
        let (tx, _) = broadcast::channel(LIVE_BUFFER);
        Ok(Arc::new(EventHub {
            store,
            temp,
            source,
            cursor: Mutex::new(last),
            tx,
            streams: Arc::new(Semaphore::new(max_streams as usize)),
            max_streams,
        }))
    }

    /// `events.temp_patterns`, for listings that mark temporary names as the events treat them.
    pub fn temp_names(&self) -> &TempNames {
        &self.temp
    }

    /// The event as subscribers see it, after the `[events]` rules; `None` when not announced.
    pub fn render(&self, event: &Event) -> Option<Rendered> {
        let a = announce(event, &self.temp)?;
        let json = payload(event, &a, &self.source);
        let mut sse = Vec::with_capacity(json.len() + 32);
        sse.extend_from_slice(format!("id: {}\ndata: ", event.seq).as_bytes());
        sse.extend_from_slice(&json);
        sse.extend_from_slice(b"\n\n");
        Some(Rendered {
            seq: event.seq,
            path: a.path,
            json: Bytes::from(json),
            sse: Bytes::from(sse),
        })
    }

    /// Streams open now.
    pub fn open_streams(&self) -> usize {
        self.max_streams as usize - self.streams.available_permits()
    }

    /// Tails the store until `shutdown`.
    pub async fn run(self: Arc<Self>, shutdown: CancellationToken) {
        let mut local = self.store.watch_events();
        let mut cursor = *self.cursor.lock().unwrap();
        let mut read = true;
        loop {
            if read && self.forward(&mut cursor).await {
                continue;
            }
            read = true;
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = local.changed() => {
                    // Nobody is watching: follow this gateway's commits without reading them back
                    // (two Redis commands per change otherwise). A stream that starts later gets
                    // everything up to the cursor from the store (`subscribe`); the check is made
                    // under the cursor's lock, which `subscribe` takes to join.
                    let latest = *local.borrow_and_update();
                    let mut at = self.cursor.lock().unwrap();
                    if self.tx.receiver_count() == 0 && latest > *at {
                        *at = latest;
                        cursor = latest;
                        read = false;
                    }
                }
                _ = tokio::time::sleep(POLL) => {}
            }
        }
    }

    /// Reads the next page after `cursor` and hands it to the live streams, moving `cursor` (and
    /// the shared cursor) on; true when the page was full (more may wait).
    async fn forward(&self, cursor: &mut u64) -> bool {
        match self.store.events_page(*cursor, PAGE).await {
            Ok(EventPage::Events { events, .. }) => {
                let full = events.len() == PAGE;
                for event in events {
                    let rendered = self.render(&event).map(Arc::new);
                    let mut at = self.cursor.lock().unwrap();
                    if let Some(r) = rendered {
                        // No receiver is fine: nobody is watching.
                        let _ = self.tx.send(Live::Event(r));
                    }
                    *at = event.seq;
                    *cursor = event.seq;
                }
                full
            }
            Ok(EventPage::Gone { oldest_seq, .. }) => {
                tracing::warn!(
                    after = *cursor,
                    oldest_seq,
                    "live events: the history was trimmed before the hub read it \
                     (events.history_max or events.history_age too small); live streams restart"
                );
                let mut at = self.cursor.lock().unwrap();
                let _ = self.tx.send(Live::Gap);
                *cursor = oldest_seq - 1;
                *at = *cursor;
                false
            }
            Err(e) => {
                tracing::warn!(error = %e, "live events: cannot read the store; retrying");
                false
            }
        }
    }

    /// Starts a stream for `viewer`: replay after `after` (when given), then live. Refused before
    /// anything is streamed when no slot is free or the history does not reach back to `after`.
    pub async fn subscribe(
        self: &Arc<Self>,
        viewer: Principal,
        after: Option<u64>,
    ) -> Result<Subscription, Refused> {
        let slot = self
            .streams
            .clone()
            .try_acquire_owned()
            .map_err(|_| Refused::Busy(self.max_streams))?;
        let (rx, live_from) = {
            let at = self.cursor.lock().unwrap();
            (self.tx.subscribe(), *at)
        };
        let mut sub = Subscription {
            hub: self.clone(),
            rx,
            viewer,
            position: after.unwrap_or(live_from),
            live_from,
            pending: VecDeque::new(),
            _slot: slot,
        };
        if let Some(after) = after {
            // The first page now, so a resume point the history lost is a 410, not a cut stream.
            match self.store.events_page(after, PAGE).await? {
                EventPage::Gone { oldest_seq, .. } => {
                    return Err(Refused::Gone { after, oldest_seq })
                }
                EventPage::Events { events, last_seq } => {
                    if after > last_seq.max(live_from) {
                        return Err(Refused::Future { after, last_seq });
                    }
                    sub.take(events);
                }
            }
        }
        Ok(sub)
    }

    /// One page of replay for `viewer`: the visible events among the next `limit` after `after`,
    /// where to continue, and the newest seq.
    pub async fn page(
        &self,
        viewer: &Principal,
        after: u64,
        limit: usize,
    ) -> Result<(Vec<Rendered>, u64, u64), Refused> {
        match self.store.events_page(after, limit).await? {
            EventPage::Gone { oldest_seq, .. } => Err(Refused::Gone { after, oldest_seq }),
            EventPage::Events { events, last_seq } => {
                if after > last_seq {
                    return Err(Refused::Future { after, last_seq });
                }
                let next = events.last().map_or(after, |e| e.seq);
                let shown = events
                    .iter()
                    .filter_map(|e| self.render(e))
                    .filter(|r| viewer.sees_event(&r.path))
                    .collect();
                Ok((shown, next, last_seq))
            }
        }
    }

    /// The oldest event the history still holds (for a first page without `after`).
    pub async fn oldest(&self) -> Result<u64, StoreError> {
        Ok(match self.store.events_page(0, 1).await? {
            EventPage::Gone { oldest_seq, .. } => oldest_seq,
            EventPage::Events { .. } => 1,
        })
    }
}

/// One client's stream: the history after its resume point, then the live events, each once and
/// in order, only those it may see. Holds an `events.max_streams` slot while it lives.
pub struct Subscription {
    hub: Arc<EventHub>,
    rx: broadcast::Receiver<Live>,
    viewer: Principal,
    /// Every event up to here was handled (sent or not visible).
    position: u64,
    /// The hub's cursor when this stream joined: the live ring has everything after it.
    live_from: u64,
    /// Replayed events not handed out yet (at most one page).
    pending: VecDeque<Arc<Rendered>>,
    _slot: OwnedSemaphorePermit,
}

impl Subscription {
    fn take(&mut self, events: Vec<Event>) {
        for event in events {
            if event.seq <= self.position {
                continue;
            }
            self.position = event.seq;
            if let Some(r) = self.hub.render(&event) {
                if self.viewer.sees_event(&r.path) {
                    self.pending.push_back(Arc::new(r));
                }
            }
        }
    }

    /// The next event for this client. Cancel-safe: dropping the future loses nothing (the stream
    /// state changes only once an event is in hand), so callers may `select!` on it.
    pub async fn next(&mut self) -> Result<Arc<Rendered>, Ended> {
        loop {
            if let Some(r) = self.pending.pop_front() {
                return Ok(r);
            }
            if self.position < self.live_from {
                match self.hub.store.events_page(self.position, PAGE).await? {
                    EventPage::Gone { oldest_seq, .. } => return Err(Ended::Gone(oldest_seq)),
                    EventPage::Events { events, .. } if events.is_empty() => {
                        // Cannot happen (the hub read these); never spin on it.
                        self.position = self.live_from;
                    }
                    EventPage::Events { events, .. } => self.take(events),
                }
                continue;
            }
            match self.rx.recv().await {
                Ok(Live::Event(r)) => {
                    if r.seq <= self.position {
                        continue;
                    }
                    self.position = r.seq;
                    if self.viewer.sees_event(&r.path) {
                        return Ok(r);
                    }
                }
                Ok(Live::Gap) | Err(broadcast::error::RecvError::Lagged(_)) => {
                    return Err(Ended::Lagged)
                }
                Err(broadcast::error::RecvError::Closed) => return Err(Ended::Closed),
            }
        }
    }
}
