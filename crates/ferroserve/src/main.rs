//! `ferroserve`: the command line.

use std::path::PathBuf;

use clap::{Parser, Subcommand};
use ferroserve::config::{Config, seconds};
use ferroserve::config::{ControlMode, RepositoryOptions};
use ferroserve::model_dir::{self, ModelDir};
use ferroserve::repository::single_model;
use ferroserve_runtime::DeploymentOptions;
use ferroserve_server::repository::Restriction;
use tracing_subscriber::EnvFilter;

#[derive(Parser)]
#[command(
    name = "ferroserve",
    version,
    about = "A KServe- and Triton-compatible model server"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve models: the iris example and `identity` unless a config file says otherwise.
    Serve(Box<ServeArgs>),
    /// Show each deployment and replica of a running server.
    Status(StatusArgs),
}

#[derive(clap::Args)]
struct StatusArgs {
    /// Address of the server's HTTP port.
    #[arg(long, default_value = "127.0.0.1:8080")]
    address: String,
    /// Print the raw JSON instead of tables.
    #[arg(long)]
    json: bool,
}

#[derive(clap::Args)]
struct ServeArgs {
    /// YAML file listing the deployments to serve.
    #[arg(long, short)]
    config: Option<PathBuf>,
    /// The address to listen on: an IP address or host name (overrides the config file;
    /// default 0.0.0.0, all interfaces). `127.0.0.1` serves this machine only.
    #[arg(long, alias = "bind")]
    host: Option<String>,
    /// HTTP port (overrides the config file).
    #[arg(long, alias = "http_port")]
    http_port: Option<u16>,
    /// gRPC port (overrides the config file).
    #[arg(long, alias = "grpc_port")]
    grpc_port: Option<u16>,
    /// Whether to serve gRPC (KServe's `--enable_grpc`; overrides the config file).
    #[arg(
        long,
        alias = "enable_grpc",
        value_name = "BOOL",
        value_parser = clap::builder::BoolishValueParser::new()
    )]
    enable_grpc: Option<bool>,
    /// Largest request body in bytes (overrides the config file).
    #[arg(long)]
    max_request_bytes: Option<usize>,
    /// Largest gRPC message in bytes (overrides the config file).
    #[arg(long, alias = "grpc_max_receive_message_length")]
    max_grpc_message_bytes: Option<usize>,
    /// Threads of the HTTP/gRPC ingress (replicas have threads or processes of their own).
    /// Default: one less than the cores, at least one, leaving a core to the replicas.
    #[arg(long, env = "FERROSERVE_IO_THREADS")]
    io_threads: Option<usize>,
    /// Most open connections per port; beyond it HTTP answers 503 and gRPC connections wait
    /// in the accept backlog (overrides the config file).
    #[arg(long)]
    max_connections: Option<usize>,
    /// Seconds a client has to send a request head (overrides the config file).
    #[arg(long)]
    header_read_timeout_s: Option<f64>,
    /// Seconds a connection may stay open with no request in flight (overrides the config
    /// file).
    #[arg(long)]
    keep_alive_timeout_s: Option<f64>,
    /// Seconds a client has to send a request body; beyond it 408 (overrides the config file).
    #[arg(long)]
    body_read_timeout_s: Option<f64>,
    /// Most concurrent HTTP/2 streams per connection (overrides the config file).
    #[arg(long)]
    max_concurrent_streams: Option<u32>,
    /// Largest HTTP/2 header list (gRPC metadata) in bytes (overrides the config file).
    #[arg(long)]
    max_header_list_bytes: Option<u32>,
    /// Do not serve `GET /-/status` (deployments, replicas, last errors): it answers 404.
    #[arg(long)]
    no_status_route: bool,
    /// Serve a model repository: every DIR/<name>/<version>/model.onnx and DIR/<name>/model.py,
    /// each with an optional DIR/<name>/config.yaml (beside the config file's deployments, if
    /// any; instead of the default example otherwise).
    #[arg(
        long,
        alias = "model_repository",
        alias = "model-store",
        value_name = "DIR"
    )]
    model_repository: Option<PathBuf>,
    /// Serve one model file (.onnx, or .py with one model class) under --name.
    #[arg(
        long,
        value_name = "FILE",
        requires = "name",
        conflicts_with = "model_repository"
    )]
    model: Option<PathBuf>,
    /// Serve what a directory holds (KServe's `--model_dir`, e.g. /mnt/models): model.py, a
    /// .onnx file or <version>/model.onnx under --name, or else a model repository.
    #[arg(
        long,
        alias = "model_dir",
        value_name = "DIR",
        conflicts_with_all = ["model", "model_repository"]
    )]
    model_dir: Option<PathBuf>,
    /// The name of the model given by --model or --model-dir (KServe's `--model_name`;
    /// default `model` for --model-dir).
    #[arg(long, alias = "model_name", alias = "model-name")]
    name: Option<String>,
    /// When repository models load (Triton's): `none` all at start, `explicit` only those
    /// given by --load-model and then on request, `poll` at start and whenever the repository
    /// changes.
    #[arg(long, value_enum, default_value = "none", alias = "model_control_mode")]
    model_control_mode: ControlMode,
    /// With --model-control-mode=explicit: a model to load at start (repeat; `*` for all).
    #[arg(long, alias = "load_model")]
    load_model: Vec<String>,
    /// With --model-control-mode=poll: seconds between reads of the repository.
    #[arg(long, default_value_t = 15.0, alias = "repository_poll_secs")]
    repository_poll_secs: f64,
    /// Restrict the model-repository API over HTTP to requests with this header:
    /// `model-repository:KEY=VALUE` (Triton's); others get 403.
    #[arg(long, value_name = "model-repository:KEY=VALUE")]
    http_restricted_api: Option<String>,
    /// Restrict the model-repository RPCs over gRPC to calls with this metadata:
    /// `model-repository:KEY=VALUE` (Triton's); others get PERMISSION_DENIED.
    #[arg(long, value_name = "model-repository:KEY=VALUE")]
    grpc_restricted_protocol: Option<String>,
    /// Let clients register system shared-memory regions (Triton's `--allow-client-shm`) and
    /// pass tensors through them; off by default, as a client that can register a key can
    /// read any shared-memory object this server's user can open.
    #[arg(long, value_name = "BOOL", num_args = 0..=1, default_missing_value = "true", alias = "allow_client_shm")]
    allow_client_shm: Option<bool>,
    /// The Python interpreter of repository Python models without a runtime_env.
    #[arg(long, env = "FERROSERVE_PYTHON", value_name = "PATH")]
    python: Option<PathBuf>,
}

