//! The broker's sessions and the routing of messages to them.
//!
//! A session is keyed by (user, client id), so nobody can take over another user's session by
//! reusing its client id. It holds the subscriptions and one bounded queue of messages waiting to
//! be delivered, whether its client is connected or not: a persistent session (3.1.1
//! `clean_session = false`, MQTT 5 session expiry > 0) keeps collecting QoS 1 messages while its
//! client is away, up to `mqtt.session_queue` messages, for at most `mqtt.session_expiry`.
//!
//! Memory is bounded three ways: messages per session, bytes per session, and bytes over all
//! sessions. A message that does not fit is dropped for that session (counted, and logged once
//! per session), never for the others.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::sync::Notify;

use super::acl::{filter_matches, Principal, Rules};

/// Bytes queued for one session at most (sent and unacknowledged ones included).
pub const SESSION_QUEUE_BYTES: usize = 32 << 20;
/// Subscriptions (filters) one session may hold.
pub const MAX_SUBSCRIPTIONS: usize = 64;
/// Persistent sessions one user may keep; a new one past it ends that user's oldest offline one.
pub const PERSISTENT_PER_USER: usize = 16;
/// Bytes queued over all sessions at most.
pub const TOTAL_QUEUE_BYTES: usize = 256 << 20;

/// One message to route: an event, or a reply to a command.
#[derive(Debug)]
pub struct Message {
    pub topic: String,
    pub payload: Bytes,
    pub qos: u8,
    pub content_type: Option<String>,
    pub correlation_data: Option<Bytes>,
    pub user_properties: Vec<(String, String)>,
}

impl Message {
    /// Bytes it holds (and an upper bound of its encoded size on the wire).
    pub fn cost(&self) -> usize {
        self.topic.len()
            + self.payload.len()
            + self.content_type.as_ref().map_or(0, |c| c.len() + 3)
            + self.correlation_data.as_ref().map_or(0, |c| c.len() + 3)
            + self
                .user_properties
                .iter()
                .map(|(k, v)| k.len() + v.len() + 5)
                .sum::<usize>()
            + 64
    }
}

/// A message queued for one session, with the QoS it is delivered at.
#[derive(Debug, Clone)]
pub struct Queued {
    pub message: Arc<Message>,
    pub qos: u8,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SessionKey {
    pub user: String,
    pub client_id: String,
}

/// One client's session.
pub struct Session {
    pub key: SessionKey,
    pub principal: Principal,
    inner: Mutex<Inner>,
}

impl Inner {
    fn owned_by(&self, conn: u64) -> bool {
        self.owner.as_ref().is_some_and(|(c, _)| *c == conn)
    }

    /// A message of `cost` bytes left the session (delivered at QoS 0, acknowledged, dropped).
    fn release(&mut self, cost: usize, router: &Router) {
        self.queued_bytes -= cost;
        router.queued_bytes.fetch_sub(cost, Ordering::Relaxed);
    }
}

struct Inner {
    subscriptions: BTreeMap<String, u8>,
    queue: VecDeque<Queued>,
    queued_bytes: usize,
    /// QoS 1 messages sent and not yet acknowledged, by packet id: sent again (DUP) when a
    /// persistent session's client comes back.
    unacked: BTreeMap<u16, Queued>,
    next_pkid: u16,
    /// The connection that owns the session now, and how to wake it.
    owner: Option<(u64, Arc<Notify>)>,
    /// How long the session outlives its connection (zero: it ends with it).
    expiry: Duration,
    offline_since: Option<Instant>,
    dropped: u64,
}

impl Session {
    /// Subscribes, for connection `conn` if it still owns the session; `false` when the session
    /// already holds [`MAX_SUBSCRIPTIONS`] other filters.
    pub fn subscribe(&self, conn: u64, filter: &str, qos: u8) -> bool {
        let mut inner = self.lock();
        if !inner.owned_by(conn) {
            return true;
        }
        if inner.subscriptions.len() >= MAX_SUBSCRIPTIONS
            && !inner.subscriptions.contains_key(filter)
        {
            return false;
        }
        inner.subscriptions.insert(filter.to_string(), qos);
        true
    }

