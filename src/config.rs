//! Settings: defaults, then the config file, then `TOLLGATE_*` variables, then
//! command-line flags. Every key of the file has a variable: the section and
//! key joined by `_`, upper-cased (`[flush] interval_ms` is
//! `TOLLGATE_FLUSH_INTERVAL_MS`).

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::model::Plan;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    pub bind: String,
    pub data_dir: PathBuf,
    /// Override of the built-in model price table (same JSON shape).
    pub prices: String,
    /// Default plans loaded into an empty store (built-in `data/plans.toml` when empty).
    pub plans: String,
    /// Cap on request bodies, in bytes.
    pub max_body_bytes: usize,
    /// HTTP worker threads (0 = one per core).
    pub workers: usize,
    pub flush: FlushConfig,
    pub limits: LimitsConfig,
    pub metrics: MetricsConfig,
    pub retention: RetentionConfig,
    pub store: StoreConfig,
    pub chat: ChatConfig,
    /// Threshold webhooks (`[[alerts]]`).
    pub alerts: Vec<AlertConfig>,
    /// Gateway mode (`[[proxy]]`): APIs Tollgate fronts.
    pub proxy: Vec<ProxyConfig>,
    pub grpc: GrpcConfig,
    pub geoip: GeoConfig,
    pub smtp: SmtpConfig,
    pub cluster: ClusterConfig,
}

/// Enforcement shared by several instances (`[cluster]`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ClusterConfig {
    /// `redis://host:port/db` (`TOLLGATE_CLUSTER_REDIS_URL`); empty: every
    /// instance counts on its own (one instance).
    pub redis_url: String,
    /// This instance's name in Redis; empty: the host name and the pid.
    pub instance_id: String,
    /// What a decision does once the lease it holds is spent while Redis
    /// cannot be reached: `deny` (refuse with 503 `cluster_unavailable`) or
    /// `local` (spend the tenant's reserve - as much again as its lease,
    /// allocated in Redis beforehand, so the fleet cannot exceed the limit -
    /// then refuse).
    pub on_redis_down: OnRedisDown,
    /// The longest one Redis call may take.
    pub redis_timeout_ms: u64,
    /// How often leases are reported and refilled.
    pub sync_ms: u64,
    /// A lease is sized to last this long at the tenant's rate.
    pub lease_ms: u64,
}

impl Default for ClusterConfig {
    fn default() -> ClusterConfig {
        ClusterConfig {
            redis_url: String::new(),
            instance_id: String::new(),
            on_redis_down: OnRedisDown::Deny,
            redis_timeout_ms: 100,
            sync_ms: 50,
            lease_ms: 250,
        }
    }
}

/// What a decision does once its lease is spent while Redis cannot be
/// reached (`[cluster] on_redis_down`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase", try_from = "String")]
pub enum OnRedisDown {
    /// Refuse with 503 `cluster_unavailable`.
    #[default]
    Deny,
    /// Spend the tenant's reserve, allocated in Redis beforehand, then refuse.
    Local,
}

impl TryFrom<String> for OnRedisDown {
    type Error = String;
    fn try_from(v: String) -> Result<OnRedisDown, String> {
        match v.trim() {
            "deny" => Ok(OnRedisDown::Deny),
            "local" => Ok(OnRedisDown::Local),
            _ => Err(format!(
                "cluster.on_redis_down must be \"deny\" or \"local\", not {v:?}"
            )),
        }
    }
}

/// An http(s) URL with a host (`chat.upstream`, `alerts.url`,
/// `proxy.upstream`), checked when the config is read: nothing past
/// [`Config::load`] meets one that does not parse.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct HttpUrl(String);

impl HttpUrl {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for HttpUrl {
    type Error = String;
    fn try_from(v: String) -> Result<HttpUrl, String> {
        let scheme = v.starts_with("http://") || v.starts_with("https://");
        // Parsed as a URL with a host (`http://::::` is not one).
        if scheme && url::Url::parse(&v).is_ok_and(|u| u.host().is_some()) {
            Ok(HttpUrl(v))
        } else {
            Err(format!("must be an http(s) URL with a host, got {v:?}"))
        }
    }
}

impl std::str::FromStr for HttpUrl {
    type Err = String;
    fn from_str(s: &str) -> Result<HttpUrl, String> {
        HttpUrl::try_from(s.to_string())
    }
}

impl From<HttpUrl> for String {
    fn from(u: HttpUrl) -> String {
        u.0
    }
}

impl std::fmt::Display for HttpUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// An optional [`HttpUrl`] written as a string, empty for none (so that
/// its `TOLLGATE_*` variable exists, and `""` keeps meaning "none").
mod optional_url {
    use super::HttpUrl;
    use serde::{Deserialize, Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(v: &Option<HttpUrl>, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(v.as_ref().map_or("", HttpUrl::as_str))
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Option<HttpUrl>, D::Error> {
        let v = String::deserialize(d)?;
        if v.trim().is_empty() {
            return Ok(None);
        }
        HttpUrl::try_from(v)
            .map(Some)
            .map_err(serde::de::Error::custom)
    }
}

/// How the connection to the mail server is secured (`[smtp] security`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase", try_from = "String")]
pub enum SmtpSecurity {
    /// STARTTLS (port 587).
    #[default]
    Starttls,
    /// Implicit TLS (port 465).
    Tls,
    /// Plain text: only for a relay on this machine.
    None,
}

impl TryFrom<String> for SmtpSecurity {
    type Error = String;
    fn try_from(v: String) -> Result<SmtpSecurity, String> {
        match v.trim() {
            "starttls" => Ok(SmtpSecurity::Starttls),
            "tls" => Ok(SmtpSecurity::Tls),
            "none" => Ok(SmtpSecurity::None),
            _ => Err(format!(
                "smtp.security must be starttls, tls or none, not {v:?}"
            )),
        }
    }
}

/// The mail server e-mail alerts go through (`[smtp]`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SmtpConfig {
    /// Empty: no e-mail.
    pub host: String,
    pub port: u16,
    /// `starttls` (the default, port 587), `tls` (implicit TLS, port 465),
    /// or `none` (plain text: only for a relay on this machine).
    pub security: SmtpSecurity,
    /// Empty: no authentication.
    pub user: String,
    /// Variable holding the password.
    pub password_env: String,
    /// The sender, e.g. `Tollgate <alerts@example.com>`.
    pub from: String,
    pub timeout_ms: u64,
}

impl Default for SmtpConfig {
    fn default() -> SmtpConfig {
        SmtpConfig {
            host: String::new(),
            port: 587,
            security: SmtpSecurity::Starttls,
            user: String::new(),
            password_env: "TOLLGATE_SMTP_PASSWORD".into(),
            from: String::new(),
            timeout_ms: 10_000,
        }
    }
}

/// Countries from client addresses (`[geoip]`).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct GeoConfig {
    /// A country database in MaxMind's format (`TOLLGATE_GEOIP_MMDB`, e.g.
    /// GeoLite2-Country.mmdb); empty: no lookups.
    pub mmdb: String,
    /// Comma-separated addresses or networks (`10.0.0.0/8, 192.0.2.7`) of
    /// the proxies in front of Tollgate: only behind them does
    /// `X-Forwarded-For` name the client.
    pub trusted_proxies: String,
}

/// The gRPC listener of Envoy's rate-limit and external-authorization
/// services.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct GrpcConfig {
    /// Address to listen on (`TOLLGATE_GRPC_BIND`, e.g. `127.0.0.1:8081`);
    /// empty: no gRPC listener.
    pub bind: String,
    /// Take a rate-limit descriptor's `tenant_id` (Envoy authenticated the
    /// caller) as the tenant, without a key. Whoever reaches the listener
    /// can then spend any tenant's quota: turn it off, or list `peers`,
    /// unless only your Envoy can reach it.
    pub tenant_id: bool,
    /// The addresses allowed to call the services (e.g. your Envoy's);
    /// empty: any. Others get PERMISSION_DENIED.
    pub peers: Vec<std::net::IpAddr>,
}

