//! The media routes: upload, signed download with Range, link refresh, operator
//! release/block, and garbage collection of blobs no message refers to.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use courier_protocol::{pb, ErrorCode};
use courier_storage::{BlobRecord, BlobStatus, BlobUpdate};
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tokio::io::AsyncWriteExt;
use utoipa::{IntoParams, ToSchema};

use crate::api::dto::ErrorBody;
use crate::api::http::Caller;
use crate::api::hygiene::{check_chars, check_id};
use crate::api::Api;
use crate::error::ApiError;
use crate::media::{dimensions, sniff, Verdict};

/// An uploaded blob.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct MediaView {
    /// The blob id: its hex SHA-256.
    pub id: String,
    /// Hex SHA-256 of the bytes.
    pub sha256: String,
    /// A signed download path (append it to the HTTP base URL).
    pub url: String,
    /// When `url` stops working, ms since the epoch.
    pub url_expires_ms: u64,
    /// Size in bytes.
    pub size: u64,
    /// MIME type sniffed from the bytes.
    pub mime: String,
    /// Image width (0 for other types).
    pub width: u32,
    /// Image height.
    pub height: u32,
    /// `available`, `quarantined` or `blocked`.
    pub status: String,
}

fn status_name(s: BlobStatus) -> &'static str {
    match s {
        BlobStatus::Available => "available",
        BlobStatus::Quarantined => "quarantined",
        BlobStatus::Blocked => "blocked",
    }
}

impl Api {
    fn media_view(&self, r: &BlobRecord) -> MediaView {
        let expires = courier_storage::now_ms() + self.config.media_url_ttl_secs * 1000;
        MediaView {
            id: r.sha256.clone(),
            sha256: r.sha256.clone(),
            url: self.media.signed_path(&r.sha256, expires),
            url_expires_ms: expires,
            size: r.size,
            mime: r.mime.clone(),
            width: r.width,
            height: r.height,
            status: status_name(r.status).into(),
        }
    }

    /// Deletes blobs that no message refers to and that are older than the grace
    /// period. Returns how many were deleted.
    pub async fn collect_media_garbage(&self, now_ms: u64) -> Result<usize, ApiError> {
        let grace_ms = self.config.media_gc_grace_secs * 1000;
        let mut deleted = 0;
        for blob in self.store.blobs().await? {
            if blob.referenced || now_ms.saturating_sub(blob.created_ms) < grace_ms {
                continue;
            }
            self.media
                .blobs
                .delete(&blob.sha256)
                .await
                .map_err(ApiError::internal)?;
            if let Some(cold) = &self.media.cold {
                cold.delete(&blob.sha256)
                    .await
                    .map_err(ApiError::internal)?;
            }
            self.store.delete_blob(&blob.sha256).await?;
            deleted += 1;
        }
        Ok(deleted)
    }

    /// The media of a message as the server delivers it: the sender picks the blob
    /// (by sha256; one it uploaded and that is available) and may name it, caption
    /// it and give its duration; kind, url, mime, size and dimensions come from the
    /// stored blob, and the url is a signed link the server makes. A thumbnail must be
    /// an uploaded image of the sender's too, or it is dropped.
    pub async fn server_media(&self, user: u64, m: &pb::Media) -> Result<pb::Media, ApiError> {
        let blob = self.check_media_use(user, &m.sha256).await?;
        check_chars("media name", &m.name)?;
        if m.name.len() > MAX_MEDIA_NAME_BYTES {
            return Err(ApiError::invalid(format!(
                "media name is longer than {MAX_MEDIA_NAME_BYTES} bytes"
            )));
        }
        if m.caption.len() > self.config.max_text_bytes {
            return Err(ApiError::new(
                ErrorCode::TextTooLong,
                format!(
                    "caption is longer than {} bytes",
                    self.config.max_text_bytes
                ),
            ));
        }
        let kind = match (pb::MediaKind::try_from(m.kind), media_kind_of(&blob.mime)) {
            // An app's own kind keeps its name, but not a claim about the bytes.
            (Ok(pb::MediaKind::Custom), _) => {
                check_id("custom_kind", &m.custom_kind, 64)?;
                pb::MediaKind::Custom
            }
            (_, sniffed) => sniffed,
        };
        let thumbnail = match &m.thumbnail {
            Some(t) if !t.sha256.is_empty() => {
                let thumb = self.check_media_use(user, &t.sha256).await?;
                if !thumb.mime.starts_with("image/") {
                    return Err(ApiError::invalid("a thumbnail must be an image"));
                }
                Some(pb::Thumbnail {
                    url: self.message_url(&thumb.sha256),
                    mime: thumb.mime,
                    size: thumb.size,
                    width: thumb.width,
                    height: thumb.height,
                    sha256: thumb.sha256,
                })
            }
            _ => None,
        };
        Ok(pb::Media {
            kind: kind as i32,
            url: self.message_url(&blob.sha256),
            mime: blob.mime,
            size: blob.size,
            sha256: blob.sha256,
            width: blob.width,
            height: blob.height,
            duration_ms: m.duration_ms,
            thumbnail,
            name: m.name.clone(),
            custom_kind: match kind {
                pb::MediaKind::Custom => m.custom_kind.clone(),
                _ => String::new(),
            },
            caption: m.caption.clone(),
        })
    }

