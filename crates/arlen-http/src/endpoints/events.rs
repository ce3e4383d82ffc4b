//! `GET /clusterz/events`: a `text/event-stream` of membership, quorum and
//! readiness transitions (CONTRACT §7).
//!
//! One task per node ([`Events::run`]) compares each new snapshot with the
//! one before and turns the differences into events; they go to every
//! subscriber through a bounded broadcast channel and into a bounded history,
//! so a client that reconnects with `Last-Event-ID` gets what it missed when
//! the history still holds it (otherwise a `resync` event with the current
//! state). The event id is the snapshot generation; it is written on the last
//! event of a generation only, so a client cut off mid-generation gets the
//! whole generation again. A new subscriber first gets a `snapshot` event;
//! a comment every [`KEEP_ALIVE`] keeps proxies from closing an idle stream.
//! At most [`MAX_SUBSCRIBERS`] at once (beyond: 429 `subscriber_limit`); a
//! subscriber too slow for the channel gets a `resync` and carries on.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use arlen_cluster::{MemberState, Snapshot, SnapshotReader};
use axum::body::Body;
use axum::body::Bytes;
use axum::response::Response;
use http::header::{CACHE_CONTROL, CONTENT_TYPE};
use http::{HeaderValue, StatusCode};
use tokio::sync::{broadcast, OwnedSemaphorePermit, Semaphore};

use super::{plain, timestamp_utc};

/// Subscribers at once.
pub const MAX_SUBSCRIBERS: usize = 64;
/// Events kept for `Last-Event-ID`.
pub const HISTORY: usize = 256;
/// Interval of keep-alive comments.
pub const KEEP_ALIVE: Duration = Duration::from_secs(15);

pub use arlen_wire::events::{Event, EventKind};

#[derive(Debug, Clone)]
enum Message {
    Events(Arc<[Event]>),
    /// The listener closed: streams end so the drain is not held up.
    Closing,
}

/// The node's event source: history, subscribers, and the subscriber bound.
#[derive(Debug)]
pub(crate) struct Events {
    sender: broadcast::Sender<Message>,
    history: Mutex<VecDeque<Event>>,
    subscribers: Arc<Semaphore>,
}

/// The state an event reports, per snapshot.
fn state_of(snapshot: &Snapshot, now: Duration) -> (BTreeMap<String, MemberState>, bool) {
    let mut members = BTreeMap::new();
    for member in &snapshot.membership.members {
        let state = member.state;
        // Of several generations of one node, the live one speaks.
        let entry = members.entry(member.node_id.clone()).or_insert(state);
        if member.state == MemberState::Alive {
            *entry = state;
        }
    }
    (members, snapshot.readiness_at(now).ready)
}

fn event(kind: EventKind, snapshot: &Snapshot, ready: bool) -> Event {
    Event {
        kind,
        generation: snapshot.generation,
        at_utc: timestamp_utc(SystemTime::now()),
        node_id: None,
        from: None,
        to: None,
        status: snapshot.quorum.status,
        observed_nodes: snapshot.quorum.observed_nodes,
        expected_nodes: snapshot.quorum.expected_nodes,
        ready,
        draining: snapshot.lifecycle.draining,
        explanation: None,
        members: None,
        last_of_generation: true,
    }
}