impl Default for GrpcConfig {
    fn default() -> Self {
        GrpcConfig {
            bind: String::new(),
            tenant_id: true,
            peers: Vec::new(),
        }
    }
}

/// One webhook receiver and the quota percentages it is told about.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AlertConfig {
    /// The webhook receiver; none (empty) for an e-mail-only alert.
    #[serde(default, with = "optional_url")]
    pub url: Option<HttpUrl>,
    /// Addresses told by e-mail (through `[smtp]`), beside or instead of `url`.
    #[serde(default)]
    pub email: Vec<String>,
    /// Percentages of the monthly call quota; each fires once per tenant per period.
    #[serde(default = "default_thresholds")]
    pub thresholds: Vec<u32>,
    /// Variable holding the HMAC-SHA256 secret for `Tollgate-Signature`.
    #[serde(default = "default_secret_env")]
    pub secret_env: String,
    /// First retry delay; each next one doubles (up to 5 minutes).
    #[serde(default = "default_retry_ms")]
    pub retry_initial_ms: u64,
    /// Tries per delivery before it is counted as failed (and retried at
    /// the next start).
    #[serde(default = "default_attempts")]
    pub max_attempts: u32,
    #[serde(default = "default_alert_timeout_ms")]
    pub timeout_ms: u64,
    /// Also send `usage.anomaly` events: an unusual hour of a tenant (or of
    /// every tenant together), once per episode.
    #[serde(default)]
    pub anomalies: bool,
}

fn default_thresholds() -> Vec<u32> {
    vec![80, 100]
}
fn default_secret_env() -> String {
    "TOLLGATE_WEBHOOK_SECRET".into()
}
fn default_retry_ms() -> u64 {
    1_000
}
fn default_attempts() -> u32 {
    8
}
fn default_alert_timeout_ms() -> u64 {
    10_000
}

/// One fronted API: requests under `prefix` go to `upstream`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProxyConfig {
    /// Path prefix, e.g. `/v1`; the rest of the path is appended to `upstream`.
    pub prefix: String,
    /// Base URL, e.g. `http://127.0.0.1:9000` or `https://api.openai.com/v1`.
    pub upstream: HttpUrl,
    /// Variable holding the upstream's credential, sent as `Authorization:
    /// Bearer`; empty = none. The tenant's key is never forwarded.
    #[serde(default)]
    pub upstream_auth_env: String,
    /// Until the upstream's response head arrives (then 504).
    #[serde(default = "default_proxy_timeout_ms")]
    pub timeout_ms: u64,
    /// Longest silence between two pieces of the upstream's response body;
    /// past it the response is cut off (an upstream that stalls after its
    /// head must not hold the client's connection forever).
    #[serde(default = "default_proxy_timeout_ms")]
    pub idle_timeout_ms: u64,
    /// Calls each request costs against the quota.
    #[serde(default = "default_cost")]
    pub cost: u64,
    /// The API behind the route, which picks the shape of Tollgate's own
    /// refusals, how the credential is sent and whether a stream is asked
    /// for its usage: `tollgate` (the default: any HTTP API), `openai` or
    /// `anthropic` (for those providers' SDKs).
    #[serde(default)]
    pub dialect: Dialect,
    /// The integration's name in the analytics (`integrations`); default:
    /// the prefix without its slashes (`/openai/v1` -> `openai/v1`).
    #[serde(default)]
    pub name: String,
}

/// The API a gateway route fronts (`http::gateway::provider`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Dialect {
    /// Tollgate's own (`{"error", "code", "status", ...}`).
    #[default]
    Tollgate,
    /// OpenAI's (`{"error": {"message", "type", "param", "code"}}`).
    Openai,
    /// Anthropic's (`{"type": "error", "error": {"type", "message"}}`),
    /// with the upstream's credential sent as `x-api-key`.
    Anthropic,
}

