//! The Rust `containerd-client` crate against strata's gateway and against containerd: the
//! calls an embedding program makes (list images, read content, prepare a snapshot over an
//! image's chain ID and mount it, create and start a task, wait for its exit), compared.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use containerd_client::Client;
use containerd_client::services::v1::container::Runtime;
use containerd_client::services::v1::snapshots::{
    MountsRequest, PrepareSnapshotRequest, RemoveSnapshotRequest, StatSnapshotRequest,
};
use containerd_client::services::v1::{
    Container, CreateContainerRequest, CreateRequest, CreateTaskRequest, DeleteContainerRequest,
    DeleteNamespaceRequest, DeleteRequest, DeleteTaskRequest, GetImageRequest, InfoRequest,
    ListImagesRequest, ListNamespacesRequest, ReadContentRequest, StartRequest, WaitRequest,
};
use containerd_client::tonic::{Request, Status};
use containerd_client::types::Mount;
use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;
use strata_compat::image::{HELLO, HELLO_PATH, OS_RELEASE, WHITED_OUT};
use strata_compat::{Env, Obs, Side, TestImage, digest_of};

const SNAPSHOTTER: &str = "overlayfs";
const SPEC_TYPE: &str = "types.containerd.io/opencontainers/runtime-spec/1/Spec";

/// A request in `ns`, under `lease` when given (as containerd's Go client sends them).
fn req<T>(ns: &str, lease: Option<&str>, msg: T) -> Request<T> {
    let mut r = Request::new(msg);
    r.metadata_mut()
        .insert("containerd-namespace", ns.parse().unwrap());
    if let Some(l) = lease {
        r.metadata_mut()
            .insert("containerd-lease", l.parse().unwrap());
    }
    r
}

fn code<T>(r: &Result<T, Status>) -> String {
    match r {
        Ok(_) => "Ok".into(),
        Err(s) => format!("{:?}", s.code()),
    }
}

/// Content.Read of a whole blob (or a range), the streamed chunks joined.
async fn read(
    c: &Client,
    ns: &str,
    digest: &str,
    offset: i64,
    size: i64,
) -> Result<Vec<u8>, Status> {
    let mut stream = c
        .content()
        .read(req(
            ns,
            None,
            ReadContentRequest {
                digest: digest.into(),
                offset,
                size,
            },
        ))
        .await?
        .into_inner();
    let mut data = Vec::new();
    while let Some(chunk) = stream.message().await? {
        data.extend_from_slice(&chunk.data);
    }
    Ok(data)
}

/// A mount made with mount(8), as a client process would; unmounted when dropped (also when
/// a check fails while it is mounted).
struct Mounted<'a>(&'a Path);

