//! `POST /api/chat`'s bot: an OpenAI-compatible upstream when configured,
//! else the built-in echo bot that answers deterministically and counts
//! tokens itself.

use std::time::Duration;

use serde::Deserialize;

use crate::config::HttpUrl;
use crate::metering::tokens::count_tokens;
use crate::model::{recordable_model, TokenCounts};

#[derive(Debug, Clone, PartialEq)]
pub(crate) struct ChatReply {
    pub reply: String,
    pub model: String,
    /// What the answer used, with its token kinds.
    pub counts: TokenCounts,
}

#[derive(Debug, thiserror::Error)]
pub(crate) enum ChatError {
    #[error("the chat upstream did not answer in time")]
    Timeout,
    #[error("the chat upstream failed: {0}")]
    Upstream(String),
}

pub enum ChatBackend {
    Echo,
    Upstream {
        client: reqwest::Client,
        url: String,
        api_key: Option<String>,
    },
}

impl ChatBackend {
    /// The echo bot without an upstream.
    pub fn new(
        upstream: Option<&HttpUrl>,
        api_key: Option<String>,
        timeout: Duration,
    ) -> ChatBackend {
        let Some(upstream) = upstream else {
            return ChatBackend::Echo;
        };
        let client = reqwest::Client::builder()
            .timeout(timeout)
            .build()
            .unwrap_or_else(|_| reqwest::Client::new());
        ChatBackend::Upstream {
            client,
            url: format!(
                "{}/v1/chat/completions",
                upstream.as_str().trim_end_matches('/')
            ),
            api_key,
        }
    }

    pub(crate) async fn complete(
        &self,
        message: &str,
        model: &str,
    ) -> Result<ChatReply, ChatError> {
        match self {
            ChatBackend::Echo => {
                let reply = format!("Echo: {message}");
                Ok(ChatReply {
                    counts: TokenCounts::from_upstream(
                        count_tokens(message),
                        count_tokens(&reply),
                        0,
                    ),
                    reply,
                    model: model.to_string(),
                })
            }
            ChatBackend::Upstream {
                client,
                url,
                api_key,
            } => {
                let body = serde_json::json!({
                    "model": model,
                    "messages": [{"role": "user", "content": message}],
                });
                let mut req = client.post(url).json(&body);
                if let Some(k) = api_key {
                    req = req.bearer_auth(k);
                }
                let resp = req.send().await.map_err(map_err)?;
                let status = resp.status();
                if !status.is_success() {
                    return Err(ChatError::Upstream(format!("status {status}")));
                }
                let parsed: Completion = resp.json().await.map_err(map_err)?;
                let reply = parsed
                    .choices
                    .into_iter()
                    .next()
                    .map(|c| c.message.content)
                    .ok_or_else(|| ChatError::Upstream("no choices in the answer".into()))?;
                // Read as the gateway reads a chat completion's usage,
                // cached and reasoning tokens included.
                let counts = parsed
                    .usage
                    .as_ref()
                    .and_then(crate::http::gateway::usage::usage_of)
                    .unwrap_or_default();
                Ok(ChatReply {
                    reply,
                    model: parsed
                        .model
                        .filter(|m| recordable_model(m))
                        .unwrap_or_else(|| model.to_string()),
                    counts,
                })
            }
        }
    }
}

fn map_err(e: reqwest::Error) -> ChatError {
    if e.is_timeout() {
        ChatError::Timeout
    } else {
        ChatError::Upstream(e.without_url().to_string())
    }
}

#[derive(Deserialize)]
struct Completion {
    model: Option<String>,
    choices: Vec<Choice>,
    usage: Option<serde_json::Value>,
}

#[derive(Deserialize)]
struct Choice {
    message: Message,
}

#[derive(Deserialize)]
struct Message {
    #[serde(default)]
    content: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_estimate_is_deterministic() {
        assert_eq!(count_tokens(""), 0);
        assert_eq!(count_tokens("Hello"), 2);
        assert_eq!(count_tokens("Hello, world!"), 2 + 1 + 2 + 1);
        assert_eq!(
            count_tokens("Hello, world!"),
            count_tokens("Hello,   world!")
        );
    }
}
