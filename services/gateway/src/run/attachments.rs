//! The registry of who is attached to which process ([`Attachments`], [`Attached`]), the
//! write ends of stdin FIFOs, and the removals and creations in progress per container.

use super::lock;
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::net::unix::pipe;
use tokio::sync::Notify;

/// How long a non-detached exec waits for its attach before it is cleaned up unattended.
const ATTACH_GRACE: Duration = Duration::from_secs(60);

/// Who is attached to which process, so a removal waits until attached clients have seen the
/// exit, and the write ends of stdin FIFOs.
#[derive(Default)]
pub struct Attachments {
    count: Mutex<HashMap<String, usize>>,
    /// Processes started for a client that has not attached yet.
    pub(super) reserved: Mutex<HashSet<String>>,
    idle: Notify,
    pub(super) stdin: Mutex<HashMap<String, Arc<tokio::sync::Mutex<Option<pipe::Sender>>>>>,
    /// One removal at a time per container (`--rm` is done by both the CLI and the gateway).
    /// Once a removal through a slot succeeds it is marked done: callers that were waiting
    /// for it are answered at once.
    pub(super) removals: Mutex<HashMap<String, Arc<tokio::sync::Mutex<bool>>>>,
    /// Containers this gateway is creating (record made, snapshot not yet prepared).
    creating: Mutex<HashSet<String>>,
}

/// A container name held by a creation in progress; released when dropped.
pub(super) struct Creating<'a> {
    a: &'a Attachments,
    key: String,
}

impl Drop for Creating<'_> {
    fn drop(&mut self) {
        lock(&self.a.creating).remove(&self.key);
    }
}

/// One attached client; dropping it detaches.
pub struct Attached {
    a: Arc<Attachments>,
    key: String,
}

impl Drop for Attached {
    fn drop(&mut self) {
        self.a.leave(&self.key);
    }
}

impl Attachments {
    pub(super) fn enter(self: &Arc<Self>, key: &str) -> Attached {
        if !lock(&self.reserved).remove(key) {
            *lock(&self.count).entry(key.to_owned()).or_default() += 1;
        }
        Attached {
            a: self.clone(),
            key: key.to_owned(),
        }
    }

    pub(super) fn leave(&self, key: &str) {
        let mut count = lock(&self.count);
        if let Some(n) = count.get_mut(key) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                count.remove(key);
            }
        }
        drop(count);
        self.idle.notify_waiters();
    }

    /// Holds `key` for a client expected to attach; released by its attach, or after a grace.
    pub(super) fn reserve(self: &Arc<Self>, key: &str) {
        *lock(&self.count).entry(key.to_owned()).or_default() += 1;
        lock(&self.reserved).insert(key.to_owned());
        let (a, k) = (self.clone(), key.to_owned());
        tokio::spawn(async move {
            tokio::time::sleep(ATTACH_GRACE).await;
            if lock(&a.reserved).remove(&k) {
                a.leave(&k);
            }
        });
    }

    /// Returns once nobody is attached to `key`.
    pub(super) async fn wait_idle(&self, key: &str) {
        loop {
            let notified = self.idle.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if !lock(&self.count).contains_key(key) {
                return;
            }
            notified.await;
        }
    }

    pub(super) fn stdin(&self, key: &str) -> Option<Arc<tokio::sync::Mutex<Option<pipe::Sender>>>> {
        lock(&self.stdin).get(key).cloned()
    }

    /// Holds `key` for a creation; `None` when another creation in this gateway holds it.
    pub(super) fn creating(&self, key: &str) -> Option<Creating<'_>> {
        lock(&self.creating)
            .insert(key.to_owned())
            .then(|| Creating {
                a: self,
                key: key.to_owned(),
            })
    }
}
