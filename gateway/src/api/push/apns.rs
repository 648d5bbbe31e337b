//! The APNs sender: HTTP/2 to `<endpoint>/3/device/<token>`, authenticated with a
//! provider token (a JWT signed ES256 with the team's `.p8` key, `kid` = key id,
//! `iss` = team id), renewed every 50 minutes (APNs refuses one older than an hour
//! and one renewed more often than every 20 minutes).
//!
//! A message is an `alert` push (priority 10) whose `apns-collapse-id` is the
//! conversation, so a later push of the same conversation replaces the earlier one
//! on the device; a withdrawal is a `background` push (priority 5, only
//! `content-available` in `aps`) that tells the app to remove the conversation's
//! notification and carries the new badge in `courier`.

use std::time::{Duration, Instant};

use courier_storage::PushToken;
use serde::Serialize;
use serde_json::json;

use super::{Notification, NotificationKind, Outcome};
use crate::config::PushConfig;

/// APNs refuses a provider token older than an hour.
const TOKEN_LIFETIME: Duration = Duration::from_secs(50 * 60);
/// The largest payload APNs takes.
const MAX_PAYLOAD: usize = 4096;

/// Errors reading the APNs configuration.
#[derive(Debug, thiserror::Error)]
pub enum ApnsConfigError {
    /// The key file could not be read.
    #[error("push.apns_key_path: {0}")]
    Read(#[from] std::io::Error),
    /// The key is not an EC (P-256) private key in PEM.
    #[error("push.apns_key_path is not a P-256 private key in PEM: {0}")]
    Key(#[from] jsonwebtoken::errors::Error),
}

/// Sends to APNs.
pub struct Apns {
    client: reqwest::Client,
    key: jsonwebtoken::EncodingKey,
    key_id: String,
    team_id: String,
    endpoint: String,
    sandbox_endpoint: String,
    topics: Vec<String>,
    token: std::sync::Mutex<Option<(String, Instant)>>,
}

#[derive(Serialize)]
struct Claims<'a> {
    iss: &'a str,
    iat: u64,
}

impl Apns {
    /// The sender `config` describes; `None` when APNs is not configured.
    pub fn from_config(
        config: &PushConfig,
        client: reqwest::Client,
    ) -> Result<Option<Self>, ApnsConfigError> {
        if !config.apns_enabled() {
            return Ok(None);
        }
        let pem = std::fs::read(&config.apns_key_path)?;
        Ok(Some(Self {
            client,
            key: jsonwebtoken::EncodingKey::from_ec_pem(&pem)?,
            key_id: config.apns_key_id.clone(),
            team_id: config.apns_team_id.clone(),
            endpoint: config.apns_endpoint.trim_end_matches('/').to_owned(),
            sandbox_endpoint: config
                .apns_sandbox_endpoint
                .trim_end_matches('/')
                .to_owned(),
            topics: super::list(&config.apns_topics),
            token: std::sync::Mutex::new(None),
        }))
    }

    /// Whether devices may register `topic` (a bundle id).
    pub fn accepts_topic(&self, topic: &str) -> bool {
        self.topics.is_empty() || self.topics.iter().any(|t| t == topic)
    }

    /// The provider token to send with: the cached one while it is young enough,
    /// unless it is `expired` (the one APNs just called expired; several requests
    /// that failed with the same token renew it once).
    fn provider_token(&self, expired: Option<&str>) -> Result<String, String> {
        let mut cached = self.token.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((token, at)) = cached.as_ref() {
            if expired != Some(token.as_str()) && at.elapsed() < TOKEN_LIFETIME {
                return Ok(token.clone());
            }
        }
        let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::ES256);
        header.kid = Some(self.key_id.clone());
        let claims = Claims {
            iss: &self.team_id,
            iat: courier_storage::now_ms() / 1000,
        };
        let token = jsonwebtoken::encode(&header, &claims, &self.key)
            .map_err(|e| format!("cannot sign the APNs provider token: {e}"))?;
        *cached = Some((token.clone(), Instant::now()));
        Ok(token)
    }

    /// Sends `n` to `device`.
    pub async fn send(&self, device: &PushToken, n: &Notification) -> Outcome {
        let (push_type, priority, payload) = match &n.kind {
            NotificationKind::Message { title, body } => (
                "alert",
                "10",
                json!({
                    "aps": {
                        "alert": {"title": title, "body": body},
                        "badge": n.badge,
                        "sound": "default",
                        "thread-id": n.conversation,
                        "mutable-content": 1,
                    },
                    "courier": {
                        "conversation": n.conversation,
                        "seq": n.seq,
                        "count": n.count,
                    },
                }),
            ),
            NotificationKind::Withdraw => (
                "background",
                "5",
                json!({
                    "aps": {"content-available": 1},
                    "courier": {
                        "withdraw": n.conversation,
                        "read_seq": n.seq,
                        "badge": n.badge,
                    },
                }),
            ),
        };
        let body = serde_json::to_vec(&payload).expect("JSON values serialize");
        if body.len() > MAX_PAYLOAD {
            return Outcome::Failed(format!("payload of {} bytes", body.len()));
        }
        let base = match device.sandbox {
            true => &self.sandbox_endpoint,
            false => &self.endpoint,
        };
        let url = format!("{base}/3/device/{}", device.token);
        let mut expired: Option<String> = None;
        loop {
            let token = match self.provider_token(expired.as_deref()) {
                Ok(t) => t,
                Err(e) => return Outcome::Failed(e),
            };
            let sent = self
                .client
                .post(&url)
                .header("authorization", format!("bearer {token}"))
                .header("apns-topic", &device.app_id)
                .header("apns-push-type", push_type)
                .header("apns-priority", priority)
                .header("apns-collapse-id", &n.conversation)
                .header("apns-id", &n.id)
                .header(
                    "apns-expiration",
                    (courier_storage::now_ms() / 1000 + 86_400).to_string(),
                )
                .header("content-type", "application/json")
                .body(body.clone())
                .send()
                .await;
            let response = match sent {
                Ok(r) => r,
                Err(e) => return Outcome::Retry(format!("APNs unreachable: {e}"), None),
            };
            let status = response.status().as_u16();
            if status == 200 {
                return Outcome::Sent;
            }
            let retry_after = super::retry_after(response.headers());
            let reason = response
                .json::<serde_json::Value>()
                .await
                .ok()
                .and_then(|v| v["reason"].as_str().map(str::to_owned))
                .unwrap_or_default();
            return match (status, reason.as_str()) {
                (410, _) | (400, "BadDeviceToken") | (400, "DeviceTokenNotForTopic") => {
                    Outcome::Unregistered(reason)
                }
                (403, "ExpiredProviderToken") if expired.is_none() => {
                    expired = Some(token);
                    continue;
                }
                (429, _) | (500, _) | (503, _) => {
                    Outcome::Retry(format!("APNs answered {status} {reason}"), retry_after)
                }
                _ => Outcome::Failed(format!("APNs answered {status} {reason}")),
            };
        }
    }
}
