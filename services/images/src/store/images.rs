//! Images in the database (target, labels, times), and [`LocalImages`], the local [`ImageStore`].

use super::{Effects, IMAGES, ImageRecord, Metadata, StoreError, check_ns};
use super::{Result, decode, from_nanos, nanos};
use prost::Message as _;
use redb::ReadableTable;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::SystemTime;
use strata_core::descriptor::Descriptor;
use strata_core::filters::Filter;
use strata_core::images::{self, DeleteOptions, Image, ImageStore};
use strata_core::{Digest, Error, labels};

fn image_not_found(name: &str) -> StoreError {
    Error::not_found(format!("image {name:?}: not found")).into()
}

fn to_image(name: &str, rec: ImageRecord) -> Result<Image> {
    let digest = Digest::parse(&rec.digest).map_err(|e| e.context(format!("image {name:?}")))?;
    Ok(Image {
        name: name.to_owned(),
        labels: rec.labels,
        target: Descriptor {
            media_type: rec.media_type,
            digest,
            size: rec.size,
            annotations: rec.annotations,
        },
        created_at: from_nanos(rec.created),
        updated_at: from_nanos(rec.updated),
    })
}

/// An image's target and labels, as the collector sees it.
#[derive(Debug, Clone)]
pub struct ImageRef {
    pub name: String,
    pub target: Digest,
    pub labels: HashMap<String, String>,
}

impl Metadata {
    fn get_image(&self, ns: &str, name: &str) -> Result<Image> {
        let tx = self.db.begin_read()?;
        let t = tx.open_table(IMAGES)?;
        let value = t.get((ns, name))?.ok_or_else(|| image_not_found(name))?;
        to_image(name, decode(name, value.value())?)
    }

    fn list_images(&self, ns: &str, filter: &Filter) -> Result<Vec<Image>> {
        let tx = self.db.begin_read()?;
        let t = tx.open_table(IMAGES)?;
        let mut out = Vec::new();
        for entry in t.range((ns, "")..)? {
            let (k, v) = entry?;
            let (kns, name) = k.value();
            if kns != ns {
                break;
            }
            let image = to_image(name, decode(name, v.value())?)?;
            if filter.matches(&image) {
                out.push(image);
            }
        }
        Ok(out)
    }

    /// Every image of `ns` with its target and labels, for the collector.
    pub fn image_refs(&self, ns: &str) -> Result<Vec<ImageRef>, Error> {
        Ok(self
            .list_images(ns, &Filter::default())?
            .into_iter()
            .map(|i| ImageRef {
                name: i.name,
                target: i.target.digest,
                labels: i.labels,
            })
            .collect())
    }

    fn validate_image(image: &Image) -> Result<()> {
        images::validate_name(&image.name)?;
        labels::validate(&image.labels)
            .map_err(|e| e.context(format!("image {:?}", image.name)))?;
        images::validate_target(&image.name, &image.target)?;
        Ok(())
    }

    fn record_of(image: &Image, created: i64, updated: i64) -> ImageRecord {
        ImageRecord {
            media_type: image.target.media_type.clone(),
            digest: image.target.digest.to_string(),
            size: image.target.size,
            annotations: image.target.annotations.clone(),
            labels: image.labels.clone(),
            created,
            updated,
        }
    }

    pub(super) fn create_image(&self, ns: &str, mut image: Image) -> Result<Image> {
        Self::validate_image(&image)?;
        let now = SystemTime::now();
        let tx = self.db.begin_write()?;
        {
            let mut t = tx.open_table(IMAGES)?;
            if t.get((ns, image.name.as_str()))?.is_some() {
                return Err(Error::already_exists(format!(
                    "image {:?}: already exists",
                    image.name
                ))
                .into());
            }
            let rec = Self::record_of(&image, nanos(now), nanos(now));
            t.insert((ns, image.name.as_str()), rec.encode_to_vec().as_slice())?;
            Self::ensure_namespace(&tx, ns)?;
        }
        tx.commit()?;
        strata_core::crashpoint::hit("images.create.committed");
        image.created_at = from_nanos(nanos(now));
        image.updated_at = image.created_at;
        Ok(image)
    }