fn default_proxy_timeout_ms() -> u64 {
    60_000
}
fn default_cost() -> u64 {
    1
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FlushConfig {
    /// The bound on what a `kill -9` can lose.
    pub interval_ms: u64,
    /// Records the queue to the flusher holds. Its slots (about 250 bytes
    /// each) are allocated up front: 1,000,000 costs about 240 MiB of RSS.
    pub queue_capacity: usize,
    /// How often rollup cells are written (a crash replays the rest).
    pub checkpoint_ms: u64,
}

/// What one tenant's requests may hold of the server.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LimitsConfig {
    /// A request body must arrive whole within this (then 408).
    pub body_timeout_ms: u64,
    /// Requests of one tenant being served at once (bodies being read,
    /// gateway responses streaming); more answer 429 at once.
    pub in_flight_per_tenant: u32,
    /// A usage batch that finds the queue full waits up to this long for
    /// the flusher to make room before it is refused (503); 0 refuses at
    /// once.
    pub ingest_wait_ms: u64,
    /// Exports streaming at once across the server (each scans the store
    /// on a thread of its own); more answer 503 `exports_busy`.
    pub exports: u32,
    /// Exports one tenant may stream at once; more answer 429
    /// `too_many_exports`.
    pub exports_per_tenant: u32,
    /// Analytics reports (`GET /api/billing/api-usage`) one tenant may
    /// have computing at once; more answer 429 `too_many_reports`.
    pub reports_per_tenant: u32,
    /// End users, bots, models and keys one tenant's limits of SPEC §12
    /// may track at once (each about 200 bytes); a new one past it is
    /// refused until others are idle.
    pub max_subjects_per_tenant: usize,
}

/// `GET /metrics`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MetricsConfig {
    /// Variable holding a bearer token scrapes must send; empty = open.
    pub token_env: String,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RetentionConfig {
    pub raw_days: u32,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StoreConfig {
    /// Where the data lives: `sled` (embedded, one machine; the default)
    /// or `postgres` (one database shared by any number of instances).
    pub engine: EngineKind,
    /// `postgres://user[:password]@host:port/database`, for `engine =
    /// "postgres"` (`TOLLGATE_STORE_POSTGRES_URL`).
    pub postgres_url: String,
    /// Connections to PostgreSQL each instance keeps open.
    pub postgres_pool: u64,
    /// The longest a call to PostgreSQL may take; a usage write that
    /// takes longer waits in the local spool instead.
    pub postgres_timeout_ms: u64,
    /// The most usage (MiB) the local spool keeps while PostgreSQL is
    /// unreachable; past it, ingestion answers 503.
    pub spool_max_mb: u64,
    /// This instance's name on a shared database; empty: one made up on
    /// first start and kept in the data directory (`instance`).
    pub instance: String,
    /// sled's page cache, in MiB.
    pub cache_mb: u64,
    /// How long a flush to disk may take before it counts as a store
    /// failure (and a graceful stop stops waiting for it).
    pub flush_timeout_ms: u64,
    /// Writes stop (counted as unpersisted, reported as a failing store)
    /// while the data directory's file system has less than this free, so
    /// that sled never meets a full disk; 0 turns the check off.
    pub min_free_mb: u64,
    /// Start on an embedded store that holds less than it last knew it had
    /// (a file cut short or deleted), logging what was lost, instead of
    /// refusing to (`serve --recover`).
    pub recover: bool,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ChatConfig {
    /// OpenAI-compatible base URL; none (empty) = the built-in echo bot.
    #[serde(with = "optional_url")]
    pub upstream: Option<HttpUrl>,
    /// Name of the variable holding the upstream's API key.
    pub api_key_env: String,
    /// Model used when a chat request names none.
    pub default_model: String,
    pub timeout_ms: u64,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            bind: "127.0.0.1:8080".into(),
            data_dir: PathBuf::from("./tollgate-data"),
            prices: String::new(),
            plans: String::new(),
            max_body_bytes: 1 << 20,
            workers: 0,
            flush: FlushConfig::default(),
            limits: LimitsConfig::default(),
            metrics: MetricsConfig::default(),
            retention: RetentionConfig::default(),
            store: StoreConfig::default(),
            chat: ChatConfig::default(),
            alerts: Vec::new(),
            proxy: Vec::new(),
            grpc: GrpcConfig::default(),
            geoip: GeoConfig::default(),
            smtp: SmtpConfig::default(),
            cluster: ClusterConfig::default(),
        }
    }
}

impl Default for FlushConfig {
    fn default() -> Self {
        FlushConfig {
            interval_ms: 100,
            queue_capacity: 131_072,
            checkpoint_ms: 2_000,
        }
    }
}

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig {
            body_timeout_ms: 10_000,
            in_flight_per_tenant: 64,
            ingest_wait_ms: 1_000,
            exports: 8,
            exports_per_tenant: 2,
            reports_per_tenant: 2,
            max_subjects_per_tenant: crate::quota::scoped::DEFAULT_MAX_SUBJECTS,
        }
    }
}

impl Default for RetentionConfig {
    fn default() -> Self {
        RetentionConfig { raw_days: 90 }
    }
}

/// The storage engine.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EngineKind {
    #[default]
    Sled,
    Postgres,
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            engine: EngineKind::Sled,
            postgres_url: String::new(),
            postgres_pool: 8,
            postgres_timeout_ms: 5_000,
            spool_max_mb: 1_024,
            instance: String::new(),
            cache_mb: 64,
            flush_timeout_ms: 30_000,
            min_free_mb: 64,
            recover: false,
        }
    }
}

impl Default for ChatConfig {
    fn default() -> Self {
        ChatConfig {
            upstream: None,
            api_key_env: "OPENAI_API_KEY".into(),
            default_model: "gpt-4o-mini".into(),
            timeout_ms: 60_000,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("config: {0}")]
    Invalid(String),
}

impl Config {
    /// Defaults, overlaid with `file` (if any) and the `TOLLGATE_*` variables of `env`.
    pub fn load(
        file: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Config, ConfigError> {
        let mut value = toml::Value::try_from(Config::default())
            .map_err(|e| ConfigError::Invalid(e.to_string()))?;
        let mut file_text = None;
        if let Some(path) = file {
            let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                path: path.display().to_string(),
                source,
            })?;
            let from_file: toml::Value = toml::from_str(&text)
                .map_err(|e| ConfigError::Invalid(format!("{}: {e}", path.display())))?;
            merge(&mut value, from_file);
            file_text = Some((path, text));
        }
        let vars: std::collections::HashMap<String, String> = env
            .into_iter()
            .filter(|(k, _)| k.starts_with("TOLLGATE_"))
            .collect();
        let defaults_and_file = value.clone();
        apply_env(&mut value, "TOLLGATE", &vars)?;
        let config: Config = value.try_into().map_err(|e: toml::de::Error| {
            // A wrong type or value in the file is reported from the file
            // itself, which knows the key and the line (the merged value
            // does not); one in a variable names the variable.
            if let Some((path, text)) = file_text {
                if let Err(in_file) = toml::from_str::<Config>(&text) {
                    return ConfigError::Invalid(format!("{}: {in_file}", path.display()));
                }
            }
            let mut names: Vec<&String> = vars.keys().collect();
            names.sort();
            for name in names {
                let one = std::collections::HashMap::from([(name.clone(), vars[name].clone())]);
                let mut v = defaults_and_file.clone();
                if apply_env(&mut v, "TOLLGATE", &one).is_ok() {
                    if let Err(e) = v.try_into::<Config>() {
                        return ConfigError::Invalid(format!(
                            "{name}={:?}: {}",
                            vars[name],
                            e.message()
                        ));
                    }
                }
            }
            ConfigError::Invalid(e.message().to_string())
        })?;
        config.validate()?;
        Ok(config)
    }

