//! Committed blobs: their records, info and labels, listing, and deletion (the file goes
//! with the last namespace that holds it).

use super::locks::lock;
use super::{BLOB_REFS, BLOBS, BlobRecord, Inner, LocalContentStore, not_found};
use super::{Result, decode, from_nanos, io_err, nanos};
use prost::Message as _;
use redb::ReadableTable;
use std::fs;
use std::io;
use std::time::SystemTime;
use strata_core::content::Info;
use strata_core::filters::Filter;
use strata_core::{Digest, Error, labels};

impl Inner {
    pub(super) fn blob_record(&self, ns: &str, d: &Digest) -> Result<Option<BlobRecord>> {
        let tx = self.db.begin_read()?;
        let table = tx.open_table(BLOBS)?;
        let value = table.get((ns, d.hex()))?;
        value.map(|v| decode(&d.to_string(), v.value())).transpose()
    }

    /// Size of a blob some namespace holds, if any does.
    pub(super) fn shared_size(&self, d: &Digest) -> Result<Option<u64>> {
        let tx = self.db.begin_read()?;
        let refs = tx.open_table(BLOB_REFS)?;
        let mut range = refs.range((d.hex(), "")..)?;
        let Some(first) = range.next() else {
            return Ok(None);
        };
        let (key, _) = first?;
        let (hex, ns) = key.value();
        if hex != d.hex() {
            return Ok(None);
        }
        let blobs = tx.open_table(BLOBS)?;
        let value = blobs.get((ns, hex))?;
        Ok(match value {
            Some(v) => Some(decode::<BlobRecord>(hex, v.value())?.size),
            None => None,
        })
    }

    pub(super) fn delete(&self, ns: &str, d: &Digest) -> Result<()> {
        let _guard = lock(&self.publish);
        let tx = self.db.begin_write()?;
        let still_held = {
            let mut blobs = tx.open_table(BLOBS)?;
            if blobs.remove((ns, d.hex()))?.is_none() {
                return Err(not_found(d));
            }
            let mut refs = tx.open_table(BLOB_REFS)?;
            refs.remove((d.hex(), ns))?;
            let mut range = refs.range((d.hex(), "")..)?;
            match range.next() {
                Some(entry) => entry?.0.value().0 == d.hex(),
                None => false,
            }
        };
        tx.commit()?;
        if !still_held {
            let path = self.blob_path(d.hex());
            match fs::remove_file(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(io_err(&path)(e)),
            }
        }
        Ok(())
    }

    pub(super) fn info(&self, ns: &str, d: &Digest) -> Result<Info> {
        let rec = self.blob_record(ns, d)?.ok_or_else(|| not_found(d))?;
        Ok(to_info(d.clone(), rec))
    }

    pub(super) fn update(&self, ns: &str, info: Info, fieldpaths: &[String]) -> Result<Info> {
        let d = info.digest;
        let tx = self.db.begin_write()?;
        let rec = {
            let mut blobs = tx.open_table(BLOBS)?;
            let mut rec: BlobRecord = {
                let value = blobs.get((ns, d.hex()))?;
                match value {
                    Some(v) => decode(&d.to_string(), v.value())?,
                    None => return Err(not_found(&d)),
                }
            };
            if fieldpaths.is_empty() {
                rec.labels = info.labels;
            } else {
                for path in fieldpaths {
                    if !labels::apply_path(&mut rec.labels, &info.labels, path) {
                        return Err(Error::invalid_argument(format!(
                            "cannot update {path:?} field on content info {d}"
                        ))
                        .into());
                    }
                }
            }
            labels::validate(&rec.labels)?;
            rec.updated = nanos(SystemTime::now());
            blobs.insert((ns, d.hex()), rec.encode_to_vec().as_slice())?;
            rec
        };
        tx.commit()?;
        Ok(to_info(d, rec))
    }

    pub(super) fn list(&self, ns: &str, filter: &Filter) -> Result<Vec<Info>> {
        let tx = self.db.begin_read()?;
        let blobs = tx.open_table(BLOBS)?;
        let mut out = Vec::new();
        for entry in blobs.range((ns, "")..)? {
            let (key, value) = entry?;
            let (kns, hex) = key.value();
            if kns != ns {
                break;
            }
            let d = Digest::parse(&format!("{}:{hex}", Digest::ALGORITHM))?;
            let info = to_info(d, decode(hex, value.value())?);
            if filter.matches(&info) {
                out.push(info);
            }
        }
        Ok(out)
    }
}

fn to_info(digest: Digest, rec: BlobRecord) -> Info {
    Info {
        digest,
        size: rec.size,
        created_at: from_nanos(rec.created),
        updated_at: from_nanos(rec.updated),
        labels: rec.labels,
    }
}

impl LocalContentStore {
    /// Whether `d` is on disk at all, in any namespace (for tests and tools).
    pub fn has_blob_file(&self, d: &Digest) -> bool {
        self.inner.blob_path(d.hex()).exists()
    }
}
