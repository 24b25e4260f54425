//! The command line: `serve`, `check`, `hash-key`.

use std::io::Read;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::auth::keys::KeyDigest;
use crate::config;
use crate::server::{Gateway, shutdown_signal};
use crate::telemetry::request_log::LogSink;

#[derive(Debug, Parser)]
#[command(
    name = "tollgate",
    version,
    about = "An AI gateway: one OpenAI-compatible entry point in front of every LLM."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the gateway. Reloads the config on SIGHUP and when the file changes.
    Serve {
        /// The YAML configuration file.
        #[arg(short, long, env = "TOLLGATE_CONFIG", value_name = "FILE")]
        config: PathBuf,
    },
    /// Validate a configuration file and print every problem with its location.
    Check {
        /// The YAML configuration file.
        #[arg(short, long, env = "TOLLGATE_CONFIG", value_name = "FILE")]
        config: PathBuf,
    },
    /// Print the `sha256:...` form of an API key, to put in the config instead of the key.
    HashKey {
        /// The key; read from standard input when omitted (keeps it out of shell history).
        key: Option<String>,
    },
}

pub async fn run(cli: Cli) -> ExitCode {
    match cli.command {
        Command::Serve { config } => serve(config).await,
        Command::Check { config } => check(config),
        Command::HashKey { key } => hash_key(key),
    }
}

async fn serve(path: PathBuf) -> ExitCode {
    let gateway = match Gateway::bind(&path, LogSink::Stdout).await {
        Ok(g) => g,
        Err(e) => {
            eprintln!("tollgate: cannot start:\n{e}");
            return ExitCode::FAILURE;
        }
    };
    match gateway.run(shutdown_signal()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("tollgate: {e}");
            ExitCode::FAILURE
        }
    }
}

fn check(path: PathBuf) -> ExitCode {
    match config::load_file(&path) {
        Ok(c) => {
            println!(
                "{}: OK ({} providers, {} models, {} routes, {} groups, {} consumers)",
                path.display(),
                c.providers.len(),
                c.models.len(),
                c.routes.len(),
                c.groups.len(),
                c.consumers.len()
            );
            ExitCode::SUCCESS
        }
        Err(errors) => {
            for e in &errors.0 {
                eprintln!("{e}");
            }
            eprintln!("{}: {} problem(s) found", path.display(), errors.0.len());
            ExitCode::FAILURE
        }
    }
}

fn hash_key(key: Option<String>) -> ExitCode {
    let key = match key {
        Some(k) => k,
        None => {
            let mut s = String::new();
            if std::io::stdin().read_to_string(&mut s).is_err() {
                eprintln!("tollgate: cannot read the key from standard input");
                return ExitCode::FAILURE;
            }
            s.trim_end_matches(['\r', '\n']).to_owned()
        }
    };
    match KeyDigest::from_config(&key) {
        Ok(d) => {
            println!("{}", d.to_config_string());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("tollgate: {e}");
            ExitCode::FAILURE
        }
    }
}
