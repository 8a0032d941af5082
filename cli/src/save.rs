//! `strata save`: the archive the gateway streams, written to a file (or to stdout when it is
//! not a terminal, as `docker save` does).

use crate::Ctx;
use anyhow::Context as _;
use std::io::IsTerminal as _;
use std::path::{Path, PathBuf};
use strata_api::strata::gateway::v1 as pb;
use tokio::io::AsyncWriteExt as _;

/// Writes `images` as one archive to `output`: into a file beside it first, renamed over it
/// once the archive is whole, so a failed save leaves no partial file where one was asked for.
pub async fn save(ctx: &Ctx, output: Option<PathBuf>, images: Vec<String>) -> anyhow::Result<()> {
    if output.is_none() && std::io::stdout().is_terminal() {
        anyhow::bail!(
            "refusing to write an image archive to a terminal: use -o FILE or redirect the output"
        );
    }
    let mut stream = ctx
        .client
        .clone()
        .save(ctx.req(pb::SaveRequest { images })?)
        .await?
        .into_inner();
    let Some(path) = output else {
        use std::io::Write as _;
        let mut out = std::io::stdout().lock();
        while let Some(chunk) = stream.message().await? {
            out.write_all(&chunk.data).context("writing stdout")?;
        }
        out.flush().context("writing stdout")?;
        return Ok(());
    };
    let partial = partial_path(&path);
    let written = async {
        let mut f = tokio::fs::File::create(&partial)
            .await
            .with_context(|| format!("creating {}", partial.display()))?;
        while let Some(chunk) = stream.message().await? {
            f.write_all(&chunk.data)
                .await
                .with_context(|| format!("writing {}", partial.display()))?;
        }
        f.sync_all()
            .await
            .with_context(|| format!("writing {}", partial.display()))?;
        tokio::fs::rename(&partial, &path)
            .await
            .with_context(|| format!("renaming {} to {}", partial.display(), path.display()))?;
        anyhow::Ok(())
    }
    .await;
    if written.is_err() {
        let _ = tokio::fs::remove_file(&partial).await;
    }
    written
}

fn partial_path(path: &Path) -> PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    path.with_file_name(format!(".{name}.partial-{}", std::process::id()))
}
