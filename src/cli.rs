//! The command line: `tollgate serve [--config F] [--bind A] [--data-dir D] [--demo]`.

use std::net::TcpListener;
use std::path::PathBuf;
use std::sync::Arc;

use clap::{Parser, Subcommand, ValueEnum};

use crate::app::{StartError, Tollgate};
use crate::clock::{Clock, SystemClock};
use crate::config::Config;

#[derive(Parser, Debug)]
#[command(
    name = "tollgate",
    version,
    about = "Meter, limit and analyse every API request of a multi-tenant API"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run the server.
    Serve(ServeArgs),
}

#[derive(clap::Args, Debug)]
pub struct ServeArgs {
    /// Configuration file (TOML); every key also reads a TOLLGATE_* variable.
    #[arg(long, env = "TOLLGATE_CONFIG")]
    pub config: Option<PathBuf>,
    /// Address to listen on (overrides the config's `bind`).
    #[arg(long)]
    pub bind: Option<String>,
    /// Data directory (overrides the config's `data_dir`).
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Create one demo tenant per plan with 30 days of usage, and print their keys.
    #[arg(long)]
    pub demo: bool,
    /// Log output format.
    #[arg(long, value_enum, default_value_t = LogFormat::Text, env = "TOLLGATE_LOG_FORMAT")]
    pub log_format: LogFormat,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("TOLLGATE_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
}

pub fn run(cli: Cli) -> Result<(), StartError> {
    match cli.command {
        Command::Serve(args) => serve(args),
    }
}

fn serve(args: ServeArgs) -> Result<(), StartError> {
    init_logging(args.log_format);
    let mut config = Config::load(args.config.as_deref(), std::env::vars())?;
    if let Some(bind) = args.bind {
        config.bind = bind;
    }
    if let Some(dir) = args.data_dir {
        config.data_dir = dir;
    }
    let listener = TcpListener::bind(&config.bind).map_err(|source| StartError::Io {
        context: format!("cannot listen on {}", config.bind),
        source,
    })?;
    let addr = listener.local_addr().map_err(|source| StartError::Io {
        context: "no local address".into(),
        source,
    })?;
    let admin_env = std::env::var("TOLLGATE_ADMIN_TOKEN").ok();
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let tollgate = Tollgate::open(config, admin_env.as_deref(), clock.clone())?;
    crate::alloc::release_free_memory();
    if let Some(path) = &tollgate.admin_token_path {
        println!("Admin token: in {} (mode 0600)", path.display());
    }
    if args.demo {
        let started = std::time::Instant::now();
        let tenants =
            crate::demo::seed(&tollgate.registry, &tollgate.prices, clock.now(), 30, 1.0)?;
        tollgate.store.flush()?;
        println!(
            "Demo tenants ({} records written in {:.1} s):",
            tenants.iter().map(|t| t.records_written).sum::<usize>(),
            started.elapsed().as_secs_f64()
        );
        for t in &tenants {
            println!("  {:<20} plan {:<13} key {}", t.tenant_id, t.plan_id, t.key);
        }
        println!("Dashboard (one link per tenant; the key stays in the URL fragment):");
        for t in &tenants {
            println!("  http://{addr}/dashboard/api-usage#key={}", t.key);
        }
        if let Some(t) = tenants.first() {
            println!("Try:");
            println!(
                "  curl -s -X POST -H 'Authorization: Bearer {}' http://{addr}/api/v1/authorize",
                t.key
            );
            println!(
                "  curl -s -H 'Authorization: Bearer {}' http://{addr}/api/billing/usage",
                t.key
            );
        }
    }
    println!("Tollgate listening on http://{addr}");
    tollgate.serve(listener)
}
