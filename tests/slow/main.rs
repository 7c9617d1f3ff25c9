//! The slow tier: long fault tests (a broker down for minutes, Redis killed and restarted, a gateway
//! killed mid-upload, resource exhaustion, several gateways on one store).
//!
//! Plain `cargo test` leaves this binary out (`test = false` in Cargo.toml); `scripts/test` runs it
//! in full unless given `--skip-slow`; `cargo test --test slow` runs it alone (docs/testing.md).

#[macro_use]
#[path = "../common/mod.rs"]
mod common;

mod broker_outage;
mod crash_gateway;
mod exhaustion;
mod faults;
mod scale_out;
