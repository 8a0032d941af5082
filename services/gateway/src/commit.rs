//! `strata commit`: a container's changes as a new image, as `docker commit` makes one.
//!
//! 1. The container is paused (unless asked not to) while the snapshotter's Diff service writes
//!    the changes between its image's top layer (a view of it) and its root snapshot as a layer
//!    blob into the content store; then it is resumed.
//! 2. The config is the image's with the `-c` changes applied, the layer's diff ID appended to
//!    its root file system and a history entry (`empty_layer` when the container changed
//!    nothing: then no layer is added, as Docker does).
//! 3. The layer is unpacked as the committed snapshot named by its chain ID, so a container of
//!    the new image starts on it without another unpack; config and manifest are written with
//!    the `containerd.io/gc.ref.*` labels a pull gives them, and the image record is made: all
//!    of it under a lease until the record holds it, through the same code as pull ([`Pull`]).
//!
//! The layer blob is written by the snapshotter before the gateway can add it to the lease:
//! it is written with a back reference to the container's snapshot, so the collector keeps it
//! while the container exists, whatever the grace period; once the lease holds it (or, for an
//! empty layer, nothing wants it) the label goes.

use crate::Backends;
use crate::catalog::find_image;
use crate::image::{chain_ids, details};
use crate::pull::Pull;
use crate::tasks::Status as TaskStatus;
use serde_json::{Map, Value};
use std::collections::HashMap;
use std::time::SystemTime;
use strata_core::containers::{Container, ContainerStore};
use strata_core::content::{ContentStore, read_all};
use strata_core::descriptor::{Descriptor, UNCOMPRESSED_LABEL};
use strata_core::diff::{Diff, DiffOptions};
use strata_core::snapshots::SnapshotStore;
use strata_core::{Digest, Error, Kind, Result};
use strata_registry::{ImageManifest, Reference, media_types};

/// The diff ID of a layer that changes nothing: an empty tar (two zero blocks).
fn empty_layer() -> Digest {
    Digest::of(&[0u8; 1024])
}

/// The label that makes the layer blob and the parent's view live as long as the container's
/// snapshot, until the commit's lease holds them.
fn keep_label(snapshotter: &str) -> String {
    format!("containerd.io/gc.bref.snapshot.{snapshotter}/commit")
}

/// What a commit made.
#[derive(Debug)]
pub struct Committed {
    /// The new image's ID: its config digest.
    pub id: Digest,
    /// Its record's name.
    pub name: String,
}

pub(crate) async fn container(b: &Backends, ns: &str, id: &str) -> Result<Container> {
    match b.containers.get(ns, id).await {
        Err(e) if e.kind() == Kind::NotFound => {
            Err(Error::not_found(format!("container {id:?}: not found")))
        }
        r => r,
    }
}

/// The command the container runs, for the history entry (`docker history` shows it).
fn command_of(c: &Container) -> String {
    c.spec
        .as_ref()
        .and_then(|any| serde_json::from_slice::<Value>(&any.value).ok())
        .and_then(|spec| {
            spec["process"]["args"].as_array().map(|a| {
                a.iter()
                    .filter_map(Value::as_str)
                    .collect::<Vec<_>>()
                    .join(" ")
            })
        })
        .unwrap_or_default()
}

fn now() -> String {
    strata_grpc::convert::timestamp(SystemTime::now()).to_string()
}

fn json<T: serde::Serialize + ?Sized>(what: &str, v: &T) -> Result<Vec<u8>> {
    serde_json::to_vec(v).map_err(|e| Error::internal(format!("writing the {what}: {e}")))
}

/// Pauses a running task; answers whether it did (and so must resume it).
async fn pause(b: &Backends, ns: &str, id: &str) -> Result<bool> {
    let running = b
        .tasks
        .get(ns, id, "")
        .await?
        .is_some_and(|p| p.status == TaskStatus::Running);
    if !running {
        return Ok(false);
    }
    b.tasks
        .pause(ns, id)
        .await
        .map_err(|e| e.context(format!("pausing container {id:?}")))?;
    Ok(true)
}

async fn resume(b: &Backends, ns: &str, id: &str) -> Result<()> {
    b.tasks
        .resume(ns, id)
        .await
        .map_err(|e| e.context(format!("resuming container {id:?}")))?;
    Ok(())
}

/// What `commit` is asked for (`docker commit`'s options).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Options {
    /// The container.
    pub container: String,
    /// `REPO[:TAG]` to name the new image; empty for an image known only by its ID.
    pub reference: String,
    /// Dockerfile instructions applied to the config (`--change`): CMD, ENTRYPOINT, ENV,
    /// EXPOSE, LABEL, USER, VOLUME, WORKDIR, STOPSIGNAL.
    pub changes: Vec<String>,
    /// The history entry's comment.
    pub message: String,
    /// Leave a running container running during the commit (it is paused by default).
    pub no_pause: bool,
    /// The image's author.
    pub author: String,
}

