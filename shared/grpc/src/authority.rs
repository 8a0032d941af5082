//! Accepts HTTP/2 requests whose `:authority` is not a valid URI authority.
//!
//! Go gRPC clients dialing a unix socket (grpcurl 1.8.6 with `-unix /run/strata/x.sock`) send the
//! socket path as `:authority`. The h2 server behind tonic rejects such a request with
//! PROTOCOL_ERROR, while containerd (Go) accepts it. This wrapper sits on the server's read side
//! of a unix connection: it passes every frame through untouched except header blocks, which it
//! decodes (HPACK, following the client's dynamic table), fixes (`:authority` → `localhost` when
//! malformed) and re-encodes as plain literals that never touch the server's dynamic table.
//! DATA frames are copied straight into the reader's buffer, so bulk transfers pay nothing.
//!
//! What it holds is bounded, since it runs before h2 checks anything: a HEADERS or CONTINUATION
//! frame and a header block are refused past [`MAX_HEADER_BLOCK`] bytes (checked on the frame
//! header, before the payload is read), the decoded header list past [`MAX_HEADER_LIST`] (an
//! HPACK block of one-byte references to a large table entry would otherwise expand a thousand
//! times), and the client's HPACK dynamic table past the 4096 bytes HTTP/2 allows it by default.
//! A refusal is an `InvalidData` error on the connection, which the server then closes; other
//! connections are untouched.

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
/// Largest header block (HEADERS + CONTINUATION fragments, and so any one such frame) held, in
/// bytes. The server behind accepts 16 KiB of decoded headers (hyper's default), so no block it
/// would accept is refused here.
pub const MAX_HEADER_BLOCK: usize = 64 << 10;
/// Largest decoded header list, counted as HTTP/2's SETTINGS_MAX_HEADER_LIST_SIZE counts it (name
/// and value lengths plus 32 per field).
pub const MAX_HEADER_LIST: usize = 64 << 10;
/// The HPACK dynamic table size the server allows the client (HTTP/2's default for
/// SETTINGS_HEADER_TABLE_SIZE, which the server does not change).
const MAX_TABLE_SIZE: usize = 4096;

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

/// A connection's read side with malformed `:authority` headers replaced by `localhost` (see
/// the module's documentation); writes pass through.
pub struct FixAuthority<S> {
    inner: S,
    state: State,
    out: Vec<u8>,
    out_pos: usize,
    block: Option<Block>,
    decoder: loona_hpack::Decoder<'static>,
}

impl<S> FixAuthority<S> {
    /// Wraps a connection whose first bytes are the client's HTTP/2 preface.
    pub fn new(inner: S) -> Self {
        let mut decoder = loona_hpack::Decoder::new();
        decoder.set_max_allowed_table_size(MAX_TABLE_SIZE);
        Self {
            inner,
            state: State::Pass(PREFACE_LEN),
            out: Vec::new(),
            out_pos: 0,
            block: None,
            decoder,
        }
    }