    /// Whether message `seq` of conversation `c`, which `user` may read, carries blob
    /// `sha256` (as its media or its thumbnail).
    pub async fn message_carries(
        &self,
        user: u64,
        c: &str,
        seq: u64,
        sha256: &str,
    ) -> Result<bool, ApiError> {
        use prost::Message as _;
        let c = self.parse_conversation(c)?;
        let floor = self
            .authorize(user, &c)
            .await?
            .max(self.retention_floor(&c).await?);
        let Some(message) = self.store.message(&c, seq).await?.filter(|_| seq > floor) else {
            return Ok(false);
        };
        let Ok(body) = pb::MessageBody::decode(message.body) else {
            return Ok(false);
        };
        Ok(match body.content {
            Some(pb::message_body::Content::Media(m)) => {
                m.sha256 == sha256 || m.thumbnail.is_some_and(|t| t.sha256 == sha256)
            }
            _ => false,
        })
    }

    /// The signed link a message carries for blob `sha256` (valid for
    /// `media_url_ttl_secs`; recipients renew it with `POST /v1/media/{id}/url`).
    pub(crate) fn message_url(&self, sha256: &str) -> String {
        let expires = courier_storage::now_ms() + self.config.media_url_ttl_secs * 1000;
        self.media.signed_path(sha256, expires)
    }

    /// Whether uploads of blob `sha256` are refused (an operator blocked it).
    pub async fn media_blocked(&self, sha256: &str) -> Result<bool, ApiError> {
        let blob = self.store.blob(sha256).await?;
        Ok(blob.is_some_and(|b| b.status == BlobStatus::Blocked))
    }

    /// Records an upload by `owner` (the first upload of the bytes stores
    /// `record`); returns the stored record.
    pub async fn record_upload(
        &self,
        record: &BlobRecord,
        owner: u64,
    ) -> Result<BlobRecord, ApiError> {
        let stored = self.store.put_blob(record).await?;
        self.store.add_blob_owner(&record.sha256, owner).await?;
        Ok(stored)
    }

    /// Blob `sha256`, if `user` may have a fresh link to it: its uploader, or a
    /// reader of message `seq` of `conversation` that carries it.
    pub async fn linkable_media(
        &self,
        user: u64,
        sha256: &str,
        conversation: Option<&str>,
        seq: Option<u64>,
    ) -> Result<BlobRecord, ApiError> {
        let blob = self
            .store
            .blob(sha256)
            .await
            .ok()
            .flatten()
            .ok_or_else(|| ApiError::new(ErrorCode::NotFound, "no such media"))?;
        let allowed = self.store.is_blob_owner(sha256, user).await?
            || match (conversation, seq) {
                (Some(c), Some(seq)) => self.message_carries(user, c, seq, sha256).await?,
                _ => false,
            };
        if !allowed {
            return Err(ApiError::forbidden(
                "not your upload, and no message of yours carries it",
            ));
        }
        Ok(blob)
    }

    /// Sets whether blob `sha256` may be served (moderation); returns the record.
    pub async fn set_media_status(
        &self,
        sha256: &str,
        status: BlobStatus,
    ) -> Result<BlobRecord, ApiError> {
        self.store
            .update_blob(sha256, BlobUpdate::Status(status))
            .await?
            .ok_or_else(|| ApiError::new(ErrorCode::NotFound, "no such media"))
    }

