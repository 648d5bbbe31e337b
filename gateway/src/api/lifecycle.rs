//! Data lifecycle jobs, run every `lifecycle_interval_secs`: history retention (by
//! count and by age), media garbage collection, moving old blobs to the cold tier,
//! and deleting expired login tokens.

use crate::api::Api;
use crate::error::ApiError;

/// What one lifecycle run did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct LifecycleReport {
    /// Messages removed by retention.
    pub messages_pruned: usize,
    /// Unreferenced blobs deleted.
    pub blobs_deleted: usize,
    /// Blobs moved to the cold tier.
    pub blobs_moved_cold: usize,
    /// Expired tokens deleted.
    pub tokens_swept: usize,
}

impl Api {
    /// Runs every lifecycle job once, as of `now_ms`, logging failures.
    pub async fn run_lifecycle(&self, now_ms: u64) -> LifecycleReport {
        let mut report = LifecycleReport::default();
        match self.prune_history(now_ms).await {
            Ok(n) => report.messages_pruned = n,
            Err(e) => tracing::warn!(error = %e, "history retention failed"),
        }
        match self.collect_media_garbage(now_ms).await {
            Ok(n) => report.blobs_deleted = n,
            Err(e) => tracing::warn!(error = %e, "media garbage collection failed"),
        }
        match self.move_cold_media(now_ms).await {
            Ok(n) => report.blobs_moved_cold = n,
            Err(e) => tracing::warn!(error = %e, "moving media to the cold tier failed"),
        }
        match self.sweep_tokens(now_ms).await {
            Ok(n) => report.tokens_swept = n,
            Err(e) => tracing::warn!(error = %e, "sweeping expired tokens failed"),
        }
        if report != LifecycleReport::default() {
            tracing::info!(?report, "lifecycle run");
        }
        report
    }

    /// Removes messages past the retention depth (count) or age, in every conversation.
    pub async fn prune_history(&self, now_ms: u64) -> Result<usize, ApiError> {
        let (depth, days) = (
            self.config.history_retention_messages,
            self.config.history_retention_days,
        );
        if depth == 0 && days == 0 {
            return Ok(0);
        }
        prune(self.store.as_ref(), now_ms, depth, days).await
    }

    /// Moves blobs older than `media_cold_after_days` to the cold store.
    pub async fn move_cold_media(&self, now_ms: u64) -> Result<usize, ApiError> {
        let (Some(cold), days) = (&self.media.cold, self.config.media_cold_after_days) else {
            return Ok(0);
        };
        let cutoff = now_ms.saturating_sub(days * 24 * 3600 * 1000);
        let mut moved = 0;
        for blob in self.store.blobs().await? {
            let hot = self
                .media
                .blobs
                .contains(&blob.sha256)
                .await
                .map_err(ApiError::internal)?;
            if blob.created_ms <= cutoff && hot {
                self.media
                    .blobs
                    .move_to(&blob.sha256, cold)
                    .await
                    .map_err(ApiError::internal)?;
                moved += 1;
            }
        }
        Ok(moved)
    }
}

/// Removes messages past the retention depth (count) or age, in every conversation.
async fn prune(
    store: &dyn courier_storage::Storage,
    now_ms: u64,
    depth: u64,
    days: u64,
) -> Result<usize, ApiError> {
    let mut pruned = 0;
    for (c, last_seq) in store.all_conversations().await? {
        let mut keep_from = 1;
        if depth > 0 {
            keep_from = keep_from.max(last_seq.saturating_sub(depth) + 1);
        }
        if days > 0 {
            let cutoff = now_ms.saturating_sub(days * 24 * 3600 * 1000);
            keep_from = keep_from.max(
                store
                    .first_seq_since(&c, cutoff)
                    .await?
                    .unwrap_or(last_seq + 1),
            );
        }
        pruned += store.prune_history(&c, keep_from).await?;
    }
    let freed = store.reclaim().await?;
    if freed > 0 {
        tracing::info!(bytes = freed, "retention freed log segments");
    }
    Ok(pruned)
}
