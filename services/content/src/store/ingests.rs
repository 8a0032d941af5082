//! In-progress writes seen from outside their writer: their records and statuses, and abort.

use super::{INGESTS, IngestRecord, Inner, ingest_not_found, validate_ref};
use super::{Result, decode, from_nanos, io_err};
use std::fs;
use std::io;
use std::time::UNIX_EPOCH;
use strata_core::content::Status;
use strata_core::filters::Filter;
use strata_core::{Digest, Error, identifiers};

impl Inner {
    pub(super) fn ingest_record(&self, ns: &str, reference: &str) -> Result<Option<IngestRecord>> {
        let tx = self.db.begin_read()?;
        let table = tx.open_table(INGESTS)?;
        let value = table.get((ns, reference))?;
        value.map(|v| decode(reference, v.value())).transpose()
    }

    pub(super) fn status_of(&self, reference: &str, rec: &IngestRecord) -> Result<Status> {
        let path = self.data_path(&rec.id);
        let (offset, updated) = match fs::metadata(&path) {
            Ok(m) => (m.len(), m.modified().unwrap_or(UNIX_EPOCH)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => (0, from_nanos(rec.started)),
            Err(e) => return Err(io_err(&path)(e)),
        };
        Ok(Status {
            reference: reference.to_owned(),
            offset,
            total: rec.total,
            expected: Digest::parse(&rec.expected).ok(),
            started_at: from_nanos(rec.started),
            updated_at: updated,
        })
    }

    pub(super) fn abort(&self, ns: &str, reference: &str) -> Result<()> {
        identifiers::validate_namespace(ns)?;
        validate_ref(reference)?;
        if self.is_locked(ns, reference) {
            return Err(Error::unavailable(format!(
                "ref {reference:?} is locked by an active writer"
            ))
            .into());
        }
        let tx = self.db.begin_write()?;
        let rec = {
            let mut ingests = tx.open_table(INGESTS)?;
            let removed = ingests.remove((ns, reference))?;
            match removed {
                Some(v) => decode::<IngestRecord>(reference, v.value())?,
                None => return Err(ingest_not_found(reference)),
            }
        };
        tx.commit()?;
        let dir = self.ingest_dir(&rec.id);
        match fs::remove_dir_all(&dir) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(io_err(&dir)(e)),
        }
    }

    pub(super) fn list_statuses(&self, ns: &str, filter: &Filter) -> Result<Vec<Status>> {
        let tx = self.db.begin_read()?;
        let ingests = tx.open_table(INGESTS)?;
        let mut out = Vec::new();
        for entry in ingests.range((ns, "")..)? {
            let (key, value) = entry?;
            let (kns, reference) = key.value();
            if kns != ns {
                break;
            }
            let st = self.status_of(reference, &decode(reference, value.value())?)?;
            if filter.matches(&st) {
                out.push(st);
            }
        }
        Ok(out)
    }
}