    /// Returns the stored image and whether a reference may have been dropped (the target or
    /// the labels changed), which is the collector's business.
    fn update_image(&self, ns: &str, image: Image, paths: &[String]) -> Result<(Image, bool)> {
        images::validate_name(&image.name)?;
        let name = image.name.clone();
        let tx = self.db.begin_write()?;
        let (stored, dropped);
        {
            let mut t = tx.open_table(IMAGES)?;
            let rec: ImageRecord = {
                let value = t
                    .get((ns, name.as_str()))?
                    .ok_or_else(|| image_not_found(&name))?;
                decode(&name, value.value())?
            };
            let old = to_image(&name, rec.clone())?;
            let mut updated = old.clone();
            if paths.is_empty() {
                updated.labels = image.labels;
                updated.target = image.target;
            } else {
                for path in paths {
                    if labels::apply_path(&mut updated.labels, &image.labels, path)
                        || labels::apply_map_path(
                            &mut updated.target.annotations,
                            &image.target.annotations,
                            "annotations",
                            path,
                        )
                    {
                        continue;
                    }
                    if path != "target" {
                        return Err(Error::invalid_argument(format!(
                            "cannot update {path:?} field on image {name:?}"
                        ))
                        .into());
                    }
                    updated.target = image.target.clone();
                }
            }
            Self::validate_image(&updated)?;
            let now = nanos(SystemTime::now());
            let new_rec = Self::record_of(&updated, rec.created, now);
            t.insert((ns, name.as_str()), new_rec.encode_to_vec().as_slice())?;
            dropped = old.target.digest != updated.target.digest || old.labels != updated.labels;
            updated.updated_at = from_nanos(now);
            stored = updated;
            if dropped {
                Self::claim_image(&tx, ns, &rec)?;
            }
        }
        if dropped {
            Self::bump_dropped(&tx)?;
        }
        tx.commit()?;
        Ok((stored, dropped))
    }

    pub(super) fn delete_image(&self, ns: &str, name: &str, target: Option<&Digest>) -> Result<()> {
        let tx = self.db.begin_write()?;
        {
            let mut t = tx.open_table(IMAGES)?;
            if let Some(want) = target {
                let rec: ImageRecord = {
                    let value = t.get((ns, name))?.ok_or_else(|| image_not_found(name))?;
                    decode(name, value.value())?
                };
                if rec.digest != want.to_string() {
                    return Err(Error::not_found(format!(
                        "image {name:?} has target {}, not {want}",
                        rec.digest
                    ))
                    .into());
                }
            }
            let rec: ImageRecord = {
                let Some(removed) = t.remove((ns, name))? else {
                    return Err(image_not_found(name));
                };
                decode(name, removed.value())?
            };
            Self::claim_image(&tx, ns, &rec)?;
        }
        Self::bump_dropped(&tx)?;
        tx.commit()?;
        Ok(())
    }
}

/// The local [`ImageStore`].
#[derive(Clone)]
pub struct LocalImages {
    meta: Arc<Metadata>,
    effects: Arc<dyn Effects>,
}

impl LocalImages {
    pub fn new(meta: Arc<Metadata>, effects: Arc<dyn Effects>) -> Self {
        Self { meta, effects }
    }
}

impl ImageStore for LocalImages {
    async fn get(&self, ns: &str, name: &str) -> Result<Image, Error> {
        check_ns(ns)?;
        images::validate_name(name)?;
        let (ns, name) = (ns.to_owned(), name.to_owned());
        self.meta.blocking(move |m| m.get_image(&ns, &name)).await
    }

    async fn list(&self, ns: &str, filters: &[String]) -> Result<Vec<Image>, Error> {
        check_ns(ns)?;
        let filter = Filter::parse_all(filters)?;
        let ns = ns.to_owned();
        self.meta
            .blocking(move |m| m.list_images(&ns, &filter))
            .await
    }

    async fn create(&self, ns: &str, image: Image) -> Result<Image, Error> {
        check_ns(ns)?;
        let _gate = self.meta.gate.read().await;
        let ns = ns.to_owned();
        self.meta
            .blocking(move |m| m.create_image(&ns, image))
            .await
    }

    async fn update(&self, ns: &str, image: Image, fieldpaths: &[String]) -> Result<Image, Error> {
        check_ns(ns)?;
        let (image, dropped) = {
            let _gate = self.meta.gate.read().await;
            let (ns, paths) = (ns.to_owned(), fieldpaths.to_vec());
            self.meta
                .blocking(move |m| m.update_image(&ns, image, &paths))
                .await?
        };
        if dropped {
            self.effects.references_dropped(false).await?;
        }
        Ok(image)
    }

    async fn delete(&self, ns: &str, name: &str, opts: DeleteOptions) -> Result<(), Error> {
        check_ns(ns)?;
        images::validate_name(name)?;
        let (n, owned) = (ns.to_owned(), name.to_owned());
        let target = opts.target.clone();
        self.meta
            .blocking(move |m| m.delete_image(&n, &owned, target.as_ref()))
            .await?;
        tracing::debug!(namespace = %ns, image = %name, sync = opts.sync, "image deleted");
        strata_core::crashpoint::hit("images.delete.committed");
        self.effects
            .references_dropped(opts.sync)
            .await
            .map_err(|e| {
                e.context(format!(
                    "image {name:?} deleted; its space is freed by a later garbage collection"
                ))
            })
    }
}