    /// The wrapped connection.
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
            if block.fragment.len() + payload.len() > MAX_HEADER_BLOCK {
                return Err(Self::protocol_error(format!(
                    "header block of {} bytes is larger than the limit of {MAX_HEADER_BLOCK} \
                     bytes",
                    block.fragment.len() + payload.len()
                )));
            }
            block.fragment.extend_from_slice(&payload);
        }
        if flags & FLAG_END_HEADERS != 0
            && let Some(block) = self.block.take()
        {
            self.emit_block(block)?;
        }
        Ok(())
    }

    fn emit_block(&mut self, block: Block) -> io::Result<()> {
        let mut headers = Vec::new();
        let mut list_size = 0usize;
        self.decoder
            .decode_with_cb(&block.fragment, |name, value| {
                // Past the limit nothing more is copied; the rest of the block (bounded) is
                // still decoded to keep the dynamic table in step, then the block is refused.
                list_size = list_size.saturating_add(name.len() + value.len() + 32);
                if list_size <= MAX_HEADER_LIST {
                    headers.push((name.into_owned(), value.into_owned()));
                }
            })
            .map_err(|e| Self::protocol_error(format!("HPACK: {e}")))?;
        if list_size > MAX_HEADER_LIST {
            return Err(Self::protocol_error(format!(
                "decoded header list of {list_size} bytes is larger than the limit of \
                 {MAX_HEADER_LIST} bytes"
            )));
        }
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
                        if len > MAX_HEADER_BLOCK {
                            return Poll::Ready(Err(Self::protocol_error(format!(
                                "header frame of {len} bytes is larger than the limit of \
                                 {MAX_HEADER_BLOCK} bytes"
                            ))));
                        }
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

/// Runs `input` (a client's side of a connection, preface included) through the rewriter and
/// returns what the server would read, or the error that ends the connection. For tests and
/// fuzzing: the input is all there, so nothing ever waits.
pub fn rewrite_all(input: &[u8]) -> io::Result<Vec<u8>> {
    let mut fix = FixAuthority::new(input);
    let mut cx = Context::from_waker(std::task::Waker::noop());
    let mut out = Vec::new();
    let mut buf = [0u8; 8192];
    loop {
        let mut rb = ReadBuf::new(&mut buf);
        match Pin::new(&mut fix).poll_read(&mut cx, &mut rb) {
            Poll::Ready(Ok(())) if rb.filled().is_empty() => return Ok(out),
            Poll::Ready(Ok(())) => out.extend_from_slice(rb.filled()),
            Poll::Ready(Err(e)) => return Err(e),
            Poll::Pending => return Err(io::ErrorKind::WouldBlock.into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

    fn frame(kind: u8, flags: u8, payload: &[u8]) -> Vec<u8> {
        let len = u32::try_from(payload.len()).expect("frame length");
        let mut f = len.to_be_bytes()[1..].to_vec();
        f.extend_from_slice(&[kind, flags, 0, 0, 0, 1]);
        f.extend_from_slice(payload);
        f
    }

    fn connection(frames: &[Vec<u8>]) -> Vec<u8> {
        let mut c = PREFACE.to_vec();
        c.extend_from_slice(&[0, 0, 0, 0x4, 0, 0, 0, 0, 0]); // SETTINGS, on stream 0
        for f in frames {
            c.extend_from_slice(f);
        }
        c
    }

    fn refused(input: &[u8], expect: &str) {
        let err = rewrite_all(input).expect_err("refused");
        assert_eq!(err.kind(), io::ErrorKind::InvalidData, "{err}");
        assert!(err.to_string().contains(expect), "{err}");
    }

    #[test]
    fn a_malformed_authority_becomes_localhost() {
        let mut block = Vec::new();
        encode_literal(&mut block, b":method", b"POST");
        encode_literal(&mut block, b":authority", b"/run/strata/x.sock");
        let input = connection(&[frame(TYPE_HEADERS, FLAG_END_HEADERS, &block)]);
        let out = rewrite_all(&input).expect("rewritten");
        let headers_at = PREFACE.len() + FRAME_HEADER_LEN;
        let fragment = &out[headers_at + FRAME_HEADER_LEN..];
        let headers = loona_hpack::Decoder::new()
            .decode(fragment)
            .expect("decode");
        assert_eq!(headers[1], (b":authority".to_vec(), b"localhost".to_vec()));
    }

    #[test]
    fn a_header_frame_over_the_limit_is_refused_before_its_payload() {
        // Two MiB declared, none of it sent: refused on the frame header.
        let mut input = connection(&[]);
        input.extend_from_slice(&[0x20, 0, 0, TYPE_HEADERS, FLAG_END_HEADERS, 0, 0, 0, 1]);
        refused(
            &input,
            &format!(
                "header frame of 2097152 bytes is larger than the limit of {MAX_HEADER_BLOCK}"
            ),
        );
    }

    #[test]
    fn a_header_block_over_the_limit_is_refused() {
        let piece = vec![0u8; MIN_MAX_FRAME];
        let mut frames = vec![frame(TYPE_HEADERS, 0, &piece)];
        for _ in 0..8 {
            frames.push(frame(TYPE_CONTINUATION, 0, &piece));
        }
        refused(
            &connection(&frames),
            &format!("header block of 81920 bytes is larger than the limit of {MAX_HEADER_BLOCK}"),
        );
    }

    #[test]
    fn an_hpack_bomb_is_refused() {
        // One 4000-byte value put in the dynamic table, then referred to 12000 times by a
        // one-byte index: 16 KiB on the wire, 48 MB decoded.
        let mut block = vec![0x40];
        encode_int(&mut block, 0x00, 7, 6);
        block.extend_from_slice(b"x-bomb");
        encode_int(&mut block, 0x00, 7, 4000);
        block.extend(std::iter::repeat_n(b'b', 4000));
        block.extend(std::iter::repeat_n(0xbe, 12_000));
        let input = connection(&[frame(TYPE_HEADERS, FLAG_END_HEADERS, &block)]);
        refused(&input, "decoded header list of");
        refused(
            &input,
            &format!("larger than the limit of {MAX_HEADER_LIST} bytes"),
        );
    }

    #[test]
    fn a_dynamic_table_beyond_the_default_is_refused() {
        let mut block = Vec::new();
        encode_int(&mut block, 0x20, 5, 1 << 20);
        encode_literal(&mut block, b"a", b"b");
        let input = connection(&[frame(TYPE_HEADERS, FLAG_END_HEADERS, &block)]);
        refused(&input, "HPACK");
    }

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