    /// The `TOLLGATE_*` variables of `env` that name no setting, no
    /// secret this configuration reads, and nothing else Tollgate reads:
    /// most likely misspelled (they are ignored, so a start warns).
    pub fn unknown_variables(
        &self,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Vec<String> {
        let mut known: std::collections::HashSet<String> = [
            "TOLLGATE_ADMIN_TOKEN",
            "TOLLGATE_CONFIG",
            "TOLLGATE_LOG",
            "TOLLGATE_LOG_FORMAT",
            "TOLLGATE_URL",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        fn settings(v: &toml::Value, prefix: &str, out: &mut std::collections::HashSet<String>) {
            if let toml::Value::Table(t) = v {
                for (k, v) in t {
                    let name = format!("{prefix}_{}", k.to_uppercase());
                    settings(v, &name, out);
                    out.insert(name);
                }
            }
        }
        if let Ok(v) = toml::Value::try_from(Config::default()) {
            settings(&v, "TOLLGATE", &mut known);
        }
        // The secrets this configuration names.
        known.insert(self.chat.api_key_env.clone());
        known.insert(self.metrics.token_env.clone());
        known.insert(self.smtp.password_env.clone());
        known.extend(self.alerts.iter().map(|a| a.secret_env.clone()));
        known.extend(self.proxy.iter().map(|p| p.upstream_auth_env.clone()));
        let mut unknown: Vec<String> = env
            .into_iter()
            .map(|(k, _)| k)
            .filter(|k| k.starts_with("TOLLGATE_") && !known.contains(k))
            .collect();
        unknown.sort();
        unknown
    }

    pub(crate) fn validate(&self) -> Result<(), ConfigError> {
        let bad = |m: &str| Err(ConfigError::Invalid(m.into()));
        if self.flush.interval_ms == 0 || self.flush.interval_ms > 60_000 {
            return bad("flush.interval_ms must be 1 to 60000");
        }
        if self.flush.checkpoint_ms == 0 {
            return bad("flush.checkpoint_ms must be at least 1");
        }
        // A slot is about 160 bytes, half the queue preallocated: past 2^26
        // slots (about 5 GiB) the allocation would fail, and abort.
        if self.flush.queue_capacity == 0 || self.flush.queue_capacity > 1 << 26 {
            return bad("flush.queue_capacity must be 1 to 67108864");
        }
        if self.workers > 1024 {
            return bad("workers must be 0 (one per CPU) to 1024");
        }
        if self.max_body_bytes < 1024 {
            return bad("max_body_bytes must be at least 1024");
        }
        if self.store.flush_timeout_ms == 0 {
            return bad("store.flush_timeout_ms must be at least 1");
        }
        if self.store.engine == EngineKind::Postgres && self.store.postgres_url.is_empty() {
            return bad(
                "store.engine = \"postgres\" needs store.postgres_url \
                 (or TOLLGATE_STORE_POSTGRES_URL), e.g. postgres://tollgate@127.0.0.1:5432/tollgate",
            );
        }
        if self.store.postgres_timeout_ms == 0 || self.store.spool_max_mb == 0 {
            return bad("store.postgres_timeout_ms and store.spool_max_mb must be at least 1");
        }
        if self.store.postgres_pool == 0 || self.store.postgres_pool > 256 {
            return bad("store.postgres_pool must be 1 to 256");
        }
        if !self
            .store
            .instance
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
            || self.store.instance.len() > 64
        {
            return bad("store.instance: at most 64 letters, digits, '-', '_' or '.'");
        }
        let c = &self.cluster;
        if c.redis_timeout_ms == 0 || c.sync_ms == 0 || c.lease_ms == 0 {
            return bad("cluster.redis_timeout_ms, sync_ms and lease_ms must be at least 1");
        }
        if !c
            .instance_id
            .chars()
            .all(|ch| ch.is_ascii_alphanumeric() || "-_.:".contains(ch))
            || c.instance_id.len() > 64
        {
            return bad("cluster.instance_id: at most 64 letters, digits, '-', '_', '.' or ':'");
        }
        let scheme_ok = ["redis://", "unix://"]
            .iter()
            .any(|p| c.redis_url.starts_with(p));
        if !c.redis_url.is_empty() && !scheme_ok {
            return bad(
                "cluster.redis_url must start with redis:// (e.g. redis://127.0.0.1:6379/0)",
            );
        }
        if self.limits.body_timeout_ms == 0 || self.limits.in_flight_per_tenant == 0 {
            return bad(
                "limits.body_timeout_ms and limits.in_flight_per_tenant must be at least 1",
            );
        }
        if !(1..=1024).contains(&self.limits.exports)
            || !(1..=self.limits.exports).contains(&self.limits.exports_per_tenant)
        {
            return bad(
                "limits.exports must be 1 to 1024, and limits.exports_per_tenant 1 to limits.exports",
            );
        }
        if !(1..=100_000_000).contains(&self.limits.max_subjects_per_tenant) {
            return bad("limits.max_subjects_per_tenant must be 1 to 100000000");
        }
        if !(1..=1024).contains(&self.limits.reports_per_tenant) {
            return bad("limits.reports_per_tenant must be 1 to 1024");
        }
        if self.limits.ingest_wait_ms > 60_000 {
            return bad("limits.ingest_wait_ms must be 0 to 60000");
        }
        if self.retention.raw_days == 0 {
            return bad("retention.raw_days must be at least 1");
        }
        for a in &self.alerts {
            // An e-mail-only alert has no URL (docs/API.md).
            if a.url.is_none() && a.email.is_empty() {
                return bad("alerts: each alert needs a url, an email list, or both");
            }
            if a.thresholds.is_empty() || a.thresholds.iter().any(|&t| t == 0 || t > 1000) {
                return bad("alerts.thresholds must be percentages from 1 to 1000");
            }
            if a.max_attempts == 0 || a.retry_initial_ms == 0 || a.timeout_ms == 0 {
                return bad(
                    "alerts.max_attempts, retry_initial_ms and timeout_ms must be at least 1",
                );
            }
        }
        let mut prefixes = std::collections::HashSet::new();
        for p in &self.proxy {
            let prefix = p.prefix.trim_end_matches('/');
            if !prefix.starts_with('/')
                || prefix.len() < 2
                || prefix.contains(['{', '}', '?', '#'])
                || prefix.starts_with("/api/")
                || prefix == "/api"
                || prefix.starts_with("/dashboard")
                || prefix == "/healthz"
                || prefix == "/metrics"
            {
                return bad(&format!(
                    "proxy.prefix '{}' must be a path like /v1 outside Tollgate's own routes",
                    p.prefix
                ));
            }
            if !prefixes.insert(prefix.to_string()) {
                return bad(&format!("proxy.prefix '{}' appears twice", p.prefix));
            }
            if p.cost == 0 || p.timeout_ms == 0 || p.idle_timeout_ms == 0 {
                return bad("proxy.cost, timeout_ms and idle_timeout_ms must be at least 1");
            }
        }
        Ok(())
    }

    /// The plans an empty store starts with.
    pub(crate) fn default_plans(&self) -> Result<Vec<Plan>, ConfigError> {
        let text = if self.plans.is_empty() {
            include_str!("../data/plans.toml").to_string()
        } else {
            std::fs::read_to_string(&self.plans).map_err(|source| ConfigError::Read {
                path: self.plans.clone(),
                source,
            })?
        };
        parse_plans(&text).map_err(|e| match e {
            ConfigError::Invalid(m) if !self.plans.is_empty() => {
                ConfigError::Invalid(format!("plans file {}: {m}", self.plans))
            }
            other => other,
        })
    }
}

/// Reads a plans file: `[[plans]]` tables with snake_case keys.
pub(crate) fn parse_plans(text: &str) -> Result<Vec<Plan>, ConfigError> {
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct File {
        plans: Vec<Entry>,
    }
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Entry {
        id: String,
        name: String,
        monthly_calls: Option<u64>,
        monthly_tokens: Option<u64>,
        rate_limit: Option<RateEntry>,
        #[serde(default)]
        price_usd_monthly: f64,
        ingest_rate: Option<IngestEntry>,
        reserve_tokens: Option<u64>,
        reservation_ttl_seconds: Option<u64>,
        /// Dollars reserved by a decision that names no estimate.
        reserve_usd: Option<f64>,
        /// Limits of SPEC §12, in the API's shape with snake_case keys.
        #[serde(default)]
        limits: Vec<LimitEntry>,
    }
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct LimitEntry {
        name: String,
        scope: String,
        measure: String,
        window: String,
        amount: Option<f64>,
        per_seconds: Option<u64>,
        burst: Option<u64>,
    }
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct IngestEntry {
        records: u64,
        per_seconds: u64,
        burst: u64,
    }
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct RateEntry {
        requests: u64,
        per_seconds: u64,
        burst: u64,
    }
    let file: File = toml::from_str(text).map_err(|e| ConfigError::Invalid(e.to_string()))?;
    file.plans
        .into_iter()
        .map(|e| {
            let bad = |m: String| ConfigError::Invalid(format!("plan '{}': {m}", e.id));
            let limits = e
                .limits
                .iter()
                .map(|l| {
                    crate::model::Limit::parse(
                        &l.name,
                        &l.scope,
                        &l.measure,
                        &l.window,
                        l.amount,
                        l.per_seconds,
                        l.burst,
                    )
                })
                .collect::<Result<Vec<_>, _>>()
                .map_err(bad)?;
            let reserve_usd = match e.reserve_usd {
                None => None,
                Some(u) if u.is_finite() && u > 0.0 => Some((u * 1e6).round() as u64),
                Some(_) => return Err(bad("reserve_usd must be a number above 0".into())),
            };
            let plan = Plan {
                id: e.id,
                name: e.name,
                monthly_calls: e.monthly_calls,
                monthly_tokens: e.monthly_tokens,
                rate_limit: e.rate_limit.map(|r| crate::model::RateLimit {
                    requests: r.requests,
                    per_seconds: r.per_seconds,
                    burst: r.burst,
                }),
                price_usd_monthly: e.price_usd_monthly,
                ingest_rate: e.ingest_rate.map(|r| crate::model::IngestRate {
                    records: r.records,
                    per_seconds: r.per_seconds,
                    burst: r.burst,
                }),
                reserve_tokens: e.reserve_tokens,
                reservation_ttl_seconds: e.reservation_ttl_seconds,
                reserve_usd,
                limits,
            };
            plan.validate()
                .map_err(|err| ConfigError::Invalid(format!("plan '{}': {err}", plan.id)))?;
            Ok(plan)
        })
        .collect()
}

fn merge(base: &mut toml::Value, over: toml::Value) {
    match (base, over) {
        (toml::Value::Table(b), toml::Value::Table(o)) => {
            for (k, v) in o {
                match b.get_mut(&k) {
                    Some(slot) => merge(slot, v),
                    None => {
                        b.insert(k, v);
                    }
                }
            }
        }
        (slot, v) => *slot = v,
    }
}

/// Overrides every scalar of `value` whose variable is set, parsed as the
/// type the default has.
fn apply_env(
    value: &mut toml::Value,
    prefix: &str,
    vars: &std::collections::HashMap<String, String>,
) -> Result<(), ConfigError> {
    let toml::Value::Table(table) = value else {
        return Ok(());
    };
    for (key, slot) in table.iter_mut() {
        let name = format!("{prefix}_{}", key.to_uppercase());
        if slot.is_table() {
            apply_env(slot, &name, vars)?;
            continue;
        }
        if slot.is_array() {
            // `[[alerts]]` and `[[proxy]]` lists come from the file only.
            continue;
        }
        let Some(raw) = vars.get(&name) else { continue };
        let bad = || ConfigError::Invalid(format!("{name}={raw:?} is not a valid value"));
        *slot = match slot {
            toml::Value::Integer(_) => toml::Value::Integer(raw.trim().parse().map_err(|_| bad())?),
            toml::Value::Boolean(_) => toml::Value::Boolean(raw.trim().parse().map_err(|_| bad())?),
            toml::Value::Float(_) => toml::Value::Float(raw.trim().parse().map_err(|_| bad())?),
            _ => toml::Value::String(raw.clone()),
        };
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cluster_comes_from_its_variables_and_refuses_what_it_cannot_do() {
        let load = |vars: &[(&str, &str)]| {
            Config::load(
                None,
                vars.iter().map(|(k, v)| (k.to_string(), v.to_string())),
            )
        };
        let c = load(&[
            ("TOLLGATE_CLUSTER_REDIS_URL", "redis://127.0.0.1:6379/0"),
            ("TOLLGATE_CLUSTER_INSTANCE_ID", "edge-1"),
        ])
        .unwrap();
        assert_eq!(c.cluster.redis_url, "redis://127.0.0.1:6379/0");
        assert_eq!(c.cluster.instance_id, "edge-1");
        assert_eq!(c.cluster.on_redis_down, OnRedisDown::Deny);
        let e = load(&[("TOLLGATE_CLUSTER_REDIS_URL", "127.0.0.1:6379")]).unwrap_err();
        assert!(e.to_string().contains("redis://"), "{e}");
        let c = load(&[("TOLLGATE_CLUSTER_ON_REDIS_DOWN", "local")]).unwrap();
        assert_eq!(c.cluster.on_redis_down, OnRedisDown::Local);
        let e = load(&[("TOLLGATE_CLUSTER_ON_REDIS_DOWN", "allow")]).unwrap_err();
        assert!(e.to_string().contains("on_redis_down"), "{e}");
        let e = load(&[("TOLLGATE_CLUSTER_INSTANCE_ID", "a b")]).unwrap_err();
        assert!(e.to_string().contains("instance_id"), "{e}");
    }

    #[test]
    fn typed_settings_are_checked_as_they_are_read() {
        let dir = tempfile::tempdir().unwrap();
        let load = |text: &str| {
            let f = dir.path().join("t.toml");
            std::fs::write(&f, text).unwrap();
            Config::load(Some(&f), Vec::new())
        };
        let c =
            load("[grpc]\npeers = [\"10.0.0.7\", \"::1\"]\n[smtp]\nsecurity = \"tls\"\n").unwrap();
        assert_eq!(
            c.grpc.peers,
            [
                "10.0.0.7".parse::<std::net::IpAddr>().unwrap(),
                "::1".parse().unwrap()
            ]
        );
        assert_eq!(c.smtp.security, SmtpSecurity::Tls);
        let e = load("[grpc]\npeers = [\"envoy.local\"]\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("peers"), "{e}");
        let e = load("[smtp]\nsecurity = \"ssl\"\n")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("smtp.security must be starttls, tls or none"),
            "{e}"
        );
        let e = load("[cluster]\non_redis_down = \"allow\"\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("on_redis_down"), "{e}");
    }

    #[test]
    fn layers_file_then_env() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("t.toml");
        std::fs::write(
            &f,
            "bind = \"0.0.0.0:9\"\n[flush]\ninterval_ms = 50\n[chat]\nupstream = \"http://x\"\n",
        )
        .unwrap();
        let env = vec![
            (
                "TOLLGATE_FLUSH_QUEUE_CAPACITY".to_string(),
                "77".to_string(),
            ),
            ("TOLLGATE_BIND".to_string(), "127.0.0.1:1".to_string()),
            ("OTHER".to_string(), "x".to_string()),
        ];
        let c = Config::load(Some(&f), env).unwrap();
        assert_eq!(c.bind, "127.0.0.1:1");
        assert_eq!(c.flush.interval_ms, 50);
        assert_eq!(c.flush.queue_capacity, 77);
        assert_eq!(c.chat.upstream, Some("http://x".parse().unwrap()));
        assert_eq!(c.retention.raw_days, 90);
    }

    #[test]
    fn rejects_bad_values_clearly() {
        let env = vec![("TOLLGATE_FLUSH_INTERVAL_MS".to_string(), "soon".to_string())];
        let e = Config::load(None, env).unwrap_err().to_string();
        assert!(e.contains("TOLLGATE_FLUSH_INTERVAL_MS"), "{e}");
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("t.toml");
        std::fs::write(&f, "nonsense = 1\n").unwrap();
        let e = Config::load(Some(&f), vec![]).unwrap_err().to_string();
        assert!(e.contains("nonsense"), "{e}");
    }

    /// docs/CONFIG.md against the code: every setting (those of the
    /// `[[alerts]]` and `[[proxy]]` tables too) has its row under its
    /// section, with its default as TOML writes it and the variable that
    /// sets it - and that variable does set it.
    #[test]
    fn the_reference_lists_every_setting() {
        let doc = include_str!("../docs/CONFIG.md");
        // The rows of each section: heading -> rows.
        let mut sections: std::collections::HashMap<String, Vec<&str>> = Default::default();
        let mut at = String::from("top");
        for line in doc.lines() {
            if let Some(h) = line.strip_prefix("## ") {
                at = match (h.find("`["), h.find("]`")) {
                    (Some(a), Some(b)) => h[a + 1..b + 1].trim_matches(&['[', ']'][..]).to_string(),
                    _ => "top".into(),
                };
            } else if line.starts_with("| `") {
                sections.entry(at.clone()).or_default().push(line);
            }
        }
        let row = |section: &str, key: &str| -> String {
            sections
                .get(section)
                .and_then(|rows| rows.iter().find(|r| r.starts_with(&format!("| `{key}` |"))))
                .unwrap_or_else(|| panic!("docs/CONFIG.md has no row for {section}.{key}"))
                .to_string()
        };
        let shown = |v: &toml::Value| match v {
            toml::Value::Array(a) if a.is_empty() => "[]".to_string(),
            other => other.to_string(),
        };
        let defaults = toml::Value::try_from(Config::default()).unwrap();
        let mut checked = 0;
        for (key, value) in defaults.as_table().unwrap() {
            let tables: Vec<(String, &toml::Value, String)> = match value {
                toml::Value::Table(t) => t
                    .iter()
                    .map(|(k, v)| {
                        let var = format!("TOLLGATE_{}_{}", key.to_uppercase(), k.to_uppercase());
                        (format!("{key}|{k}"), v, var)
                    })
                    .collect(),
                v => vec![(
                    format!("top|{key}"),
                    v,
                    format!("TOLLGATE_{}", key.to_uppercase()),
                )],
            };
            for (path, v, var) in tables {
                let (section, k) = path.split_once('|').unwrap();
                let r = row(section, k);
                assert!(
                    r.contains(&format!("| `{}` |", shown(v))),
                    "{section}.{k}: default {} in {r}",
                    shown(v)
                );
                if v.is_array() {
                    assert!(
                        r.contains("| - |"),
                        "{section}.{k} is set in the file only: {r}"
                    );
                } else {
                    assert!(
                        r.contains(&format!("`{var}`")),
                        "{section}.{k}: {var} in {r}"
                    );
                    // The variable sets it: its default, given as a variable, loads.
                    let raw = match v {
                        toml::Value::String(s) => s.clone(),
                        other => other.to_string(),
                    };
                    let raw = if raw.is_empty() && k.ends_with("_url") {
                        String::new()
                    } else {
                        raw
                    };
                    Config::load(None, [(var.clone(), raw)])
                        .unwrap_or_else(|e| panic!("{var}: {e}"));
                }
                checked += 1;
            }
        }
        // The tables given any number of times: their keys and defaults.
        let alert: AlertConfig = toml::from_str("url = \"http://127.0.0.1:9/\"").unwrap();
        let proxy: ProxyConfig =
            toml::from_str("prefix = \"/v1\"\nupstream = \"http://127.0.0.1:9\"").unwrap();
        for (section, table, given) in [
            (
                "alerts",
                toml::Value::try_from(&alert).unwrap(),
                &["url"][..],
            ),
            (
                "proxy",
                toml::Value::try_from(&proxy).unwrap(),
                &["prefix", "upstream"][..],
            ),
        ] {
            for (k, v) in table.as_table().unwrap() {
                let r = row(section, k);
                if !given.contains(&k.as_str()) {
                    assert!(
                        r.contains(&format!("| `{}` |", shown(v))),
                        "{section}.{k}: default {} in {r}",
                        shown(v)
                    );
                }
                checked += 1;
            }
        }
        // And nothing documented that the code does not have.
        let rows: usize = sections.values().map(Vec::len).sum();
        assert_eq!(
            rows, checked,
            "docs/CONFIG.md lists settings the code does not have"
        );
    }

    #[test]
    fn a_misspelled_variable_is_found() {
        let env = |pairs: &[&str]| -> Vec<(String, String)> {
            pairs
                .iter()
                .map(|k| (k.to_string(), "1".to_string()))
                .collect()
        };
        let c = Config::default();
        let vars = env(&[
            "TOLLGATE_FLUSH_INTERVAL_MS",
            "TOLLGATE_FLUSH_INTERVALMS",
            "TOLLGATE_ADMIN_TOKEN",
            "TOLLGATE_LOG",
            "TOLLGATE_SMTP_PASSWORD",
            "TOLLGATE_BIND",
            "TOLLGATE_STORE",
            "PATH",
        ]);
        assert_eq!(
            c.unknown_variables(vars),
            vec!["TOLLGATE_FLUSH_INTERVALMS".to_string()],
            "only the misspelled one: sections, secrets and the CLI's own are known"
        );
    }

    #[test]
    fn a_plans_file_sets_limits_of_every_kind() {
        let text = r#"
[[plans]]
id = "ai"
name = "AI"
monthly_calls = 1000
reserve_usd = 0.02
limits = [
  { name = "budget", scope = "tenant", measure = "spendUsd", window = "billingMonth", amount = 50.0 },
  { name = "per-user", scope = "user", measure = "calls", window = "day", amount = 100 },
  { name = "key-burst", scope = "key", measure = "calls", window = "burst", amount = 10, per_seconds = 1, burst = 20 },
  { name = "model-flight", scope = "model", measure = "inFlight", window = "none", amount = 4 },
]
"#;
        let plans = parse_plans(text).unwrap();
        let p = &plans[0];
        assert_eq!(p.reserve_usd, Some(20_000));
        assert_eq!(p.limits.len(), 4);
        assert_eq!(p.limits[0].amount, Some(50_000_000), "micro-dollars");
        assert_eq!(p.limits[0].window, crate::model::Window::BillingMonth);
        assert_eq!(p.limits[1].scope, crate::model::Scope::User);
        assert_eq!((p.limits[2].per_seconds, p.limits[2].burst), (1, 20));
        assert_eq!(p.limits[3].measure, crate::model::Measure::InFlight);
        // A bad limit names its plan and what is wrong.
        let bad = text.replace("\"day\"", "\"fortnight\"");
        let err = parse_plans(&bad).unwrap_err().to_string();
        assert!(
            err.contains("plan 'ai'") && err.contains("fortnight"),
            "{err}"
        );
        let bad = text.replace("amount = 4 }", "amount = 4, colour = 1 }");
        assert!(parse_plans(&bad).is_err());
        let bad = text.replace("amount = 100 }", "amount = 0 }");
        let err = parse_plans(&bad).unwrap_err().to_string();
        assert!(err.contains("per-user"), "{err}");
    }

    #[test]
    fn default_plans_match_the_spec() {
        let plans = Config::default().default_plans().unwrap();
        let calls: Vec<_> = plans
            .iter()
            .map(|p| (p.id.as_str(), p.monthly_calls))
            .collect();
        assert_eq!(
            calls,
            vec![
                ("free", Some(10_000)),
                ("starter", Some(100_000)),
                ("professional", Some(1_000_000)),
                ("enterprise", None)
            ]
        );
        assert!(plans[3].rate_limit.is_none());
        assert!(plans[..3].iter().all(|p| p.rate_limit.is_some()));
    }

    #[test]
    fn reads_the_spec_example_with_alerts_and_proxies() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("t.toml");
        std::fs::write(
            &f,
            r#"
bind = "127.0.0.1:8080"
[flush]
interval_ms = 100
queue_capacity = 1000000
[[alerts]]
url = "http://127.0.0.1:9100/hooks/usage"
thresholds = [80, 100]
secret_env = "TOLLGATE_WEBHOOK_SECRET"
[[alerts]]
url = "https://ops.example.com/hook"
[[proxy]]
prefix = "/v1"
upstream = "http://127.0.0.1:9000"
upstream_auth_env = "UPSTREAM_API_KEY"
"#,
        )
        .unwrap();
        let env = vec![("TOLLGATE_ALERTS".to_string(), "ignored".to_string())];
        let c = Config::load(Some(&f), env).unwrap();
        assert_eq!(c.alerts.len(), 2);
        assert_eq!(c.alerts[0].thresholds, vec![80, 100]);
        assert_eq!(c.alerts[1].thresholds, vec![80, 100], "the default");
        assert_eq!(c.alerts[1].secret_env, "TOLLGATE_WEBHOOK_SECRET");
        assert_eq!(c.alerts[1].max_attempts, 8);
        assert_eq!(c.proxy.len(), 1);
        assert_eq!(c.proxy[0].prefix, "/v1");
        assert_eq!(c.proxy[0].upstream_auth_env, "UPSTREAM_API_KEY");
        assert_eq!((c.proxy[0].timeout_ms, c.proxy[0].cost), (60_000, 1));
    }

    #[test]
    fn refuses_proxies_over_its_own_routes_and_bad_alerts() {
        for (toml, needle) in [
            ("[[proxy]]\nprefix = \"/api/x\"\nupstream = \"http://a\"\n", "proxy.prefix"),
            ("[[proxy]]\nprefix = \"/metrics\"\nupstream = \"http://a\"\n", "proxy.prefix"),
            ("[[proxy]]\nprefix = \"v1\"\nupstream = \"http://a\"\n", "proxy.prefix"),
            ("[[proxy]]\nprefix = \"/v1\"\nupstream = \"ftp://a\"\n", "line 3"),
            (
                "[[proxy]]\nprefix = \"/v1\"\nupstream = \"http://a\"\n[[proxy]]\nprefix = \"/v1/\"\nupstream = \"http://b\"\n",
                "twice",
            ),
            ("[[alerts]]\nurl = \"http://a\"\nthresholds = [0]\n", "thresholds"),
            ("[[alerts]]\nurl = \"mailto:x\"\n", "url = \"mailto:x\""),
            ("[[alerts]]\nthresholds = [50]\n", "needs a url"),
            ("[chat]\nupstream = \"::::\"\n", "http(s) URL"),
            ("[chat]\nupstream = \"http://::::\"\n", "line 2"),
            ("[flush]\nqueue_capacity = 10000000000000\n", "queue_capacity"),
            ("workers = 100000000\n", "workers"),
            ("[[alerts]]\nurl = \"http://a\"\nsurprise = 1\n", "surprise"),
        ] {
            let dir = tempfile::tempdir().unwrap();
            let f = dir.path().join("t.toml");
            std::fs::write(&f, toml).unwrap();
            let e = Config::load(Some(&f), vec![]).unwrap_err().to_string();
            assert!(e.contains(needle), "{toml}: {e}");
        }
        // A type error names its key and line; a broken plans file its path.
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("t.toml");
        std::fs::write(
            &f,
            "bind = \"127.0.0.1:0\"\n[flush]\ninterval_ms = \"abc\"\n",
        )
        .unwrap();
        let e = Config::load(Some(&f), vec![]).unwrap_err().to_string();
        assert!(e.contains("line 3") && e.contains("interval_ms"), "{e}");
        let plans = dir.path().join("plans.toml");
        std::fs::write(&plans, "[[plans]]\nid = 7\n").unwrap();
        let c = Config {
            plans: plans.display().to_string(),
            ..Config::default()
        };
        let e = c.default_plans().unwrap_err().to_string();
        assert!(e.contains("plans.toml"), "{e}");
        // An e-mail-only alert (no webhook) is valid, as documented.
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("t.toml");
        std::fs::write(
            &f,
            "[[alerts]]\nemail = [\"ops@example.com\"]\nthresholds = [80]\n",
        )
        .unwrap();
        let c = Config::load(Some(&f), vec![]).unwrap();
        assert_eq!(c.alerts[0].email, ["ops@example.com"]);
    }

    /// URLs are a type, checked where they are read (issue 38, item 6): a
    /// bad one in the file names its line, in a variable the variable;
    /// empty means none where none is allowed.
    #[test]
    fn urls_are_checked_where_they_are_read() {
        let env = |k: &str, v: &str| vec![(k.to_string(), v.to_string())];
        let c = Config::load(
            None,
            env("TOLLGATE_CHAT_UPSTREAM", "https://api.example.com/v1"),
        )
        .unwrap();
        assert_eq!(
            c.chat.upstream.as_ref().map(HttpUrl::as_str),
            Some("https://api.example.com/v1")
        );
        let c = Config::load(None, env("TOLLGATE_CHAT_UPSTREAM", "")).unwrap();
        assert_eq!(c.chat.upstream, None, "empty is the echo bot");
        for bad in ["ftp://x", "api.example.com", "http://::::"] {
            let e = Config::load(None, env("TOLLGATE_CHAT_UPSTREAM", bad))
                .unwrap_err()
                .to_string();
            assert!(
                e.contains("TOLLGATE_CHAT_UPSTREAM") && e.contains("http(s) URL"),
                "{bad}: {e}"
            );
        }
        let e = Config::load(None, env("TOLLGATE_SMTP_SECURITY", "ssl"))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("TOLLGATE_SMTP_SECURITY") && e.contains("starttls"),
            "{e}"
        );
        assert!("https://a.example".parse::<HttpUrl>().is_ok());
        assert!("mailto:ops@example.com".parse::<HttpUrl>().is_err());
        // The file's alerts: a webhook-only alert keeps its URL typed.
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("t.toml");
        std::fs::write(&f, "[[alerts]]\nurl = \"http://hooks.example/x\"\n").unwrap();
        let c = Config::load(Some(&f), vec![]).unwrap();
        assert_eq!(
            c.alerts[0].url.as_ref().unwrap().as_str(),
            "http://hooks.example/x"
        );
    }
}
