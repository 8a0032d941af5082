//! A client on a unix socket cannot make the `:authority` rewriter in front of a gRPC server
//! hold an unbounded header block: an oversized header frame and an HPACK bomb each end their
//! own connection with an error, and the server goes on answering on a new connection.
#![allow(clippy::unwrap_used)]

use std::path::PathBuf;
use std::time::Duration;

use strata_grpc::authority::FixAuthority;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{UnixListener, UnixStream};
use tokio_stream::StreamExt;
use tokio_stream::wrappers::UnixListenerStream;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

/// Liveness guard for the whole test, never a speed assertion.
const TEST_LIMIT: Duration = Duration::from_secs(120);

struct Dir(PathBuf);

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A health service behind the rewriter on a fresh socket, as `strata_grpc::server` serves.
async fn serve() -> (Dir, PathBuf) {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let dir = std::env::temp_dir().join(format!("strata-hdr-{}-{nanos}", std::process::id()));
    std::fs::create_dir(&dir).unwrap();
    let socket = dir.join("s.sock");
    let listener = UnixListener::bind(&socket).unwrap();
    let (reporter, health) = tonic_health::server::health_reporter();
    reporter
        .set_service_status("", tonic_health::ServingStatus::Serving)
        .await;
    tokio::spawn(async move {
        let _keep = reporter;
        tonic::transport::Server::builder()
            .add_service(health)
            .serve_with_incoming(
                UnixListenerStream::new(listener).map(|c| c.map(FixAuthority::new)),
            )
            .await
    });
    (Dir(dir), socket)
}

async fn still_serving(socket: &std::path::Path) {
    let channel = strata_grpc::client::channel(socket.to_str().unwrap()).unwrap();
    let status = HealthClient::new(channel)
        .check(HealthCheckRequest {
            service: String::new(),
        })
        .await
        .unwrap()
        .into_inner()
        .status;
    assert_eq!(status, ServingStatus::Serving as i32);
}

fn frame(kind: u8, flags: u8, declared: usize, payload: &[u8]) -> Vec<u8> {
    let len = u32::try_from(declared).unwrap();
    let mut f = len.to_be_bytes()[1..].to_vec();
    f.extend_from_slice(&[kind, flags, 0, 0, 0, 1]);
    f.extend_from_slice(payload);
    f
}

/// Sends `frames` after the preface and a SETTINGS frame, then reads until the server closes
/// the connection (without the bound on frames it waits for more, and the guard fails).
async fn closed_after(socket: &std::path::Path, frames: &[u8]) {
    let mut conn = UnixStream::connect(socket).await.unwrap();
    let mut out = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
    out.extend_from_slice(&[0, 0, 0, 0x4, 0, 0, 0, 0, 0]); // SETTINGS, on stream 0
    out.extend_from_slice(frames);
    conn.write_all(&out).await.unwrap();
    let mut sink = Vec::new();
    // The server's SETTINGS and the like, then the end: EOF, or a reset.
    let _ = conn.read_to_end(&mut sink).await;
}

#[tokio::test]
async fn oversized_headers_end_their_connection_and_the_server_goes_on() {
    tokio::time::timeout(TEST_LIMIT, async {
        let (_dir, socket) = serve().await;
        still_serving(&socket).await;

        // A HEADERS frame declaring 2 MiB, of which nothing is sent: without the bound the
        // rewriter would wait for (and allocate) all of it.
        closed_after(&socket, &frame(0x1, 0x4, 2 << 20, &[])).await;
        still_serving(&socket).await;

        // An HPACK bomb: 16 KiB on the wire, 48 MB decoded.
        let mut block = vec![0x40, 6];
        block.extend_from_slice(b"x-bomb");
        // Value length 4000 as an HPACK integer with a 7-bit prefix: 127, then 3873 in base 128.
        block.extend_from_slice(&[0x7f, 0xa1, 0x1e]);
        block.extend(std::iter::repeat_n(b'b', 4000));
        block.extend(std::iter::repeat_n(0xbe, 12_000));
        closed_after(&socket, &frame(0x1, 0x5, block.len(), &block)).await;
        still_serving(&socket).await;
    })
    .await
    .expect("test did not finish in time (liveness guard)");
}