/// Makes an image of container `req.container`'s changes.
pub async fn commit(b: &Backends, ns: &str, req: Options) -> Result<Committed> {
    let id = req.container.as_str();
    let c = container(b, ns, id).await?;
    let image = match find_image(b, ns, &c.image).await {
        Ok(i) => i,
        Err(e) if e.is(Kind::NotFound) => {
            return Err(Error::failed_precondition(format!(
                "container {id:?}: its image {:?} is gone",
                c.image
            )));
        }
        Err(e) => return Err(e),
    };
    let name = if req.reference.is_empty() {
        None
    } else {
        let r = Reference::parse(&req.reference)?;
        if r.digest().is_some() {
            return Err(Error::invalid_argument(format!(
                "reference {:?}: a commit is named by a tag, not a digest",
                req.reference
            )));
        }
        Some(r.to_string())
    };
    let base = details(b, ns, image).await?;
    let config_bytes = read_all(&b.content, ns, &base.config_digest).await?;
    let mut config: Map<String, Value> = serde_json::from_slice(&config_bytes).map_err(|e| {
        Error::failed_precondition(format!("image config {}: {e}", base.config_digest))
    })?;
    // The changes are checked before anything is written.
    let mut run_config = match config.remove("config") {
        Some(Value::Object(m)) => m,
        _ => Map::new(),
    };
    crate::changes::apply_all(&mut run_config, &req.changes)?;
    config.insert("config".into(), Value::Object(run_config));

    let snapshotter = if c.snapshotter.is_empty() {
        b.snapshotter.clone()
    } else {
        c.snapshotter.clone()
    };
    let (events, _) = tokio::sync::mpsc::channel(1);
    let p = Pull::start(b, ns, None, snapshotter, events).await?;
    let made = made(&p, &c, &base, config, name, &req).await;
    p.end().await;
    made
}

/// The work under the lease of `p`.
async fn made(
    p: &Pull<'_>,
    c: &Container,
    base: &crate::image::ImageDetails,
    config: Map<String, Value>,
    name: Option<String>,
    req: &Options,
) -> Result<Committed> {
    let docker = base.manifest.media_type.as_deref() == Some(media_types::DOCKER_MANIFEST);
    let layer = container_layer(p, c, base, docker, !req.no_pause).await?;
    let entry = Entry {
        created_by: command_of(c),
        comment: req.message.clone(),
        author: req.author.clone(),
    };
    let top = Top {
        layers: base.manifest.layers.clone(),
        diff_ids: base.diff_ids().to_vec(),
        docker,
    };
    write_image(p, top, config, layer, &entry, name).await
}

/// A history entry's words.
#[derive(Debug, Default, Clone)]
pub(crate) struct Entry {
    pub created_by: String,
    pub comment: String,
    pub author: String,
}

/// A layer written for an image: its blob and its diff ID.
#[derive(Debug, Clone)]
pub(crate) struct NewLayer {
    pub desc: Descriptor,
    pub diff_id: Digest,
}

/// The image a new one is made on: its layers and whether its manifest is Docker's.
#[derive(Debug, Clone)]
pub(crate) struct Top {
    pub layers: Vec<strata_registry::Descriptor>,
    pub diff_ids: Vec<Digest>,
    pub docker: bool,
}

/// Writes the changes of container `c` as a layer over `base`, held by the lease of `p` and
/// unpacked as the snapshot of its chain ID; `None` when it changed nothing.
pub(crate) async fn container_layer(
    p: &Pull<'_>,
    c: &Container,
    base: &crate::image::ImageDetails,
    docker: bool,
    pause_it: bool,
) -> Result<Option<NewLayer>> {
    let pause_it = pause_it.then_some(c.id.as_str());
    layer_of(
        p,
        &c.snapshot_key,
        &c.id,
        base.diff_ids(),
        docker,
        pause_it,
        false,
    )
    .await
}

