//! The command line: `tollgate serve [--config F] [--bind A] [--data-dir D]
//! [--demo]`, and `tollgate health [--url U]` (the container's health check).

use std::net::TcpListener;
use std::path::PathBuf;
use std::sync::Arc;

pub mod admin;
pub mod restore;

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
    /// Ask a running server's /healthz; exit 0 when it answers 200.
    Health(HealthArgs),
    /// Import a tenant's usage history from a file in the export's format
    /// (NDJSON, or CSV with its header row) into the store. Records count
    /// toward their own month; a file imported twice counts once; a bad
    /// line is reported by its number and nothing is written. On the
    /// embedded store, stop the server first (one process owns the data
    /// directory); a running server takes POST /api/admin/tenants/{id}/import.
    Import(ImportArgs),
    /// Plans, through a running server's admin API (list, show, create,
    /// update, delete).
    Plans {
        #[command(flatten)]
        conn: admin::Conn,
        #[command(subcommand)]
        cmd: admin::PlanCmd,
    },
    /// Tenants, through a running server's admin API (list, show, create,
    /// move, suspend, resume, delete, usage).
    Tenants {
        #[command(flatten)]
        conn: admin::Conn,
        #[command(subcommand)]
        cmd: admin::TenantCmd,
    },
    /// API keys, through a running server's admin API (list, create,
    /// rotate, revoke).
    Keys {
        #[command(flatten)]
        conn: admin::Conn,
        #[command(subcommand)]
        cmd: admin::KeyCmd,
    },
    /// Asks a running server for a consistent copy of its embedded store,
    /// written on the server into <data dir>/backups/<time>/ (writes wait
    /// while it is copied; reads go on). Prints where it went.
    Backup {
        #[command(flatten)]
        conn: admin::Conn,
    },
    /// Puts a backup back into a stopped server's data directory (the
    /// store it replaces is kept beside it as db.before-restore-<time>).
    Restore(restore::RestoreArgs),
}

#[derive(clap::Args, Debug)]
pub struct ImportArgs {
    /// The tenant the records are imported into (it must exist).
    #[arg(long)]
    pub tenant: String,
    /// The file: `.csv` is read as CSV, anything else as NDJSON (or say --format).
    pub file: PathBuf,
    /// csv or ndjson [default: from the file's extension].
    #[arg(long)]
    pub format: Option<String>,
    /// Configuration file (TOML); every key also reads a TOLLGATE_* variable.
    #[arg(long, env = "TOLLGATE_CONFIG")]
    pub config: Option<PathBuf>,
    /// Data directory [default: the config's `data_dir`, TOLLGATE_DATA_DIR,
    /// else ./tollgate-data].
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
}

const SERVE_ENV: &str = "\
Environment:
  TOLLGATE_BIND          address to listen on (default 127.0.0.1:8080)
  TOLLGATE_DATA_DIR      data directory (default ./tollgate-data)
  TOLLGATE_ADMIN_TOKEN   the admin token (default: generated once into
                         <data dir>/admin-token, mode 0600)
  TOLLGATE_LOG           log filter, e.g. info, warn, tollgate=debug (default info)
  TOLLGATE_LOG_FORMAT    text or json (default text)
  TOLLGATE_CONFIG        configuration file (TOML)
  TOLLGATE_STORE_ENGINE  sled (default) or postgres: one database for many instances
  TOLLGATE_STORE_POSTGRES_URL  postgres://user@host:5432/db, for the postgres engine
  TOLLGATE_GRPC_BIND     address for Envoy's ext_authz and rate-limit services (gRPC;
                         default: none)
  TOLLGATE_<SECTION>_<KEY>  any configuration key, e.g. TOLLGATE_FLUSH_INTERVAL_MS
Precedence: flags, then TOLLGATE_* variables, then the file, then defaults.
Stop with SIGTERM or Ctrl-C: requests in flight are answered, then every
queued record is written. While starting (the --demo seeding included), a
signal stops at the next step with everything written; a second one ends
the process at once.";

#[derive(clap::Args, Debug)]
#[command(after_help = SERVE_ENV)]
pub struct ServeArgs {
    /// Configuration file (TOML); every key also reads a TOLLGATE_* variable.
    #[arg(long, env = "TOLLGATE_CONFIG")]
    pub config: Option<PathBuf>,
    /// Address to listen on [default: the config's `bind`, TOLLGATE_BIND,
    /// else 127.0.0.1:8080].
    #[arg(long)]
    pub bind: Option<String>,
    /// Data directory [default: the config's `data_dir`, TOLLGATE_DATA_DIR,
    /// else ./tollgate-data].
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Create one demo tenant per plan with 30 days of usage, and print their keys.
    #[arg(long)]
    pub demo: bool,
    /// Start even if the embedded store holds less than it last knew it
    /// had (a file cut short or deleted), logging what was lost; without
    /// it such a store refuses to start. Restoring a backup is better.
    #[arg(long)]
    pub recover: bool,
    /// Log output format.
    #[arg(long, value_enum, default_value_t = LogFormat::Text, env = "TOLLGATE_LOG_FORMAT")]
    pub(crate) log_format: LogFormat,
}

