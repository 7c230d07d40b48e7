//! The webhook channel: the event's JSON POSTed to the target's URL with
//! its `Tollgate-Signature` (HMAC-SHA256 of the body under the target's
//! secret), `Tollgate-Event` and `Tollgate-Delivery`.

use std::time::Duration;

use futures_util::future::BoxFuture;
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

use super::deliver::{Channel, Counts};
use super::Event;
use crate::telemetry::stats::Stats;

pub(crate) struct Webhook {
    client: reqwest::Client,
    url: String,
    secret: Vec<u8>,
    timeout: Duration,
}

impl Webhook {
    /// The client every webhook shares. No redirect is followed: the
    /// signed body goes to the configured URL only (a 3xx is a failed
    /// delivery, retried like any other).
    pub(crate) fn client() -> reqwest::Client {
        reqwest::Client::builder()
            .user_agent(concat!("tollgate/", env!("CARGO_PKG_VERSION")))
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap_or_default()
    }

    pub(crate) fn new(
        client: reqwest::Client,
        url: &str,
        secret: &[u8],
        timeout: Duration,
    ) -> Webhook {
        Webhook {
            client,
            url: url.to_string(),
            secret: secret.to_vec(),
            timeout,
        }
    }
}

impl Channel for Webhook {
    fn what(&self) -> &'static str {
        "webhook"
    }

    fn counts<'a>(&self, s: &'a Stats) -> Counts<'a> {
        Counts {
            delivered: &s.webhooks_delivered,
            retried: &s.webhooks_retried,
            failed: &s.webhooks_failed,
        }
    }

    fn send<'a>(&'a self, event: &'a Event, body: &'a str) -> BoxFuture<'a, Result<(), String>> {
        let signature = signature(&self.secret, body.as_bytes());
        let request = self
            .client
            .post(&self.url)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .header("Tollgate-Event", event.name())
            .header("Tollgate-Delivery", &signature[7..23])
            .header("Tollgate-Signature", signature)
            .timeout(self.timeout)
            .body(body.to_string());
        Box::pin(async move {
            match request.send().await {
                Ok(r) if r.status().is_success() => Ok(()),
                Ok(r) => Err(format!("status {}", r.status().as_u16())),
                Err(e) => Err(e.to_string()),
            }
        })
    }
}

/// `sha256=<hex HMAC-SHA256 of body>`, the `Tollgate-Signature` value.
pub(crate) fn signature(secret: &[u8], body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes keys of any length");
    mac.update(body);
    let digest = mac.finalize().into_bytes();
    let mut out = String::with_capacity(7 + 64);
    out.push_str("sha256=");
    for b in digest {
        out.push_str(&format!("{b:02x}"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signature_matches_rfc_4231_case_2() {
        // RFC 4231 test case 2: key "Jefe", data "what do ya want for nothing?".
        assert_eq!(
            signature(b"Jefe", b"what do ya want for nothing?"),
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }
}