    /// Checks that `user` may send a media message about blob `sha256`; returns it.
    pub async fn check_media_use(&self, user: u64, sha256: &str) -> Result<BlobRecord, ApiError> {
        let blob = self
            .store
            .blob(sha256)
            .await
            .map_err(|_| ApiError::invalid("media sha256 must be 64 hex digits"))?
            .ok_or_else(|| ApiError::new(ErrorCode::NotFound, "no such media; upload it first"))?;
        if blob.status != BlobStatus::Available {
            return Err(ApiError::new(
                ErrorCode::MediaUnavailable,
                "this media is not available",
            ));
        }
        if !self.store.is_blob_owner(sha256, user).await? {
            return Err(ApiError::forbidden("only a media's uploader may send it"));
        }
        Ok(blob)
    }
}

/// Longest file name a media message may carry, in bytes.
pub const MAX_MEDIA_NAME_BYTES: usize = 255;

/// The kind of media a sniffed MIME type is.
fn media_kind_of(mime: &str) -> pb::MediaKind {
    match mime.split('/').next() {
        Some("image") => pb::MediaKind::Image,
        Some("video") => pb::MediaKind::Video,
        Some("audio") => pb::MediaKind::Audio,
        _ => pb::MediaKind::File,
    }
}

/// Whether browsers may show a type inline from our origin; everything else is
/// served as an attachment.
fn shown_inline(mime: &str) -> bool {
    matches!(mime.split('/').next(), Some("image" | "audio" | "video"))
}

async fn remove_quietly(path: &std::path::Path) {
    let _ = tokio::fs::remove_file(path).await;
}

/// Upload a file (the raw body). Returns its id and a signed URL.
#[utoipa::path(post, path = "/v1/media", tag = "media", security(("bearer" = [])),
    request_body(content = Vec<u8>, content_type = "application/octet-stream"),
    responses((status = 201, body = MediaView), (status = 413, body = ErrorBody), (status = 415, body = ErrorBody),
        (status = 429, body = ErrorBody), (status = 451, body = ErrorBody)))]
pub async fn upload(
    State(api): State<Arc<Api>>,
    caller: Caller,
    body: Body,
) -> Result<(StatusCode, Json<MediaView>), ApiError> {
    api.limits
        .user(crate::api::limits::Limit::Upload, caller.user_id)?;
    let temp = api.media.temp_path(&format!(
        "{}-{}",
        caller.user_id,
        crate::api::system_msg_id()
    ));
    let mut file = tokio::fs::File::create(&temp)
        .await
        .map_err(ApiError::internal)?;
    let mut hasher = Sha256::new();
    let mut size = 0u64;
    let mut head = Vec::with_capacity(8192);
    let mut stream = body.into_data_stream();
    let chunk_timeout = std::time::Duration::from_millis(api.config.http_body_timeout_ms);
    loop {
        let chunk = match tokio::time::timeout(chunk_timeout, stream.next()).await {
            Ok(None) => break,
            Ok(Some(Ok(c))) => c,
            Ok(Some(Err(e))) => {
                remove_quietly(&temp).await;
                return Err(ApiError::invalid(format!("upload interrupted: {e}")));
            }
            Err(_) => {
                remove_quietly(&temp).await;
                return Err(ApiError::new(
                    ErrorCode::RequestTimeout,
                    "the upload stalled",
                ));
            }
        };
        size += chunk.len() as u64;
        if size > api.config.media_max_bytes {
            drop(file);
            remove_quietly(&temp).await;
            return Err(ApiError::new(
                ErrorCode::MediaTooLarge,
                format!(
                    "uploads are limited to {} bytes",
                    api.config.media_max_bytes
                ),
            ));
        }
        hasher.update(&chunk);
        if head.len() < 8192 {
            let take = (8192 - head.len()).min(chunk.len());
            head.extend_from_slice(&chunk[..take]);
        }
        if let Err(e) = file.write_all(&chunk).await {
            remove_quietly(&temp).await;
            return Err(ApiError::internal(e));
        }
    }
    if let Err(e) = file.sync_all().await {
        remove_quietly(&temp).await;
        return Err(ApiError::internal(e));
    }
    drop(file);
    let Some(mime) = sniff(&head).filter(|m| api.config.media_allowed_types.iter().any(|a| a == m))
    else {
        remove_quietly(&temp).await;
        return Err(ApiError::new(
            ErrorCode::MediaTypeNotAllowed,
            "this file type is not allowed",
        ));
    };
    let sha256 = hex::encode(hasher.finalize());
    if api.media_blocked(&sha256).await? {
        remove_quietly(&temp).await;
        return Err(ApiError::new(
            ErrorCode::MediaRejected,
            "this content is blocked",
        ));
    }
    let status = match api.media.moderator.check(&sha256, mime, size).await {
        Verdict::Approve => BlobStatus::Available,
        Verdict::Quarantine(reason) => {
            tracing::info!(%sha256, %reason, "upload quarantined");
            BlobStatus::Quarantined
        }
        Verdict::Reject(reason) => {
            remove_quietly(&temp).await;
            return Err(ApiError::new(ErrorCode::MediaRejected, reason));
        }
    };
    api.media
        .blobs
        .commit(&temp, &sha256)
        .await
        .map_err(ApiError::internal)?;
    let (width, height) = if mime.starts_with("image/") {
        dimensions(&head)
    } else {
        (0, 0)
    };
    let record = BlobRecord {
        sha256: sha256.clone(),
        size,
        mime: mime.to_owned(),
        width,
        height,
        created_ms: courier_storage::now_ms(),
        status,
        referenced: false,
    };
    let record = api.record_upload(&record, caller.user_id).await?;
    Ok((StatusCode::CREATED, Json(api.media_view(&record))))
}

