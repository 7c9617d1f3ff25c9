//! The command line: `filegate [serve]`, `filegate check-config`, `filegate hash-password`,
//! `filegate gen-cert`.
//!
//! Exit codes (DESIGN.md "Command line"): 0 after a clean shutdown, 2 for a bad configuration,
//! 1 for any other fatal error. [`exit_code`] decides which from the error.

use std::io::{BufRead, IsTerminal, Write};
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use clap::{Args, Parser, Subcommand};
use tokio_util::sync::CancellationToken;

use crate::client;
use crate::config::{self, Config, ConfigError, DEFAULT_CONFIG_PATH};

/// Exit code for a configuration that cannot be used.
pub const EXIT_BAD_CONFIG: u8 = 2;
/// Exit code for any other fatal error.
pub const EXIT_FATAL: u8 = 1;

/// One gateway for FTP/FTPS, SFTP and MQTT over a chunked store, with file events on MQTT.
///
/// Without a subcommand, runs the gateway (as `filegate serve`).
#[derive(Debug, Parser)]
#[command(name = "filegate", version, args_conflicts_with_subcommands = true)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
    #[command(flatten)]
    pub serve: ConfigArgs,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the gateway until SIGINT or SIGTERM (the default).
    Serve(ConfigArgs),
    /// Validate the configuration and print it with secrets masked; exit 2 listing every problem.
    CheckConfig(ConfigArgs),
    /// Read a password line from standard input and print its argon2id hash for [[users]] password_hash.
    HashPassword,
    /// Write a self-signed certificate and key for FTPS or MQTT over TLS (see certs/README.md).
    GenCert(GenCertArgs),
    /// Print a Mosquitto acl_file that gives each configured user only their own home's events
    /// (for mqtt.mode = "external"; docs/events.md).
    MqttAcl(ConfigArgs),
    /// Print the OpenAPI 3.1 document of the HTTP API (as served at /api/v1/openapi.json;
    /// `filegate openapi > docs/openapi.json` regenerates the committed copy).
    Openapi,
    /// Wait until a complete file matching a pattern exists on a running gateway; print its path,
    /// size and SHA-256 (exit 3 on timeout, 4 if a matching upload was cut off; docs/integrations/cli.md).
    Wait(crate::client::WaitArgs),
    /// Print a running gateway's file events as JSON lines (from the history, then live with --follow).
    Events(crate::client::EventsArgs),
    /// Upload a local file to a running gateway.
    Put(crate::client::PutArgs),
    /// Download a file from a running gateway, checked against its SHA-256.
    Get(crate::client::GetArgs),
    /// List a directory on a running gateway.
    Ls(crate::client::PathArgs),
    /// Delete a file (or an empty directory) on a running gateway.
    Rm(crate::client::PathArgs),
}

#[derive(Debug, Clone, Args)]
pub struct GenCertArgs {
    /// A name clients connect to (DNS name or IP address); repeat for more.
    #[arg(long = "host", value_name = "NAME", required = true)]
    pub hosts: Vec<String>,
    /// Where to write the PEM certificate (ftp.tls.cert).
    #[arg(long, value_name = "PATH", default_value = "certs/ftp.crt")]
    pub cert: PathBuf,
    /// Where to write the PEM private key, readable by its owner only (ftp.tls.key).
    #[arg(long, value_name = "PATH", default_value = "certs/ftp.key")]
    pub key: PathBuf,
    /// Days the certificate is valid.
    #[arg(long, default_value_t = 365)]
    pub days: u32,
    /// Replace existing files.
    #[arg(long)]
    pub force: bool,
}

#[derive(Debug, Clone, Args)]
pub struct ConfigArgs {
    /// The configuration file; every key can be overridden by FILEGATE__SECTION__KEY variables.
    #[arg(short, long, value_name = "PATH", default_value = DEFAULT_CONFIG_PATH)]
    pub config: PathBuf,
}

