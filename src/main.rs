//! The `filegate` binary: parses the command line, runs it, prints the whole cause chain of a fatal
//! error and exits 0 (clean shutdown), 2 (bad configuration) or 1 (any other fatal error).

use std::process::ExitCode;

use clap::Parser as _;
use filegate::cli::{self, Cli};

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli::run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("filegate: error: {error}");
            for cause in error.chain().skip(1) {
                eprintln!("  caused by: {cause}");
            }
            ExitCode::from(cli::exit_code(&error))
        }
    }
}
