//! The FCM sender: HTTP v1 (`<endpoint>/v1/projects/<project>/messages:send`) with
//! an OAuth2 access token obtained from the service account's `token_uri` by a JWT
//! (RS256 with the account's private key, scope `firebase.messaging`), cached until
//! a minute before it expires.
//!
//! A message is a notification with `android.collapse_key` and
//! `android.notification.tag` set to the conversation (a later one replaces it);
//! a withdrawal is a data-only message (`type = withdraw`) the app acts on. Every
//! `data` value is a string, as FCM requires.

use std::time::{Duration, Instant};

use courier_storage::PushToken;
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::{Notification, NotificationKind, Outcome};
use crate::config::PushConfig;

const SCOPE: &str = "https://www.googleapis.com/auth/firebase.messaging";

/// Errors reading the FCM configuration.
#[derive(Debug, thiserror::Error)]
pub enum FcmConfigError {
    /// The service account file could not be read.
    #[error("push.fcm_service_account_path: {0}")]
    Read(#[from] std::io::Error),
    /// The file is not a service account.
    #[error("push.fcm_service_account_path is not a service account JSON file: {0}")]
    Parse(#[from] serde_json::Error),
    /// Its private key is not an RSA key in PEM.
    #[error("the service account's private_key is not an RSA key in PEM: {0}")]
    Key(#[from] jsonwebtoken::errors::Error),
}

#[derive(Deserialize)]
struct ServiceAccount {
    project_id: String,
    client_email: String,
    private_key: String,
    token_uri: String,
}

#[derive(Serialize)]
struct Assertion<'a> {
    iss: &'a str,
    scope: &'a str,
    aud: &'a str,
    iat: u64,
    exp: u64,
}

/// Sends to FCM.
pub struct Fcm {
    client: reqwest::Client,
    key: jsonwebtoken::EncodingKey,
    project_id: String,
    client_email: String,
    token_uri: String,
    endpoint: String,
    token: tokio::sync::Mutex<Option<(String, Instant)>>,
}

impl Fcm {
    /// The sender `config` describes; `None` when FCM is not configured.
    pub fn from_config(
        config: &PushConfig,
        client: reqwest::Client,
    ) -> Result<Option<Self>, FcmConfigError> {
        if !config.fcm_enabled() {
            return Ok(None);
        }
        let account: ServiceAccount =
            serde_json::from_slice(&std::fs::read(&config.fcm_service_account_path)?)?;
        Ok(Some(Self {
            client,
            key: jsonwebtoken::EncodingKey::from_rsa_pem(account.private_key.as_bytes())?,
            project_id: account.project_id,
            client_email: account.client_email,
            token_uri: account.token_uri,
            endpoint: config.fcm_endpoint.trim_end_matches('/').to_owned(),
            token: tokio::sync::Mutex::new(None),
        }))
    }

    /// Whether devices may register `project` (the service account's project).
    pub fn accepts_project(&self, project: &str) -> bool {
        self.project_id == project
    }

    async fn access_token(&self, renew: bool) -> Result<String, Outcome> {
        let mut cached = self.token.lock().await;
        if let Some((token, until)) = cached.as_ref() {
            if !renew && Instant::now() < *until {
                return Ok(token.clone());
            }
        }
        let now = courier_storage::now_ms() / 1000;
        let assertion = jsonwebtoken::encode(
            &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::RS256),
            &Assertion {
                iss: &self.client_email,
                scope: SCOPE,
                aud: &self.token_uri,
                iat: now,
                exp: now + 3600,
            },
            &self.key,
        )
        .map_err(|e| Outcome::Failed(format!("cannot sign the OAuth2 assertion: {e}")))?;
        let response = self
            .client
            .post(&self.token_uri)
            .form(&[
                ("grant_type", "urn:ietf:params:oauth:grant-type:jwt-bearer"),
                ("assertion", assertion.as_str()),
            ])
            .send()
            .await
            .map_err(|e| Outcome::Retry(format!("OAuth2 token endpoint unreachable: {e}"), None))?;
        let status = response.status();
        let body: serde_json::Value = response
            .json()
            .await
            .map_err(|e| Outcome::Retry(format!("OAuth2 token endpoint: {e}"), None))?;
        let (Some(token), true) = (body["access_token"].as_str(), status.is_success()) else {
            let why = format!("OAuth2 token endpoint answered {status}: {body}");
            // A 4xx (`invalid_grant`: a revoked key, a wrong clock) will not pass by
            // itself; a 5xx may.
            return Err(match status.is_client_error() {
                true => Outcome::Failed(why),
                false => Outcome::Retry(why, None),
            });
        };
        let lifetime = body["expires_in"]
            .as_u64()
            .unwrap_or(3600)
            .saturating_sub(60);
        *cached = Some((
            token.to_owned(),
            Instant::now() + Duration::from_secs(lifetime),
        ));
        Ok(token.to_owned())
    }

    /// Sends `n` to `device`.
    pub async fn send(&self, device: &PushToken, n: &Notification) -> Outcome {
        let badge = n.badge.to_string();
        let message = match &n.kind {
            NotificationKind::Message { title, body } => json!({
                "token": device.token,
                "notification": {"title": title, "body": body},
                "data": {
                    "type": "message",
                    "conversation": n.conversation,
                    "seq": n.seq.to_string(),
                    "count": n.count.to_string(),
                    "badge": badge,
                },
                "android": {
                    "collapse_key": n.conversation,
                    "priority": "HIGH",
                    "notification": {"tag": n.conversation, "notification_count": n.badge},
                },
                "apns": {
                    "headers": {"apns-collapse-id": n.conversation},
                    "payload": {"aps": {"badge": n.badge, "thread-id": n.conversation}},
                },
            }),
            NotificationKind::Withdraw => json!({
                "token": device.token,
                "data": {
                    "type": "withdraw",
                    "conversation": n.conversation,
                    "read_seq": n.seq.to_string(),
                    "badge": badge,
                },
                "android": {"collapse_key": n.conversation, "priority": "NORMAL"},
                // An iOS app behind FCM gets it as a background push.
                "apns": {
                    "headers": {"apns-push-type": "background", "apns-priority": "5"},
                    "payload": {"aps": {"content-available": 1}},
                },
            }),
        };
        let url = format!(
            "{}/v1/projects/{}/messages:send",
            self.endpoint, self.project_id
        );
        let mut renew = false;
        loop {
            let token = match self.access_token(renew).await {
                Ok(t) => t,
                Err(outcome) => return outcome,
            };
            let sent = self
                .client
                .post(&url)
                .bearer_auth(&token)
                .json(&json!({ "message": message }))
                .send()
                .await;
            let response = match sent {
                Ok(r) => r,
                Err(e) => return Outcome::Retry(format!("FCM unreachable: {e}"), None),
            };
            let status = response.status().as_u16();
            if status == 200 {
                return Outcome::Sent;
            }
            let retry_after = super::retry_after(response.headers());
            let error = response
                .json::<serde_json::Value>()
                .await
                .unwrap_or_default();
            let code = error["error"]["details"]
                .as_array()
                .into_iter()
                .flatten()
                .find_map(|d| d["errorCode"].as_str())
                .or(error["error"]["status"].as_str())
                .unwrap_or_default()
                .to_owned();
            return match (status, code.as_str()) {
                (_, "UNREGISTERED") | (404, "NOT_FOUND") | (403, "SENDER_ID_MISMATCH") => {
                    Outcome::Unregistered(code)
                }
                (401, _) if !renew => {
                    renew = true;
                    continue;
                }
                (429, _) | (500, _) | (503, _) => {
                    Outcome::Retry(format!("FCM answered {status} {code}"), retry_after)
                }
                _ => Outcome::Failed(format!("FCM answered {status} {code}")),
            };
        }
    }
}
