//! One lock per task, by (namespace, container id): a task's creation and deletion each hold
//! it, so that of concurrent calls for one task one acts and the others see what it did.
//! Entries exist only while the lock is held or awaited.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

type Key = (String, String);

#[derive(Default)]
pub struct TaskLocks {
    held: Mutex<HashMap<Key, Arc<tokio::sync::Mutex<()>>>>,
}

/// Holds a task's lock; dropping it lets the next caller in.
pub struct TaskGuard<'a> {
    locks: &'a TaskLocks,
    key: Key,
    guard: Option<tokio::sync::OwnedMutexGuard<()>>,
}

impl TaskLocks {
    /// Waits until no one else holds the lock of task `id` in namespace `ns`, and takes it.
    pub async fn lock(&self, ns: &str, id: &str) -> TaskGuard<'_> {
        let key = (ns.to_owned(), id.to_owned());
        let lock = Arc::clone(
            self.held
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .entry(key.clone())
                .or_default(),
        );
        TaskGuard {
            locks: self,
            key,
            guard: Some(lock.lock_owned().await),
        }
    }

    #[cfg(test)]
    fn entries(&self) -> usize {
        self.held.lock().unwrap_or_else(|e| e.into_inner()).len()
    }
}

impl Drop for TaskGuard<'_> {
    fn drop(&mut self) {
        self.guard.take();
        let mut held = self.locks.held.lock().unwrap_or_else(|e| e.into_inner());
        // Nobody else holds or awaits it (they would hold a clone): the entry goes. Clones are
        // only taken under `held`'s lock, so none can appear meanwhile.
        if held
            .get(&self.key)
            .is_some_and(|l| Arc::strong_count(l) == 1)
        {
            held.remove(&self.key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn one_holder_per_task_and_no_entry_left() {
        let locks = Arc::new(TaskLocks::default());
        let a = locks.lock("ns", "a").await;
        // Another task's lock is free.
        drop(locks.lock("ns", "b").await);
        let waiter = {
            let locks = Arc::clone(&locks);
            tokio::spawn(async move {
                let _g = locks.lock("ns", "a").await;
            })
        };
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!waiter.is_finished(), "a second holder got in");
        assert_eq!(locks.entries(), 1);
        drop(a);
        waiter.await.expect("waiter");
        assert_eq!(locks.entries(), 0);
    }
}