    pub fn unsubscribe(&self, conn: u64, filter: &str) {
        let mut inner = self.lock();
        if inner.owned_by(conn) {
            inner.subscriptions.remove(filter);
        }
    }

    /// Takes the next message for connection `conn` to send, if it still owns the session and
    /// the client has room for it (`in_flight` < `window`). QoS 1 messages get a packet id and are
    /// kept — and counted against the queue limits — until acknowledged. Messages larger than
    /// the client's `max_packet` (MQTT 5) are dropped for it, as the spec says.
    pub fn next_to_send(
        &self,
        conn: u64,
        window: usize,
        max_packet: Option<usize>,
        router: &Router,
    ) -> Option<(Queued, u16)> {
        let mut inner = self.lock();
        if !inner.owned_by(conn) || inner.unacked.len() >= window {
            return None;
        }
        let q = loop {
            let q = inner.queue.pop_front()?;
            if max_packet.is_some_and(|max| q.message.cost() > max) {
                inner.release(q.message.cost(), router);
                inner.dropped += 1;
                router.dropped.fetch_add(1, Ordering::Relaxed);
                continue;
            }
            break q;
        };
        if q.qos == 0 {
            inner.release(q.message.cost(), router);
        }
        let mut pkid = 0;
        if q.qos > 0 {
            // Packet ids 1..=65535, passing over the ids still in flight.
            loop {
                inner.next_pkid = inner.next_pkid.wrapping_add(1).max(1);
                if !inner.unacked.contains_key(&inner.next_pkid) {
                    break;
                }
            }
            pkid = inner.next_pkid;
            inner.unacked.insert(pkid, q.clone());
        }
        Some((q, pkid))
    }

    /// The client acknowledged a QoS 1 message.
    pub fn acked(&self, pkid: u16, router: &Router) {
        let mut inner = self.lock();
        if let Some(q) = inner.unacked.remove(&pkid) {
            inner.release(q.message.cost(), router);
        }
    }

    /// Messages sent before and not acknowledged (to send again, DUP set, after a reconnect).
    pub fn unacked(&self) -> Vec<(u16, Queued)> {
        self.lock()
            .unacked
            .iter()
            .map(|(k, v)| (*k, v.clone()))
            .collect()
    }

    /// Whether connection `conn` still owns this session (a newer connection may have taken it).
    pub fn owned_by(&self, conn: u64) -> bool {
        self.lock().owned_by(conn)
    }