#[derive(clap::Args, Debug)]
pub struct HealthArgs {
    /// The server's address [default: TOLLGATE_BIND, else 127.0.0.1:8080;
    /// an unspecified host such as 0.0.0.0 is asked on 127.0.0.1].
    #[arg(long)]
    pub addr: Option<String>,
    /// Seconds to wait for the answer.
    #[arg(long, default_value_t = 3)]
    pub timeout: u64,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
pub(crate) enum LogFormat {
    Text,
    Json,
}

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("TOLLGATE_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // Colour only for a terminal: log files and pipes get plain text.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
}

pub fn run(cli: Cli) -> Result<(), StartError> {
    match cli.command {
        Command::Serve(args) => serve(args),
        Command::Health(args) => health(args),
        Command::Import(args) => import(args),
        Command::Plans { conn, cmd } => admin::plans(conn, cmd),
        Command::Tenants { conn, cmd } => admin::tenants(conn, cmd),
        Command::Keys { conn, cmd } => admin::keys(conn, cmd),
        Command::Backup { conn } => restore::backup(conn),
        Command::Restore(args) => restore::restore(args),
    }
}

/// `tollgate import`: the file read, checked whole, and written once.
fn import(args: ImportArgs) -> Result<(), StartError> {
    use crate::usage::import::{self, Format};
    init_logging(LogFormat::Text);
    let mut config = Config::load(args.config.as_deref(), std::env::vars())?;
    if let Some(dir) = args.data_dir {
        config.data_dir = dir;
    }
    let format = match args.format.as_deref() {
        Some("csv") => Format::Csv,
        Some("ndjson") => Format::Ndjson,
        Some(other) => {
            return Err(StartError::Refused(format!(
                "--format must be csv or ndjson, not {other:?}"
            )))
        }
        None if args
            .file
            .extension()
            .is_some_and(|e| e.eq_ignore_ascii_case("csv")) =>
        {
            Format::Csv
        }
        None => Format::Ndjson,
    };
    let text = std::fs::read_to_string(&args.file).map_err(|source| StartError::Io {
        context: format!("cannot read {}", args.file.display()),
        source,
    })?;
    let raw_days = config.retention.raw_days;
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let admin_env = std::env::var("TOLLGATE_ADMIN_TOKEN").ok();
    let tollgate = Tollgate::open(config, admin_env.as_deref(), clock.clone())?;
    let tenant = tollgate
        .registry
        .tenant_state(&args.tenant)
        .ok_or_else(|| {
            StartError::Refused(format!(
                "no tenant {:?} in this store: create it first (POST /api/admin/tenants)",
                args.tenant
            ))
        })?;
    let now = clock.now_nanos();
    let (oldest_ms, newest_ms) = import::window(now, raw_days);
    let records = match import::parse(&text, format, oldest_ms, newest_ms, &tollgate.prices) {
        Ok(records) => records,
        Err(errors) => {
            for e in &errors {
                eprintln!("{}:{}: {}", args.file.display(), e.line, e.error);
            }
            return Err(StartError::Refused(format!(
                "{} line(s) of {} are not records{}; nothing was imported",
                errors.len(),
                args.file.display(),
                if errors.len() >= import::MAX_ERRORS {
                    " (the first ones shown)"
                } else {
                    ""
                }
            )));
        }
    };
    let done = import::write(tollgate.store.as_ref(), &tenant, records, now)?;
    tollgate.store.flush()?;
    println!(
        "imported {} record(s) into {}; {} imported before (not counted again)",
        done.imported, args.tenant, done.duplicates
    );
    Ok(())
}

/// `GET /healthz` over a plain TCP connection (the image has no curl).
fn health(args: HealthArgs) -> Result<(), StartError> {
    use std::io::{Read, Write};
    use std::net::ToSocketAddrs;
    let addr = args
        .addr
        .or_else(|| std::env::var("TOLLGATE_BIND").ok())
        .unwrap_or_else(|| "127.0.0.1:8080".into());
    let failed = |context: String| move |source| StartError::Io { context, source };
    let mut target = addr
        .to_socket_addrs()
        .map_err(failed(format!("cannot resolve {addr}")))?
        .next()
        .ok_or_else(|| StartError::Io {
            context: format!("no address for {addr}"),
            source: std::io::ErrorKind::NotFound.into(),
        })?;
    if target.ip().is_unspecified() {
        target.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
    }
    let timeout = std::time::Duration::from_secs(args.timeout.max(1));
    let mut conn = std::net::TcpStream::connect_timeout(&target, timeout)
        .map_err(failed(format!("cannot reach Tollgate on {target}")))?;
    conn.set_read_timeout(Some(timeout))
        .and_then(|()| {
            conn.write_all(
                format!("GET /healthz HTTP/1.1\r\nHost: {target}\r\nConnection: close\r\n\r\n")
                    .as_bytes(),
            )
        })
        .map_err(failed(format!("cannot ask {target}")))?;
    let mut answer = String::new();
    conn.read_to_string(&mut answer)
        .map_err(failed(format!("no answer from {target}")))?;
    let status = answer.lines().next().unwrap_or_default();
    let body = answer.split("\r\n\r\n").nth(1).unwrap_or_default();
    if status.split(' ').nth(1) == Some("200") {
        println!("{body}");
        Ok(())
    } else {
        Err(StartError::Io {
            context: format!("unhealthy: {status} {body}"),
            source: std::io::ErrorKind::Other.into(),
        })
    }
}

fn serve(args: ServeArgs) -> Result<(), StartError> {
    init_logging(args.log_format);
    let early = crate::signals::Early::listen().map_err(|source| StartError::Io {
        context: "cannot listen for SIGINT and SIGTERM".into(),
        source,
    })?;
    let mut config = Config::load(args.config.as_deref(), std::env::vars())?;
    for name in config.unknown_variables(std::env::vars()) {
        tracing::warn!(
            variable = %name,
            "{name} names no setting and is ignored: misspelled? (docs/CONFIG.md lists every TOLLGATE_* variable)"
        );
    }
    if let Some(bind) = args.bind {
        config.bind = bind;
    }
    if args.recover {
        config.store.recover = true;
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
    if args.demo && !early.raised() {
        let started = std::time::Instant::now();
        println!("Seeding the demo tenants (30 days of usage each)...");
        let stop = || early.raised();
        let configured: Vec<String> = (tollgate.config.default_plans()?)
            .into_iter()
            .map(|p| p.id)
            .collect();
        let seeded = crate::demo::seed(
            &tollgate.registry,
            &tollgate.prices,
            &configured,
            clock.now(),
            30,
            1.0,
            &stop,
        )?;
        tollgate.store.flush()?;
        let Some(tenants) = seeded else {
            println!(
                "Demo seeding stopped by a signal; the next --demo writes the cut tenant again"
            );
            return serve_until_stopped(tollgate, listener, early);
        };
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
        let echo = tollgate.config.chat.upstream.is_none();
        crate::demo::live_traffic(addr, tenants.clone(), echo);
        println!(
            "Live traffic: a few {} a second from the demo tenants while it runs",
            if echo {
                "chats with the echo bot"
            } else {
                "authorizations"
            }
        );
        // Not the tenant shown over its quota: its calls answer 429.
        if let Some(t) = tenants.get(1).or(tenants.first()) {
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
    let where_token = match &tollgate.admin_token_path {
        Some(path) => format!("in {}", path.display()),
        None => "TOLLGATE_ADMIN_TOKEN".to_string(),
    };
    println!("Dashboard: http://{addr}/dashboard/api-usage (a tenant key goes in the page, or after #key=)");
    println!("Operator view: http://{addr}/dashboard/api-usage#key=<the admin token> (the token: {where_token})");
    println!("Operator console (plans, tenants, keys): http://{addr}/dashboard/console#key=<the admin token>");
    println!("API reference: http://{addr}/docs");
    if let Some(grpc) = tollgate.grpc_addr() {
        println!("Envoy rate-limit and ext_authz services (gRPC) on {grpc}");
    }
    if !early.raised() {
        println!("Tollgate listening on http://{addr}");
    }
    serve_until_stopped(tollgate, listener, early)
}

/// Serves until a stop signal. One that came while starting (`early`)
/// stops the server as soon as it starts, through the same drain and
/// flush as any stop.
fn serve_until_stopped(
    tollgate: Tollgate,
    listener: TcpListener,
    early: crate::signals::Early,
) -> Result<(), StartError> {
    tollgate.serve_with(listener, |server| {
        if early.hand_over() {
            tracing::info!("a stop signal came while starting: stopping before serving");
            actix_web::rt::spawn(async move { server.stop(true).await });
        }
    })
}