/// A signed link's query.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct SignedQuery {
    /// Expiry, ms since the epoch.
    exp: u64,
    /// Hex HMAC-SHA-256 of `<id>:<exp>`.
    sig: String,
}

/// Download through a signed link; supports `Range: bytes=a-b`.
#[utoipa::path(get, path = "/v1/media/{id}", tag = "media",
    params(("id" = String, Path, description = "blob id (sha256)"), SignedQuery),
    responses((status = 200, description = "the bytes"), (status = 206, description = "a range of the bytes"),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 416, description = "bad range"),
        (status = 451, body = ErrorBody)))]
pub async fn download(
    State(api): State<Arc<Api>>,
    Path(id): Path<String>,
    q: Result<Query<SignedQuery>, axum::extract::rejection::QueryRejection>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let Query(q) =
        q.map_err(|_| ApiError::new(ErrorCode::BadSignature, "a media link needs exp and sig"))?;
    let now = courier_storage::now_ms();
    api.media.verify(&id, q.exp, &q.sig, now)?;
    let blob = api
        .store
        .blob(&id)
        .await
        .ok()
        .flatten()
        .ok_or_else(|| ApiError::new(ErrorCode::NotFound, "no such media"))?;
    if blob.status != BlobStatus::Available {
        return Err(ApiError::new(
            ErrorCode::MediaUnavailable,
            "this media is not available",
        ));
    }
    let source = api
        .media
        .locate(&id)
        .await
        .map_err(ApiError::internal)?
        .ok_or_else(|| ApiError::new(ErrorCode::NotFound, "no such media"))?;
    let total = blob.size;
    let range = headers
        .get(header::RANGE)
        .and_then(|v| v.to_str().ok())
        .map(|v| parse_range(v, total));
    let (status, start, len) = match range {
        None => (StatusCode::OK, 0, total),
        Some(Some((start, end))) => (StatusCode::PARTIAL_CONTENT, start, end - start + 1),
        Some(None) => {
            let mut r = StatusCode::RANGE_NOT_SATISFIABLE.into_response();
            r.headers_mut().insert(
                header::CONTENT_RANGE,
                HeaderValue::from_str(&format!("bytes */{total}")).expect("ascii"),
            );
            return Ok(r);
        }
    };
    let whole = start == 0 && len == total;
    let stream = source
        .read(&id, (!whole).then_some(start..start + len))
        .await
        .map_err(ApiError::internal)?;
    let body = Body::from_stream(stream);
    let mut response = Response::new(body);
    *response.status_mut() = status;
    let h = response.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_str(&blob.mime).map_err(ApiError::internal)?,
    );
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(len));
    // The bytes are users', served from the API's origin: never sniffed into HTML,
    // never run as a page, and anything but pictures and sound is a download.
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static("default-src 'none'; sandbox"),
    );
    let disposition = match shown_inline(&blob.mime) {
        true => "inline".to_owned(),
        false => format!("attachment; filename=\"{id}\""),
    };
    h.insert(
        header::CONTENT_DISPOSITION,
        HeaderValue::from_str(&disposition).map_err(ApiError::internal)?,
    );
    h.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    h.insert(
        header::ETAG,
        HeaderValue::from_str(&format!("\"{id}\"")).map_err(ApiError::internal)?,
    );
    let max_age = q.exp.saturating_sub(now) / 1000;
    h.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_str(&format!("private, max-age={max_age}, immutable"))
            .map_err(ApiError::internal)?,
    );
    if status == StatusCode::PARTIAL_CONTENT {
        h.insert(
            header::CONTENT_RANGE,
            HeaderValue::from_str(&format!("bytes {start}-{}/{total}", start + len - 1))
                .map_err(ApiError::internal)?,
        );
    }
    Ok(response)
}

