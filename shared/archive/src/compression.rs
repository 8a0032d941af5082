//! Layer compression: media types, magic-byte sniffing and streaming decoders.

use std::fmt;
use std::io::{self, Read};

use crate::ArchiveError;

/// How a layer blob is compressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Compression {
    /// A plain tar stream.
    None,
    /// gzip (deflate).
    Gzip,
    /// Zstandard.
    Zstd,
}

impl fmt::Display for Compression {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::None => "uncompressed",
            Self::Gzip => "gzip",
            Self::Zstd => "zstd",
        })
    }
}

/// The compression of an OCI or Docker layer media type:
/// `application/vnd.oci.image.layer.v1.tar` (and `+gzip`, `+zstd`), the `.nondistributable.`
/// variants, `application/vnd.docker.image.rootfs.diff.tar.gzip` and
/// `application/vnd.docker.image.rootfs.foreign.diff.tar.gzip`. Anything else is an error naming it.
pub fn compression_for_media_type(media_type: &str) -> Result<Compression, ArchiveError> {
    // Media types may carry parameters ("; foo=bar"); only the type itself decides.
    let essence = media_type.split(';').next().unwrap_or_default().trim();
    match essence {
        "application/vnd.oci.image.layer.v1.tar"
        | "application/vnd.oci.image.layer.nondistributable.v1.tar"
        | "application/vnd.docker.image.rootfs.diff.tar" => Ok(Compression::None),
        "application/vnd.oci.image.layer.v1.tar+gzip"
        | "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip"
        | "application/vnd.docker.image.rootfs.diff.tar.gzip"
        | "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip" => Ok(Compression::Gzip),
        "application/vnd.oci.image.layer.v1.tar+zstd"
        | "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd" => Ok(Compression::Zstd),
        _ => Err(ArchiveError::UnsupportedMediaType(media_type.to_owned())),
    }
}

/// Sniffs the compression from a stream's first bytes (gzip `1f 8b`, zstd `28 b5 2f fd`);
/// anything else is taken as an uncompressed tar.
pub fn detect_compression(first_bytes: &[u8]) -> Compression {
    if first_bytes.starts_with(&[0x1f, 0x8b]) {
        Compression::Gzip
    } else if first_bytes.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        Compression::Zstd
    } else {
        Compression::None
    }
}

/// A streaming decoder for `input`. Gzip streams may hold several members (as parallel
/// compressors write them) and zstd streams several frames; all are decoded in sequence.
pub fn decompress<'a>(
    input: impl Read + Send + 'a,
    compression: Compression,
) -> Result<Box<dyn Read + Send + 'a>, ArchiveError> {
    Ok(match compression {
        Compression::None => Box::new(input),
        Compression::Gzip => Box::new(flate2::read::MultiGzDecoder::new(
            io::BufReader::with_capacity(256 * 1024, input),
        )),
        Compression::Zstd => {
            Box::new(zstd::stream::read::Decoder::new(input).map_err(|source| {
                ArchiveError::Decompress {
                    compression,
                    source,
                }
            })?)
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn media_types() {
        for (mt, c) in [
            ("application/vnd.oci.image.layer.v1.tar", Compression::None),
            (
                "application/vnd.oci.image.layer.v1.tar+gzip",
                Compression::Gzip,
            ),
            (
                "application/vnd.oci.image.layer.v1.tar+zstd",
                Compression::Zstd,
            ),
            (
                "application/vnd.oci.image.layer.nondistributable.v1.tar",
                Compression::None,
            ),
            (
                "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip",
                Compression::Gzip,
            ),
            (
                "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd",
                Compression::Zstd,
            ),
            (
                "application/vnd.docker.image.rootfs.diff.tar.gzip",
                Compression::Gzip,
            ),
            (
                "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip",
                Compression::Gzip,
            ),
        ] {
            assert_eq!(compression_for_media_type(mt).expect(mt), c, "{mt}");
        }
        let err = compression_for_media_type("application/vnd.oci.image.layer.v1.tar+lz4")
            .expect_err("lz4 is not supported");
        assert_eq!(
            err.to_string(),
            "unsupported layer media type \"application/vnd.oci.image.layer.v1.tar+lz4\""
        );
        assert_eq!(err.kind(), strata_core::Kind::InvalidArgument);
    }

    #[test]
    fn sniffing() {
        assert_eq!(detect_compression(&[0x1f, 0x8b, 8, 0]), Compression::Gzip);
        assert_eq!(
            detect_compression(&[0x28, 0xb5, 0x2f, 0xfd, 0]),
            Compression::Zstd
        );
        assert_eq!(detect_compression(b"etc/\0\0\0"), Compression::None);
        assert_eq!(detect_compression(&[]), Compression::None);
    }
}