/// The model name under --model-dir without --name: KServe's default `--model_name`.
const DEFAULT_MODEL_NAME: &str = "model";

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_env("FERROSERVE_LOG").unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let kserve = ferroserve::kserve_args::strip_inapplicable(std::env::args_os());
    let cli = Cli::parse_from(kserve.args);
    if !kserve.ignored.is_empty() {
        tracing::warn!(
            "ignoring KServe model-server flags that do not apply to ferroserve: {}",
            kserve.ignored.join(" ")
        );
    }
    match cli.command {
        Command::Serve(args) => serve(*args),
        Command::Status(args) => status(args),
    }
}

fn serve(args: ServeArgs) -> anyhow::Result<()> {
    ferroserve_onnx::library::use_python(
        args.python
            .clone()
            .unwrap_or_else(ferroserve_python::default_interpreter),
    );
    let model_dir = args
        .model_dir
        .as_deref()
        .map(model_dir::classify)
        .transpose()?;
    let model_file = match (&args.model, &model_dir) {
        (Some(file), _) => Some(file.clone()),
        (None, Some(ModelDir::File(file))) => Some(file.clone()),
        _ => None,
    };
    let repository_root = match (&args.model_repository, &model_dir) {
        (Some(root), _) => Some(root.clone()),
        (None, Some(ModelDir::Repository(root))) => Some(root.clone()),
        _ => None,
    };
    let mut config = match &args.config {
        Some(path) => Config::from_file(path)?,
        None if model_file.is_some() || repository_root.is_some() => Config::empty(),
        None => Config::default_example(),
    };
    if let Some(file) = &model_file {
        let name = args.name.as_deref().unwrap_or(DEFAULT_MODEL_NAME);
        config.deployments.push(single_model(
            file,
            name,
            args.python.clone(),
            DeploymentOptions::default(),
        )?);
    } else if let Some(name) = &args.name {
        let why = match repository_root {
            Some(_) => "a repository's models are named by their directories",
            None => "it names the model of --model or --model-dir",
        };
        tracing::warn!(name, "--model_name is ignored: {why}");
    }
    if let Some(root) = repository_root {
        if !root.is_dir() {
            anyhow::bail!("--model-repository {}: not a directory", root.display());
        }
        config.repository = Some(RepositoryOptions {
            root,
            mode: args.model_control_mode,
            startup_models: args.load_model.clone(),
            poll_interval: seconds("--repository-poll-secs", args.repository_poll_secs)?,
            python: args.python.clone(),
        });
    }
    let restriction = |flag: &str, spec: &Option<String>| -> anyhow::Result<Option<Restriction>> {
        spec.as_deref()
            .map(|s| Restriction::parse(s).map_err(|e| anyhow::anyhow!("{flag}: {e}")))
            .transpose()
    };
    config.http_restricted = restriction("--http-restricted-api", &args.http_restricted_api)?;
    config.grpc_restricted =
        restriction("--grpc-restricted-protocol", &args.grpc_restricted_protocol)?;
    config.allow_client_shm = args.allow_client_shm.unwrap_or(false);
    if let Some(host) = args.host {
        config.host = host;
    }
    if let Some(enabled) = args.enable_grpc {
        config.grpc_enabled = enabled;
    }
    if let Some(p) = args.http_port {
        config.http_port = p;
    }
    if let Some(p) = args.grpc_port {
        config.grpc_port = p;
    }
    if let Some(m) = args.max_request_bytes {
        anyhow::ensure!(m > 0, "--max-request-bytes must be above 0");
        config.max_request_bytes = m;
    }
    if let Some(m) = args.max_grpc_message_bytes {
        anyhow::ensure!(m > 0, "--max-grpc-message-bytes must be above 0");
        config.max_grpc_message_bytes = m;
    }
    if let Some(n) = args.max_connections {
        anyhow::ensure!(n > 0, "--max-connections must be at least 1");
        config.max_connections = n;
    }
    if let Some(s) = args.header_read_timeout_s {
        config.header_read_timeout = seconds("--header-read-timeout-s", s)?;
    }
    if let Some(s) = args.keep_alive_timeout_s {
        config.keep_alive_timeout = seconds("--keep-alive-timeout-s", s)?;
    }
    if let Some(s) = args.body_read_timeout_s {
        config.body_read_timeout = seconds("--body-read-timeout-s", s)?;
    }
    if let Some(n) = args.max_concurrent_streams {
        anyhow::ensure!(n > 0, "--max-concurrent-streams must be at least 1");
        config.max_concurrent_streams = n;
    }
    if let Some(n) = args.max_header_list_bytes {
        anyhow::ensure!(n > 0, "--max-header-list-bytes must be at least 1");
        config.max_header_list_bytes = n;
    }
    if args.no_status_route {
        config.status_route = false;
    }
    let io_threads = match args.io_threads {
        Some(0) => anyhow::bail!("--io-threads must be at least 1"),
        Some(n) => n,
        None => std::thread::available_parallelism()
            .map_or(1, |n| n.get().saturating_sub(1))
            .max(1),
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(io_threads)
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let listeners = ferroserve::server::bind(&config).await?;
        ferroserve::server::run(config, listeners, shutdown_signal()).await
    })
}

fn status(args: StatusArgs) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let deployments = runtime.block_on(ferroserve::status::fetch(&args.address))?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&deployments)?);
    } else {
        print!("{}", ferroserve::status::render(&deployments));
    }
    Ok(())
}

/// Completes on SIGINT or SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(e) = tokio::signal::ctrl_c().await {
            tracing::error!(error = %e, "cannot listen for SIGINT");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => tracing::info!("SIGINT: shutting down"),
        () = term => tracing::info!("SIGTERM: shutting down"),
    }
}
