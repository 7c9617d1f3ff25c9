//! Log output through `tracing`: human-readable or JSON lines on standard error, filtered by `RUST_LOG`.

use tracing_subscriber::EnvFilter;

use crate::config::LogFormat;

/// The filter used when `RUST_LOG` is unset.
/// The protocol libraries log routine client trouble (failed logins, resets) as errors: quieter.
/// rustls warns about every TLS client that sends an IP address as its server name (SNI), as some
/// FTPS clients do when they connect by address: harmless (the handshake ignores the name) and
/// nothing the operator can change, so that module logs only errors.
pub const DEFAULT_FILTER: &str = "info,libunftp=warn,russh=warn,rustls::msgs::handshake=error";

/// Installs the global subscriber. `RUST_LOG` (e.g. `filegate=debug,info`) overrides the default
/// `info`; an unparsable `RUST_LOG` falls back to `info` with a warning. Calling it again (tests) is
/// harmless: the first subscriber stays.
pub fn init(format: LogFormat) {
    let (filter, bad_filter) = match std::env::var("RUST_LOG") {
        Ok(spec) if !spec.trim().is_empty() => match EnvFilter::try_new(&spec) {
            Ok(filter) => (filter, None),
            Err(e) => (EnvFilter::new(DEFAULT_FILTER), Some((spec, e))),
        },
        _ => (EnvFilter::new(DEFAULT_FILTER), None),
    };
    // Colour codes only for a person at a terminal: a file, a pipe or a log collector gets plain text.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    let installed = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
    if let (Ok(()), Some((spec, error))) = (installed, bad_filter) {
        tracing::warn!(%spec, %error, "RUST_LOG is not a valid filter; logging at info");
    }
}
