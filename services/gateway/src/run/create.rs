//! Creating a container: its user resolved against the image's accounts, its spec, network and
//! labels, then its record and its root snapshot.

use super::{
    LABEL_AUTO_REMOVE, LABEL_STDIN, get_container, get_task, ignore_missing, key, random_id,
};
use crate::Backends;
use crate::catalog::find_image;
use crate::image::details;
use crate::run::RunOptions;
use crate::spec::{self, SPEC_TYPE, User};
use serde_json::Value;
use std::collections::HashMap;
use std::path::Path;
use strata_core::containers::{Any, Container, ContainerStore};
use strata_core::snapshots::SnapshotStore;
use strata_core::{Error, Kind, Result};

/// Whether container `id`'s record is all that is left of it: it names a snapshot that does not
/// exist and has no task. A creation cut short between the record and the snapshot (the
/// gateway killed), or a removal cut short between the snapshot and the record, leaves that;
/// no creation in progress does, once [`Attachments::creating`] says none is.
async fn record_only(b: &Backends, ns: &str, id: &str) -> Result<bool> {
    let c = get_container(b, ns, id).await?;
    if c.snapshot_key.is_empty() {
        return Ok(false);
    }
    match b.snapshots.stat(&c.snapshotter, ns, &c.snapshot_key).await {
        Err(e) if e.kind() == Kind::NotFound => {}
        Err(e) => return Err(e),
        Ok(_) => return Ok(false),
    }
    Ok(get_task(b, ns, id, "").await?.is_none())
}

/// The most of an image's /etc/passwd or /etc/group read to resolve a user.
const ACCOUNTS_LIMIT: u64 = 1 << 20;

/// Reads `/etc/passwd` and `/etc/group` of the image whose top layer is `parent`, through a
/// short-lived read-only view of it.
async fn image_accounts(
    b: &Backends,
    ns: &str,
    snapshotter: &str,
    parent: &str,
    id: &str,
) -> Result<(String, String)> {
    let view = format!("strata-user-{id}-{}", random_id()?);
    let mounts = b
        .snapshots
        .view(snapshotter, ns, &view, parent, HashMap::new())
        .await?;
    let tmp = b.root.join("tmp");
    let read = tokio::task::spawn_blocking(move || -> Result<(String, String)> {
        std::fs::create_dir_all(&tmp)
            .map_err(|e| Error::internal(format!("{}: {e}", tmp.display())))?;
        let m = strata_mount::TempMount::new(&mounts, &tmp)
            .map_err(|e| Error::internal(format!("mounting the image to read its users: {e}")))?;
        // Read as the container would see them (links resolve inside the image) and bounded:
        // an image's /etc/passwd that is a FIFO, a device or a huge file is refused.
        let read = |f: &str| -> Result<String> {
            let bytes = strata_mount::inroot::read_in_root(m.path(), Path::new(f), ACCOUNTS_LIMIT)
                .map_err(|e| {
                    Error::failed_precondition(format!(
                        "reading the image's {f} to resolve the user: {e}"
                    ))
                })?;
            Ok(String::from_utf8_lossy(&bytes.unwrap_or_default()).into_owned())
        };
        Ok((read("/etc/passwd")?, read("/etc/group")?))
    })
    .await
    .map_err(|e| Error::internal(format!("reading the image's users: {e}")));
    let _ = b.snapshots.remove(snapshotter, ns, &view).await;
    read?
}

pub(super) async fn resolve_user(
    b: &Backends,
    ns: &str,
    snapshotter: &str,
    parent: &str,
    id: &str,
    user: &str,
    group_add: &[String],
) -> Result<User> {
    let numeric_groups = group_add.iter().all(|g| g.parse::<u32>().is_ok());
    let mut resolved = if user.is_empty() {
        Some(User::default())
    } else {
        spec::numeric_user(user).filter(|_| user.contains(':'))
    };
    let mut group_file = String::new();
    if resolved.is_none() || !numeric_groups {
        let (passwd, group) = image_accounts(b, ns, snapshotter, parent, id).await?;
        if resolved.is_none() {
            resolved = Some(spec::resolve_user(user, &passwd, &group)?);
        }
        group_file = group;
    }
    let mut u = resolved.unwrap_or_default();
    for g in crate::confine::group_ids(group_add, &group_file)? {
        if !u.additional_gids.contains(&g) {
            u.additional_gids.push(g);
        }
    }
    Ok(u)
}

