//! The in-process event exchange: every module of the service publishes here
//! ([`Exchange::publish`]), the Events API forwards and subscribes here.
//!
//! One broadcast buffer of [`crate::Config::event_buffer`] envelopes: publishing never waits.
//! A subscriber that falls further behind than the buffer is dropped (its stream ends with
//! Unavailable and a warning is logged) rather than slowing anyone down; it may subscribe again.

use prost::Message as _;
use std::sync::Arc;
use std::time::SystemTime;
use strata_api::containerd::events as ev;
use strata_core::containers::Any;
use strata_core::events::{self, Envelope, Publisher, types};
use strata_core::filters::{Adaptor, Filter};
use strata_core::{Error, identifiers};
use tokio::sync::{broadcast, watch};

/// Fans envelopes out to subscribers.
pub struct Exchange {
    tx: broadcast::Sender<Arc<Envelope>>,
    closed: watch::Sender<bool>,
}

impl Exchange {
    /// An exchange keeping at most `buffer` unread envelopes per subscriber (at least one).
    pub fn new(buffer: usize) -> Self {
        let (tx, _) = broadcast::channel(buffer.max(1));
        let (closed, _) = watch::channel(false);
        Self { tx, closed }
    }

    /// Publishes `event` on `topic` in namespace `ns`, stamped now. InvalidArgument naming the
    /// topic or namespace when either is malformed. Never waits for subscribers.
    pub fn publish(&self, ns: &str, topic: &str, event: Any) -> Result<(), Error> {
        identifiers::validate_namespace(ns)
            .map_err(|e| e.context(format!("event on topic {topic:?}")))?;
        events::validate_topic(topic)?;
        self.send(Envelope {
            timestamp: SystemTime::now(),
            namespace: ns.to_owned(),
            topic: topic.to_owned(),
            event: Some(event),
        });
        Ok(())
    }

    /// Delivers an envelope made elsewhere as it is, once [`events::validate_envelope`] accepts
    /// it.
    pub fn forward(&self, envelope: Envelope) -> Result<(), Error> {
        events::validate_envelope(&envelope)?;
        self.send(envelope);
        Ok(())
    }

    fn send(&self, envelope: Envelope) {
        tracing::trace!(
            namespace = %envelope.namespace,
            topic = %envelope.topic,
            r#type = envelope.event.as_ref().map_or("", |e| e.type_url.as_str()),
            "event"
        );
        // An error only means that nobody is subscribed.
        let _ = self.tx.send(Arc::new(envelope));
    }

    /// A subscription to the envelopes matching any of `filters` (containerd's syntax, on
    /// `namespace`, `topic` and `event.<field>`), from now on. InvalidArgument naming a
    /// malformed filter.
    pub fn subscribe(&self, filters: &[String]) -> Result<Subscription, Error> {
        let filter = Filter::parse_all(filters)?;
        Ok(Subscription {
            rx: self.tx.subscribe(),
            closed: self.closed.subscribe(),
            filter,
            filters: filters.to_vec(),
            done: false,
        })
    }

    /// Ends every subscription (at shutdown, so open streams do not hold the server up).
    pub fn close(&self) {
        self.closed.send_replace(true);
    }

    /// The number of live subscriptions.
    pub fn subscribers(&self) -> usize {
        self.tx.receiver_count()
    }
}

impl Publisher for Exchange {
    async fn publish(&self, ns: &str, topic: &str, event: Any) -> Result<(), Error> {
        Exchange::publish(self, ns, topic, event)
    }

    async fn forward(&self, envelope: Envelope) -> Result<(), Error> {
        Exchange::forward(self, envelope)
    }
}

/// Envelopes for one subscriber, in publication order.
pub struct Subscription {
    rx: broadcast::Receiver<Arc<Envelope>>,
    closed: watch::Receiver<bool>,
    filter: Filter,
    filters: Vec<String>,
    done: bool,
}

impl Subscription {
    /// The next matching envelope; `None` once the exchange is closed. After a subscriber fell
    /// too far behind, one Unavailable error, then `None`.
    pub async fn next(&mut self) -> Option<Result<Envelope, Error>> {
        if self.done {
            return None;
        }
        loop {
            tokio::select! {
                biased;
                _ = self.closed.wait_for(|c| *c) => {
                    self.done = true;
                    return None;
                }
                r = self.rx.recv() => match r {
                    Ok(env) => {
                        if self.filter.matches(&View(&env)) {
                            return Some(Ok(Envelope::clone(&env)));
                        }
                    }
                    Err(broadcast::error::RecvError::Lagged(n)) => {
                        self.done = true;
                        tracing::warn!(
                            filters = ?self.filters,
                            missed = n,
                            "event subscriber fell behind and was dropped"
                        );
                        return Some(Err(Error::unavailable(format!(
                            "event subscription with filters {:?} fell {n} events behind and was dropped: subscribe again",
                            self.filters
                        ))));
                    }
                    Err(broadcast::error::RecvError::Closed) => {
                        self.done = true;
                        return None;
                    }
                },
            }
        }
    }
}

