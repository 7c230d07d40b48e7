//! E-mail alerts: the `[smtp]` server (lettre's SMTP client: STARTTLS,
//! implicit TLS, or plain for a local relay), and the text of a firing -
//! the same event a webhook receives, in words, with its JSON below. Sent
//! by the delivery thread, with the webhooks' retries and marks
//! ([`http::webhook`](crate::http::webhook)).

use std::time::Duration;

use lettre::message::header::ContentType;
use lettre::message::Mailbox;
use lettre::transport::smtp::authentication::Credentials;
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use serde_json::Value;

use crate::config::SmtpConfig;

/// `address` as a mailbox (`ops@example.com` or `Ops <ops@example.com>`).
pub fn mailbox(address: &str) -> Result<Mailbox, String> {
    address
        .parse::<Mailbox>()
        .map_err(|e| format!("not an e-mail address ({e})"))
}

/// The configured mail server and sender.
pub struct Mailer {
    transport: AsyncSmtpTransport<Tokio1Executor>,
    from: Mailbox,
}

impl Mailer {
    /// The `[smtp]` server, its password read from `password_env`; `None`
    /// when no host is set.
    pub fn from_config(
        c: &SmtpConfig,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Option<Mailer>, String> {
        if c.host.is_empty() {
            return Ok(None);
        }
        let from = mailbox(&c.from).map_err(|e| format!("[smtp] from {:?}: {e}", c.from))?;
        let builder = match c.security.as_str() {
            "starttls" => AsyncSmtpTransport::<Tokio1Executor>::starttls_relay(&c.host),
            "tls" => AsyncSmtpTransport::<Tokio1Executor>::relay(&c.host),
            "none" => Ok(AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(
                &c.host,
            )),
            other => {
                return Err(format!(
                    "[smtp] security must be starttls, tls or none, not {other:?}"
                ))
            }
        }
        .map_err(|e| format!("[smtp] host {:?}: {e}", c.host))?;
        let mut builder = builder
            .port(c.port)
            .timeout(Some(Duration::from_millis(c.timeout_ms)));
        if !c.user.is_empty() {
            let password = env(&c.password_env)
                .filter(|p| !p.is_empty())
                .ok_or_else(|| {
                    format!("[smtp] user is set: set {} to the password", c.password_env)
                })?;
            builder = builder.credentials(Credentials::new(c.user.clone(), password));
        }
        Ok(Some(Mailer {
            transport: builder.build(),
            from,
        }))
    }

    /// Sends `body` (a firing's JSON) to `to`, as [`render`] words it.
    pub async fn send(&self, to: &[String], body: &str) -> Result<(), String> {
        let (subject, text) = render(body);
        let mut message = Message::builder()
            .from(self.from.clone())
            .subject(subject)
            .header(ContentType::TEXT_PLAIN);
        for a in to {
            message = message.to(mailbox(a)?);
        }
        let message = message.body(text).map_err(|e| e.to_string())?;
        self.transport
            .send(message)
            .await
            .map(|_| ())
            .map_err(|e| e.to_string())
    }
}

/// The subject and text of a firing, from its JSON body.
pub fn render(body: &str) -> (String, String) {
    let v: Value = serde_json::from_str(body).unwrap_or(Value::Null);
    let s = |k: &str| v[k].as_str().unwrap_or("").to_string();
    let n = |k: &str| v[k].to_string();
    let (subject, lead) = match v["event"].as_str() {
        Some("usage.threshold") => (
            format!(
                "Tollgate: {} reached {} % of its monthly calls",
                s("tenantId"),
                n("threshold")
            ),
            format!(
                "Tenant {} has used {} of its {} calls this period ({} to {}).",
                s("tenantId"),
                n("used"),
                n("limit"),
                s("periodStart"),
                s("periodEnd")
            ),
        ),
        Some("usage.anomaly") => {
            let who = v["tenantId"]
                .as_str()
                .map_or("every tenant together".to_string(), |t| {
                    format!("tenant {t}")
                });
            (
                format!(
                    "Tollgate: unusual {} ({}) for {who}",
                    s("metric"),
                    s("direction")
                ),
                format!(
                    "{}.\nThe hour starting {}; the episode began {}.",
                    s("message"),
                    s("hour"),
                    s("episodeStart")
                ),
            )
        }
        _ => ("Tollgate alert".to_string(), String::new()),
    };
    let text = format!("{lead}\n\nThe event, as the webhooks receive it:\n\n{body}\n");
    (subject, text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_threshold_and_an_anomaly_in_words() {
        let (subject, text) = render(
            r#"{"event":"usage.threshold","tenantId":"acme","threshold":80,"used":8000,"limit":10000,"periodStart":"2026-12-01T00:00:00.000Z","periodEnd":"2027-01-01T00:00:00.000Z"}"#,
        );
        assert_eq!(subject, "Tollgate: acme reached 80 % of its monthly calls");
        assert!(
            text.starts_with("Tenant acme has used 8000 of its 10000 calls"),
            "{text}"
        );
        assert!(text.contains(r#""threshold":80"#));
        let (subject, _) = render(
            r#"{"event":"usage.anomaly","tenantId":null,"metric":"requests","direction":"up","message":"m"}"#,
        );
        assert_eq!(
            subject,
            "Tollgate: unusual requests (up) for every tenant together"
        );
    }

    #[test]
    fn a_bad_smtp_setting_is_named() {
        let c = |f: fn(&mut SmtpConfig)| {
            let mut c = SmtpConfig {
                host: "127.0.0.1".into(),
                from: "alerts@example.com".into(),
                ..Default::default()
            };
            f(&mut c);
            Mailer::from_config(&c, |_| None).err().unwrap_or_default()
        };
        assert!(c(|c| c.security = "ssl".into()).contains("security"));
        assert!(c(|c| c.from = "nobody".into()).contains("from"));
        assert!(c(|c| c.user = "u".into()).contains("TOLLGATE_SMTP_PASSWORD"));
        assert_eq!(c(|_| {}), "");
        assert!(mailbox("Ops <ops@example.com>").is_ok());
        assert!(mailbox("ops").is_err());
    }
}
