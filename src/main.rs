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
            // Store errors keep the library error as their source and already quote it in their
            // message: a cause the line above says word for word is not repeated.
            let mut said = error.to_string();
            for cause in error.chain().skip(1) {
                let cause = cause.to_string();
                if !said.contains(&cause) {
                    eprintln!("  caused by: {cause}");
                }
                said = cause;
            }
            ExitCode::from(cli::exit_code(&error))
        }
    }
}
