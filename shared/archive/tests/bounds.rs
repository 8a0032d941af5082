//! A layer cannot make the extractor hold an unbounded header in memory: PAX extended headers,
//! GNU long names and long link names larger than 1 MiB (Go's archive/tar limit) and GNU sparse
//! entries with thousands of extension blocks are refused with an error naming the header and
//! the limit, before the tar parser reads them; the next layer applies as usual.

mod common;

use std::fs;
use std::path::Path;

use common::{Layer, try_apply};
use strata_archive::{
    ArchiveError, MAX_GNU_LONG_NAME_SIZE, MAX_PAX_HEADER_SIZE, MAX_SPARSE_EXTENSION_BLOCKS,
    WhiteoutMode,
};
use strata_core::Kind;
use tar::{EntryType, Header};

const MIB2: usize = 2 << 20;

/// A header block of `kind` declaring `size` bytes, followed by `data` padded to 512 bytes.
fn raw(kind: EntryType, name: &str, size: u64, data: &[u8]) -> Vec<u8> {
    let mut h = Header::new_gnu();
    h.set_entry_type(kind);
    h.set_path(name).expect("name");
    h.set_mode(0o644);
    h.set_size(size);
    h.set_cksum();
    let mut out = h.as_bytes().to_vec();
    out.extend_from_slice(data);
    out.resize(out.len().div_ceil(512) * 512, 0);
    out
}

/// `name` with content `data`, then the two end-of-archive blocks.
fn file_and_end(name: &str, data: &[u8]) -> Vec<u8> {
    let mut out = raw(EntryType::Regular, name, data.len() as u64, data);
    out.resize(out.len() + 1024, 0);
    out
}

/// Applies `tar` into a fresh root, expects the bound's error, and checks that a good layer
/// then applies into the same root.
fn refused(tar: &[u8], expect: &str) {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path().join("root");
    fs::create_dir(&root).expect("mkdir root");
    let err = try_apply(tar, &root, WhiteoutMode::Overlay).expect_err("an oversized header");
    assert!(
        matches!(err, ArchiveError::MalformedTar { .. }),
        "{expect}: {err:?}"
    );
    assert_eq!(err.kind(), Kind::InvalidArgument);
    let msg = err.to_string();
    assert!(msg.contains(expect), "{msg}");
    assert!(!root.join("big").exists(), "the entry was applied");
    still_applies(&root);
}

fn still_applies(root: &Path) {
    let mut good = Layer::new();
    good.file("etc/hostname", b"strata\n");
    let stats = try_apply(&good.finish(), root, WhiteoutMode::Overlay).expect("a good layer");
    assert_eq!(stats.entries, 1);
    assert_eq!(
        fs::read(root.join("etc/hostname")).expect("hostname"),
        b"strata\n"
    );
}

fn limit_text(limit: u64) -> String {
    format!("larger than the limit of {limit} bytes")
}

#[test]
fn a_two_mib_pax_header_is_refused() {
    let mut layer = Layer::new();
    layer.file("before", b"x");
    layer.pax(&[("comment", &vec![b'c'; MIB2])]);
    layer.file("big", b"y");
    let err = format!("PAX extended header of {}", MIB2 + 17);
    refused(&layer.finish(), &err);
    refused(&layer_with_pax(MIB2), &limit_text(MAX_PAX_HEADER_SIZE));
}

fn layer_with_pax(value_len: usize) -> Vec<u8> {
    let mut layer = Layer::new();
    layer.pax(&[("comment", &vec![b'c'; value_len])]);
    layer.file("big", b"y");
    layer.finish()
}

#[test]
fn a_pax_header_just_under_the_limit_applies() {
    let limit = usize::try_from(MAX_PAX_HEADER_SIZE).expect("small");
    let dir = tempfile::tempdir().expect("tempdir");
    try_apply(
        &layer_with_pax(limit - 64),
        dir.path(),
        WhiteoutMode::Overlay,
    )
    .expect("a header within the limit");
    assert_eq!(fs::read(dir.path().join("big")).expect("big"), b"y");
}

#[test]
fn a_declared_pax_header_of_gigabytes_is_refused_before_it_is_read() {
    // Eight GiB declared, a few bytes present: refused from the header alone.
    let mut tar = raw(EntryType::XHeader, "PaxHeaders/big", 8 << 30, b"10 a=bcd\n");
    tar.extend(file_and_end("big", b"y"));
    refused(
        &tar,
        &format!(
            "PAX extended header of {} bytes is {}",
            8u64 << 30,
            limit_text(MAX_PAX_HEADER_SIZE)
        ),
    );
}

#[test]
fn a_two_mib_global_pax_header_is_refused() {
    let value = vec![b'g'; MIB2];
    let record = format!("{} comment=", MIB2 + 17);
    let mut data = record.into_bytes();
    data.extend(&value);
    data.push(b'\n');
    let mut tar = raw(
        EntryType::XGlobalHeader,
        "GlobalHead",
        data.len() as u64,
        &data,
    );
    tar.extend(file_and_end("big", b"y"));
    refused(&tar, "PAX extended header of");
}

#[test]
fn two_mib_gnu_long_names_and_link_names_are_refused() {
    let name = vec![b'a'; MIB2];
    let mut tar = raw(
        EntryType::GNULongName,
        "././@LongLink",
        name.len() as u64,
        &name,
    );
    tar.extend(file_and_end("big", b"y"));
    refused(
        &tar,
        &format!(
            "GNU long name header of {MIB2} bytes is {}",
            limit_text(MAX_GNU_LONG_NAME_SIZE)
        ),
    );

    let mut tar = raw(
        EntryType::GNULongLink,
        "././@LongLink",
        name.len() as u64,
        &name,
    );
    let mut link = Header::new_gnu();
    link.set_entry_type(EntryType::Symlink);
    link.set_path("big").expect("name");
    link.set_link_name("target").expect("link");
    link.set_size(0);
    link.set_cksum();
    tar.extend(link.as_bytes());
    tar.resize(tar.len() + 1024, 0);
    refused(&tar, "GNU long link name header of");
}

#[test]
fn a_sparse_entry_with_endless_extension_blocks_is_refused() {
    let mut h = Header::new_gnu();
    h.set_entry_type(EntryType::GNUSparse);
    h.set_path("big").expect("name");
    h.set_mode(0o644);
    h.set_size(0);
    {
        let gnu = h.as_gnu_mut().expect("gnu header");
        gnu.isextended[0] = 1;
        gnu.realsize = *b"00000000000\0";
    }
    h.set_cksum();
    let mut tar = h.as_bytes().to_vec();
    let blocks = usize::try_from(MAX_SPARSE_EXTENSION_BLOCKS).expect("small") + 100;
    for i in 0..blocks {
        let mut ext = [0u8; 512];
        ext[504] = u8::from(i + 1 < blocks);
        tar.extend_from_slice(&ext);
    }
    tar.resize(tar.len() + 1024, 0);
    refused(
        &tar,
        &format!("sparse entry with more than {MAX_SPARSE_EXTENSION_BLOCKS} extension headers"),
    );
}
