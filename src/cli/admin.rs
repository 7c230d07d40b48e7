//! `tollgate plans|tenants|keys ...`: a small admin CLI over a running
//! server's admin API (the same routes the console uses), for operators
//! who would otherwise script curl. Each command is one request; its JSON
//! answer is printed as is (pretty), an error as the server's message on
//! stderr with exit status 1.

use std::path::PathBuf;
use std::time::Duration;

use clap::Subcommand;
use serde_json::{json, Value};

use crate::app::StartError;

/// Where the server is and how to be its admin.
#[derive(clap::Args, Debug)]
pub struct Conn {
    /// The server's base URL.
    #[arg(
        long,
        env = "TOLLGATE_URL",
        default_value = "http://127.0.0.1:8080",
        global = true
    )]
    pub url: String,
    /// The admin token [default: TOLLGATE_ADMIN_TOKEN, else the file
    /// <data dir>/admin-token the server wrote].
    #[arg(
        long,
        env = "TOLLGATE_ADMIN_TOKEN",
        hide_env_values = true,
        global = true
    )]
    pub token: Option<String>,
    /// The server's data directory, where its admin-token file is
    /// [default: TOLLGATE_DATA_DIR, else ./tollgate-data].
    #[arg(long, env = "TOLLGATE_DATA_DIR", global = true)]
    pub data_dir: Option<PathBuf>,
}

#[derive(Subcommand, Debug)]
pub enum PlanCmd {
    /// Every plan.
    List,
    /// One plan.
    Show { id: String },
    /// Creates a plan from a JSON file (the API's Plan body; `-` reads stdin).
    Create { file: PathBuf },
    /// Changes a plan: the fields of a JSON file (`-` reads stdin) are merged.
    Update { id: String, file: PathBuf },
    /// Deletes a plan no tenant is on.
    Delete { id: String },
}

#[derive(Subcommand, Debug)]
pub enum TenantCmd {
    /// Tenants, optionally those whose id or name contains `--search`.
    List {
        #[arg(long)]
        search: Option<String>,
    },
    /// One tenant.
    Show { id: String },
    /// Creates a tenant on a plan.
    Create {
        id: String,
        #[arg(long)]
        plan: String,
        #[arg(long)]
        name: Option<String>,
    },
    /// Moves a tenant to another plan.
    Move {
        id: String,
        #[arg(long)]
        plan: String,
    },
    /// Suspends a tenant: every request is refused (403) until resumed.
    Suspend { id: String },
    /// Resumes a suspended tenant.
    Resume { id: String },
    /// Deletes a tenant and purges everything stored under its id.
    Delete {
        id: String,
        /// Required: the purge cannot be undone.
        #[arg(long)]
        yes: bool,
    },
    /// The tenant's usage this period, and its limits.
    Usage { id: String },
}

#[derive(Subcommand, Debug)]
pub enum KeyCmd {
    /// A tenant's keys (never their secrets).
    List { tenant: String },
    /// Creates a key; its secret is printed this once.
    Create {
        tenant: String,
        #[arg(long)]
        name: Option<String>,
        /// When it stops working (RFC 3339).
        #[arg(long)]
        expires_at: Option<String>,
    },
    /// A new secret for a key; the old one works `--overlap-seconds` more.
    Rotate {
        tenant: String,
        key_id: String,
        #[arg(long, default_value_t = 3600)]
        overlap_seconds: u64,
    },
    /// Revokes a key at once.
    Revoke { tenant: String, key_id: String },
}

/// One request of the admin API.
struct Call {
    method: reqwest::Method,
    path: String,
    body: Option<Value>,
}

fn call(method: reqwest::Method, path: String, body: Option<Value>) -> Call {
    Call { method, path, body }
}

/// A path segment, escaped.
fn seg(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes())
        .collect::<String>()
        .replace('+', "%20")
}

fn read_json(file: &PathBuf) -> Result<Value, StartError> {
    let text = if file.as_os_str() == "-" {
        std::io::read_to_string(std::io::stdin())
    } else {
        std::fs::read_to_string(file)
    }
    .map_err(|source| StartError::Io {
        context: format!("cannot read {}", file.display()),
        source,
    })?;
    serde_json::from_str(&text)
        .map_err(|e| StartError::Refused(format!("{}: not JSON: {e}", file.display())))
}

pub fn plans(conn: Conn, cmd: PlanCmd) -> Result<(), StartError> {
    use reqwest::Method as M;
    let c = match cmd {
        PlanCmd::List => call(M::GET, "/api/admin/plans".into(), None),
        PlanCmd::Show { id } => call(M::GET, format!("/api/admin/plans/{}", seg(&id)), None),
        PlanCmd::Create { file } => {
            call(M::POST, "/api/admin/plans".into(), Some(read_json(&file)?))
        }
        PlanCmd::Update { id, file } => call(
            M::PATCH,
            format!("/api/admin/plans/{}", seg(&id)),
            Some(read_json(&file)?),
        ),
        PlanCmd::Delete { id } => call(M::DELETE, format!("/api/admin/plans/{}", seg(&id)), None),
    };
    send(&conn, c)
}

