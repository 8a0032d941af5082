//! The framed log a supervisor keeps of a process's output: a sequence of records, each
//! `[stream: 1 byte][length: 4 bytes, big endian][length bytes of output]`, so a reader can tell
//! stdout from stderr and a file cut short (by a reader racing the writer) from a complete one.
//!
//! Pure encoding and decoding: the writer (strata-shim) and the readers (the tasks service's
//! `Logs`) share this module and nothing else.

/// Bytes before a record's data.
pub const HEADER_LEN: usize = 5;

/// The longest record data a reader accepts; anything longer is taken for corruption. Writers
/// write far less per record (a read's worth of output).
pub const MAX_DATA: usize = 1 << 20;

/// Which output stream a record holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Stream {
    /// The process's stdout (tag 1).
    Stdout,
    /// The process's stderr (tag 2).
    Stderr,
}

impl Stream {
    /// The byte a record starts with.
    pub fn tag(self) -> u8 {
        match self {
            Stream::Stdout => 1,
            Stream::Stderr => 2,
        }
    }

    /// The stream a record's first byte names; `None` for an unknown tag.
    pub fn from_tag(tag: u8) -> Option<Self> {
        match tag {
            1 => Some(Stream::Stdout),
            2 => Some(Stream::Stderr),
            _ => None,
        }
    }
}

/// A record header that cannot be right: the log is corrupt from there on.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LogfileError {
    /// The record's first byte names no stream.
    #[error("log record at offset {offset}: unknown stream tag {tag}")]
    BadStream {
        /// Where the record starts in the file.
        offset: u64,
        /// The byte found.
        tag: u8,
    },
    /// The record announces more than [`MAX_DATA`] bytes.
    #[error("log record at offset {offset}: length {len} exceeds {MAX_DATA}")]
    TooLong {
        /// Where the record starts in the file.
        offset: u64,
        /// The length announced.
        len: usize,
    },
}

/// Writes the header of a record of `len` bytes of `stream` into `out[..HEADER_LEN]` (which
/// must be that long; callers keep `len` within [`MAX_DATA`]).
pub fn put_header(out: &mut [u8], stream: Stream, len: usize) {
    let len = u32::try_from(len).unwrap_or(u32::MAX);
    out[0] = stream.tag();
    out[1..HEADER_LEN].copy_from_slice(&len.to_be_bytes());
}

/// One whole record: header and data.
pub fn encode(stream: Stream, data: &[u8]) -> Vec<u8> {
    let mut out = vec![0u8; HEADER_LEN + data.len()];
    put_header(&mut out, stream, data.len());
    out[HEADER_LEN..].copy_from_slice(data);
    out
}

/// What the header at the start of `buf` announces: the stream and the data length. `None`
/// when `buf` holds less than a header. `offset` (where `buf` starts in the file) only serves
/// error messages.
pub fn parse_header(buf: &[u8], offset: u64) -> Result<Option<(Stream, usize)>, LogfileError> {
    let Some(head) = buf.get(..HEADER_LEN) else {
        return Ok(None);
    };
    let stream = Stream::from_tag(head[0]).ok_or(LogfileError::BadStream {
        offset,
        tag: head[0],
    })?;
    let len = u32::from_be_bytes([head[1], head[2], head[3], head[4]]) as usize;
    if len > MAX_DATA {
        return Err(LogfileError::TooLong { offset, len });
    }
    Ok(Some((stream, len)))
}

/// Decodes records from bytes fed in as they are read; a record cut short waits for the rest.
#[derive(Debug, Default)]
pub struct Decoder {
    buf: Vec<u8>,
    /// Offset in the file of `buf[0]`.
    offset: u64,
}

impl Decoder {
    /// A decoder for a file read from `offset` on (a record boundary).
    pub fn at(offset: u64) -> Self {
        Self {
            buf: Vec::new(),
            offset,
        }
    }

    /// Adds bytes read from the file, following those fed before.
    pub fn feed(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// The file offset just past the last whole record returned.
    pub fn offset(&self) -> u64 {
        self.offset
    }

    /// Bytes fed but not yet returned as a record (the start of a record cut short).
    pub fn pending(&self) -> usize {
        self.buf.len()
    }

    /// The next whole record, if one has been fed in full.
    pub fn next_record(&mut self) -> Result<Option<(Stream, Vec<u8>)>, LogfileError> {
        let Some((stream, len)) = parse_header(&self.buf, self.offset)? else {
            return Ok(None);
        };
        if self.buf.len() < HEADER_LEN + len {
            return Ok(None);
        }
        let data = self.buf[HEADER_LEN..HEADER_LEN + len].to_vec();
        self.buf.drain(..HEADER_LEN + len);
        self.offset += (HEADER_LEN + len) as u64;
        Ok(Some((stream, data)))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip_fed_in_any_pieces() {
        let mut file = encode(Stream::Stdout, b"hello\n");
        file.extend(encode(Stream::Stderr, b"oops\n"));
        file.extend(encode(Stream::Stdout, b""));
        for step in 1..file.len() {
            let mut d = Decoder::default();
            let mut got = Vec::new();
            for piece in file.chunks(step) {
                d.feed(piece);
                while let Some(r) = d.next_record().unwrap() {
                    got.push(r);
                }
            }
            assert_eq!(
                got,
                vec![
                    (Stream::Stdout, b"hello\n".to_vec()),
                    (Stream::Stderr, b"oops\n".to_vec()),
                    (Stream::Stdout, Vec::new()),
                ]
            );
            assert_eq!(d.offset(), file.len() as u64);
            assert_eq!(d.pending(), 0);
        }
    }

    #[test]
    fn corruption_is_reported_with_its_offset() {
        let mut file = encode(Stream::Stdout, b"ok");
        file.extend([9, 0, 0, 0, 1, b'x']);
        let mut d = Decoder::default();
        d.feed(&file);
        assert!(d.next_record().unwrap().is_some());
        assert_eq!(
            d.next_record().unwrap_err(),
            LogfileError::BadStream { offset: 7, tag: 9 }
        );
        let mut d = Decoder::default();
        d.feed(&[1, 0xff, 0xff, 0xff, 0xff]);
        assert!(matches!(
            d.next_record(),
            Err(LogfileError::TooLong { offset: 0, .. })
        ));
    }
}
