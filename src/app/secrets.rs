//! [`Secrets`]: every secret the config names by an environment variable
//! (`secret_env`, `password_env`, `upstream_auth_env`, `token_env`,
//! `api_key_env`), read at start from one place, each one that is needed
//! and missing refused with the setting that names it.

use std::sync::Arc;

use crate::alerts::email::Mailer;
use crate::alerts::{Target, Via};
use crate::auth::AdminToken;
use crate::config::Config;
use crate::http::gateway::ProxyTarget;

/// What the environment holds for the config.
pub(crate) struct Secrets {
    /// Every `[[alerts]]` entry's targets, with their webhook secrets.
    pub(crate) alert_targets: Vec<Target>,
    /// The `[smtp]` server, with its password.
    pub(crate) mailer: Option<Mailer>,
    /// The gateway's routes, with their upstream credentials.
    pub(crate) proxies: Vec<Arc<ProxyTarget>>,
    /// The token `/metrics` asks for (`[metrics] token_env`).
    pub(crate) metrics_token: Option<AdminToken>,
    /// The chat upstream's key (`[chat] api_key_env`; the echo bot needs none).
    pub(crate) chat_key: Option<String>,
}

impl Secrets {
    /// Reads them through `env` (the process's environment at start).
    pub(crate) fn read(
        config: &Config,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Secrets, String> {
        let alert_targets = config
            .alerts
            .iter()
            .map(|a| Target::from_config(a, &env))
            .collect::<Result<Vec<_>, _>>()?
            .into_iter()
            .flatten()
            .collect::<Vec<_>>();
        let mailer = Mailer::from_config(&config.smtp, &env)?;
        if mailer.is_none()
            && alert_targets
                .iter()
                .any(|t| matches!(t.via, Via::Email { .. }))
        {
            return Err("[[alerts]] email needs an [smtp] host to send through".into());
        }
        let proxies = config
            .proxy
            .iter()
            .map(|p| ProxyTarget::new(p, &env).map(Arc::new))
            .collect::<Result<Vec<_>, _>>()?;
        let metrics_token = match config.metrics.token_env.as_str() {
            "" => None,
            name => Some(AdminToken::new(
                &env(name).filter(|t| !t.is_empty()).ok_or_else(|| {
                    format!(
                        "[metrics] token_env: set {name} to the token scrapes must send \
                         (or leave token_env out)"
                    )
                })?,
            )),
        };
        let chat_key = env(&config.chat.api_key_env).filter(|k| !k.is_empty());
        Ok(Secrets {
            alert_targets,
            mailer,
            proxies,
            metrics_token,
            chat_key,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{AlertConfig, ProxyConfig};

    #[test]
    fn each_missing_secret_is_named_by_its_setting() {
        let mut c = Config {
            alerts: vec![AlertConfig {
                url: Some("http://127.0.0.1:9/hook".parse().unwrap()),
                email: Vec::new(),
                secret_env: "TG_HOOK_SECRET".into(),
                ..serde_json::from_value(serde_json::json!({})).unwrap()
            }],
            proxy: vec![ProxyConfig {
                prefix: "/v1".into(),
                upstream: "http://127.0.0.1:9".parse().unwrap(),
                upstream_auth_env: "TG_UPSTREAM_KEY".into(),
                timeout_ms: 1_000,
                idle_timeout_ms: 1_000,
                cost: 1,
                dialect: Default::default(),
                name: String::new(),
            }],
            ..Config::default()
        };
        c.metrics.token_env = "TG_SCRAPE_TOKEN".into();
        c.chat.api_key_env = "TG_CHAT_KEY".into();
        let all = |name: &str| Some(format!("value of {name}"));
        let without = |missing: &'static str| {
            move |name: &str| (name != missing).then(|| format!("value of {name}"))
        };
        let s = Secrets::read(&c, all).unwrap();
        assert_eq!(s.alert_targets.len(), 1);
        assert_eq!(s.proxies.len(), 1);
        assert!(s.metrics_token.is_some());
        assert_eq!(s.chat_key.as_deref(), Some("value of TG_CHAT_KEY"));
        for missing in ["TG_HOOK_SECRET", "TG_UPSTREAM_KEY", "TG_SCRAPE_TOKEN"] {
            let e = Secrets::read(&c, without(missing)).err().unwrap();
            assert!(e.contains(missing), "{missing}: {e}");
        }
        // The chat key is optional: the echo bot needs none.
        assert!(Secrets::read(&c, without("TG_CHAT_KEY"))
            .unwrap()
            .chat_key
            .is_none());
        c.alerts[0].email = vec!["ops@example.com".into()];
        let e = Secrets::read(&c, all).err().unwrap();
        assert!(e.contains("[smtp]"), "{e}");
    }
}
