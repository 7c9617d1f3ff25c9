//! filegate: one gateway for FTP/FTPS, SFTP and MQTT over a chunked store (see DESIGN.md).
//!
//! The binary (`src/main.rs`) only parses the command line and calls [`cli::run`]; everything else
//! lives here so tests can start the gateway in-process.

// The whole gateway is one future (`serve::run` awaits every front-end's); clippy's layout checks
// walk it deeper than the default limit of 128.
#![recursion_limit = "256"]

pub mod access;
pub mod certs;
pub mod cli;
pub mod client;
pub mod config;
pub mod events;
pub mod ftp;
#[doc(hidden)]
pub mod fuzz;
pub mod http;
pub mod http_client;
pub mod logging;
pub mod metrics;
pub mod mqtt;
pub mod password;
pub mod proxy_protocol;
pub mod serve;
pub mod sftp;

pub use config::Config;