/// An envelope as filters see it: `namespace`, `topic`, and `event.<field>` for the event types
/// this service knows.
struct View<'a>(&'a Envelope);

impl Adaptor for View<'_> {
    fn field(&self, path: &[String]) -> Option<String> {
        match path {
            [f, rest @ ..] if f == "event" && !rest.is_empty() => {
                event_field(self.0.event.as_ref()?, rest)
            }
            _ => self.0.field(path),
        }
    }
}

fn nonempty(s: String) -> Option<String> {
    Some(s).filter(|s| !s.is_empty())
}

/// A field of a known event payload, as containerd's generated field paths name them.
fn event_field(any: &Any, path: &[String]) -> Option<String> {
    // Accept `types.googleapis.com/<name>` as well as the bare name containerd sends.
    let name = any.type_url.rsplit('/').next().unwrap_or_default();
    let path: Vec<&str> = path.iter().map(String::as_str).collect();
    let value = any.value.as_slice();
    match name {
        types::CONTAINER_CREATE => {
            let e = ev::ContainerCreate::decode(value).ok()?;
            match path.as_slice() {
                ["id"] => nonempty(e.id),
                ["image"] => nonempty(e.image),
                ["runtime", "name"] => nonempty(e.runtime?.name),
                _ => None,
            }
        }
        types::CONTAINER_UPDATE => {
            let e = ev::ContainerUpdate::decode(value).ok()?;
            match path.as_slice() {
                ["id"] => nonempty(e.id),
                ["image"] => nonempty(e.image),
                ["snapshot_key"] => nonempty(e.snapshot_key),
                ["labels", key @ ..] if !key.is_empty() => e.labels.get(&key.join(".")).cloned(),
                _ => None,
            }
        }
        types::CONTAINER_DELETE => {
            let e = ev::ContainerDelete::decode(value).ok()?;
            match path.as_slice() {
                ["id"] => nonempty(e.id),
                _ => None,
            }
        }
        _ => None,
    }
}

/// Encodes a protobuf event under its containerd type URL.
pub fn encode(type_url: &str, msg: &impl prost::Message) -> Any {
    Any {
        type_url: type_url.to_owned(),
        value: msg.encode_to_vec(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use strata_core::Kind;
    use strata_core::events::topics;

    fn delete_event(id: &str) -> Any {
        encode(
            types::CONTAINER_DELETE,
            &ev::ContainerDelete { id: id.to_owned() },
        )
    }

    #[tokio::test]
    async fn filters_order_and_lag() {
        let x = Exchange::new(4);
        let mut all = x.subscribe(&[]).expect("subscribe");
        let mut one = x
            .subscribe(&["topic~=\"^/containers/\",event.id==b".to_owned()])
            .expect("subscribe");
        let mut ns = x
            .subscribe(&["namespace==other".to_owned()])
            .expect("subscribe");
        x.publish("default", topics::CONTAINER_DELETE, delete_event("a"))
            .expect("publish");
        x.publish("default", topics::CONTAINER_DELETE, delete_event("b"))
            .expect("publish");
        x.publish("other", "/x/y", delete_event("c"))
            .expect("publish");
        let got = one.next().await.expect("one").expect("ok");
        assert_eq!(got.event, Some(delete_event("b")));
        for id in ["a", "b", "c"] {
            let got = all.next().await.expect("all").expect("ok");
            assert_eq!(got.event, Some(delete_event(id)));
        }
        let got = ns.next().await.expect("ns").expect("ok");
        assert_eq!(got.topic, "/x/y");

        // `all` reads nothing more while six are published into a buffer of four.
        for i in 0..6 {
            x.publish("default", "/t", delete_event(&i.to_string()))
                .expect("publish");
        }
        let err = all.next().await.expect("lag").expect_err("lag");
        assert_eq!(err.kind(), Kind::Unavailable);
        assert!(all.next().await.is_none());

        x.close();
        assert!(one.next().await.is_none());
    }

    #[test]
    fn bad_topics_and_filters_are_named() {
        let x = Exchange::new(4);
        let err = x
            .publish("default", "no-slash", delete_event("a"))
            .expect_err("topic");
        assert_eq!(err.kind(), Kind::InvalidArgument);
        assert!(err.message().contains("\"no-slash\""), "{err}");
        let err = x.subscribe(&["topic~=(".to_owned()]).err().expect("filter");
        assert!(err.message().contains("topic~=("), "{err}");
    }
}
