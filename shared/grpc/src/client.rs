//! Connecting to a strata (or containerd) service by address: a unix socket path or host:port.

use crate::server::Address;
use hyper_util::rt::TokioIo;
use tonic::transport::{Channel, Endpoint};

/// How the error of a failed connection to a unix socket begins (`connecting to PATH: …`), so
/// a client can tell "could not reach the server" from an error the server answered.
pub const CONNECTING: &str = "connecting to";

/// Opens a channel to `address`; the connection is made lazily and re-made after failures.
pub fn channel(address: &str) -> Result<Channel, strata_core::Error> {
    match Address::parse(address) {
        Address::Tcp(addr) => Ok(Endpoint::try_from(format!("http://{addr}"))
            .map_err(|e| strata_core::Error::invalid_argument(format!("address {address}: {e}")))?
            .connect_lazy()),
        Address::Unix(path) => {
            // The URI is required by tonic but unused: the connector dials the socket.
            let endpoint = Endpoint::from_static("http://localhost")
                .initial_stream_window_size(Some(4 << 20))
                .initial_connection_window_size(Some(8 << 20));
            Ok(
                endpoint.connect_with_connector_lazy(tower::service_fn(move |_| {
                    let path = path.clone();
                    async move {
                        // The error names the socket: a caller's message then says what it
                        // could not reach, not only "No such file or directory".
                        let stream = tokio::net::UnixStream::connect(&path).await.map_err(|e| {
                            std::io::Error::new(
                                e.kind(),
                                format!("{CONNECTING} {}: {e}", path.display()),
                            )
                        })?;
                        Ok::<_, std::io::Error>(TokioIo::new(stream))
                    }
                })),
            )
        }
    }
}