/// Writes the changes of the active snapshot `key` over the image whose layers have
/// `diff_ids` as a layer, held by the lease of `p`; `None` when it changed nothing. The layer
/// becomes the committed snapshot of its chain ID: unpacked anew, or with `take`, the active
/// snapshot itself committed (it is gone then, unless nothing changed or the chain existed).
/// `who` names the work in references and messages; with `pause`, that container is paused
/// while the layer is written.
pub(crate) async fn layer_of(
    p: &Pull<'_>,
    key: &str,
    who: &str,
    diff_ids: &[Digest],
    docker: bool,
    pause: Option<&str>,
    take: bool,
) -> Result<Option<NewLayer>> {
    let parent_chain = chain_ids(diff_ids).last().cloned();
    // When the blob was there already (an empty layer, above all), the differ puts its labels
    // on it; the collector may still take it meanwhile, having judged it before the labels
    // came, and the differ then answers NotFound (CI: an_unchanged_container_gives_an_empty_
    // layer_entry, 'content sha256:…: not found'). Writing the layer again makes the blob anew.
    let mut attempts = 0;
    let layer = loop {
        match diff(p, key, who, parent_chain.as_ref(), docker, pause).await {
            Err(e) if e.is(Kind::NotFound) && attempts < 2 => attempts += 1,
            written => break written?,
        }
    };
    let diff_id = layer
        .annotations
        .get(UNCOMPRESSED_LABEL)
        .map(|d| Digest::parse(d))
        .transpose()?
        .ok_or_else(|| Error::internal("the differ did not say the layer's diff ID"))?;
    let empty = diff_id == empty_layer();
    if !empty {
        p.lease_add_content(&layer.digest).await?;
    }
    // Held by the lease now (or not wanted: an empty layer is left to the collector), the blob
    // needs its back reference to the snapshot no more.
    let label = keep_label(&p.snapshotter);
    let mut info = match p.b.content.info(&p.ns, &layer.digest).await {
        Ok(i) => i,
        // An empty layer nobody holds may be collected already: nothing is wanted of it.
        Err(e) if empty && e.is(Kind::NotFound) => return Ok(None),
        Err(e) => return Err(e),
    };
    if info.labels.remove(&label).is_some() {
        match p
            .b
            .content
            .update(&p.ns, info, &[format!("labels.{label}")])
            .await
        {
            Ok(_) => {}
            Err(e) if empty && e.is(Kind::NotFound) => {}
            Err(e) => return Err(e),
        }
    }
    if empty {
        return Ok(None);
    }
    let parent = parent_chain.map(|c| c.to_string()).unwrap_or_default();
    let mut ids = diff_ids.to_vec();
    ids.push(diff_id.clone());
    let chains = chain_ids(&ids);
    if let Some(top) = chains.last() {
        if take {
            p.commit_active(key, top).await?;
        } else {
            p.unpack(&layer, &diff_id, top, &parent).await?;
        }
    }
    Ok(Some(NewLayer {
        desc: layer,
        diff_id,
    }))
}

/// Writes config, manifest and record of the image `top` plus `layer` (none: an
/// `empty_layer` history entry), named `name` (its ID when `None`). The config is `config`
/// created now, with the layer's diff ID and the history entry appended.
pub(crate) async fn write_image(
    p: &Pull<'_>,
    top: Top,
    mut config: Map<String, Value>,
    layer: Option<NewLayer>,
    e: &Entry,
    name: Option<String>,
) -> Result<Committed> {
    let top = append(top, &mut config, layer, e);
    store(p, top, &config, name).await
}

/// `top` and `config` with `layer` (none: an `empty_layer` history entry) and the history
/// entry `e` appended; the config is dated now.
pub(crate) fn append(
    top: Top,
    config: &mut Map<String, Value>,
    layer: Option<NewLayer>,
    e: &Entry,
) -> Top {
    let Top {
        mut layers,
        mut diff_ids,
        docker,
    } = top;
    let empty = layer.is_none();
    if let Some(l) = layer {
        diff_ids.push(l.diff_id);
        layers.push(strata_registry::Descriptor {
            media_type: l.desc.media_type.clone(),
            digest: l.desc.digest.clone(),
            size: l.desc.size,
            urls: Vec::new(),
            annotations: Default::default(),
            platform: None,
            artifact_type: None,
        });
    }

    // The config: created now, the layer appended, one more history entry.
    let created = now();
    config.insert("created".into(), Value::String(created.clone()));
    if !e.author.is_empty() {
        config.insert("author".into(), Value::String(e.author.clone()));
    }
    let mut rootfs = match config.remove("rootfs") {
        Some(Value::Object(m)) => m,
        _ => Map::new(),
    };
    rootfs.insert("type".into(), Value::String("layers".into()));
    rootfs.insert(
        "diff_ids".into(),
        Value::Array(
            diff_ids
                .iter()
                .map(|d| Value::String(d.to_string()))
                .collect(),
        ),
    );
    config.insert("rootfs".into(), Value::Object(rootfs));
    let mut entry = Map::new();
    entry.insert("created".into(), Value::String(created));
    entry.insert("created_by".into(), Value::String(e.created_by.clone()));
    if !e.author.is_empty() {
        entry.insert("author".into(), Value::String(e.author.clone()));
    }
    if !e.comment.is_empty() {
        entry.insert("comment".into(), Value::String(e.comment.clone()));
    }
    if empty {
        entry.insert("empty_layer".into(), Value::Bool(true));
    }
    let mut history = match config.remove("history") {
        Some(Value::Array(h)) => h,
        _ => Vec::new(),
    };
    history.push(Value::Object(entry));
    config.insert("history".into(), Value::Array(history));
    Top {
        layers,
        diff_ids,
        docker,
    }
}

