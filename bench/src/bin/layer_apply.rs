//! Layer apply, strata vs containerd: the same gzip layer blob is written into each one's
//! content store, then applied onto a fresh overlayfs snapshot with `Diff.Apply`, the same
//! client (this program) timing both, alternating, several rounds. Prints medians and the ratio.

use anyhow::{Context, bail};
use clap::Parser;
use std::collections::HashMap;
use std::time::Instant;
use strata_api::containerd::services::diff::v1 as dpb;
use strata_api::containerd::services::diff::v1::diff_client::DiffClient;
use strata_core::Digest;
use strata_core::content::write_blob;
use strata_core::descriptor::{UNCOMPRESSED_LABEL, media_types};
use strata_core::snapshots::SnapshotStore;
use strata_grpc::convert::mounts;
use strata_grpc::metadata::with_namespace;
use strata_grpc::remote::{RemoteContentStore, RemoteSnapshots};

#[derive(Parser)]
struct Args {
    /// The layer: a gzip-compressed tar
    #[arg(long)]
    layer: std::path::PathBuf,
    /// strata's content service socket
    #[arg(long)]
    strata_content: String,
    /// strata's snapshotter service socket (Snapshots and Diff)
    #[arg(long)]
    strata_snapshotter: String,
    /// containerd's socket
    #[arg(long)]
    containerd: String,
    /// sha256 of the uncompressed tar (`sha256:<hex>`), verified by strata while applying
    #[arg(long)]
    diff_id: String,
    #[arg(long, default_value_t = 5)]
    rounds: usize,
}

struct Target {
    name: &'static str,
    content: RemoteContentStore,
    snapshots: RemoteSnapshots,
    diff: DiffClient<tonic::transport::Channel>,
}

const NS: &str = "bench";

async fn apply_once(t: &Target, key: &str, desc: &dpb::ApplyRequest) -> anyhow::Result<f64> {
    let m = t
        .snapshots
        .prepare("overlayfs", NS, key, "", HashMap::new())
        .await
        .with_context(|| format!("{}: prepare", t.name))?;
    let mut req = desc.clone();
    req.mounts = mounts::all_to_pb(m);
    let start = Instant::now();
    let resp = t
        .diff
        .clone()
        .apply(with_namespace(NS, req)?)
        .await
        .with_context(|| format!("{}: apply", t.name))?;
    let secs = start.elapsed().as_secs_f64();
    if resp.into_inner().applied.is_none() {
        bail!("{}: apply returned no descriptor", t.name);
    }
    // Snapshots are removed after the last round: a removal sets off containerd's garbage
    // collector, which would take the unreferenced layer blob.
    Ok(secs)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let blob = std::fs::read(&args.layer).with_context(|| format!("{}", args.layer.display()))?;
    let digest = Digest::of(&blob);
    let diff_id = Digest::parse(&args.diff_id)?;
    let targets = [
        Target {
            name: "strata",
            content: RemoteContentStore::connect(&args.strata_content)?,
            snapshots: RemoteSnapshots::connect(&args.strata_snapshotter)?,
            diff: DiffClient::new(strata_grpc::client::channel(&args.strata_snapshotter)?),
        },
        Target {
            name: "containerd",
            content: RemoteContentStore::connect(&args.containerd)?,
            snapshots: RemoteSnapshots::connect(&args.containerd)?,
            diff: DiffClient::new(strata_grpc::client::channel(&args.containerd)?),
        },
    ];
    for t in &targets {
        write_blob(
            &t.content,
            NS,
            "bench-layer",
            &blob,
            Some(digest.clone()),
            HashMap::new(),
        )
        .await
        .with_context(|| format!("{}: writing the layer blob", t.name))?;
    }
    let req = dpb::ApplyRequest {
        diff: Some(strata_api::containerd::types::Descriptor {
            media_type: media_types::OCI_LAYER_GZIP.to_owned(),
            digest: digest.to_string(),
            size: i64::try_from(blob.len())?,
            annotations: HashMap::from([(UNCOMPRESSED_LABEL.to_owned(), diff_id.to_string())]),
        }),
        ..Default::default()
    };
    let mut times: HashMap<&str, Vec<f64>> = HashMap::new();
    for round in 0..args.rounds {
        for t in &targets {
            let secs = apply_once(t, &format!("bench-apply-{round}"), &req).await?;
            times.entry(t.name).or_default().push(secs);
        }
    }
    for t in &targets {
        for round in 0..args.rounds {
            t.snapshots
                .remove("overlayfs", NS, &format!("bench-apply-{round}"))
                .await
                .with_context(|| format!("{}: remove", t.name))?;
        }
    }
    if args.rounds == 0 {
        return Ok(());
    }
    let s = median(times.remove("strata").unwrap_or_default());
    let c = median(times.remove("containerd").unwrap_or_default());
    println!("strata {s:.3}");
    println!("containerd {c:.3}");
    Ok(())
}
