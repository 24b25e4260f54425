//! The command line: `serve`, `check`, `hash-key`, `openwebui sync`, `import kong|litellm`,
//! and `keys`, `consumers`, `export` over the admin API.

use std::io::Read;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::admin::client::{AdminTarget, ConsumersCommand, KeysCommand};
use crate::auth::keys::KeyDigest;
use crate::server::{Gateway, shutdown_signal};
use crate::snapshot::Snapshot;
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
    /// OpenWebUI as the front end: make its groups and model grants match the config.
    #[command(subcommand)]
    Openwebui(OpenWebUiCommand),
    /// Keys in the store, through the admin API.
    Keys {
        #[command(flatten)]
        target: AdminTarget,
        #[command(subcommand)]
        command: KeysCommand,
    },
    /// Consumers in the store, through the admin API.
    Consumers {
        #[command(flatten)]
        target: AdminTarget,
        #[command(subcommand)]
        command: ConsumersCommand,
    },
    /// Print the store's consumers and keys (as digests) as a `consumers:` config section.
    Export {
        #[command(flatten)]
        target: AdminTarget,
    },
    /// Write a Tollgate config from a Kong (decK files, Kong Ingress Controller manifests) or
    /// LiteLLM configuration; what is not carried over is listed with its place and why.
    Import {
        /// `kong` or `litellm`.
        #[arg(value_parser = ["kong", "litellm"])]
        from: String,
        /// The files to read (Kong: any number of decK files and manifests).
        #[arg(required = true)]
        files: Vec<PathBuf>,
        /// Write the config here instead of standard output.
        #[arg(short, long, value_name = "FILE")]
        output: Option<PathBuf>,
    },
    /// Exit 0 if a status URL answers 200 (the container health check; the image has no curl).
    Probe {
        /// What to ask.
        #[arg(default_value = "http://127.0.0.1:8081/ready")]
        url: String,
    },
    /// Print the `sha256:...` form of an API key, to put in the config instead of the key.
    HashKey {
        /// The key; read from standard input when omitted (keeps it out of shell history).
        key: Option<String>,
    },
}

#[derive(Debug, Subcommand)]
pub enum OpenWebUiCommand {
    /// Create or update OpenWebUI groups (members by email) and per-model read grants from
    /// the gateway config, so each user's model picker shows exactly their models. Idempotent.
    Sync {
        #[arg(short, long, env = "TOLLGATE_CONFIG", value_name = "FILE")]
        config: PathBuf,
        /// OpenWebUI's base URL, e.g. http://127.0.0.1:8080.
        #[arg(long, env = "OPENWEBUI_URL")]
        url: String,
        /// An OpenWebUI admin's API key or token.
        #[arg(long, env = "OPENWEBUI_ADMIN_TOKEN", hide_env_values = true)]
        token: String,
        /// The trusted consumer OpenWebUI uses (default: the only one with trust_user_header).
        #[arg(long)]
        consumer: Option<String>,
        /// Print the changes without making them.
        #[arg(long)]
        dry_run: bool,
    },
}

pub async fn run(cli: Cli) -> ExitCode {
    match cli.command {
        Command::Openwebui(OpenWebUiCommand::Sync {
            config,
            url,
            token,
            consumer,
            dry_run,
        }) => openwebui_sync(config, &url, &token, consumer, dry_run).await,
        Command::Serve { config } => serve(config).await,
        Command::Check { config } => check(config).await,
        Command::HashKey { key } => hash_key(key),
        Command::Probe { url } => probe(&url).await,
        Command::Import {
            from,
            files,
            output,
        } => match crate::import::run(&from, &files, output.as_deref()) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("tollgate import: {e}");
                ExitCode::FAILURE
            }
        },
        Command::Keys { target, command } => crate::admin::client::keys(&target, command).await,
        Command::Consumers { target, command } => {
            crate::admin::client::consumers(&target, command).await
        }
        Command::Export { target } => crate::admin::client::export(&target).await,
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

/// Reads, checks and compiles the config exactly as start-up does, off the async workers.
async fn load_checked(
    path: &std::path::Path,
) -> Result<Result<(crate::config::Config, Snapshot), crate::config::ConfigErrors>, ExitCode> {
    let path = path.to_path_buf();
    tokio::task::spawn_blocking(move || Snapshot::load(&path, None))
        .await
        .map_err(|_| {
            eprintln!("tollgate: the check did not finish");
            ExitCode::FAILURE
        })
}

/// Compiles the config exactly as start-up does (guards, providers, limits included).
async fn check(path: PathBuf) -> ExitCode {
    let loaded = match load_checked(&path).await {
        Ok(loaded) => loaded,
        Err(code) => return code,
    };
    match loaded {
        Ok((c, _snapshot)) => {
            if let Some(tls) = c.listen.tls() {
                for warning in crate::server::tls::certificate_warnings(tls) {
                    eprintln!("warning: listen.tls.cert: {warning}");
                }
            }
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

async fn openwebui_sync(
    path: PathBuf,
    url: &str,
    token: &str,
    consumer: Option<String>,
    dry_run: bool,
) -> ExitCode {
    let config = match load_checked(&path).await {
        Err(code) => return code,
        Ok(Ok((config, _snapshot))) => config,
        Ok(Err(errors)) => {
            for e in &errors.0 {
                eprintln!("{e}");
            }
            return ExitCode::FAILURE;
        }
    };
    let front = match consumer {
        Some(c) => c,
        None => {
            let trusted: Vec<&String> = config
                .consumers
                .iter()
                .filter(|(_, c)| {
                    c.trust_user_header
                        .as_ref()
                        .is_some_and(|t| t.header_name().is_some())
                })
                .map(|(n, _)| n)
                .collect();
            match trusted.as_slice() {
                [one] => (*one).clone(),
                [] => {
                    eprintln!("tollgate: no consumer has trust_user_header");
                    return ExitCode::FAILURE;
                }
                _ => {
                    eprintln!("tollgate: several trusted consumers; name one with --consumer");
                    return ExitCode::FAILURE;
                }
            }
        }
    };
    let result = match crate::openwebui::Sync::new(url, token) {
        Ok(sync) => sync.run(&config, &front, dry_run).await,
        Err(e) => Err(e),
    };
    match result {
        Ok(changes) => {
            let verb = if dry_run { "would apply" } else { "applied" };
            for change in &changes {
                println!("{change}");
            }
            let made = changes
                .iter()
                .filter(|c| !matches!(c, crate::openwebui::Change::UnknownUser(_)))
                .count();
            println!("{made} change(s) {verb}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("tollgate: openwebui sync: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn probe(url: &str) -> ExitCode {
    let client = match reqwest::Client::builder()
        .timeout(std::time::Duration::from_secs(3))
        .build()
    {
        Ok(c) => c,
        Err(e) => {
            eprintln!("tollgate probe: {e}");
            return ExitCode::FAILURE;
        }
    };
    match client.get(url).send().await {
        Ok(r) if r.status().is_success() => ExitCode::SUCCESS,
        Ok(r) => {
            eprintln!("tollgate probe: {url} answered {}", r.status());
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("tollgate probe: {url}: {e}");
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