/// Writes config, manifest and record (named `name`, or the image's ID when `None`) of the
/// image of `top` and `config`, under the lease of `p`.
pub(crate) async fn store(
    p: &Pull<'_>,
    top: Top,
    config: &Map<String, Value>,
    name: Option<String>,
) -> Result<Committed> {
    let Top {
        layers,
        diff_ids,
        docker,
    } = top;
    let config_bytes = json("image config", config)?;
    let config_desc = Descriptor {
        media_type: if docker {
            media_types::DOCKER_CONFIG
        } else {
            media_types::OCI_CONFIG
        }
        .to_owned(),
        digest: Digest::of(&config_bytes),
        size: config_bytes.len() as u64,
        annotations: HashMap::new(),
    };

    // The manifest: the base's layers and the new one.
    let manifest_type = if docker {
        media_types::DOCKER_MANIFEST
    } else {
        media_types::OCI_MANIFEST
    };
    let manifest = ImageManifest {
        schema_version: 2,
        media_type: Some(manifest_type.to_owned()),
        artifact_type: None,
        config: strata_registry::Descriptor {
            media_type: config_desc.media_type.clone(),
            digest: config_desc.digest.clone(),
            size: config_desc.size,
            urls: Vec::new(),
            annotations: Default::default(),
            platform: None,
            artifact_type: None,
        },
        layers,
        subject: None,
        annotations: Default::default(),
    };
    let manifest_bytes = json("manifest", &manifest)?;
    let manifest_desc = Descriptor {
        media_type: manifest_type.to_owned(),
        digest: Digest::of(&manifest_bytes),
        size: manifest_bytes.len() as u64,
        annotations: HashMap::new(),
    };

    let name = name.unwrap_or_else(|| config_desc.digest.to_string());
    let chains = chain_ids(&diff_ids);
    p.finish(
        &name,
        &manifest_desc,
        None,
        (&manifest_desc, &manifest_bytes, &manifest),
        (&config_desc, &config_bytes),
        &chains,
    )
    .await?;
    Ok(Committed {
        id: config_desc.digest,
        name,
    })
}

/// Writes the container's changes as a layer blob; the container is paused meanwhile when
/// `pause_it` and it runs.
async fn diff(
    p: &Pull<'_>,
    key: &str,
    who: &str,
    parent: Option<&Digest>,
    docker: bool,
    pause_it: Option<&str>,
) -> Result<Descriptor> {
    let (b, ns, sn) = (p.b, p.ns.as_str(), p.snapshotter.as_str());
    let id = who;
    let nanos = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos();
    // The view and the blob live as long as the snapshot at least: the collector leaves them
    // alone before they reach the lease (or should the gateway die meanwhile, until the
    // snapshot goes).
    let keep = HashMap::from([(keep_label(sn), key.to_owned())]);
    let right = b.snapshots.mounts(sn, ns, key).await?;
    let view = format!("commit-{nanos}-{id}");
    let left = match parent {
        Some(parent) => {
            b.snapshots
                .view(sn, ns, &view, &parent.to_string(), keep.clone())
                .await?
        }
        None => Vec::new(),
    };
    let reference = format!("commit-{nanos}-{id}");
    let written = async {
        p.lease_add_ingest(&reference).await?;
        let paused = match pause_it {
            Some(c) => pause(b, ns, c).await?,
            None => false,
        };
        let opts = DiffOptions {
            media_type: if docker {
                media_types::DOCKER_LAYER_GZIP
            } else {
                media_types::OCI_LAYER_GZIP
            }
            .to_owned(),
            reference: reference.clone(),
            labels: keep,
        };
        let r = b
            .diff
            .diff(ns, &left, &right, opts)
            .await
            .map_err(|e| e.context(format!("{id}: writing its changes")));
        if r.is_err() {
            // The collector never removes ingests: what the differ wrote goes now.
            let _ = b.content.abort(ns, &reference).await;
        }
        let resumed = if paused && let Some(c) = pause_it {
            resume(b, ns, c).await
        } else {
            Ok(())
        };
        let desc = r?;
        resumed?;
        Ok(desc)
    }
    .await;
    if !left.is_empty() {
        let _ = b.snapshots.remove(sn, ns, &view).await;
    }
    written
}