impl Drop for Mounted<'_> {
    fn drop(&mut self) {
        let out = strata_testkit::run(Command::new("umount").arg(self.0), None);
        assert!(
            out.status.success() || std::thread::panicking(),
            "umount {}: {}",
            self.0.display(),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// Mounts `mounts` (one overlay, as both servers answer for a snapshot with a parent) on
/// `target`.
fn mount<'a>(mounts: &[Mount], target: &'a Path) -> Mounted<'a> {
    assert_eq!(mounts.len(), 1, "{mounts:?}");
    let m = &mounts[0];
    std::fs::create_dir_all(target).unwrap();
    strata_testkit::ok(
        Command::new("mount")
            .arg("-t")
            .arg(&m.r#type)
            .arg("-o")
            .arg(m.options.join(","))
            .arg(&m.source)
            .arg(target),
        None,
    );
    Mounted(target)
}

/// What a client reads in a mounted snapshot of the test image.
fn note_tree(o: &mut Obs, step: &str, root: &Path) {
    let read = |p: &str| std::fs::read_to_string(root.join(p.trim_start_matches('/')));
    o.note(
        format!("{step}: {HELLO_PATH}"),
        read(HELLO_PATH).unwrap_or_else(|e| format!("error: {e}")),
    );
    o.note(
        format!("{step}: /etc/os-release"),
        read("/etc/os-release").unwrap_or_else(|e| format!("error: {e}")),
    );
    o.note(
        format!("{step}: {WHITED_OUT} exists"),
        root.join(WHITED_OUT.trim_start_matches('/'))
            .symlink_metadata()
            .is_ok(),
    );
    let names: BTreeSet<String> = std::fs::read_dir(root)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    o.note(
        format!("{step}: /"),
        names.into_iter().collect::<Vec<_>>().join(","),
    );
}

/// A runtime spec as a client builds it: the container runs `args` in its own namespaces.
fn spec(ns: &str, id: &str, args: &[&str]) -> prost_types::Any {
    let spec = serde_json::json!({
        "ociVersion": "1.0.2",
        "process": {
            "terminal": false,
            "user": {"uid": 0, "gid": 0},
            "args": args,
            "env": ["PATH=/bin"],
            "cwd": "/",
            "noNewPrivileges": true,
        },
        "root": {"path": "rootfs"},
        "hostname": "compat",
        "mounts": [
            {"destination": "/proc", "type": "proc", "source": "proc",
             "options": ["nosuid", "noexec", "nodev"]},
            {"destination": "/dev", "type": "tmpfs", "source": "tmpfs",
             "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]},
        ],
        "linux": {
            "namespaces": [{"type": "pid"}, {"type": "ipc"}, {"type": "uts"}, {"type": "mount"},
                           {"type": "network"}],
            "cgroupsPath": format!("/{ns}/{id}"),
        },
    });
    prost_types::Any {
        type_url: SPEC_TYPE.into(),
        value: serde_json::to_vec(&spec).unwrap(),
    }
}

/// Images and content: the image listed and got (a missing one too), its manifest read whole
/// and in part, its info, a missing blob. The manifest.
async fn images_and_content(c: &Client, ns: &str, o: &mut Obs, img: &TestImage) -> Vec<u8> {
    // Images.
    let list = c
        .images()
        .list(req(ns, None, ListImagesRequest { filters: vec![] }))
        .await
        .unwrap()
        .into_inner();
    let names: Vec<String> = list.images.iter().map(|i| i.name.clone()).collect();
    o.note("images list", names.join(","));
    let get = c
        .images()
        .get(req(
            ns,
            None,
            GetImageRequest {
                name: img.reference.clone(),
            },
        ))
        .await
        .unwrap()
        .into_inner();
    let target = get.image.and_then(|i| i.target).unwrap_or_default();
    o.note(
        "image target",
        format!("{} {} {}", target.media_type, target.digest, target.size),
    );
    let missing = c
        .images()
        .get(req(
            ns,
            None,
            GetImageRequest {
                name: "compat/none:1".into(),
            },
        ))
        .await;
    o.note("images get of a missing image", code(&missing));

    // Content: the manifest, whole and a range; its info; a missing blob.
    let manifest = read(c, ns, &target.digest, 0, 0).await.unwrap();
    o.note("content read manifest: digest", digest_of(&manifest));
    o.note("content read manifest: length", manifest.len());
    let part = read(c, ns, &target.digest, 5, 10).await.unwrap();
    o.note("content read range", String::from_utf8_lossy(&part));
    let info = c
        .content()
        .info(req(
            ns,
            None,
            InfoRequest {
                digest: target.digest.clone(),
            },
        ))
        .await
        .unwrap()
        .into_inner()
        .info
        .unwrap_or_default();
    let mut labels: Vec<String> = info
        .labels
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    labels.sort();
    o.note(
        "content info manifest",
        format!("{} {} [{}]", info.digest, info.size, labels.join(",")),
    );
    let zero = format!("sha256:{}", "0".repeat(64));
    o.note(
        "content read missing",
        code(&read(c, ns, &zero, 0, 0).await),
    );
    manifest
}

/// The chain IDs of the image whose manifest is `manifest`, and the snapshot of the top one:
/// the chain and its top.
async fn chain_of(c: &Client, ns: &str, o: &mut Obs, manifest: &[u8]) -> (Vec<String>, String) {
    // The chain ID, from the config the manifest names.
    let m: serde_json::Value = serde_json::from_slice(manifest).unwrap();
    let config_digest = m["config"]["digest"].as_str().unwrap().to_owned();
    let config = read(c, ns, &config_digest, 0, 0).await.unwrap();
    let config: serde_json::Value = serde_json::from_slice(&config).unwrap();
    let diff_ids: Vec<String> = config["rootfs"]["diff_ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d.as_str().unwrap().to_owned())
        .collect();
    let chain = strata_compat::image::chain_ids(&diff_ids);
    let top = chain.last().unwrap().clone();
    o.note("chain id", &top);
    let stat = c
        .snapshots()
        .stat(req(
            ns,
            None,
            StatSnapshotRequest {
                snapshotter: SNAPSHOTTER.into(),
                key: top.clone(),
            },
        ))
        .await
        .unwrap()
        .into_inner()
        .info
        .unwrap_or_default();
    o.note(
        "snapshot stat chain id",
        format!("{} parent={} kind={}", stat.name, stat.parent, stat.kind),
    );
    (chain, top)
}

/// A snapshot over `top`, held by `lease`, mounted on `target_dir`: the image's files, a
/// write that stays, a taken key, removals (of it, and of `bottom`, which has a child).
async fn snapshot_workflow(
    c: &Client,
    ns: &str,
    o: &mut Obs,
    lease: &str,
    top: &str,
    bottom: &str,
    target_dir: &Path,
) {
    // Prepare a snapshot over the chain, mount it, read the image's files, write one.
    let prepared = c
        .snapshots()
        .prepare(req(
            ns,
            Some(lease),
            PrepareSnapshotRequest {
                snapshotter: SNAPSHOTTER.into(),
                key: "compat-rw".into(),
                parent: top.to_owned(),
                labels: Default::default(),
            },
        ))
        .await
        .unwrap()
        .into_inner();
    o.note(
        "prepare: mount types",
        prepared
            .mounts
            .iter()
            .map(|m| m.r#type.clone())
            .collect::<Vec<_>>()
            .join(","),
    );
    let mounted = mount(&prepared.mounts, target_dir);
    note_tree(o, "prepared", target_dir);
    std::fs::write(target_dir.join("compat/written"), b"by the client\n").unwrap();
    drop(mounted);
    let again = c
        .snapshots()
        .prepare(req(
            ns,
            Some(lease),
            PrepareSnapshotRequest {
                snapshotter: SNAPSHOTTER.into(),
                key: "compat-rw".into(),
                parent: top.to_owned(),
                labels: Default::default(),
            },
        ))
        .await;
    o.note("prepare of a taken key", code(&again));
    let mounts = c
        .snapshots()
        .mounts(req(
            ns,
            None,
            MountsRequest {
                snapshotter: SNAPSHOTTER.into(),
                key: "compat-rw".into(),
            },
        ))
        .await
        .unwrap()
        .into_inner();
    let mounted = mount(&mounts.mounts, target_dir);
    o.note(
        "remounted: the client's write",
        std::fs::read_to_string(target_dir.join("compat/written")).unwrap_or_default(),
    );
    drop(mounted);
    let removed = c
        .snapshots()
        .remove(req(
            ns,
            None,
            RemoveSnapshotRequest {
                snapshotter: SNAPSHOTTER.into(),
                key: "compat-rw".into(),
            },
        ))
        .await;
    o.note("snapshot remove", code(&removed));
    let removed = c
        .snapshots()
        .remove(req(
            ns,
            None,
            RemoveSnapshotRequest {
                snapshotter: SNAPSHOTTER.into(),
                key: bottom.to_owned(),
            },
        ))
        .await;
    o.note("snapshot remove of a snapshot with a child", code(&removed));
}

/// Container `id` of `img`, its rootfs the snapshot `snap` over `top` (both held by
/// `lease`), and its task created.
#[allow(clippy::too_many_arguments)]
async fn create_container_and_task(
    c: &Client,
    ns: &str,
    o: &mut Obs,
    lease: &str,
    img: &TestImage,
    top: &str,
    id: &str,
    snap: &str,
) {
    // A container and its task: create, start, wait for the exit code.
    let rootfs = c
        .snapshots()
        .prepare(req(
            ns,
            Some(lease),
            PrepareSnapshotRequest {
                snapshotter: SNAPSHOTTER.into(),
                key: snap.to_owned(),
                parent: top.to_owned(),
                labels: Default::default(),
            },
        ))
        .await
        .unwrap()
        .into_inner()
        .mounts;
    let container = Container {
        id: id.into(),
        image: img.reference.clone(),
        runtime: Some(Runtime {
            name: "io.containerd.runc.v2".into(),
            options: None,
        }),
        spec: Some(spec(
            ns,
            id,
            &["sh", "-c", "echo from-the-task > /compat/out; exit 5"],
        )),
        snapshotter: SNAPSHOTTER.into(),
        snapshot_key: snap.to_owned(),
        ..Default::default()
    };
    let created = c
        .containers()
        .create(req(
            ns,
            Some(lease),
            CreateContainerRequest {
                container: Some(container),
            },
        ))
        .await;
    o.note("container create", code(&created));
    let task = c
        .tasks()
        .create(req(
            ns,
            None,
            CreateTaskRequest {
                container_id: id.into(),
                rootfs,
                ..Default::default()
            },
        ))
        .await;
    o.note("task create", code(&task));
    o.note(
        "task create: pid > 0",
        task.as_ref().is_ok_and(|t| t.get_ref().pid > 0),
    );
}

/// The task of container `id` started, waited for and deleted, with its exit status.
async fn start_wait_delete(c: &Client, ns: &str, o: &mut Obs, id: &str) {
    let started = c
        .tasks()
        .start(req(
            ns,
            None,
            StartRequest {
                container_id: id.into(),
                exec_id: String::new(),
            },
        ))
        .await;
    o.note("task start", code(&started));
    let waited = c
        .tasks()
        .wait(req(
            ns,
            None,
            WaitRequest {
                container_id: id.into(),
                exec_id: String::new(),
            },
        ))
        .await;
    o.note("task wait", code(&waited));
    o.note(
        "task wait: exit status",
        waited
            .map(|w| w.into_inner().exit_status)
            .unwrap_or(u32::MAX),
    );
    let deleted = c
        .tasks()
        .delete(req(
            ns,
            None,
            DeleteTaskRequest {
                container_id: id.into(),
            },
        ))
        .await;
    o.note("task delete", code(&deleted));
    o.note(
        "task delete: exit status",
        deleted
            .map(|d| d.into_inner().exit_status)
            .unwrap_or(u32::MAX),
    );
}

/// What the task of container `id` wrote is in its snapshot `snap` (mounted on
/// `target_dir`); then the container and the snapshot go.
async fn task_write_and_removal(
    c: &Client,
    ns: &str,
    o: &mut Obs,
    id: &str,
    snap: &str,
    target_dir: &Path,
) {
    // What the task wrote is in its snapshot.
    let mounts = c
        .snapshots()
        .mounts(req(
            ns,
            None,
            MountsRequest {
                snapshotter: SNAPSHOTTER.into(),
                key: snap.to_owned(),
            },
        ))
        .await
        .unwrap()
        .into_inner();
    let mounted = mount(&mounts.mounts, target_dir);
    o.note(
        "the task's write, in its snapshot",
        std::fs::read_to_string(target_dir.join("compat/out")).unwrap_or_default(),
    );
    drop(mounted);
    let deleted = c
        .containers()
        .delete(req(ns, None, DeleteContainerRequest { id: id.into() }))
        .await;
    o.note("container delete", code(&deleted));
    let removed = c
        .snapshots()
        .remove(req(
            ns,
            None,
            RemoveSnapshotRequest {
                snapshotter: SNAPSHOTTER.into(),
                key: snap.to_owned(),
            },
        ))
        .await;
    o.note("container snapshot remove", code(&removed));
}

/// A namespace holding only a container record is not empty: its deletion is refused until
/// the record goes.
async fn container_only_namespace(c: &Client, ns: &str, o: &mut Obs) {
    // A namespace holding only a container record is not empty.
    let other = format!("{ns}-c");
    let container = Container {
        id: "lonely".into(),
        runtime: Some(Runtime {
            name: "io.containerd.runc.v2".into(),
            options: None,
        }),
        spec: Some(spec(&other, "lonely", &["true"])),
        ..Default::default()
    };
    let created = c
        .containers()
        .create(req(
            &other,
            None,
            CreateContainerRequest {
                container: Some(container),
            },
        ))
        .await;
    o.note("container-only namespace: create", code(&created));
    let listed = c
        .namespaces()
        .list(req(&other, None, ListNamespacesRequest::default()))
        .await
        .unwrap()
        .into_inner();
    o.note(
        "container-only namespace: listed",
        listed.namespaces.iter().any(|n| n.name == other),
    );
    let deleted = c
        .namespaces()
        .delete(req(
            &other,
            None,
            DeleteNamespaceRequest {
                name: other.clone(),
            },
        ))
        .await;
    o.note("container-only namespace: delete", code(&deleted));
    let _ = c
        .containers()
        .delete(req(
            &other,
            None,
            DeleteContainerRequest {
                id: "lonely".into(),
            },
        ))
        .await;
    let deleted = c
        .namespaces()
        .delete(req(
            &other,
            None,
            DeleteNamespaceRequest {
                name: other.clone(),
            },
        ))
        .await;
    o.note(
        "container-only namespace: delete once empty",
        code(&deleted),
    );
}

async fn client_workflow(env: &Env, side: &Side) -> Obs {
    let img = &env.image;
    let ns = side.ns.as_str();
    let mut o = Obs::new();
    side.ctr(&["images", "pull", "--plain-http", &img.reference])
        .ok();

    let c = Client::from_path(&side.socket).await.unwrap();
    let v = c.version().version(()).await.unwrap().into_inner();
    o.note("version: not empty", !v.version.is_empty());

    let manifest = images_and_content(&c, ns, &mut o, img).await;
    let (chain, top) = chain_of(&c, ns, &mut o, &manifest).await;

    // A lease holds what this client creates, as containerd's Go client does.
    let lease = "compat-client";
    let created = c
        .leases()
        .create(req(
            ns,
            None,
            CreateRequest {
                id: lease.into(),
                labels: Default::default(),
            },
        ))
        .await;
    o.note("lease create", code(&created));

    let target_dir = side.scratch.join("mnt");
    snapshot_workflow(&c, ns, &mut o, lease, &top, &chain[0], &target_dir).await;

    let id = "compat-task";
    let snap = format!("{id}-snapshot");
    create_container_and_task(&c, ns, &mut o, lease, img, &top, id, &snap).await;
    start_wait_delete(&c, ns, &mut o, id).await;
    task_write_and_removal(&c, ns, &mut o, id, &snap, &target_dir).await;
    let deleted = c
        .leases()
        .delete(req(
            ns,
            None,
            DeleteRequest {
                id: lease.into(),
                sync: true,
            },
        ))
        .await;
    o.note("lease delete", code(&deleted));

    container_only_namespace(&c, ns, &mut o).await;

    o
}

#[test]
fn containerd_client_crate_images_content_snapshots_tasks() {
    let env = Env::start("client");
    env.clean_namespace(&format!("{}-c", env.strata.ns));
    if let Some(c) = &env.containerd {
        env.clean_namespace(&format!("{}-c", c.ns));
    }
    let img = &env.image;
    env.compare(
        |side| {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap()
                .block_on(client_workflow(&env, side))
        },
        |o| {
            o.expect("version: not empty", "true");
            o.expect("images list", &img.reference);
            assert!(o.value("image target").contains(&img.manifest), "{o}");
            o.expect("images get of a missing image", "NotFound");
            o.expect("content read manifest: digest", &img.manifest);
            o.expect("content read missing", "NotFound");
            o.expect("chain id", img.chain.last().unwrap());
            o.expect("lease create", "Ok");
            o.expect("prepare: mount types", "overlay");
            o.expect(&format!("prepared: {HELLO_PATH}"), HELLO);
            o.expect("prepared: /etc/os-release", OS_RELEASE);
            o.expect(&format!("prepared: {WHITED_OUT} exists"), "false");
            o.expect("prepare of a taken key", "AlreadyExists");
            o.expect("remounted: the client's write", "by the client\n");
            o.expect("snapshot remove", "Ok");
            o.expect(
                "snapshot remove of a snapshot with a child",
                "FailedPrecondition",
            );
            o.expect("container create", "Ok");
            o.expect("task create", "Ok");
            o.expect("task create: pid > 0", "true");
            o.expect("task start", "Ok");
            o.expect("task wait: exit status", "5");
            o.expect("task delete: exit status", "5");
            o.expect("the task's write, in its snapshot", "from-the-task\n");
            o.expect("container delete", "Ok");
            o.expect("container snapshot remove", "Ok");
            o.expect("lease delete", "Ok");
            o.expect("container-only namespace: listed", "true");
            o.expect("container-only namespace: delete", "FailedPrecondition");
            o.expect("container-only namespace: delete once empty", "Ok");
        },
        |_| {},
    );
}