/// Runs the command `cli` names. Blocking: `serve` builds its own tokio runtime.
pub fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        None => serve(&cli.serve.config),
        Some(Command::Serve(args)) => serve(&args.config),
        Some(Command::CheckConfig(args)) => check_config(&args.config),
        Some(Command::HashPassword) => hash_password(),
        Some(Command::GenCert(args)) => crate::certs::gen_cert(&args),
        Some(Command::MqttAcl(args)) => {
            let config = load_config(&args.config)?;
            print!("{}", crate::mqtt::mosquitto_acl(&config));
            Ok(())
        }
        Some(Command::Openapi) => {
            print!("{}", crate::http::openapi::document());
            Ok(())
        }
        Some(Command::Wait(a)) => Ok(client::run(&a.api.clone(), |api| client::wait(api, a))?),
        Some(Command::Events(a)) => Ok(client::run(&a.api.clone(), |api| client::events(api, a))?),
        Some(Command::Put(a)) => Ok(client::run(&a.api.clone(), |api| client::put(api, a))?),
        Some(Command::Get(a)) => Ok(client::run(&a.api.clone(), |api| client::get(api, a))?),
        Some(Command::Ls(a)) => Ok(client::run(&a.api.clone(), |api| client::ls(api, a))?),
        Some(Command::Rm(a)) => Ok(client::run(&a.api.clone(), |api| client::rm(api, a))?),
    }
}

/// The exit code for a fatal error: a client command's own code (docs/integrations/cli.md), 2 if
/// a [`ConfigError`] is anywhere in its chain, else 1.
pub fn exit_code(error: &anyhow::Error) -> u8 {
    if let Some(e) = error.downcast_ref::<client::ClientError>() {
        e.code as u8
    } else if error.chain().any(|e| e.is::<ConfigError>()) {
        EXIT_BAD_CONFIG
    } else {
        EXIT_FATAL
    }
}

/// Loads `path` with the process's `FILEGATE__…` variables.
pub fn load_config(path: &Path) -> Result<Config, ConfigError> {
    Config::load(path, config::process_env())
}

fn serve(path: &Path) -> anyhow::Result<()> {
    let config = load_config(path)?;
    crate::logging::init(config.server.log_format);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the tokio runtime")?;
    runtime.block_on(async {
        let shutdown = CancellationToken::new();
        let force = CancellationToken::new();
        shutdown_on_signal(shutdown.clone(), force.clone())?;
        crate::serve::run(config, shutdown, force).await
    })
}

/// Cancels `token` on the first SIGINT or SIGTERM (graceful shutdown) and `force` on the second
/// (end the transfers still running now). The handlers are installed before this returns, so a
/// signal that arrives once the gateway has printed its startup line is never missed.
fn shutdown_on_signal(token: CancellationToken, force: CancellationToken) -> anyhow::Result<()> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let mut term = signal(SignalKind::terminate()).context("cannot handle SIGTERM")?;
        let mut int = signal(SignalKind::interrupt()).context("cannot handle SIGINT")?;
        // Lives as long as the runtime: the process ends when serving does.
        tokio::spawn(async move {
            for token in [token, force] {
                let name = tokio::select! {
                    _ = term.recv() => "SIGTERM",
                    _ = int.recv() => "SIGINT",
                };
                tracing::info!("{name} received");
                token.cancel();
            }
        });
    }
    #[cfg(not(unix))]
    tokio::spawn(async move {
        for token in [token, force] {
            if tokio::signal::ctrl_c().await.is_ok() {
                tracing::info!("Ctrl-C received");
                token.cancel();
            }
        }
    });
    Ok(())
}

fn check_config(path: &Path) -> anyhow::Result<()> {
    let env = config::process_env();
    let config = Config::load(path, env.clone())?;
    let mut text = format!("# filegate: {} is valid.\n", path.display());
    if !env.is_empty() {
        let mut names: Vec<&str> = env.iter().map(|(k, _)| k.as_str()).collect();
        names.sort_unstable();
        text.push_str(&format!(
            "# Overridden by environment: {}\n",
            names.join(", ")
        ));
    }
    text.push_str("# Effective configuration, secrets masked:\n\n");
    text.push_str(&config.to_masked_toml());
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        // `filegate check-config | head` closing the pipe early is not a failure.
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => {
            Err(e).context("cannot write to standard output")
        }
        _ => Ok(()),
    }
}

