//! The gRPC adapters, one file per service: containerd's Containers API over any
//! [`ContainerStore`](strata_core::containers::ContainerStore) ([`containers`]), the Events API
//! over the [`Exchange`](crate::events::Exchange) ([`events`]), the Tasks API over the
//! supervisors ([`tasks`]) and strata's Io ([`io`]). Only protobuf ⇄ domain conversion and error
//! mapping here.

pub mod containers;
pub mod events;
pub mod io;
pub mod tasks;

pub use containers::ContainersService;
pub use events::EventsService;

use futures_util::stream::Stream;
use std::pin::Pin;
use tonic::Status;

/// Full names of the services this crate serves, for health and reflection (from the one list
/// in [`strata_api::service_names`]).
pub mod names {
    pub use strata_api::service_names::{CONTAINERS, EVENTS, IO, TASKS};
    /// Every service strata-tasks serves.
    pub const ALL: &[&str] = &[CONTAINERS, EVENTS, TASKS, IO];
}

pub(crate) type BoxStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send + 'static>>;
