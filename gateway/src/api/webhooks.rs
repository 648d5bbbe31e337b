//! Webhooks to the application's backend. This module has the synchronous one: the
//! before-send hook, asked about every message before it is stored, which may allow
//! it, reject it (the sender gets `MESSAGE_REJECTED` with the reason) or rewrite its
//! text. When the hook cannot be reached or answers badly within its timeout, the
//! configured policy decides: `allow` (fail-open) or `reject` (fail-closed).
//!
//! Every request is signed: `Courier-Signature: t=<unix ms>,v1=<hex>` where `<hex>`
//! is HMAC-SHA-256 under `webhook_secret` of `<t>.<body>`. The receiver recomputes
//! it, compares in constant time, and refuses old timestamps (replays).

use std::time::Duration;

use courier_protocol::{pb, ErrorCode};
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::Sha256;

use crate::config::{Config, HookFailure};
use crate::error::ApiError;

/// The signature header's name.
pub const SIGNATURE_HEADER: &str = "Courier-Signature";
/// Longest reason or rewritten text the hook may answer with, in bytes.
const MAX_ANSWER_BYTES: usize = 64 * 1024;

/// What the before-send hook is told.
#[derive(Debug, Serialize)]
struct BeforeSend<'a> {
    event: &'static str,
    conversation: &'a str,
    sender: u64,
    sender_device: &'a str,
    client_msg_id: &'a str,
    /// The body in the HTTP API's JSON form (`{"type": "text", "text": ...}`).
    body: Value,
    time_ms: u64,
}

/// What the hook answers.
#[derive(Debug, Deserialize)]
#[serde(tag = "action", rename_all = "snake_case")]
enum Answer {
    Allow,
    Reject {
        #[serde(default)]
        reason: String,
    },
    Rewrite {
        text: String,
    },
}

/// The hook's verdict on one message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Store it as sent.
    Allow,
    /// Store this text instead (a text message only).
    Rewrite(String),
}

/// The before-send hook, when configured.
pub struct BeforeSendHook {
    client: reqwest::Client,
    url: String,
    secret: Vec<u8>,
    on_failure: HookFailure,
}

/// Signs `body` at `t_ms`: the `Courier-Signature` header's value.
pub fn sign(secret: &[u8], t_ms: u64, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes any key length");
    mac.update(t_ms.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    format!("t={t_ms},v1={}", hex::encode(mac.finalize().into_bytes()))
}

/// POSTs a JSON `body` to `url`, signed under `secret`; a 2xx answer, or why not.
pub async fn post_signed(
    client: &reqwest::Client,
    url: &str,
    secret: &[u8],
    body: Vec<u8>,
) -> Result<reqwest::Response, String> {
    let signature = sign(secret, courier_storage::now_ms(), &body);
    let response = client
        .post(url)
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .header(SIGNATURE_HEADER, signature)
        .body(body)
        .send()
        .await
        .map_err(|e| match e.is_timeout() {
            true => "timed out".to_owned(),
            false => format!("unreachable: {e}"),
        })?;
    match response.status().is_success() {
        true => Ok(response),
        false => Err(format!("answered {}", response.status())),
    }
}

impl BeforeSendHook {
    /// The hook `config` describes; `None` when no URL is set.
    pub fn from_config(config: &Config) -> Option<Self> {
        if config.webhook_before_send_url.is_empty() {
            return None;
        }
        let client = reqwest::Client::builder()
            .timeout(Duration::from_millis(config.webhook_before_send_timeout_ms))
            .pool_max_idle_per_host(64)
            .build()
            .expect("a client with a timeout builds");
        Some(Self {
            client,
            url: config.webhook_before_send_url.clone(),
            secret: config.webhook_secret.as_bytes().to_vec(),
            on_failure: config.webhook_before_send_on_failure,
        })
    }

    /// Asks the hook about a message of `sender` (from `device`) in `conversation`.
    pub async fn check(
        &self,
        conversation: &str,
        sender: u64,
        device: &str,
        client_msg_id: &str,
        body: &pb::MessageBody,
    ) -> Result<Verdict, ApiError> {
        let request = BeforeSend {
            event: "before_send",
            conversation,
            sender,
            sender_device: device,
            client_msg_id,
            body: crate::api::convert::body_json(body),
            time_ms: courier_storage::now_ms(),
        };
        let payload = serde_json::to_vec(&request).map_err(ApiError::internal)?;
        match self.ask(payload).await {
            Ok(Answer::Allow) => Ok(Verdict::Allow),
            Ok(Answer::Reject { reason }) => Err(rejected(&reason)),
            Ok(Answer::Rewrite { text }) => match body.content {
                Some(pb::message_body::Content::Text(_)) => Ok(Verdict::Rewrite(text)),
                _ => self.failed("a rewrite of a message that is not text"),
            },
            Err(why) => self.failed(&why),
        }
    }

    async fn ask(&self, payload: Vec<u8>) -> Result<Answer, String> {
        let response = post_signed(&self.client, &self.url, &self.secret, payload).await?;
        let bytes = response.bytes().await.map_err(|e| e.to_string())?;
        if bytes.len() > MAX_ANSWER_BYTES {
            return Err("answered too much".into());
        }
        serde_json::from_slice(&bytes).map_err(|e| format!("answered no verdict: {e}"))
    }

    fn failed(&self, why: &str) -> Result<Verdict, ApiError> {
        tracing::warn!(url = %self.url, %why, "before-send hook failed");
        match self.on_failure {
            HookFailure::Allow => Ok(Verdict::Allow),
            HookFailure::Reject => Err(ApiError::new(
                ErrorCode::MessageRejected,
                "the application could not check this message; try again later",
            )),
        }
    }
}

fn rejected(reason: &str) -> ApiError {
    let reason: String = reason.chars().take(256).collect();
    ApiError::new(
        ErrorCode::MessageRejected,
        match reason.is_empty() {
            true => "the application refused this message".to_owned(),
            false => reason,
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_signature_covers_the_time_and_the_body() {
        let a = sign(b"secret", 1_700_000_000_000, b"{}");
        assert!(a.starts_with("t=1700000000000,v1="));
        assert_eq!(a.len(), "t=1700000000000,v1=".len() + 64);
        assert_ne!(a, sign(b"secret", 1_700_000_000_001, b"{}"));
        assert_ne!(a, sign(b"secret", 1_700_000_000_000, b"{ }"));
        assert_ne!(a, sign(b"other", 1_700_000_000_000, b"{}"));
    }

    #[test]
    fn answers_parse_by_action() {
        let allow: Answer = serde_json::from_str(r#"{"action":"allow"}"#).unwrap();
        assert!(matches!(allow, Answer::Allow));
        let reject: Answer =
            serde_json::from_str(r#"{"action":"reject","reason":"spam"}"#).unwrap();
        assert!(matches!(reject, Answer::Reject { reason } if reason == "spam"));
        let rewrite: Answer = serde_json::from_str(r#"{"action":"rewrite","text":"x"}"#).unwrap();
        assert!(matches!(rewrite, Answer::Rewrite { text } if text == "x"));
        assert!(serde_json::from_str::<Answer>(r#"{"action":"explode"}"#).is_err());
    }
}
