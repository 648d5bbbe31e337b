//! The moderation hook: every new upload is checked before it is stored as
//! available. Built in: a hash blocklist. Optional: an HTTP webhook that answers
//! approve, reject or quarantine (a webhook that fails or times out quarantines:
//! nothing unreviewed is served when the reviewer is down).

use std::collections::HashSet;
use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use crate::config::Config;

/// What moderation decided about an upload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Store and serve it.
    Approve,
    /// Refuse the upload.
    Reject(String),
    /// Store it, but serve it only once an operator releases it.
    Quarantine(String),
}

/// Checks uploads.
pub trait Moderator: Send + Sync + 'static {
    /// Decides about the blob with this hash, sniffed type and size.
    fn check<'a>(
        &'a self,
        sha256: &'a str,
        mime: &'a str,
        size: u64,
    ) -> Pin<Box<dyn Future<Output = Verdict> + Send + 'a>>;
}

/// The built-in blocklist, optionally followed by a webhook.
pub struct BlocklistModerator {
    blocked: HashSet<String>,
    webhook: Option<(reqwest::Client, String)>,
}

/// The moderator the configuration describes.
pub fn from_config(config: &Config) -> Box<dyn Moderator> {
    let webhook = (!config.media_moderation_webhook.is_empty()).then(|| {
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(5))
            .build()
            .expect("an HTTP client without TLS builds");
        (client, config.media_moderation_webhook.clone())
    });
    Box::new(BlocklistModerator {
        blocked: config
            .media_blocklist
            .iter()
            .map(|h| h.to_ascii_lowercase())
            .collect(),
        webhook,
    })
}

impl Moderator for BlocklistModerator {
    fn check<'a>(
        &'a self,
        sha256: &'a str,
        mime: &'a str,
        size: u64,
    ) -> Pin<Box<dyn Future<Output = Verdict> + Send + 'a>> {
        Box::pin(async move {
            if self.blocked.contains(sha256) {
                return Verdict::Reject("blocked content".into());
            }
            let Some((client, url)) = &self.webhook else {
                return Verdict::Approve;
            };
            let body = serde_json::json!({"sha256": sha256, "mime": mime, "size": size});
            let answer = async {
                let resp = client
                    .post(url)
                    .json(&body)
                    .send()
                    .await?
                    .error_for_status()?;
                resp.json::<serde_json::Value>().await
            };
            match answer.await {
                Ok(v) => match v["verdict"].as_str() {
                    Some("approve") => Verdict::Approve,
                    Some("reject") => Verdict::Reject(
                        v["reason"]
                            .as_str()
                            .unwrap_or("rejected by moderation")
                            .into(),
                    ),
                    _ => Verdict::Quarantine(
                        v["reason"].as_str().unwrap_or("held for review").into(),
                    ),
                },
                Err(e) => {
                    tracing::warn!(error = %e, "moderation webhook failed; quarantining");
                    Verdict::Quarantine("moderation unavailable".into())
                }
            }
        })
    }
}