fn hash_password() -> anyhow::Result<()> {
    let stdin = std::io::stdin();
    if stdin.is_terminal() {
        eprint!("Password (shown as you type; end with Enter): ");
        std::io::stderr().flush().ok();
    }
    let password = read_password_line(&mut stdin.lock())?;
    let hash = crate::password::hash_password(&password)?;
    println!("{hash}");
    Ok(())
}

/// Reads one line and strips its line ending; refuses end of input and an empty line.
pub fn read_password_line(input: &mut impl BufRead) -> anyhow::Result<String> {
    let mut line = String::new();
    let read = input
        .read_line(&mut line)
        .context("cannot read the password from standard input (it must be UTF-8 text)")?;
    if read == 0 {
        anyhow::bail!(
            "no password on standard input; type one, or pipe it: echo 'secret' | filegate hash-password"
        );
    }
    let password = line
        .strip_suffix('\n')
        .map(|l| l.strip_suffix('\r').unwrap_or(l))
        .unwrap_or(&line);
    if password.is_empty() {
        anyhow::bail!(crate::password::PasswordError::Empty);
    }
    Ok(password.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cli_parses_the_documented_commands() {
        let cli = Cli::try_parse_from(["filegate"]).unwrap();
        assert!(cli.command.is_none());
        assert_eq!(cli.serve.config, Path::new(DEFAULT_CONFIG_PATH));

        let cli = Cli::try_parse_from(["filegate", "--config", "x.toml"]).unwrap();
        assert!(cli.command.is_none());
        assert_eq!(cli.serve.config, Path::new("x.toml"));

        let cli = Cli::try_parse_from(["filegate", "serve", "--config", "x.toml"]).unwrap();
        assert!(matches!(cli.command, Some(Command::Serve(a)) if a.config == Path::new("x.toml")));

        let cli = Cli::try_parse_from(["filegate", "check-config", "-c", "y.toml"]).unwrap();
        assert!(
            matches!(cli.command, Some(Command::CheckConfig(a)) if a.config == Path::new("y.toml"))
        );

        let cli = Cli::try_parse_from(["filegate", "hash-password"]).unwrap();
        assert!(matches!(cli.command, Some(Command::HashPassword)));

        assert!(Cli::try_parse_from(["filegate", "hash-password", "--config", "x"]).is_err());
    }

    #[test]
    fn password_line_is_stripped_and_hash_verifies() {
        for input in ["s3cret pass\n", "s3cret pass\r\n", "s3cret pass"] {
            let password = read_password_line(&mut input.as_bytes()).unwrap();
            assert_eq!(password, "s3cret pass");
            let hash = crate::password::hash_password(&password).unwrap();
            assert!(crate::password::verify_password(&hash, "s3cret pass"));
        }
        // Only the first line is the password.
        let password = read_password_line(&mut "one\ntwo\n".as_bytes()).unwrap();
        assert_eq!(password, "one");
    }

    #[test]
    fn empty_password_input_is_refused() {
        assert!(read_password_line(&mut "\n".as_bytes()).is_err());
        assert!(read_password_line(&mut "".as_bytes()).is_err());
    }

    #[test]
    fn config_errors_exit_2_and_others_1() {
        let config_error = ConfigError::Invalid {
            problems: vec![config::Problem::new("storage.chunk_size", "too small")],
        };
        assert_eq!(
            exit_code(&anyhow::Error::new(config_error)),
            EXIT_BAD_CONFIG
        );
        let wrapped = anyhow::Error::new(ConfigError::Invalid {
            problems: vec![config::Problem::new("x", "y")],
        })
        .context("while starting");
        assert_eq!(exit_code(&wrapped), EXIT_BAD_CONFIG);
        assert_eq!(exit_code(&anyhow::anyhow!("redis is down")), EXIT_FATAL);
    }
}
