//! Bounds on the tar headers a layer can make the extractor hold in memory.
//!
//! The `tar` crate reads a PAX extended header (`x`, `g`) or a GNU long name or long link name
//! (`L`, `K`) whole into memory, whatever size its header declares (up to 8 GiB in octal, more in
//! base-256), and keeps adding to a GNU sparse entry's block list for as many extension blocks
//! as follow. A layer declaring a 10 GiB PAX header would make `apply` allocate 10 GiB. Go's
//! archive/tar refuses such headers past 1 MiB; [`Bounded`] does the same for us: it sits
//! between the decompressed stream and the tar parser, follows the archive's layout block by
//! block (headers, the PAX `size` that overrides the next entry's, sparse extension blocks,
//! data) and fails the read that completes a header breaking a bound, before the parser gets to
//! allocate for it.

use std::io::{self, Read};

/// Largest PAX extended header (`x` for one entry, `g` global) accepted, in bytes: Go's
/// archive/tar limit.
pub const MAX_PAX_HEADER_SIZE: u64 = 1 << 20;
/// Largest GNU long name (`L`) or long link name (`K`) accepted, in bytes (Go's limit too; a
/// Linux path is at most 4 KiB).
pub const MAX_GNU_LONG_NAME_SIZE: u64 = 1 << 20;
/// Most GNU sparse extension blocks (512 bytes, 21 holes each) one entry may have.
pub const MAX_SPARSE_EXTENSION_BLOCKS: u64 = 2048;

const BLOCK: usize = 512;
/// Offset of `isextended` in a GNU sparse extension block (after 21 24-byte entries).
const EXT_ISEXTENDED: usize = 504;

enum Phase {
    /// Reading a header block.
    Header,
    /// Reading a GNU sparse extension block; `count` read so far, then `data` bytes of data.
    SparseExt { count: u64, data: u64 },
    /// Collecting a local PAX header's records (at most [`MAX_PAX_HEADER_SIZE`]), then
    /// skipping `pad` bytes.
    Pax { want: usize, pad: u64 },
    /// Skipping this many bytes (an entry's data and padding).
    Skip(u64),
    /// The end-of-archive block was seen or the layout could not be followed: the parser
    /// reports what is wrong; everything passes.
    Done,
}

/// A reader that follows the tar layout of what passes through it and fails as soon as a header
/// breaks one of this module's bounds.
pub(crate) struct Bounded<R> {
    inner: R,
    phase: Phase,
    block: [u8; BLOCK],
    got: usize,
    pax: Vec<u8>,
    /// The `size` record of the last local PAX header, for the next real entry.
    pax_size: Option<u64>,
}

fn too_large(what: &str, size: u64, limit: u64) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!("{what} of {size} bytes is larger than the limit of {limit} bytes"),
    )
}

fn padded(size: u64) -> u64 {
    size.saturating_add(511) & !511
}

impl<R> Bounded<R> {
    pub(crate) fn new(inner: R) -> Self {
        Self {
            inner,
            phase: Phase::Header,
            block: [0; BLOCK],
            got: 0,
            pax: Vec::new(),
            pax_size: None,
        }
    }

    pub(crate) fn into_inner(self) -> R {
        self.inner
    }

    /// Follows `data`, the next bytes of the stream.
    fn observe(&mut self, mut data: &[u8]) -> io::Result<()> {
        while !data.is_empty() {
            match &mut self.phase {
                Phase::Done => return Ok(()),
                Phase::Skip(n) => {
                    let k = usize::try_from(*n).unwrap_or(usize::MAX).min(data.len());
                    data = &data[k..];
                    *n -= k as u64;
                    if *n == 0 {
                        self.phase = Phase::Header;
                    }
                }
                Phase::Pax { want, pad } => {
                    let k = (*want - self.pax.len()).min(data.len());
                    self.pax.extend_from_slice(&data[..k]);
                    data = &data[k..];
                    if self.pax.len() == *want {
                        let pad = *pad;
                        self.pax_size = pax_size(&self.pax);
                        self.pax = Vec::new();
                        self.phase = if pad == 0 {
                            Phase::Header
                        } else {
                            Phase::Skip(pad)
                        };
                    }
                }
                Phase::Header | Phase::SparseExt { .. } => {
                    let k = (BLOCK - self.got).min(data.len());
                    self.block[self.got..self.got + k].copy_from_slice(&data[..k]);
                    self.got += k;
                    data = &data[k..];
                    if self.got == BLOCK {
                        self.got = 0;
                        self.on_block()?;
                    }
                }
            }
        }
        Ok(())
    }

