//! [`EventSink`] for the storage services: events go into a bounded queue and a background task
//! forwards them, in order, to the events exchange (strata-tasks' Events API, `Forward`, so
//! each keeps the time it happened). Posting never waits and never fails: with the exchange
//! away, events are dropped and logged (one warning per outage, the rest at debug), and when the
//! queue is full the newest are dropped.

use crate::remote::RemoteEvents;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, SystemTime};
use strata_core::containers::Any;
use strata_core::events::{Envelope, EventSink, Publisher};
use tokio::sync::mpsc;

/// Envelopes waiting for delivery, at most.
pub const DEFAULT_QUEUE: usize = 1024;

/// How long one delivery may take before it counts as failed (a hung exchange must not stall
/// the queue for good).
const DELIVERY_LIMIT: Duration = Duration::from_secs(5);

/// Posts events to a [`Publisher`] in the background.
pub struct QueuedEvents {
    tx: mpsc::Sender<Envelope>,
    shared: Arc<Shared>,
}

struct Shared {
    /// Where events go, for logs.
    target: String,
    /// Whether the queue has overflowed since it last had room (one warning per episode).
    full: AtomicBool,
    dropped: AtomicU64,
}

impl QueuedEvents {
    /// Forwards to the Events API at `address` (a unix socket path or host:port, connected
    /// lazily). Must be called inside a tokio runtime.
    pub fn connect(address: &str, queue: usize) -> strata_core::Result<Self> {
        Ok(Self::new(RemoteEvents::connect(address)?, address, queue))
    }

    /// Forwards to `publisher` (named `target` in logs), keeping at most `queue` envelopes
    /// waiting. Must be called inside a tokio runtime.
    pub fn new(publisher: impl Publisher, target: &str, queue: usize) -> Self {
        let (tx, rx) = mpsc::channel(queue.max(1));
        let shared = Arc::new(Shared {
            target: target.to_owned(),
            full: AtomicBool::new(false),
            dropped: AtomicU64::new(0),
        });
        tokio::spawn(deliver(publisher, rx, shared.clone()));
        Self { tx, shared }
    }
}

/// Where the storage services send their events unless told otherwise: strata-tasks.
pub const DEFAULT_EVENTS: &str = "/run/strata/tasks.sock";

/// [`DEFAULT_EVENTS`], owned.
pub fn default_events() -> String {
    DEFAULT_EVENTS.to_owned()
}

/// A containerd event message as the payload of an envelope, under its type URL.
pub fn encode(type_url: &str, msg: &impl prost::Message) -> Any {
    Any {
        type_url: type_url.to_owned(),
        value: msg.encode_to_vec(),
    }
}

/// The sink for a storage service's `events` setting: `none` drops every event; anything else
/// is the address of the Events API (strata-tasks), forwarded to through a [`QueuedEvents`] of
/// [`DEFAULT_QUEUE`]. Must be called inside a tokio runtime.
pub fn sink_for(address: &str) -> strata_core::Result<Arc<dyn EventSink>> {
    if address == "none" {
        return Ok(Arc::new(strata_core::events::NoEvents));
    }
    Ok(Arc::new(QueuedEvents::connect(address, DEFAULT_QUEUE)?))
}

impl EventSink for QueuedEvents {
    fn post(&self, ns: &str, topic: &str, event: Any) {
        let envelope = Envelope {
            timestamp: SystemTime::now(),
            namespace: ns.to_owned(),
            topic: topic.to_owned(),
            event: Some(event),
        };
        match self.tx.try_send(envelope) {
            Ok(()) => {
                self.shared.full.store(false, Ordering::Relaxed);
            }
            Err(mpsc::error::TrySendError::Full(e)) => {
                self.shared.dropped.fetch_add(1, Ordering::Relaxed);
                if self.shared.full.swap(true, Ordering::Relaxed) {
                    tracing::debug!(topic = %e.topic, namespace = %e.namespace, "event queue full: event dropped");
                } else {
                    tracing::warn!(
                        events = %self.shared.target,
                        topic = %e.topic,
                        namespace = %e.namespace,
                        "event queue full (the events service is slow or away): dropping events"
                    );
                }
            }
            Err(mpsc::error::TrySendError::Closed(e)) => {
                tracing::debug!(topic = %e.topic, "event queue closed: event dropped");
            }
        }
    }
}

