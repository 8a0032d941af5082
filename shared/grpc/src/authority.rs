//! Accepts HTTP/2 requests whose `:authority` is not a valid URI authority.
//!
//! Go gRPC clients dialing a unix socket (grpcurl 1.8.6 with `-unix /run/strata/x.sock`) send the
//! socket path as `:authority`. The h2 server behind tonic rejects such a request with
//! PROTOCOL_ERROR, while containerd (Go) accepts it. This wrapper sits on the server's read side
//! of a unix connection: it passes every frame through untouched except header blocks, which it
//! decodes (HPACK, following the client's dynamic table), fixes (`:authority` → `localhost` when
//! malformed) and re-encodes as plain literals that never touch the server's dynamic table.
//! DATA frames are copied straight into the reader's buffer, so bulk transfers pay nothing.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

const PREFACE_LEN: usize = 24;
const FRAME_HEADER_LEN: usize = 9;
const TYPE_HEADERS: u8 = 0x1;
const TYPE_CONTINUATION: u8 = 0x9;
const FLAG_END_STREAM: u8 = 0x1;
const FLAG_END_HEADERS: u8 = 0x4;
const FLAG_PADDED: u8 = 0x8;
const FLAG_PRIORITY: u8 = 0x20;
/// The frame size every HTTP/2 peer must accept.
const MIN_MAX_FRAME: usize = 16_384;
/// Header blocks larger than this are refused (h2's default limit is 16 KiB of headers).
const MAX_BLOCK: usize = 1 << 20;

enum State {
    /// Copying `n` more bytes straight through (the preface, or a non-header frame's payload).
    Pass(usize),
    /// Reading a frame header.
    Header {
        buf: [u8; FRAME_HEADER_LEN],
        got: usize,
    },
    /// Reading the payload of a HEADERS or CONTINUATION frame.
    Payload {
        kind: u8,
        flags: u8,
        stream: [u8; 4],
        buf: Vec<u8>,
        want: usize,
    },
}

/// A header block being assembled from HEADERS + CONTINUATION frames.
struct Block {
    flags: u8,
    stream: [u8; 4],
    priority: Option<[u8; 5]>,
    fragment: Vec<u8>,
}

pub struct FixAuthority<S> {
    inner: S,
    state: State,
    out: Vec<u8>,
    out_pos: usize,
    block: Option<Block>,
    decoder: loona_hpack::Decoder<'static>,
}

impl<S> FixAuthority<S> {
    pub fn new(inner: S) -> Self {
        Self {
            inner,
            state: State::Pass(PREFACE_LEN),
            out: Vec::new(),
            out_pos: 0,
            block: None,
            decoder: loona_hpack::Decoder::new(),
        }
    }

    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    fn protocol_error(msg: impl Into<String>) -> io::Error {
        io::Error::new(io::ErrorKind::InvalidData, msg.into())
    }

    /// Handles a complete HEADERS or CONTINUATION payload.
    fn on_header_frame(
        &mut self,
        kind: u8,
        flags: u8,
        stream: [u8; 4],
        payload: Vec<u8>,
    ) -> io::Result<()> {
        if kind == TYPE_HEADERS {
            if self.block.is_some() {
                return Err(Self::protocol_error("HEADERS while a header block is open"));
            }
            let mut p = payload.as_slice();
            let mut pad = 0usize;
            if flags & FLAG_PADDED != 0 {
                let (&n, rest) = p
                    .split_first()
                    .ok_or_else(|| Self::protocol_error("padded HEADERS without pad length"))?;
                pad = usize::from(n);
                p = rest;
            }
            let priority = if flags & FLAG_PRIORITY != 0 {
                let (pri, rest) = p
                    .split_first_chunk::<5>()
                    .ok_or_else(|| Self::protocol_error("short HEADERS priority"))?;
                p = rest;
                Some(*pri)
            } else {
                None
            };
            if pad > p.len() {
                return Err(Self::protocol_error("HEADERS padding exceeds payload"));
            }
            let fragment = p[..p.len() - pad].to_vec();
            self.block = Some(Block {
                flags,
                stream,
                priority,
                fragment,
            });
        } else {
            let Some(block) = self.block.as_mut() else {
                return Err(Self::protocol_error("CONTINUATION without HEADERS"));
            };
            block.fragment.extend_from_slice(&payload);
            if block.fragment.len() > MAX_BLOCK {
                return Err(Self::protocol_error("header block too large"));
            }
        }
        if flags & FLAG_END_HEADERS != 0
            && let Some(block) = self.block.take()
        {
            self.emit_block(block)?;
        }
        Ok(())
    }

    fn emit_block(&mut self, block: Block) -> io::Result<()> {
        let headers = self
            .decoder
            .decode(&block.fragment)
            .map_err(|e| Self::protocol_error(format!("HPACK: {e}")))?;
        let mut encoded = Vec::with_capacity(block.fragment.len() + 64);
        for (name, value) in &headers {
            let value: &[u8] = if name == b":authority"
                && http::uri::Authority::try_from(value.as_slice()).is_err()
            {
                b"localhost"
            } else {
                value
            };
            encode_literal(&mut encoded, name, value);
        }
        let mut rest = encoded.as_slice();
        let mut first = true;
        loop {
            let room = if first && block.priority.is_some() {
                MIN_MAX_FRAME - 5
            } else {
                MIN_MAX_FRAME
            };
            let (chunk, tail) = rest.split_at(rest.len().min(room));
            rest = tail;
            let mut flags = 0u8;
            if rest.is_empty() {
                flags |= FLAG_END_HEADERS;
            }
            let kind = if first {
                flags |= block.flags & FLAG_END_STREAM;
                if block.priority.is_some() {
                    flags |= FLAG_PRIORITY;
                }
                TYPE_HEADERS
            } else {
                TYPE_CONTINUATION
            };
            let priority = if first { block.priority } else { None };
            let len = chunk.len() + priority.map_or(0, |p| p.len());
            let len = u32::try_from(len).map_err(|_| Self::protocol_error("frame too large"))?;
            self.out.extend_from_slice(&len.to_be_bytes()[1..]);
            self.out.push(kind);
            self.out.push(flags);
            self.out.extend_from_slice(&block.stream);
            if let Some(p) = priority {
                self.out.extend_from_slice(&p);
            }
            self.out.extend_from_slice(chunk);
            first = false;
            if rest.is_empty() {
                return Ok(());
            }
        }
    }
}