    pub fn set_expiry(&self, conn: u64, expiry: Duration) {
        let mut inner = self.lock();
        if inner.owned_by(conn) {
            inner.expiry = expiry;
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A panic while holding the lock cannot leave the session half-changed in a way that
        // matters more than losing it; keep serving.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Queues `m` if it matches a subscription; wakes the owning connection.
    fn offer(&self, m: &Arc<Message>, rules: &Rules, router: &Router) {
        if !rules.may_receive(&self.principal, &m.topic) {
            return;
        }
        let mut inner = self.lock();
        let Some(granted) = inner
            .subscriptions
            .iter()
            .filter(|(f, _)| filter_matches(&m.topic, f))
            .map(|(_, q)| *q)
            .max()
        else {
            return;
        };
        let qos = granted.min(m.qos);
        // An offline session keeps only what it subscribed to at QoS 1 (MQTT: QoS 0 messages
        // need not be kept for a disconnected client).
        if inner.owner.is_none() && qos == 0 {
            return;
        }
        let cost = m.cost();
        let total = router.queued_bytes.load(Ordering::Relaxed);
        if inner.queue.len() >= router.max_queue
            || inner.queued_bytes + cost > SESSION_QUEUE_BYTES
            || total + cost > TOTAL_QUEUE_BYTES
        {
            inner.dropped += 1;
            router.dropped.fetch_add(1, Ordering::Relaxed);
            if inner.dropped == 1 || inner.dropped.is_power_of_two() {
                tracing::warn!(
                    user = self.key.user,
                    client = self.key.client_id,
                    dropped = inner.dropped,
                    "mqtt: a subscriber's queue is full (it reads too slowly or stays away); \
                     messages for it are dropped (replay them from the event history)"
                );
            }
            return;
        }
        inner.queued_bytes += cost;
        router.queued_bytes.fetch_add(cost, Ordering::Relaxed);
        inner.queue.push_back(Queued {
            message: m.clone(),
            qos,
        });
        if let Some((_, notify)) = &inner.owner {
            notify.notify_one();
        }
    }
}

/// All sessions of the broker.
pub struct Router {
    sessions: Mutex<HashMap<SessionKey, Arc<Session>>>,
    rules: Rules,
    max_queue: usize,
    max_sessions: usize,
    max_expiry: Duration,
    queued_bytes: AtomicUsize,
    dropped: AtomicU64,
    next_conn: AtomicU64,
}

/// What [`Router::attach`] gives a new connection.
pub struct Attached {
    pub session: Arc<Session>,
    pub conn: u64,
    pub notify: Arc<Notify>,
    pub present: bool,
}

impl Router {
    pub fn new(rules: Rules, max_queue: usize, max_expiry: Duration, max_sessions: usize) -> Self {
        Router {
            sessions: Mutex::new(HashMap::new()),
            rules,
            max_queue: max_queue.max(1),
            max_sessions,
            max_expiry,
            queued_bytes: AtomicUsize::new(0),
            dropped: AtomicU64::new(0),
            next_conn: AtomicU64::new(1),
        }
    }

    pub fn rules(&self) -> &Rules {
        &self.rules
    }

    /// The longest a session may outlive its connection (`mqtt.session_expiry`).
    pub fn max_expiry(&self) -> Duration {
        self.max_expiry
    }

    fn map(&self) -> std::sync::MutexGuard<'_, HashMap<SessionKey, Arc<Session>>> {
        self.sessions.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Gives a connection its session: the stored one (unless `clean`), or a new one. A
    /// connection that owned it before is told to go (session taken over). `None`: too many
    /// sessions.
    pub fn attach(
        &self,
        key: SessionKey,
        principal: Principal,
        clean: bool,
        expiry: Duration,
    ) -> Option<Attached> {
        let conn = self.next_conn.fetch_add(1, Ordering::Relaxed);
        let notify = Arc::new(Notify::new());
        let mut map = self.map();
        let existing = map.get(&key).cloned();
        let (session, present) = match existing {
            Some(s) if !clean => (s, true),
            old => {
                let replacing = old.is_some();
                if let Some(old) = old {
                    self.discard(&old);
                } else if !expiry.is_zero() {
                    // A user's persistent sessions are capped: the oldest one away goes first,
                    // so nobody can hold the whole pool with sessions of made-up client ids.
                    let mut away: Vec<(Instant, SessionKey)> = map
                        .iter()
                        .filter(|(k, _)| k.user == key.user)
                        .filter_map(|(k, s)| s.lock().offline_since.map(|t| (t, k.clone())))
                        .collect();
                    if away.len() >= PERSISTENT_PER_USER {
                        away.sort();
                        if let Some(s) = map.remove(&away[0].1) {
                            self.discard(&s);
                        }
                    }
                }
                // The gateway's own publisher is never refused for lack of room.
                if !replacing && map.len() >= self.max_sessions && principal != Principal::Gateway {
                    return None;
                }
                let s = Arc::new(Session {
                    key: key.clone(),
                    principal,
                    inner: Mutex::new(Inner {
                        subscriptions: BTreeMap::new(),
                        queue: VecDeque::new(),
                        queued_bytes: 0,
                        unacked: BTreeMap::new(),
                        next_pkid: 0,
                        owner: None,
                        expiry,
                        offline_since: None,
                        dropped: 0,
                    }),
                });
                map.insert(key, s.clone());
                (s, false)
            }
        };
        {
            let mut inner = session.lock();
            if let Some((_, previous)) = inner.owner.take() {
                previous.notify_one();
            }
            inner.owner = Some((conn, notify.clone()));
            inner.offline_since = None;
            inner.expiry = expiry;
        }
        Some(Attached {
            session,
            conn,
            notify,
            present,
        })
    }

    /// A connection ended: its session stays (persistent) or goes.
    pub fn detach(&self, session: &Arc<Session>, conn: u64) {
        let mut map = self.map();
        let mut inner = session.lock();
        if inner.owner.as_ref().is_none_or(|(c, _)| *c != conn) {
            return; // taken over: the new connection owns it now
        }
        inner.owner = None;
        if inner.expiry.is_zero() {
            drop(inner);
            if map
                .get(&session.key)
                .is_some_and(|s| Arc::ptr_eq(s, session))
            {
                map.remove(&session.key);
            }
            self.discard(session);
        } else {
            inner.offline_since = Some(Instant::now());
            // QoS 0 messages are not kept for an offline client.
            let gone: usize = inner
                .queue
                .iter()
                .filter(|q| q.qos == 0)
                .map(|q| q.message.cost())
                .sum();
            inner.queue.retain(|q| q.qos > 0);
            inner.release(gone, self);
        }
    }

    /// Frees what a session held; a connection still on it is told to go.
    fn discard(&self, session: &Session) {
        let mut inner = session.lock();
        if let Some((_, owner)) = inner.owner.take() {
            owner.notify_one();
        }
        self.queued_bytes
            .fetch_sub(inner.queued_bytes, Ordering::Relaxed);
        inner.queued_bytes = 0;
        inner.queue.clear();
        inner.unacked.clear();
        inner.subscriptions.clear();
    }

    /// Offers `m` to every session.
    pub fn publish(&self, m: Message) {
        let m = Arc::new(m);
        let sessions: Vec<Arc<Session>> = self.map().values().cloned().collect();
        for s in sessions {
            s.offer(&m, &self.rules, self);
        }
    }

    /// Ends sessions whose client has been away longer than their expiry.
    pub fn expire(&self) {
        let now = Instant::now();
        let mut map = self.map();
        let gone: Vec<SessionKey> = map
            .iter()
            .filter(|(_, s)| {
                let inner = s.lock();
                inner
                    .offline_since
                    .is_some_and(|t| now.duration_since(t) >= inner.expiry)
            })
            .map(|(k, _)| k.clone())
            .collect();
        for k in gone {
            if let Some(s) = map.remove(&k) {
                self.discard(&s);
            }
        }
    }

    /// (sessions, bytes queued, messages dropped so far)
    pub fn stats(&self) -> (usize, usize, u64) {
        (
            self.map().len(),
            self.queued_bytes.load(Ordering::Relaxed),
            self.dropped.load(Ordering::Relaxed),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn alice() -> Principal {
        Principal::User {
            name: "alice".into(),
            home: "/home/alice".into(),
            can_list: true,
        }
    }

    fn key(id: &str) -> SessionKey {
        SessionKey {
            user: "alice".into(),
            client_id: id.into(),
        }
    }

    fn event(path: &str) -> Message {
        Message {
            topic: format!("filegate/events{path}"),
            payload: Bytes::from_static(b"{}"),
            qos: 1,
            content_type: None,
            correlation_data: None,
            user_properties: vec![],
        }
    }

    #[test]
    fn a_persistent_session_collects_while_away_and_is_bounded() {
        let r = Router::new(
            Rules::new("filegate", false),
            3,
            Duration::from_secs(60),
            10,
        );
        let a = r
            .attach(key("c"), alice(), false, Duration::from_secs(60))
            .unwrap();
        assert!(a.session.subscribe(a.conn, "filegate/events/#", 1));
        r.detach(&a.session, a.conn);
        for i in 0..5 {
            r.publish(event(&format!("/home/alice/{i}")));
        }
        r.publish(event("/home/bob/x"));
        let b = r
            .attach(key("c"), alice(), false, Duration::from_secs(60))
            .unwrap();
        assert!(b.present);
        let mut got = vec![];
        while let Some((q, pkid)) = b.session.next_to_send(b.conn, 100, None, &r) {
            assert!(pkid > 0);
            got.push(q.message.topic.clone());
        }
        assert_eq!(
            got,
            ["/home/alice/0", "/home/alice/1", "/home/alice/2"]
                .map(|p| format!("filegate/events{p}"))
        );
        assert_eq!(r.stats().2, 2);
        // A clean start forgets it all.
        let c = r.attach(key("c"), alice(), true, Duration::ZERO).unwrap();
        assert!(!c.present);
        assert!(c.session.unacked().is_empty());
        assert!(
            !b.session.owned_by(b.conn),
            "the old connection was told to go"
        );
        r.detach(&c.session, c.conn);
        assert_eq!(r.stats().0, 0);
        assert_eq!(r.stats().1, 0);
    }

    #[test]
    fn a_taken_over_session_is_not_detached_by_its_old_connection() {
        let r = Router::new(Rules::new("filegate", false), 10, Duration::ZERO, 10);
        let a = r.attach(key("c"), alice(), false, Duration::ZERO).unwrap();
        let b = r.attach(key("c"), alice(), false, Duration::ZERO).unwrap();
        assert!(!a.session.owned_by(a.conn));
        r.detach(&a.session, a.conn);
        assert!(b.session.owned_by(b.conn));
        assert_eq!(r.stats().0, 1);
    }

    #[test]
    fn unacknowledged_messages_count_until_acknowledged() {
        let r = Router::new(Rules::new("filegate", false), 10, Duration::ZERO, 10);
        let a = r.attach(key("c"), alice(), true, Duration::ZERO).unwrap();
        assert!(a.session.subscribe(a.conn, "filegate/events/#", 1));
        r.publish(event("/home/alice/x"));
        let held = r.stats().1;
        assert!(held > 0);
        let (_, pkid) = a.session.next_to_send(a.conn, 10, None, &r).unwrap();
        assert_eq!(r.stats().1, held, "in flight, still counted");
        a.session.acked(pkid, &r);
        assert_eq!(r.stats().1, 0);
        // Too big for the client: dropped for it, and nothing stays counted.
        r.publish(event("/home/alice/y"));
        assert!(a.session.next_to_send(a.conn, 10, Some(10), &r).is_none());
        assert_eq!(r.stats().1, 0);
    }

    #[test]
    fn subscriptions_and_persistent_sessions_are_capped_per_user() {
        let r = Router::new(
            Rules::new("filegate", false),
            10,
            Duration::from_secs(60),
            1000,
        );
        let a = r.attach(key("c"), alice(), true, Duration::ZERO).unwrap();
        for i in 0..MAX_SUBSCRIPTIONS {
            assert!(a.session.subscribe(a.conn, &format!("a/{i}"), 1));
        }
        assert!(!a.session.subscribe(a.conn, "one/more", 1));
        assert!(
            a.session.subscribe(a.conn, "a/0", 0),
            "a filter it has is replaced"
        );
        for i in 0..PERSISTENT_PER_USER + 5 {
            let s = r
                .attach(
                    key(&format!("p{i}")),
                    alice(),
                    false,
                    Duration::from_secs(60),
                )
                .unwrap();
            r.detach(&s.session, s.conn);
        }
        // The connected session plus at most PERSISTENT_PER_USER kept ones.
        assert!(r.stats().0 <= PERSISTENT_PER_USER + 1, "{}", r.stats().0);
    }

    #[test]
    fn too_many_sessions_are_refused() {
        let r = Router::new(Rules::new("filegate", false), 10, Duration::ZERO, 1);
        let _a = r.attach(key("a"), alice(), true, Duration::ZERO).unwrap();
        assert!(r.attach(key("b"), alice(), true, Duration::ZERO).is_none());
    }
}