async fn deliver(publisher: impl Publisher, mut rx: mpsc::Receiver<Envelope>, shared: Arc<Shared>) {
    let mut failing = false;
    while let Some(envelope) = rx.recv().await {
        let (topic, ns) = (envelope.topic.clone(), envelope.namespace.clone());
        let result = match tokio::time::timeout(DELIVERY_LIMIT, publisher.forward(envelope)).await {
            Ok(r) => r.map_err(|e| e.to_string()),
            Err(_) => Err(format!("no answer in {} s", DELIVERY_LIMIT.as_secs())),
        };
        match result {
            Ok(()) => {
                if failing {
                    failing = false;
                    tracing::info!(events = %shared.target, "events are delivered again");
                }
                tracing::trace!(%topic, namespace = %ns, "event delivered");
            }
            Err(error) if failing => {
                tracing::debug!(events = %shared.target, %topic, namespace = %ns, %error, "event dropped");
            }
            Err(error) => {
                failing = true;
                tracing::warn!(
                    events = %shared.target,
                    %topic,
                    namespace = %ns,
                    %error,
                    "cannot deliver events: dropping them until the events service answers"
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use std::sync::Mutex;
    use strata_core::Error;

    /// Records what it is given; fails while `down`, blocks while `stuck` is held.
    #[derive(Clone, Default)]
    struct Recorder {
        got: Arc<Mutex<Vec<Envelope>>>,
        down: Arc<AtomicBool>,
        failed: Arc<AtomicU64>,
        stuck: Arc<tokio::sync::Mutex<()>>,
        delivered: Arc<tokio::sync::Notify>,
    }

    impl Publisher for Recorder {
        async fn publish(&self, _: &str, _: &str, _: Any) -> strata_core::Result<()> {
            unreachable!("the queue forwards")
        }

        async fn forward(&self, envelope: Envelope) -> strata_core::Result<()> {
            let _held = self.stuck.lock().await;
            if self.down.load(Ordering::SeqCst) {
                self.failed.fetch_add(1, Ordering::SeqCst);
                self.delivered.notify_one();
                return Err(Error::unavailable("down"));
            }
            self.got.lock().unwrap().push(envelope);
            self.delivered.notify_one();
            Ok(())
        }
    }

    fn event(n: u8) -> Any {
        Any {
            type_url: "t".into(),
            value: vec![n],
        }
    }

    #[tokio::test]
    async fn in_order_never_waiting_and_dropping_when_full_or_away() {
        let r = Recorder::default();
        let q = QueuedEvents::new(r.clone(), "test", 2);

        // Delivered in order, with the namespace and topic given.
        q.post("ns", "/a/b", event(1));
        q.post("ns", "/a/c", event(2));
        while r.got.lock().unwrap().len() < 2 {
            r.delivered.notified().await;
        }
        let got = r.got.lock().unwrap().clone();
        assert_eq!(got[0].topic, "/a/b");
        assert_eq!(got[1].event, Some(event(2)));
        assert!(got.iter().all(|e| e.namespace == "ns"));

        // An exchange that does not answer: posts still return at once, and beyond the
        // queue's room (two; this runtime has one thread, so nothing is taken meanwhile) events
        // are dropped.
        let stuck = r.stuck.lock().await;
        for n in 3..10 {
            q.post("ns", "/a/d", event(n));
        }
        assert_eq!(q.shared.dropped.load(Ordering::Relaxed), 5);
        drop(stuck);
        while r.got.lock().unwrap().len() < 4 {
            r.delivered.notified().await;
        }

        // An exchange that is down: the event is dropped, later ones are delivered.
        r.down.store(true, Ordering::SeqCst);
        q.post("ns", "/a/e", event(20));
        while r.failed.load(Ordering::SeqCst) == 0 {
            r.delivered.notified().await;
        }
        r.down.store(false, Ordering::SeqCst);
        q.post("ns", "/a/f", event(21));
        while r.got.lock().unwrap().len() < 5 {
            r.delivered.notified().await;
        }
        let got = r.got.lock().unwrap().clone();
        let values: Vec<u8> = got
            .iter()
            .map(|e| e.event.as_ref().unwrap().value[0])
            .collect();
        assert_eq!(values, [1, 2, 3, 4, 21]);
    }
}
