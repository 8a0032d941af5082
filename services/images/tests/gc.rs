//! Garbage collection end to end: the real content, snapshotter and images services, an image
//! graph tied together by `containerd.io/gc.ref.*` labels, leases, expiry, the grace period.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{Stack, labels, write_config};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};
use strata_api::strata::images::v1::{CollectRequest, CollectResponse};
use strata_core::containers::{Any, Container, ContainerStore};
use strata_core::content::{ContentStore, write_blob};
use strata_core::descriptor::Descriptor;
use strata_core::images::{DeleteOptions, Image, ImageStore};
use strata_core::leases::{self, LeaseStore, Resource};
use strata_core::namespaces::{Namespace, NamespaceStore};
use strata_core::snapshots::SnapshotStore;
use strata_core::{Digest, Error, Kind};
use strata_grpc::remote::{
    RemoteContainers, RemoteContentStore, RemoteImages, RemoteLeases, RemoteNamespaces,
};

const NS: &str = "default";
const SN: &str = "overlayfs";
/// Liveness guard for waits on background work; never a speed assertion.
const PATIENCE: Duration = Duration::from_secs(30);
/// Liveness guard for a background collection retried after a failure (its pauses double up to
/// 30 s).
const RETRY_PATIENCE: Duration = Duration::from_secs(120);

async fn collect(stack: &Stack) -> CollectResponse {
    stack
        .gc_client()
        .collect(CollectRequest {})
        .await
        .unwrap()
        .into_inner()
}

async fn present(content: &RemoteContentStore, d: &Digest) -> bool {
    match content.info(NS, d).await {
        Ok(_) => true,
        Err(e) if e.is(Kind::NotFound) => false,
        Err(e) => panic!("info {d}: {e}"),
    }
}

async fn snapshot_present(stack: &Stack, key: &str) -> bool {
    match stack.snapshots().stat(SN, NS, key).await {
        Ok(_) => true,
        Err(e) if e.is(Kind::NotFound) => false,
        Err(e) => panic!("stat {key}: {e}"),
    }
}

/// A committed snapshot `name` over `parent`.
async fn committed(stack: &Stack, name: &str, parent: &str, labels: HashMap<String, String>) {
    let s = stack.snapshots();
    let key = format!("{name}-active");
    s.prepare(SN, NS, &key, parent, HashMap::new())
        .await
        .unwrap();
    s.commit(SN, NS, name, &key, labels).await.unwrap();
}

async fn blob(
    content: &RemoteContentStore,
    data: &[u8],
    labels: HashMap<String, String>,
) -> Digest {
    write_blob(
        content,
        NS,
        &format!("ref-{}", Digest::of(data).hex()),
        data,
        None,
        labels,
    )
    .await
    .unwrap()
}

/// Waits (up to [`PATIENCE`]) until `f` is true.
async fn eventually<F, Fut>(what: &str, f: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    eventually_within(what, PATIENCE, f).await;
}

