//! The gateway's integration tests, one binary: every front-end and the operations around them,
//! driven through real servers and the clients users run. One binary links the gateway once.
//!
//! The suites re-run on every Redis topology are in `tests/protocols/`, the long fault tests in
//! `tests/slow/` (docs/testing.md).

#[macro_use]
#[path = "../common/mod.rs"]
mod common;

mod access;
mod cli;
mod cli_client;
mod clients_ftp;
mod clients_sftp;
mod config_docs;
mod deploy;
mod example_consumer;
mod ftp_reference;
mod ftps;
mod hostile;
mod http;
mod http_auth;
mod http_events;
mod http_openapi;
mod http_transfer;
mod proxy_protocol;
mod redis_tls;
mod web;
mod webhooks;