/// HPACK integer with an `n`-bit prefix, the first byte carrying `mask` in its high bits.
fn encode_int(out: &mut Vec<u8>, mask: u8, n: u32, mut value: usize) {
    let max = (1usize << n) - 1;
    if value < max {
        out.push(mask | u8::try_from(value).unwrap_or(0));
        return;
    }
    out.push(mask | u8::try_from(max).unwrap_or(0));
    value -= max;
    while value >= 128 {
        out.push(u8::try_from(value % 128).unwrap_or(0) | 0x80);
        value /= 128;
    }
    out.push(u8::try_from(value).unwrap_or(0));
}

/// "Literal header field without indexing — new name": leaves the peer's dynamic table alone.
fn encode_literal(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    out.push(0x00);
    encode_int(out, 0x00, 7, name.len());
    out.extend_from_slice(name);
    encode_int(out, 0x00, 7, value.len());
    out.extend_from_slice(value);
}

impl<S: AsyncRead + Unpin> AsyncRead for FixAuthority<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        loop {
            if this.out_pos < this.out.len() {
                let n = (this.out.len() - this.out_pos).min(buf.remaining());
                buf.put_slice(&this.out[this.out_pos..this.out_pos + n]);
                this.out_pos += n;
                if this.out_pos == this.out.len() {
                    this.out.clear();
                    this.out_pos = 0;
                }
                return Poll::Ready(Ok(()));
            }
            match &mut this.state {
                State::Pass(0) => {
                    this.state = State::Header {
                        buf: [0; FRAME_HEADER_LEN],
                        got: 0,
                    };
                }
                State::Pass(n) => {
                    let want = (*n).min(buf.remaining());
                    let mut limited = buf.take(want);
                    ready!(Pin::new(&mut this.inner).poll_read(cx, &mut limited))?;
                    let got = limited.filled().len();
                    // SAFETY: `limited` wrote `got` initialised bytes into `buf`'s unfilled part.
                    unsafe { buf.assume_init(got) };
                    buf.advance(got);
                    *n -= got;
                    return Poll::Ready(Ok(()));
                }
                State::Header { buf: hdr, got } => {
                    let mut rb = ReadBuf::new(&mut hdr[*got..]);
                    ready!(Pin::new(&mut this.inner).poll_read(cx, &mut rb))?;
                    let n = rb.filled().len();
                    if n == 0 {
                        if *got == 0 {
                            return Poll::Ready(Ok(())); // clean end of stream
                        }
                        return Poll::Ready(Err(io::ErrorKind::UnexpectedEof.into()));
                    }
                    *got += n;
                    if *got < FRAME_HEADER_LEN {
                        continue;
                    }
                    let h = *hdr;
                    let len = usize::from(h[0]) << 16 | usize::from(h[1]) << 8 | usize::from(h[2]);
                    let (kind, flags) = (h[3], h[4]);
                    if kind == TYPE_HEADERS || kind == TYPE_CONTINUATION {
                        this.state = State::Payload {
                            kind,
                            flags,
                            stream: [h[5], h[6], h[7], h[8]],
                            buf: Vec::with_capacity(len),
                            want: len,
                        };
                    } else {
                        this.out.extend_from_slice(&h);
                        this.state = State::Pass(len);
                    }
                }
                State::Payload {
                    kind,
                    flags,
                    stream,
                    buf: payload,
                    want,
                } => {
                    if payload.len() < *want {
                        let start = payload.len();
                        payload.resize(*want, 0);
                        let mut rb = ReadBuf::new(&mut payload[start..]);
                        let polled = Pin::new(&mut this.inner).poll_read(cx, &mut rb);
                        let n = rb.filled().len();
                        payload.truncate(start + n);
                        ready!(polled)?;
                        if n == 0 {
                            return Poll::Ready(Err(io::ErrorKind::UnexpectedEof.into()));
                        }
                        continue;
                    }
                    let (kind, flags, stream) = (*kind, *flags, *stream);
                    let payload = std::mem::take(payload);
                    this.state = State::Pass(0);
                    this.on_header_frame(kind, flags, stream, payload)?;
                }
            }
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for FixAuthority<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }
    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

impl tonic::transport::server::Connected for FixAuthority<tokio::net::UnixStream> {
    type ConnectInfo = <tokio::net::UnixStream as tonic::transport::server::Connected>::ConnectInfo;
    fn connect_info(&self) -> Self::ConnectInfo {
        self.inner.connect_info()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn integers_round_trip_through_the_decoder() {
        let mut block = Vec::new();
        let long = vec![b'x'; 300];
        encode_literal(&mut block, b":authority", &long);
        encode_literal(&mut block, b"a", b"b");
        let mut d = loona_hpack::Decoder::new();
        let headers = d.decode(&block).expect("decode");
        assert_eq!(headers[0], (b":authority".to_vec(), long));
        assert_eq!(headers[1], (b"a".to_vec(), b"b".to_vec()));
    }
}