/// Waits (up to `patience`, a liveness guard) until `f` is true.
async fn eventually_within<F, Fut>(what: &str, patience: Duration, mut f: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + patience;
    while !f().await {
        assert!(Instant::now() < deadline, "gave up waiting: {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

struct Graph {
    manifest: Digest,
    config: Digest,
    layers: [Digest; 2],
    size: u64,
}

/// Content of an image: manifest → config and two layers; the config references the committed
/// snapshot chain `top` → `base` on overlayfs.
async fn image_graph(stack: &Stack, tag: &str) -> Graph {
    let content = stack.content_store();
    let (base, top) = (format!("{tag}-base"), format!("{tag}-top"));
    committed(stack, &base, "", HashMap::new()).await;
    committed(stack, &top, &base, HashMap::new()).await;
    let l0 = blob(
        &content,
        format!("{tag} layer 0").as_bytes(),
        HashMap::new(),
    )
    .await;
    let l1 = blob(
        &content,
        format!("{tag} layer 1").as_bytes(),
        HashMap::new(),
    )
    .await;
    let config = blob(
        &content,
        format!("{tag} config").as_bytes(),
        labels(&[("containerd.io/gc.ref.snapshot.overlayfs", &top)]),
    )
    .await;
    let manifest_bytes = format!("{tag} manifest");
    let manifest = blob(
        &content,
        manifest_bytes.as_bytes(),
        labels(&[
            ("containerd.io/gc.ref.content.config", &config.to_string()),
            ("containerd.io/gc.ref.content.l.0", &l0.to_string()),
            ("containerd.io/gc.ref.content.l.1", &l1.to_string()),
        ]),
    )
    .await;
    Graph {
        manifest,
        config,
        layers: [l0, l1],
        size: manifest_bytes.len() as u64,
    }
}

fn image_of(name: &str, g: &Graph) -> Image {
    Image {
        name: name.to_owned(),
        labels: HashMap::new(),
        target: Descriptor {
            media_type: "application/vnd.oci.image.manifest.v1+json".into(),
            digest: g.manifest.clone(),
            size: g.size,
            annotations: HashMap::new(),
        },
        created_at: SystemTime::UNIX_EPOCH,
        updated_at: SystemTime::UNIX_EPOCH,
    }
}

impl Graph {
    fn blobs(&self) -> Vec<Digest> {
        let mut v = vec![self.manifest.clone(), self.config.clone()];
        v.extend(self.layers.iter().cloned());
        v
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_image_keeps_its_graph_until_deleted_with_sync() {
    let stack = Stack::start(0);
    let content = stack.content_store();
    let images = RemoteImages::connect(&stack.address()).unwrap();

    let g = image_graph(&stack, "app").await;
    images.create(NS, image_of("app:1", &g)).await.unwrap();
    // Beside it: garbage (a blob and a snapshot chain nothing references) and roots.
    let orphan_data = b"nobody references me".to_vec();
    let orphan = blob(&content, &orphan_data, HashMap::new()).await;
    committed(&stack, "stray-base", "", HashMap::new()).await;
    stack
        .snapshots()
        .prepare(SN, NS, "stray", "stray-base", HashMap::new())
        .await
        .unwrap();
    let rooted_child = blob(&content, b"kept by a rooted blob", HashMap::new()).await;
    let rooted = blob(
        &content,
        b"kept whatever happens",
        labels(&[
            (leases::gc::ROOT, "2024-01-01T00:00:00Z"),
            ("containerd.io/gc.ref.content", &rooted_child.to_string()),
        ]),
    )
    .await;
    committed(
        &stack,
        "rooted-snap",
        "",
        labels(&[(leases::gc::ROOT, "yes")]),
    )
    .await;

    let stats = collect(&stack).await;
    assert_eq!(stats.content_removed, 1, "{stats:?}");
    assert_eq!(stats.snapshots_removed, 2, "{stats:?}");
    assert!(stats.bytes_freed >= orphan_data.len() as u64, "{stats:?}");
    assert!(!present(&content, &orphan).await);
    assert!(!snapshot_present(&stack, "stray").await);
    assert!(!snapshot_present(&stack, "stray-base").await);
    for d in g.blobs() {
        assert!(
            present(&content, &d).await,
            "{d} collected while the image holds it"
        );
    }
    for key in ["app-top", "app-base", "rooted-snap"] {
        assert!(snapshot_present(&stack, key).await, "{key} collected");
    }
    // A second collection finds nothing more.
    let stats = collect(&stack).await;
    assert_eq!((stats.content_removed, stats.snapshots_removed), (0, 0));

    images
        .delete(
            NS,
            "app:1",
            DeleteOptions {
                sync: true,
                target: None,
            },
        )
        .await
        .unwrap();
    // Synchronous: everything only the image held is gone when the delete returns.
    for d in g.blobs() {
        assert!(!present(&content, &d).await, "{d} survived its image");
        let file = stack
            .backends
            .content
            .root
            .join("blobs/sha256")
            .join(d.hex());
        assert!(!file.exists(), "{} left on disk", file.display());
    }
    for key in ["app-top", "app-base"] {
        assert!(
            !snapshot_present(&stack, key).await,
            "{key} survived its image"
        );
    }
    for d in [&rooted, &rooted_child] {
        assert!(present(&content, d).await, "gc.root content {d} collected");
    }
    assert!(snapshot_present(&stack, "rooted-snap").await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plain_delete_collects_soon_after() {
    let stack = Stack::start(0);
    let content = stack.content_store();
    let images = RemoteImages::connect(&stack.address()).unwrap();
    let g = image_graph(&stack, "bg").await;
    images.create(NS, image_of("bg:1", &g)).await.unwrap();
    assert_eq!(collect(&stack).await.content_removed, 0);
    images
        .delete(NS, "bg:1", DeleteOptions::default())
        .await
        .unwrap();
    for d in g.blobs() {
        eventually(&format!("{d} collected"), || {
            let content = content.clone();
            let d = d.clone();
            async move { !present(&content, &d).await }
        })
        .await;
    }
    eventually("snapshots collected", || async {
        !snapshot_present(&stack, "bg-base").await
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lease_holds_what_it_names_until_deleted() {
    let stack = Stack::start(0);
    let content = stack.content_store();
    let leases = RemoteLeases::connect(&stack.address()).unwrap();
    // As a pull does: the lease first, then the writes it covers.
    leases.create(NS, "pull", HashMap::new()).await.unwrap();
    let data = b"downloaded layer".to_vec();
    let d = Digest::of(&data);
    leases
        .add_resource(NS, "pull", Resource::new("content", d.to_string()))
        .await
        .unwrap();
    leases
        .add_resource(NS, "pull", Resource::new("snapshots/overlayfs", "unpacked"))
        .await
        .unwrap();
    blob(&content, &data, HashMap::new()).await;
    committed(&stack, "unpacked", "", HashMap::new()).await;
    // A flat lease holds its blob but not what the blob references.
    leases
        .create(NS, "flat", labels(&[(leases::gc::FLAT, "1")]))
        .await
        .unwrap();
    let referenced = blob(&content, b"referenced by the flat one", HashMap::new()).await;
    let flat_data = b"held flat".to_vec();
    leases
        .add_resource(
            NS,
            "flat",
            Resource::new("content", Digest::of(&flat_data).to_string()),
        )
        .await
        .unwrap();
    let flat = blob(
        &content,
        &flat_data,
        labels(&[("containerd.io/gc.ref.content", &referenced.to_string())]),
    )
    .await;

    let stats = collect(&stack).await;
    assert_eq!(
        (stats.content_removed, stats.snapshots_removed),
        (1, 0),
        "{stats:?}"
    );
    assert!(present(&content, &d).await);
    assert!(snapshot_present(&stack, "unpacked").await);
    assert!(present(&content, &flat).await);
    assert!(!present(&content, &referenced).await);

    leases.delete(NS, "pull", true).await.unwrap();
    assert!(!present(&content, &d).await, "lease deleted, blob kept");
    assert!(!snapshot_present(&stack, "unpacked").await);
    assert!(present(&content, &flat).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_lease_is_collected_without_a_request() {
    let stack = Stack::start(0);
    let content = stack.content_store();
    let leases = RemoteLeases::connect(&stack.address()).unwrap();
    leases.create(NS, "forever", HashMap::new()).await.unwrap();
    let kept_data = b"held by a lease without expiry".to_vec();
    leases
        .add_resource(
            NS,
            "forever",
            Resource::new("content", Digest::of(&kept_data).to_string()),
        )
        .await
        .unwrap();
    let kept = blob(&content, &kept_data, HashMap::new()).await;

    // Seconds away (the label has whole seconds), so the setup below happens before it expires.
    let soon = leases::format_rfc3339(SystemTime::now() + Duration::from_secs(3));
    leases
        .create(NS, "short", labels(&[(leases::gc::EXPIRE, &soon)]))
        .await
        .unwrap();
    let data = b"held for a few seconds".to_vec();
    leases
        .add_resource(
            NS,
            "short",
            Resource::new("content", Digest::of(&data).to_string()),
        )
        .await
        .unwrap();
    let d = blob(&content, &data, HashMap::new()).await;

    // No request to the images service from here: its timer does the work.
    eventually("the expired lease's blob is collected", || {
        let content = content.clone();
        let d = d.clone();
        async move { !present(&content, &d).await }
    })
    .await;
    assert!(present(&content, &kept).await);
    let ids: Vec<String> = leases
        .list(NS, &[])
        .await
        .unwrap()
        .into_iter()
        .map(|l| l.id)
        .collect();
    assert_eq!(ids, vec!["forever"], "the expired lease was not deleted");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn young_objects_survive_the_grace_period() {
    let mut stack = Stack::start(3600);
    let content = stack.content_store();
    RemoteNamespaces::connect(&stack.address())
        .unwrap()
        .create(Namespace {
            name: NS.into(),
            labels: HashMap::new(),
        })
        .await
        .unwrap();
    let young = blob(&content, b"written, not yet attached", HashMap::new()).await;
    committed(&stack, "young-snap", "", HashMap::new()).await;
    let stats = collect(&stack).await;
    assert_eq!(
        (stats.content_removed, stats.snapshots_removed),
        (0, 0),
        "{stats:?}"
    );
    assert!(present(&content, &young).await);
    assert!(snapshot_present(&stack, "young-snap").await);

    // The same objects without a grace period: collected.
    write_config(&stack.config, 0);
    stack.images.restart();
    let stats = collect(&stack).await;
    assert_eq!(
        (stats.content_removed, stats.snapshots_removed),
        (1, 1),
        "{stats:?}"
    );
    assert!(!present(&content, &young).await);
    assert!(!snapshot_present(&stack, "young-snap").await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreferenced_chains_go_leaves_first() {
    // Leaves first: a whole unreferenced chain goes in one collection, and an unreferenced parent
    // whose child is referenced stays.
    let stack = Stack::start(0);
    let leases = RemoteLeases::connect(&stack.address()).unwrap();
    leases
        .create(NS, "keep-child", HashMap::new())
        .await
        .unwrap();
    leases
        .add_resource(NS, "keep-child", Resource::new("snapshots/overlayfs", "c3"))
        .await
        .unwrap();
    committed(&stack, "c1", "", HashMap::new()).await;
    committed(&stack, "c2", "c1", HashMap::new()).await;
    committed(&stack, "c3", "c2", HashMap::new()).await;
    committed(&stack, "d1", "", HashMap::new()).await;
    committed(&stack, "d2", "d1", HashMap::new()).await;
    stack
        .snapshots()
        .prepare(SN, NS, "d3", "d2", HashMap::new())
        .await
        .unwrap();
    let stats = collect(&stack).await;
    assert_eq!(stats.snapshots_removed, 3, "{stats:?}");
    for k in ["c1", "c2", "c3"] {
        assert!(snapshot_present(&stack, k).await, "{k}");
    }
    for k in ["d1", "d2", "d3"] {
        assert!(!snapshot_present(&stack, k).await, "{k}");
    }
}

/// A root provider standing in for the containers a tasks service will register.
struct Pinned(Vec<strata_images::Root>);

impl strata_images::RootProvider for Pinned {
    fn name(&self) -> &str {
        "pinned"
    }
    fn roots<'a>(
        &'a self,
        ns: &'a str,
    ) -> strata_images::store::BoxFuture<'a, Result<Vec<strata_images::Root>, Error>> {
        let roots = if ns == NS { self.0.clone() } else { Vec::new() };
        Box::pin(async move { Ok(roots) })
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn root_providers_extend_the_roots() {
    let dir = strata_testkit::tempdir();
    let backends = common::Backends::start(dir.path());
    let content = backends.content_store();
    let pinned = blob(&content, b"held by a container", HashMap::new()).await;
    let loose = blob(&content, b"held by nobody", HashMap::new()).await;
    committed_on(&backends, "rootfs").await;
    let provider = Arc::new(Pinned(vec![
        strata_images::Root::new(strata_images::Object::Content(pinned.clone())),
        strata_images::Root::new(strata_images::Object::Snapshot {
            snapshotter: SN.into(),
            key: "rootfs".into(),
        }),
    ]));
    let config = strata_images::GcConfig {
        grace: Duration::ZERO,
        ..Default::default()
    };
    let local = strata_images::Local::with_collector(&dir.path().join("images"), |meta| {
        strata_images::Collector::new(meta, backends.content_store(), backends.snapshots(), config)
            .with_root_provider(provider)
    })
    .unwrap();
    local
        .namespaces
        .create(Namespace {
            name: NS.into(),
            labels: HashMap::new(),
        })
        .await
        .unwrap();
    let stats = local.collector.run().await.unwrap();
    assert_eq!(
        (stats.content_removed, stats.snapshots_removed),
        (1, 0),
        "{stats:?}"
    );
    assert!(present(&content, &pinned).await);
    assert!(!present(&content, &loose).await);
    backends.snapshots().stat(SN, NS, "rootfs").await.unwrap();
}

async fn committed_on(backends: &common::Backends, name: &str) {
    let s = backends.snapshots();
    let key = format!("{name}-active");
    s.prepare(SN, NS, &key, "", HashMap::new()).await.unwrap();
    s.commit(SN, NS, name, &key, HashMap::new()).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sync_delete_reports_an_unreachable_content_service() {
    let mut stack = Stack::start(0);
    let images = RemoteImages::connect(&stack.address()).unwrap();
    let g = image_graph(&stack, "down").await;
    images.create(NS, image_of("down:1", &g)).await.unwrap();
    stack.backends.content.kill9();
    let err = images
        .delete(
            NS,
            "down:1",
            DeleteOptions {
                sync: true,
                target: None,
            },
        )
        .await
        .unwrap_err();
    assert!(err.message().contains("down:1"), "{err}");
    assert!(err.message().contains("garbage"), "{err}");
    // The image is gone all the same; the next collection finishes the work.
    let err = images.get(NS, "down:1").await.unwrap_err();
    assert_eq!(err.kind(), Kind::NotFound, "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_owed_collection_runs_after_a_restart() {
    let mut stack = Stack::start(0);
    let images = RemoteImages::connect(&stack.address()).unwrap();
    let g = image_graph(&stack, "owed").await;
    images.create(NS, image_of("owed:1", &g)).await.unwrap();
    // The deferred collection after this delete cannot reach the content service...
    stack.backends.content.kill9();
    images
        .delete(NS, "owed:1", DeleteOptions::default())
        .await
        .unwrap();
    // ...and the images service dies before any retry.
    stack.images.kill9();
    stack.backends.content.restart();
    let content = stack.content_store();
    for d in g.blobs() {
        assert!(
            present(&content, &d).await,
            "{d} collected while content was down"
        );
    }
    // Restarted, it owes that collection and runs it unasked.
    stack.images.restart();
    for d in g.blobs() {
        eventually(&format!("{d} collected after the restart"), || {
            let content = content.clone();
            let d = d.clone();
            async move { !present(&content, &d).await }
        })
        .await;
    }
    eventually("the snapshots collected after the restart", || async {
        !snapshot_present(&stack, "owed-base").await
    })
    .await;
}

/// The upper directory of an overlayfs active snapshot's mounts: the container's own layer.
fn upperdir(mounts: &[strata_core::mount::Mount]) -> std::path::PathBuf {
    mounts
        .iter()
        .flat_map(|m| &m.options)
        .find_map(|o| o.strip_prefix("upperdir="))
        .unwrap_or_else(|| panic!("no upperdir in {mounts:?}"))
        .into()
}

/// The record of container `keep`: image `kept:1`, its layer the active snapshot `keep`.
fn keep_container() -> Container {
    let mut c = Container::new("keep", "io.containerd.runc.v2");
    c.image = "kept:1".into();
    c.spec = Some(Any {
        type_url: "types.containerd.io/opencontainers/runtime-spec/1/Spec".into(),
        value: br#"{"ociVersion":"1.1.0","process":{"args":["sh"]}}"#.to_vec(),
    });
    c.snapshotter = SN.into();
    c.snapshot_key = "keep".into();
    c
}

/// What `a_container_keeps_its_layer_while_the_tasks_service_is_down` checks at its end:
/// the container `keep`, its layer with `data` unchanged, its image `kept` and their
/// snapshots are all there.
async fn assert_kept(
    stack: &Stack,
    content: &RemoteContentStore,
    kept: &Graph,
    data: &std::path::Path,
    containers: &RemoteContainers,
) {
    assert_eq!(std::fs::read_to_string(data).unwrap(), "precious\n");
    let mounts = stack.snapshots().mounts(SN, NS, "keep").await.unwrap();
    assert_eq!(upperdir(&mounts).join("data"), data);
    for d in kept.blobs() {
        assert!(
            present(content, &d).await,
            "{d} of the container's image collected"
        );
    }
    for key in ["kept-top", "kept-base"] {
        assert!(snapshot_present(stack, key).await, "{key} collected");
    }
    let listed: Vec<String> = containers
        .list(NS, &[])
        .await
        .unwrap()
        .into_iter()
        .map(|c| c.id)
        .collect();
    assert_eq!(listed, ["keep"]);
}

/// What a `strata run -d --name keep` leaves: a container record in the tasks service holding
/// the active snapshot `keep` (its layer holding `/data`) over the image `kept:1`'s layers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_container_keeps_its_layer_while_the_tasks_service_is_down() {
    let mut stack = Stack::with_tasks(0);
    let content = stack.content_store();
    let images = RemoteImages::connect(&stack.address()).unwrap();
    let kept = image_graph(&stack, "kept").await;
    images.create(NS, image_of("kept:1", &kept)).await.unwrap();
    let mounts = stack
        .snapshots()
        .prepare(SN, NS, "keep", "kept-top", HashMap::new())
        .await
        .unwrap();
    let data = upperdir(&mounts).join("data");
    std::fs::write(&data, "precious\n").unwrap();
    let tasks_address = stack.tasks.as_ref().unwrap().address();
    let containers = RemoteContainers::connect(&tasks_address).unwrap();
    containers.create(NS, keep_container()).await.unwrap();
    let other = image_graph(&stack, "other").await;
    images
        .create(NS, image_of("other:1", &other))
        .await
        .unwrap();
    // With the tasks service up, the container holds its layer.
    let stats = collect(&stack).await;
    assert_eq!(
        (stats.content_removed, stats.snapshots_removed),
        (0, 0),
        "{stats:?}"
    );

    // The tasks service stops, as for a restart or an upgrade: its socket goes away.
    let tasks = stack.tasks.as_mut().unwrap();
    assert!(tasks.stop(), "{}", tasks.log_text());
    assert!(
        !tasks.socket.exists(),
        "the tasks socket outlived its service"
    );
    let err = images
        .delete(
            NS,
            "other:1",
            DeleteOptions {
                sync: true,
                target: None,
            },
        )
        .await
        .expect_err("collected without knowing the containers");
    assert_eq!(err.kind(), Kind::Unavailable, "{err}");
    for part in [
        "\"other:1\" deleted",
        "later",
        "tasks service",
        &tasks_address,
    ] {
        assert!(err.message().contains(part), "no {part:?} in: {err}");
    }
    let gone = images.get(NS, "other:1").await.unwrap_err();
    assert_eq!(gone.kind(), Kind::NotFound, "{gone}");
    // Nothing of the namespace was collected, the unreferenced image's objects neither.
    for d in other.blobs() {
        assert!(present(&content, &d).await, "{d} collected blind");
    }
    assert!(
        snapshot_present(&stack, "keep").await,
        "the container's layer is gone"
    );

    // Crashed rather than stopped: the socket stays and refuses. Still not "no containers".
    let tasks = stack.tasks.as_mut().unwrap();
    tasks.restart();
    tasks.kill9();
    assert!(tasks.socket.exists());
    let status = stack
        .gc_client()
        .collect(CollectRequest {})
        .await
        .expect_err("collected without knowing the containers");
    assert_eq!(status.code(), tonic::Code::Unavailable, "{status:?}");
    assert!(
        snapshot_present(&stack, "keep").await,
        "the container's layer is gone"
    );

    // The tasks service comes back; the owed collection runs by itself (a retry), and frees what
    // the deleted image held, and only that.
    stack.tasks.as_mut().unwrap().restart();
    for d in other.blobs() {
        eventually_within(
            &format!("{d} collected once the tasks service is back"),
            RETRY_PATIENCE,
            || {
                let content = content.clone();
                let d = d.clone();
                async move { !present(&content, &d).await }
            },
        )
        .await;
    }
    eventually_within(
        "the other image's snapshots collected",
        RETRY_PATIENCE,
        || async { !snapshot_present(&stack, "other-base").await },
    )
    .await;
    assert!(
        snapshot_present(&stack, "keep").await,
        "the container's layer is gone"
    );
    assert_kept(&stack, &content, &kept, &data, &containers).await;
}

/// Whether every blob of `g` and the snapshots `keys` are gone, files included.
async fn all_gone(stack: &Stack, g: &Graph, keys: &[&str]) {
    let content = stack.content_store();
    for d in g.blobs() {
        assert!(!present(&content, &d).await, "{d} survived");
        let file = stack
            .backends
            .content
            .root
            .join("blobs/sha256")
            .join(d.hex());
        assert!(!file.exists(), "{} left on disk", file.display());
    }
    for key in keys {
        assert!(!snapshot_present(stack, key).await, "{key} survived");
    }
}

/// A deletion with sync frees at once what it let go, however young: the grace period shields
/// only objects never attached to a lease or an image.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sync_delete_frees_what_was_attached_however_young() {
    let stack = Stack::start(3600);
    let content = stack.content_store();
    let images = RemoteImages::connect(&stack.address()).unwrap();
    let leases = RemoteLeases::connect(&stack.address()).unwrap();
    let sync = DeleteOptions {
        sync: true,
        target: None,
    };

    // As a pull does: everything written under a lease, the image created, the lease dropped.
    leases.create(NS, "pull", HashMap::new()).await.unwrap();
    let pulled = image_graph(&stack, "pulled").await;
    for d in pulled.blobs() {
        leases
            .add_resource(NS, "pull", Resource::new("content", d.to_string()))
            .await
            .unwrap();
    }
    for key in ["pulled-base", "pulled-top"] {
        leases
            .add_resource(NS, "pull", Resource::new("snapshots/overlayfs", key))
            .await
            .unwrap();
    }
    images
        .create(NS, image_of("pulled:1", &pulled))
        .await
        .unwrap();
    leases.delete(NS, "pull", false).await.unwrap();
    // Written straight to the services, then attached to an image only.
    let direct = image_graph(&stack, "direct").await;
    images
        .create(NS, image_of("direct:1", &direct))
        .await
        .unwrap();
    // Held by a lease only.
    leases.create(NS, "work", HashMap::new()).await.unwrap();
    let work = blob(&content, b"held by a lease only", HashMap::new()).await;
    committed(&stack, "work-snap", "", HashMap::new()).await;
    leases
        .add_resource(NS, "work", Resource::new("content", work.to_string()))
        .await
        .unwrap();
    leases
        .add_resource(
            NS,
            "work",
            Resource::new("snapshots/overlayfs", "work-snap"),
        )
        .await
        .unwrap();
    // Never attached to anything, and young: the grace period's to keep.
    let loose = blob(&content, b"written, not yet attached", HashMap::new()).await;
    committed(&stack, "loose-snap", "", HashMap::new()).await;

    images.delete(NS, "pulled:1", sync.clone()).await.unwrap();
    all_gone(&stack, &pulled, &["pulled-top", "pulled-base"]).await;
    for d in direct.blobs() {
        assert!(present(&content, &d).await, "{d} of a live image collected");
    }
    images.delete(NS, "direct:1", sync).await.unwrap();
    all_gone(&stack, &direct, &["direct-top", "direct-base"]).await;
    assert!(present(&content, &work).await);
    assert!(snapshot_present(&stack, "work-snap").await);
    leases.delete(NS, "work", true).await.unwrap();
    assert!(
        !present(&content, &work).await,
        "the lease's blob survived it"
    );
    assert!(!snapshot_present(&stack, "work-snap").await);
    assert!(
        present(&content, &loose).await,
        "a young unattached blob collected"
    );
    assert!(snapshot_present(&stack, "loose-snap").await);

    // The claims went with their objects: none is left to grow the database.
    let mut stack = stack;
    stack.images.stop();
    let meta = strata_images::Metadata::open(&stack.images.root).unwrap();
    assert_eq!(meta.claims(NS).unwrap(), Vec::new());
}

/// What the grace period kept from a collection is collected when it ends, with no further
/// request from anyone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_the_grace_period_kept_goes_when_it_ends() {
    const GRACE: Duration = Duration::from_secs(3);
    let stack = Stack::start(GRACE.as_secs());
    let content = stack.content_store();
    RemoteNamespaces::connect(&stack.address())
        .unwrap()
        .create(Namespace {
            name: NS.into(),
            labels: HashMap::new(),
        })
        .await
        .unwrap();
    let written = Instant::now();
    let young = blob(&content, b"written, never attached", HashMap::new()).await;
    committed(&stack, "young-snap", "", HashMap::new()).await;
    collect(&stack).await;
    if written.elapsed() < GRACE {
        // Certainly young when that collection looked at them.
        assert!(
            present(&content, &young).await,
            "collected in its grace period"
        );
        assert!(snapshot_present(&stack, "young-snap").await);
    }
    // From here nobody asks the images service anything.
    eventually_within(
        "the young blob collected after its grace period",
        RETRY_PATIENCE,
        || {
            let content = content.clone();
            let young = young.clone();
            async move { !present(&content, &young).await }
        },
    )
    .await;
    eventually_within(
        "the young snapshot collected after its grace period",
        RETRY_PATIENCE,
        || async { !snapshot_present(&stack, "young-snap").await },
    )
    .await;
}