/// The events between two snapshots (none when nothing a subscriber follows changed).
fn transitions(before: &Snapshot, after: &Snapshot, now: Duration) -> Vec<Event> {
    let (old_members, was_ready) = state_of(before, now);
    let (new_members, ready) = state_of(after, now);
    let mut events = Vec::new();
    let ids: std::collections::BTreeSet<&String> = old_members.keys().chain(new_members.keys()).collect();
    for id in ids {
        let (from, to) = (old_members.get(id), new_members.get(id));
        if from != to {
            events.push(Event {
                node_id: Some(id.clone()),
                from: from.map(|s| s.as_str().to_owned()),
                to: Some(to.map_or("forgotten", |s| s.as_str()).to_owned()),
                ..event(EventKind::Membership, after, ready)
            });
        }
    }
    // This node's new verdicts (suspicions, downs, refutations), explained.
    for accusation in after.membership.accusations.iter().filter(|a| !before.membership.accusations.contains(a)) {
        events.push(Event {
            node_id: Some(accusation.accused.clone()),
            from: Some(accusation.accuser.clone()),
            to: Some(accusation.verdict.as_str().to_owned()),
            explanation: Some(accusation.explain().to_owned()),
            ..event(EventKind::Accusation, after, ready)
        });
    }
    if before.quorum.status != after.quorum.status || before.quorum.observed_nodes != after.quorum.observed_nodes {
        events.push(Event {
            from: Some(before.quorum.status.as_str().to_owned()),
            to: Some(after.quorum.status.as_str().to_owned()),
            ..event(EventKind::Quorum, after, ready)
        });
    }
    if was_ready != ready || before.lifecycle.draining != after.lifecycle.draining {
        let word = |ready: bool| if ready { "ready" } else { "not_ready" }.to_owned();
        events.push(Event {
            from: Some(word(was_ready)),
            to: Some(word(ready)),
            ..event(EventKind::Readiness, after, ready)
        });
    }
    let count = events.len();
    for (i, event) in events.iter_mut().enumerate() {
        event.last_of_generation = i + 1 == count;
    }
    events
}

impl Events {
    pub(crate) fn new() -> Self {
        let (sender, _) = broadcast::channel(HISTORY);
        Self { sender, history: Mutex::new(VecDeque::new()), subscribers: Arc::new(Semaphore::new(MAX_SUBSCRIBERS)) }
    }

    /// Turns snapshot changes into events until the snapshot cell closes.
    pub(crate) async fn run(self: Arc<Self>, mut reader: SnapshotReader) {
        let mut previous = reader.current_and_mark_seen();
        while reader.changed().await {
            let current = reader.current_and_mark_seen();
            let events = transitions(&previous, &current, reader.now().monotonic);
            previous = current;
            if events.is_empty() {
                continue;
            }
            {
                let mut history = self.history.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
                for event in &events {
                    if history.len() == HISTORY {
                        history.pop_front();
                    }
                    history.push_back(event.clone());
                }
            }
            let _ = self.sender.send(Message::Events(events.into()));
        }
    }

    /// The application's own subscription (no subscriber slot: it is not a
    /// client).
    pub(crate) fn subscription(&self) -> EventSubscription {
        EventSubscription { receiver: self.sender.subscribe(), pending: VecDeque::new() }
    }

    /// Ends every stream (the listener has closed).
    pub(crate) fn close(&self) {
        let _ = self.sender.send(Message::Closing);
    }

    /// The answer to `GET /clusterz/events`.
    pub(crate) fn subscribe(
        &self,
        parts: &http::request::Parts,
        snapshot: &Snapshot,
        reader: &SnapshotReader,
        now: Duration,
        share: Option<crate::connections::ShareGuard>,
    ) -> Response {
        let Ok(permit) = self.subscribers.clone().try_acquire_owned() else {
            let mut response = plain(StatusCode::TOO_MANY_REQUESTS, "too many event subscribers\n");
            response
                .headers_mut()
                .insert(crate::X_ARLEN_BACKPRESSURE_REASON, HeaderValue::from_static("subscriber_limit"));
            return response;
        };
        let last_seen = match parts.headers.get("last-event-id").map(|v| v.to_str().map(|s| s.trim().parse::<u64>())) {
            None => None,
            Some(Ok(Ok(id))) => Some(id),
            Some(_) => return super::bad_parameter("Last-Event-ID", "expected an event id (a snapshot generation)"),
        };
        // Subscribe before reading the history, so nothing falls between.
        let receiver = self.sender.subscribe();
        let (members, ready) = state_of(snapshot, now);
        let first: Vec<Event> = match last_seen {
            None => vec![Event { members: Some(members), ..event(EventKind::Snapshot, snapshot, ready) }],
            Some(id) => {
                let history = self.history.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
                let covered =
                    history.front().is_some_and(|oldest| oldest.generation <= id + 1) || id >= snapshot.generation;
                if covered {
                    history.iter().filter(|e| e.generation > id).cloned().collect()
                } else {
                    vec![Event { members: Some(members), ..event(EventKind::Resync, snapshot, ready) }]
                }
            }
        };
        let stream = futures_util::stream::unfold(
            Stream {
                receiver,
                reader: reader.clone(),
                pending: first.into(),
                keep_alive: None,
                _permit: permit,
                _share: share,
                started: true,
            },
            next_chunk,
        );
        let mut response = Response::new(Body::from_stream(stream));
        let headers = response.headers_mut();
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("text/event-stream; charset=utf-8"));
        headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-cache"));
        headers.insert("x-accel-buffering", HeaderValue::from_static("no"));
        response
    }
}

