//! What the store keeps for the garbage collector: the counters telling whether a collection
//! is owed, and the claims on blobs and snapshots that were attached and let go.

use super::{CLAIMS, COLLECTED, DROPPED, ImageRecord, Metadata, Result, STATE};
use redb::ReadableTable;
use strata_core::Error;
use strata_core::leases::{self, Leased, Resource};

impl Metadata {
    /// Records, inside `tx`, that a reference was dropped: a collection is owed.
    pub(super) fn bump_dropped(tx: &redb::WriteTransaction) -> Result<()> {
        let mut t = tx.open_table(STATE)?;
        let n = t.get(DROPPED)?.map_or(0, |v| v.value());
        t.insert(DROPPED, n + 1)?;
        Ok(())
    }

    /// Records, inside `tx`, that the blob or snapshot `kind`/`id` (a lease resource's type and
    /// id) was attached and is let go: past the window between writing and attaching that the
    /// grace period covers. Other types (images, ingests) are not collected objects: ignored.
    pub(super) fn claim(tx: &redb::WriteTransaction, ns: &str, kind: &str, id: &str) -> Result<()> {
        if kind == "content" || kind.starts_with("snapshots/") {
            tx.open_table(CLAIMS)?.insert((ns, kind, id), ())?;
        }
        Ok(())
    }

    /// Claims, inside `tx`, what an image record let go: its target and what its own
    /// `containerd.io/gc.ref.*` labels name.
    pub(super) fn claim_image(
        tx: &redb::WriteTransaction,
        ns: &str,
        rec: &ImageRecord,
    ) -> Result<()> {
        Self::claim(tx, ns, "content", &rec.digest)?;
        for (k, v) in &rec.labels {
            match leases::gc::parse(k, v) {
                Some(leases::gc::LabelRef::Content(d)) => Self::claim(tx, ns, "content", d)?,
                Some(leases::gc::LabelRef::Snapshot { snapshotter, key }) => {
                    Self::claim(tx, ns, &format!("snapshots/{snapshotter}"), key)?;
                }
                _ => {}
            }
        }
        Ok(())
    }

    /// The claimed blobs and snapshots of `ns`: attached (held by a lease resource or an image)
    /// and let go since, so past the window the grace period covers.
    pub fn claims(&self, ns: &str) -> Result<Vec<Leased>, Error> {
        let run = || -> Result<Vec<Leased>> {
            let tx = self.db.begin_read()?;
            let t = tx.open_table(CLAIMS)?;
            let mut out = Vec::new();
            for entry in t.range((ns, "", "")..)? {
                let (k, _) = entry?;
                let (kns, kind, id) = k.value();
                if kns != ns {
                    break;
                }
                match Resource::new(kind, id).parse() {
                    Ok(l) => out.push(l),
                    Err(e) => tracing::debug!(error = %e, "ignoring an unreadable claim"),
                }
            }
            Ok(out)
        };
        Ok(run()?)
    }

    /// Forgets the claims on `gone` (objects removed, or found absent by a collection).
    pub fn drop_claims(&self, ns: &str, gone: &[Leased]) -> Result<(), Error> {
        let run = || -> Result<()> {
            let tx = self.db.begin_write()?;
            {
                let mut t = tx.open_table(CLAIMS)?;
                for l in gone {
                    let r = l.to_resource();
                    t.remove((ns, r.kind.as_str(), r.id.as_str()))?;
                }
            }
            tx.commit()?;
            Ok(())
        };
        Ok(run()?)
    }

    /// The current drop counter, read by a collection as it starts.
    pub fn dropped(&self) -> Result<u64, Error> {
        let run = || -> Result<u64> {
            let tx = self.db.begin_read()?;
            Ok(tx.open_table(STATE)?.get(DROPPED)?.map_or(0, |v| v.value()))
        };
        Ok(run()?)
    }

    /// Records that a collection starting at drop counter `at` succeeded.
    pub fn collected(&self, at: u64) -> Result<(), Error> {
        let run = || -> Result<()> {
            let tx = self.db.begin_write()?;
            {
                let mut t = tx.open_table(STATE)?;
                let done = t.get(COLLECTED)?.map_or(0, |v| v.value());
                t.insert(COLLECTED, done.max(at))?;
            }
            tx.commit()?;
            Ok(())
        };
        Ok(run()?)
    }

    /// Whether references were dropped since the last successful collection started (a
    /// deletion just before a crash, or a collection that failed).
    pub fn gc_owed(&self) -> Result<bool, Error> {
        let run = || -> Result<bool> {
            let tx = self.db.begin_read()?;
            let t = tx.open_table(STATE)?;
            let dropped = t.get(DROPPED)?.map_or(0, |v| v.value());
            let done = t.get(COLLECTED)?.map_or(0, |v| v.value());
            Ok(dropped > done)
        };
        Ok(run()?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;
    use std::time::SystemTime;
    use strata_core::Digest;
    use strata_core::descriptor::Descriptor;
    use strata_core::images::Image;

    #[test]
    fn what_is_let_go_is_claimed_until_forgotten() {
        let dir = tempfile::tempdir().expect("tempdir");
        let meta = Metadata::open(dir.path()).expect("open");
        let (blob, target, labelled) = (Digest::of(b"b"), Digest::of(b"t"), Digest::of(b"l"));
        meta.create_lease("default", "l", HashMap::new())
            .expect("create");
        for r in [
            Resource::new("content", blob.to_string()),
            Resource::new("snapshots/overlayfs", "s"),
            Resource::new("ingests", "ref"),
            Resource::new("images", "held:1"),
        ] {
            meta.add_resource("default", "l", &r).expect("add");
        }
        assert_eq!(meta.claims("default").expect("claims"), Vec::new());
        meta.delete_lease("default", "l").expect("delete");
        let image = Image {
            name: "app:1".into(),
            labels: HashMap::from([(
                "containerd.io/gc.ref.content.x".to_owned(),
                labelled.to_string(),
            )]),
            target: Descriptor {
                media_type: "application/vnd.oci.image.manifest.v1+json".into(),
                digest: target.clone(),
                size: 1,
                annotations: HashMap::new(),
            },
            created_at: SystemTime::UNIX_EPOCH,
            updated_at: SystemTime::UNIX_EPOCH,
        };
        meta.create_image("other", image).expect("image");
        meta.delete_image("other", "app:1", None).expect("delete");
        let snapshot = Leased::Snapshot {
            snapshotter: "overlayfs".into(),
            key: "s".into(),
        };
        let mut claims = meta.claims("default").expect("claims");
        claims.sort_by_key(|l| l.to_resource().kind);
        assert_eq!(
            claims,
            vec![Leased::Content(blob.clone()), snapshot.clone()]
        );
        let mut other = meta.claims("other").expect("claims");
        other.sort_by_key(|l| l.to_resource().id);
        let mut want = vec![Leased::Content(target), Leased::Content(labelled)];
        want.sort_by_key(|l| l.to_resource().id);
        assert_eq!(other, want);
        meta.drop_claims("default", &[snapshot]).expect("drop");
        assert_eq!(
            meta.claims("default").expect("claims"),
            vec![Leased::Content(blob)]
        );
    }
}