/// Creates a container of a local image; returns its ID.
pub async fn create(b: &Backends, ns: &str, req: RunOptions) -> Result<String> {
    let image = find_image(b, ns, &req.image).await?;
    let img = details(b, ns, image).await?;
    let id = if req.name.is_empty() {
        random_id()?
    } else {
        strata_core::identifiers::validate("container name", &req.name)?;
        req.name.clone()
    };
    let snapshotter = if req.snapshotter.is_empty() {
        b.snapshotter.clone()
    } else {
        req.snapshotter.clone()
    };
    let parent = img
        .chain_ids
        .last()
        .map(ToString::to_string)
        .unwrap_or_default();
    // An image whose top layer is not unpacked is found out by the first use of that layer
    // (reading its users, or preparing the container's snapshot over it): no extra call.
    let not_unpacked = |e: Error| {
        if e.kind() == Kind::NotFound && !parent.is_empty() {
            Error::failed_precondition(format!(
                "image {:?} is not unpacked in snapshotter {snapshotter:?}: pull it again",
                img.name
            ))
        } else {
            e
        }
    };
    let config = img.config.config.clone().unwrap_or_default();
    let user_s = if req.user.is_empty() {
        config.user.clone().unwrap_or_default()
    } else {
        req.user.clone()
    };
    let user = resolve_user(b, ns, &snapshotter, &parent, &id, &user_s, &req.group_add)
        .await
        .map_err(not_unpacked)?;
    let mut spec = spec::build(&id, &req, &config, &user)?;
    let network = crate::net::wanted(b, &req)?;
    if let Some(target) = req.network.strip_prefix("container:") {
        crate::net::join_container(b, ns, target, &mut spec).await?;
    }
    for v in &req.volumes {
        // As `docker run -v`: a missing host directory is created.
        if !std::path::Path::new(&v.source).exists() {
            std::fs::create_dir_all(&v.source)
                .map_err(|e| Error::invalid_argument(format!("volume source {}: {e}", v.source)))?;
        }
    }
    let mut labels = req.labels.clone();
    if req.stdin {
        labels.insert(LABEL_STDIN.to_owned(), "true".to_owned());
    }
    if req.auto_remove {
        labels.insert(LABEL_AUTO_REMOVE.to_owned(), "true".to_owned());
        // Its layer goes with it: no sync of it is worth waiting for.
        labels.insert(
            strata_core::containers::LABEL_VOLATILE_ROOTFS.to_owned(),
            "true".to_owned(),
        );
    }
    let in_use = || Error::already_exists(format!("container {id:?}: the name is in use"));
    let _creating = b
        .attachments
        .creating(&key(ns, &id, ""))
        .ok_or_else(in_use)?;
    if let Some(network) = &network {
        match get_container(b, ns, &id).await {
            Ok(_) => return Err(in_use()),
            Err(e) if e.kind() == Kind::NotFound => {}
            Err(e) => return Err(e),
        }
        // An attachment a crash left under this name goes first.
        crate::net::detach(b, ns, &id).await?;
        let hostname = spec["hostname"].as_str().unwrap_or_default().to_owned();
        let a = crate::net::attach(b, ns, &id, network, &req, &config, &hostname).await?;
        crate::net::apply(&mut spec, &a);
        labels.insert(crate::net::LABEL_NETWORK.to_owned(), a.network.clone());
        if !a.ports.is_empty() {
            labels.insert(crate::net::LABEL_PUBLISHES.to_owned(), "true".to_owned());
        }
    }
    let created = create_recorded(
        b,
        ns,
        &id,
        &img.name,
        &req,
        labels,
        &spec,
        &snapshotter,
        &parent,
    )
    .await;
    if created.is_err() && network.is_some() {
        let _ = crate::net::detach(b, ns, &id).await;
    }
    created.map_err(not_unpacked)?;
    Ok(id)
}

/// The container's record, then its snapshot; the record goes again when the snapshot
/// cannot be made.
#[allow(clippy::too_many_arguments)]
async fn create_recorded(
    b: &Backends,
    ns: &str,
    id: &str,
    image: &str,
    req: &RunOptions,
    labels: HashMap<String, String>,
    spec: &Value,
    snapshotter: &str,
    parent: &str,
) -> Result<()> {
    let id = id.to_owned();
    let in_use = || Error::already_exists(format!("container {id:?}: the name is in use"));
    let value = serde_json::to_vec(spec)
        .map_err(|e| Error::internal(format!("container {id:?}: spec: {e}")))?;
    let runtime = if req.runtime.is_empty() {
        "io.containerd.runc.v2"
    } else {
        req.runtime.as_str()
    };
    let mut record = Container::new(id.clone(), runtime);
    record.labels = labels;
    record.image = image.to_owned();
    record.spec = Some(Any {
        type_url: SPEC_TYPE.to_owned(),
        value,
    });
    record.snapshotter = snapshotter.to_owned();
    record.snapshot_key = id.clone();
    // The record first: as a root of garbage collection it holds its snapshot's key before the
    // snapshot exists, so the snapshot is never unreferenced and no lease is needed.
    let containers = &b.containers;
    let created = containers.create(ns, record.clone()).await;
    match created {
        Ok(_) => {}
        // What a crash left of an earlier creation or removal of this name is replaced.
        Err(e) if e.kind() == Kind::AlreadyExists && record_only(b, ns, &id).await? => {
            tracing::info!(container = %id, "replacing a record left without its snapshot");
            ignore_missing(containers.delete(ns, &id).await)?;
            match containers.create(ns, record).await {
                Ok(_) => {}
                Err(e) if e.kind() == Kind::AlreadyExists => return Err(in_use()),
                Err(e) => return Err(e),
            }
        }
        Err(e) if e.kind() == Kind::AlreadyExists => return Err(in_use()),
        Err(e) => return Err(e),
    }
    strata_core::crashpoint::hit("gateway.create.recorded");
    if let Err(e) = b
        .snapshots
        .prepare(snapshotter, ns, &id, parent, HashMap::new())
        .await
    {
        let _ = b.containers.delete(ns, &id).await;
        return Err(e);
    }
    Ok(())
}
