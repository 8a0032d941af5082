//! Connecting to a strata (or containerd) service by address: a unix socket path or host:port.

use crate::server::Address;
use hyper_util::rt::TokioIo;
use tonic::transport::{Channel, Endpoint};

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
                        let stream = tokio::net::UnixStream::connect(path).await?;
                        Ok::<_, std::io::Error>(TokioIo::new(stream))
                    }
                })),
            )
        }
    }
}
