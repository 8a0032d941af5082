//! strata-network: networks (CNI configuration lists), each container's attachment (a
//! persistent network namespace, an address, published ports, /etc files), and the
//! reconciliation that leaves nothing behind after crashes. `manager` is the core; `grpc` only
//! converts.

#![forbid(unsafe_code)]

pub mod files;
pub mod firewall;
pub mod grpc;
pub mod manager;
pub mod ports;
pub mod records;
pub mod subnet;

pub use manager::{AttachSpec, DEFAULT_NETWORK, Manager, Settings};