/// `bytes=a-b`, `bytes=a-`, `bytes=-n` (one range) -> inclusive (start, end).
fn parse_range(value: &str, total: u64) -> Option<(u64, u64)> {
    let spec = value.strip_prefix("bytes=")?;
    if spec.contains(',') || total == 0 {
        return None;
    }
    let (a, b) = spec.split_once('-')?;
    let (start, end) = match (a.trim(), b.trim()) {
        ("", n) => {
            let n: u64 = n.parse().ok()?;
            (total.saturating_sub(n), total - 1)
        }
        (a, "") => (a.parse().ok()?, total - 1),
        (a, b) => (a.parse().ok()?, b.parse::<u64>().ok()?.min(total - 1)),
    };
    (start <= end && start < total).then_some((start, end))
}

/// Which message a link is asked for (recipients renew the links their messages
/// carry).
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct LinkFor {
    /// The conversation of a message that carries the blob.
    conversation: Option<String>,
    /// That message's seq.
    seq: Option<u64>,
}

/// A fresh signed link: for a blob the caller uploaded, or one carried by a message
/// the caller may read (name it with `conversation` and `seq`).
#[utoipa::path(post, path = "/v1/media/{id}/url", tag = "media", security(("bearer" = [])),
    params(("id" = String, Path), LinkFor),
    responses((status = 200, body = MediaView), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn refresh_url(
    State(api): State<Arc<Api>>,
    caller: Caller,
    Path(id): Path<String>,
    q: Result<Query<LinkFor>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<MediaView>, ApiError> {
    let Query(q) = q.map_err(|_| ApiError::invalid("bad query"))?;
    let blob = api
        .linkable_media(caller.user_id, &id, q.conversation.as_deref(), q.seq)
        .await?;
    Ok(Json(api.media_view(&blob)))
}

/// Release a quarantined blob (operator).
#[utoipa::path(post, path = "/v1/admin/media/{id}/release", tag = "admin", security(("bearer" = [])),
    params(("id" = String, Path)), responses((status = 200, body = MediaView), (status = 403, body = ErrorBody)))]
pub async fn release(
    State(api): State<Arc<Api>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Json<MediaView>, ApiError> {
    set_status(&api, &headers, &id, BlobStatus::Available).await
}

/// Block a blob (operator): never served again, re-uploads refused.
#[utoipa::path(post, path = "/v1/admin/media/{id}/block", tag = "admin", security(("bearer" = [])),
    params(("id" = String, Path)), responses((status = 200, body = MediaView), (status = 403, body = ErrorBody)))]
pub async fn block(
    State(api): State<Arc<Api>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Json<MediaView>, ApiError> {
    set_status(&api, &headers, &id, BlobStatus::Blocked).await
}

/// The operator routes' shared step: check the admin token, then set the status.
async fn set_status(
    api: &Api,
    headers: &HeaderMap,
    id: &str,
    status: BlobStatus,
) -> Result<Json<MediaView>, ApiError> {
    crate::api::http::Operator::check(api, headers)?;
    let blob = api.set_media_status(id, status).await?;
    Ok(Json(api.media_view(&blob)))
}

#[cfg(test)]
mod tests {
    use super::parse_range;

    #[test]
    fn ranges() {
        assert_eq!(parse_range("bytes=0-9", 100), Some((0, 9)));
        assert_eq!(parse_range("bytes=90-", 100), Some((90, 99)));
        assert_eq!(parse_range("bytes=-10", 100), Some((90, 99)));
        assert_eq!(parse_range("bytes=50-500", 100), Some((50, 99)));
        assert_eq!(parse_range("bytes=100-", 100), None);
        assert_eq!(parse_range("bytes=5-1", 100), None);
        assert_eq!(parse_range("bytes=0-1,5-6", 100), None);
        assert_eq!(parse_range("items=0-1", 100), None);
    }
}