    fn on_block(&mut self) -> io::Result<()> {
        if let Phase::SparseExt { count, data } = self.phase {
            self.phase = if self.block[EXT_ISEXTENDED] == 1 {
                if count + 1 >= MAX_SPARSE_EXTENSION_BLOCKS {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        format!(
                            "sparse entry with more than {MAX_SPARSE_EXTENSION_BLOCKS} \
                             extension headers"
                        ),
                    ));
                }
                Phase::SparseExt {
                    count: count + 1,
                    data,
                }
            } else {
                skip(data)
            };
            return Ok(());
        }
        if self.block.iter().all(|&b| b == 0) {
            self.phase = Phase::Done;
            return Ok(());
        }
        let header = tar::Header::from_byte_slice(&self.block);
        let Ok(size) = header.entry_size() else {
            self.phase = Phase::Done;
            return Ok(());
        };
        let kind = header.entry_type();
        if kind.is_pax_local_extensions() || kind.is_pax_global_extensions() {
            if size > MAX_PAX_HEADER_SIZE {
                return Err(too_large("PAX extended header", size, MAX_PAX_HEADER_SIZE));
            }
            if kind.is_pax_local_extensions() {
                // Bounded above: the cast cannot truncate.
                let want = usize::try_from(size).unwrap_or(0);
                self.pax = Vec::with_capacity(want);
                self.phase = if want == 0 {
                    Phase::Header
                } else {
                    Phase::Pax {
                        want,
                        pad: padded(size) - size,
                    }
                };
            } else {
                self.phase = skip(padded(size));
            }
            return Ok(());
        }
        if kind.is_gnu_longname() || kind.is_gnu_longlink() {
            if size > MAX_GNU_LONG_NAME_SIZE {
                let what = if kind.is_gnu_longname() {
                    "GNU long name header"
                } else {
                    "GNU long link name header"
                };
                return Err(too_large(what, size, MAX_GNU_LONG_NAME_SIZE));
            }
            self.phase = skip(padded(size));
            return Ok(());
        }
        // A real entry: a PAX `size` before it overrides its header's.
        let size = self.pax_size.take().unwrap_or(size);
        let data = padded(size);
        self.phase = match header.as_gnu() {
            Some(gnu) if kind.is_gnu_sparse() && gnu.is_extended() => {
                Phase::SparseExt { count: 0, data }
            }
            _ => skip(data),
        };
        Ok(())
    }
}

fn skip(n: u64) -> Phase {
    if n == 0 {
        Phase::Header
    } else {
        Phase::Skip(n)
    }
}

/// The `size` record of local PAX header records as the `tar` crate reads it (the first `size`
/// key; an unparsable record or value means none).
fn pax_size(records: &[u8]) -> Option<u64> {
    for ext in tar::PaxExtensions::new(records) {
        let ext = ext.ok()?;
        if ext.key() != Ok("size") {
            continue;
        }
        return ext.value().ok()?.parse::<u64>().ok();
    }
    None
}

impl<R: Read> Read for Bounded<R> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(out)?;
        self.observe(&out[..n])?;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(kind: tar::EntryType, size: u64) -> Vec<u8> {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(kind);
        h.set_size(size);
        h.set_path("x").expect("path");
        h.set_cksum();
        h.as_bytes().to_vec()
    }

    fn read_all(data: &[u8], chunk: usize) -> io::Result<()> {
        let mut r = Bounded::new(data);
        let mut buf = vec![0; chunk];
        while r.read(&mut buf)? > 0 {}
        Ok(())
    }

    #[test]
    fn follows_data_and_pax_sizes_across_reads() {
        // An entry whose real size comes from its PAX header; then a long name at the limit.
        let mut data = Vec::new();
        let records = b"16 size=1000000\n";
        data.extend(header(tar::EntryType::XHeader, records.len() as u64));
        data.extend(records);
        data.resize(data.len() + 512 - records.len(), 0);
        data.extend(header(tar::EntryType::Regular, 0));
        data.resize(data.len() + 1_000_448, b'a');
        let at_limit = usize::try_from(MAX_GNU_LONG_NAME_SIZE).expect("small");
        data.extend(header(tar::EntryType::GNULongName, MAX_GNU_LONG_NAME_SIZE));
        data.resize(data.len() + at_limit, b'n');
        let over = header(tar::EntryType::GNULongLink, MAX_GNU_LONG_NAME_SIZE + 1);
        for chunk in [1, 7, 512, 65536] {
            read_all(&data, chunk).expect("within bounds");
            let mut bad = data.clone();
            bad.extend(&over);
            let err = read_all(&bad, chunk).expect_err("over the bound");
            assert!(
                err.to_string().contains("GNU long link name header"),
                "{err}"
            );
        }
    }
}
