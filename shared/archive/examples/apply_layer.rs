//! Applies one layer file to a directory and reports how long it took:
//!
//! ```text
//! cargo run --release -p strata-archive --example apply_layer -- LAYER DEST [overlay|delete] [DIFF_ID]
//! ```
//!
//! The compression is sniffed from the file's first bytes. DEST must exist (use an empty one).

use std::error::Error;
use std::fs::File;
use std::io::Read;
use std::path::PathBuf;
use std::time::Instant;

use strata_archive::{ApplyOptions, WhiteoutMode, apply, detect_compression};

fn main() -> Result<(), Box<dyn Error>> {
    let mut args = std::env::args().skip(1);
    let usage = "usage: apply_layer LAYER DEST [overlay|delete] [DIFF_ID]";
    let layer = PathBuf::from(args.next().ok_or(usage)?);
    let dest = PathBuf::from(args.next().ok_or(usage)?);
    let mode = match args.next().as_deref() {
        None | Some("overlay") => WhiteoutMode::Overlay,
        Some("delete") => WhiteoutMode::Delete,
        Some(other) => return Err(format!("unknown mode {other:?}; {usage}").into()),
    };
    let expected = args
        .next()
        .map(|d| strata_core::Digest::parse(&d))
        .transpose()?;

    let mut head = [0u8; 4];
    let n = File::open(&layer)?.read(&mut head)?;
    let compression = detect_compression(&head[..n]);
    let started = Instant::now();
    let stats = apply(
        File::open(&layer)?,
        compression,
        &dest,
        &ApplyOptions::new(mode),
        expected.as_ref(),
    )?;
    let secs = started.elapsed().as_secs_f64();
    println!(
        "applied {} ({compression}) to {}: {} entries, {} bytes uncompressed, diff ID {}, {:.3} s ({:.0} MB/s uncompressed)",
        layer.display(),
        dest.display(),
        stats.entries,
        stats.uncompressed_size,
        stats.diff_id,
        secs,
        stats.uncompressed_size as f64 / secs / 1e6,
    );
    Ok(())
}
