//! The e-mail channel: the `[smtp]` server (lettre's SMTP client:
//! STARTTLS, implicit TLS, or plain for a local relay), and a firing's
//! mail - the event in words ([`Event::mail`]), with its JSON below.

use std::sync::Arc;
use std::time::Duration;

use futures_util::future::BoxFuture;

use lettre::message::header::ContentType;
use lettre::message::Mailbox;
use lettre::transport::smtp::authentication::Credentials;
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};

use super::deliver::{Channel, Counts};
use super::Event;
use crate::config::{SmtpConfig, SmtpSecurity};
use crate::telemetry::stats::Stats;

/// `address` as a mailbox (`ops@example.com` or `Ops <ops@example.com>`).
pub(crate) fn mailbox(address: &str) -> Result<Mailbox, String> {
    address
        .parse::<Mailbox>()
        .map_err(|e| format!("not an e-mail address ({e})"))
}

/// The configured mail server and sender.
pub(crate) struct Mailer {
    transport: AsyncSmtpTransport<Tokio1Executor>,
    from: Mailbox,
}

impl Mailer {
    /// The `[smtp]` server, its password read from `password_env`; `None`
    /// when no host is set.
    pub(crate) fn from_config(
        c: &SmtpConfig,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Option<Mailer>, String> {
        if c.host.is_empty() {
            return Ok(None);
        }
        let from = mailbox(&c.from).map_err(|e| format!("[smtp] from {:?}: {e}", c.from))?;
        let builder = match c.security {
            SmtpSecurity::Starttls => AsyncSmtpTransport::<Tokio1Executor>::starttls_relay(&c.host),
            SmtpSecurity::Tls => AsyncSmtpTransport::<Tokio1Executor>::relay(&c.host),
            SmtpSecurity::None => Ok(AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(
                &c.host,
            )),
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

    /// Sends `event` (whose JSON is `body`) to `to`, in words.
    pub(crate) async fn send(
        &self,
        to: &[String],
        event: &Event,
        body: &str,
    ) -> Result<(), String> {
        let (subject, text) = event.mail(body);
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

/// Mail to a list of addresses through the `[smtp]` server.
pub(crate) struct Email {
    mailer: Arc<Mailer>,
    to: Vec<String>,
}

impl Email {
    pub(crate) fn new(mailer: Arc<Mailer>, to: &[String]) -> Email {
        Email {
            mailer,
            to: to.to_vec(),
        }
    }
}

impl Channel for Email {
    fn what(&self) -> &'static str {
        "e-mail"
    }

    fn counts<'a>(&self, s: &'a Stats) -> Counts<'a> {
        Counts {
            delivered: &s.emails_delivered,
            retried: &s.emails_retried,
            failed: &s.emails_failed,
        }
    }

    fn send<'a>(&'a self, event: &'a Event, body: &'a str) -> BoxFuture<'a, Result<(), String>> {
        Box::pin(self.mailer.send(&self.to, event, body))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
        assert!(c(|c| c.from = "nobody".into()).contains("from"));
        assert!(c(|c| c.user = "u".into()).contains("TOLLGATE_SMTP_PASSWORD"));
        assert_eq!(c(|_| {}), "");
        assert!(mailbox("Ops <ops@example.com>").is_ok());
        assert!(mailbox("ops").is_err());
    }
}