/// Membership, quorum, readiness and accusation events as `/clusterz/events`
/// streams them, for the application's own code (`Runtime::subscribe_events`,
/// `arlen_node::NodeHandle::subscribe`).
#[derive(Debug)]
pub struct EventSubscription {
    receiver: broadcast::Receiver<Message>,
    pending: VecDeque<Event>,
}

impl EventSubscription {
    /// The next event, or `None` once the node has stopped serving. A
    /// subscriber that falls more than the history behind skips what it
    /// missed (read `Runtime::snapshot` for the state then).
    pub async fn next(&mut self) -> Option<Event> {
        loop {
            if let Some(event) = self.pending.pop_front() {
                return Some(event);
            }
            match self.receiver.recv().await {
                Ok(Message::Events(events)) => self.pending.extend(events.iter().cloned()),
                Ok(Message::Closing) | Err(broadcast::error::RecvError::Closed) => return None,
                Err(broadcast::error::RecvError::Lagged(missed)) => {
                    tracing::debug!(missed, "an event subscriber fell behind");
                }
            }
        }
    }
}

struct Stream {
    receiver: broadcast::Receiver<Message>,
    pending: VecDeque<Event>,
    reader: SnapshotReader,
    keep_alive: Option<std::pin::Pin<Box<tokio::time::Sleep>>>,
    _permit: OwnedSemaphorePermit,
    /// This connection's share of the streams.
    _share: Option<crate::connections::ShareGuard>,
    /// The stream has not written anything yet (it opens with a comment).
    started: bool,
}

fn encode(event: &Event) -> Bytes {
    let data = serde_json::to_string(event).expect("events always serialise");
    let id = if event.last_of_generation { format!("id: {}\n", event.generation) } else { String::new() };
    Bytes::from(format!("event: {}\n{id}data: {data}\n\n", event.kind.as_str()))
}

async fn next_chunk(mut stream: Stream) -> Option<(Result<Bytes, std::convert::Infallible>, Stream)> {
    if std::mem::take(&mut stream.started) {
        return Some((Ok(Bytes::from_static(b": arlen membership events\nretry: 1000\n\n")), stream));
    }
    if let Some(event) = stream.pending.pop_front() {
        return Some((Ok(encode(&event)), stream));
    }
    let keep_alive = stream.keep_alive.get_or_insert_with(|| Box::pin(tokio::time::sleep(KEEP_ALIVE)));
    tokio::select! {
        () = keep_alive.as_mut() => {
            stream.keep_alive = None;
            Some((Ok(Bytes::from_static(b": keep-alive\n\n")), stream))
        }
        message = stream.receiver.recv() => match message {
            Ok(Message::Events(events)) => {
                stream.keep_alive = None;
                stream.pending.extend(events.iter().cloned());
                let event = stream.pending.pop_front()?;
                Some((Ok(encode(&event)), stream))
            }
            Ok(Message::Closing) | Err(broadcast::error::RecvError::Closed) => None,
            Err(broadcast::error::RecvError::Lagged(_)) => {
                // Too slow for the channel: the current state, then on.
                let snapshot = stream.reader.current();
                let (members, ready) = state_of(&snapshot, stream.reader.now().monotonic);
                let resync = Event { members: Some(members), ..event(EventKind::Resync, &snapshot, ready) };
                Some((Ok(encode(&resync)), stream))
            }
        }
    }
}