pub fn tenants(conn: Conn, cmd: TenantCmd) -> Result<(), StartError> {
    use reqwest::Method as M;
    let one = |id: &str| format!("/api/admin/tenants/{}", seg(id));
    let c = match cmd {
        TenantCmd::List { search: Some(s) } => {
            // Those whose id or name contains it (any case).
            let mut all = fetch(&conn, call(M::GET, "/api/admin/tenants".into(), None))?;
            let s = s.to_lowercase();
            let has =
                |v: &Value, f: &str| v[f].as_str().is_some_and(|x| x.to_lowercase().contains(&s));
            if let Some(data) = all["data"].as_array_mut() {
                data.retain(|t| has(t, "id") || has(t, "name"));
            }
            print(Some(all), "");
            return Ok(());
        }
        TenantCmd::List { search: None } => call(M::GET, "/api/admin/tenants".into(), None),
        TenantCmd::Show { id } => call(M::GET, one(&id), None),
        TenantCmd::Create { id, plan, name } => {
            let mut body = json!({"id": id, "planId": plan});
            if let Some(n) = name {
                body["name"] = json!(n);
            }
            call(M::POST, "/api/admin/tenants".into(), Some(body))
        }
        TenantCmd::Move { id, plan } => call(M::PATCH, one(&id), Some(json!({"planId": plan}))),
        TenantCmd::Suspend { id } => call(M::PATCH, one(&id), Some(json!({"status": "suspended"}))),
        TenantCmd::Resume { id } => call(M::PATCH, one(&id), Some(json!({"status": "active"}))),
        TenantCmd::Delete { id, yes } => {
            if !yes {
                return Err(StartError::Refused(format!(
                    "deleting tenant '{id}' purges everything stored under its id: say --yes"
                )));
            }
            call(M::DELETE, one(&id), None)
        }
        TenantCmd::Usage { id } => call(M::GET, format!("{}/usage", one(&id)), None),
    };
    send(&conn, c)
}

pub fn keys(conn: Conn, cmd: KeyCmd) -> Result<(), StartError> {
    use reqwest::Method as M;
    let of = |t: &str| format!("/api/admin/tenants/{}/keys", seg(t));
    let c = match cmd {
        KeyCmd::List { tenant } => call(M::GET, of(&tenant), None),
        KeyCmd::Create {
            tenant,
            name,
            expires_at,
        } => {
            let mut body = json!({});
            if let Some(n) = name {
                body["name"] = json!(n);
            }
            if let Some(e) = expires_at {
                body["expiresAt"] = json!(e);
            }
            call(M::POST, of(&tenant), Some(body))
        }
        KeyCmd::Rotate {
            tenant,
            key_id,
            overlap_seconds,
        } => call(
            M::POST,
            format!("{}/{}/rotate", of(&tenant), seg(&key_id)),
            Some(json!({"overlapSeconds": overlap_seconds})),
        ),
        KeyCmd::Revoke { tenant, key_id } => {
            call(M::DELETE, format!("{}/{}", of(&tenant), seg(&key_id)), None)
        }
    };
    send(&conn, c)
}

/// Sends one POST without a body to `path` and prints the answer.
pub(super) fn post(conn: &Conn, path: &str) -> Result<(), StartError> {
    send(conn, call(reqwest::Method::POST, path.into(), None))
}

/// The admin token: given, or read from the data directory's file.
fn token(conn: &Conn) -> Result<String, StartError> {
    if let Some(t) = conn.token.as_deref().filter(|t| !t.is_empty()) {
        return Ok(t.to_string());
    }
    let dir = conn
        .data_dir
        .clone()
        .unwrap_or_else(|| PathBuf::from("./tollgate-data"));
    let path = dir.join("admin-token");
    std::fs::read_to_string(&path)
        .map(|t| t.trim().to_string())
        .map_err(|_| {
            StartError::Refused(format!(
                "no admin token: pass --token, set TOLLGATE_ADMIN_TOKEN, or say --data-dir where \
                 the server wrote admin-token (not found at {})",
                path.display()
            ))
        })
}

fn send(conn: &Conn, c: Call) -> Result<(), StartError> {
    let answer = fetch(conn, c)?;
    print(Some(answer), "");
    Ok(())
}

fn print(value: Option<Value>, text: &str) {
    match value {
        Some(Value::Null) | None if text.is_empty() => {}
        Some(Value::Null) | None => println!("{text}"),
        Some(v) => println!("{}", serde_json::to_string_pretty(&v).unwrap_or_default()),
    }
}

/// Sends `c`: the JSON answer (`null` for none), or the server's error.
fn fetch(conn: &Conn, c: Call) -> Result<Value, StartError> {
    let token = token(conn)?;
    let url = format!("{}{}", conn.url.trim_end_matches('/'), c.path);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|source| StartError::Io {
            context: "cannot start the client".into(),
            source,
        })?;
    let (status, text) = runtime.block_on(async {
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .build()
            .map_err(|e| StartError::Refused(format!("cannot make a client: {e}")))?;
        let mut req = client.request(c.method, &url).bearer_auth(&token);
        if let Some(body) = &c.body {
            req = req.json(body);
        }
        let r = req.send().await.map_err(|e| {
            StartError::Refused(format!("cannot reach Tollgate at {}: {e}", conn.url))
        })?;
        let status = r.status();
        let text = r.text().await.unwrap_or_default();
        Ok::<_, StartError>((status, text))
    })?;
    let value: Option<Value> = serde_json::from_str(&text).ok();
    if !status.is_success() {
        let said = value
            .as_ref()
            .and_then(|v| v["error"].as_str().map(str::to_string))
            .unwrap_or(text);
        return Err(StartError::Refused(format!(
            "{} {}: {said}",
            status.as_u16(),
            url
        )));
    }
    match value {
        Some(v) => Ok(v),
        None if text.trim().is_empty() => Ok(Value::Null),
        None => Ok(Value::String(text)),
    }
}
