//! The HTTP API (axum): accounts, history, conversation list, read cursors, health.
//!
//! Every route is under `/v1`, speaks JSON, and answers errors as
//! `{code, name, message}` with the status that fits the code. All routes except
//! register, login and health need `Authorization: Bearer <token>`.

use std::sync::Arc;

use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{DefaultBodyLimit, FromRequestParts, Path, Query, State};
use axum::http::request::Parts;
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use courier_protocol::{ConversationId, ErrorCode};
use courier_storage::HistoryRange;
use serde::Deserialize;
use serde_json::{json, Value};

use crate::api::{convert, Api};
use crate::error::ApiError;

/// Largest JSON request body, in bytes.
const MAX_BODY_BYTES: usize = 64 * 1024;

/// The `/v1` routes over `api`.
pub fn router(api: Arc<Api>) -> Router {
    Router::new()
        .route("/v1/health", get(health))
        .route("/v1/register", post(register))
        .route("/v1/login", post(login))
        .route("/v1/logout", post(logout))
        .route("/v1/me", get(me))
        .route("/v1/users/{name}", get(user_by_name))
        .route("/v1/conversations", get(conversations))
        .route("/v1/conversations/{id}/messages", get(history))
        .route("/v1/conversations/{id}/read", post(mark_read))
        .fallback(|| async { ApiError::new(ErrorCode::NotFound, "no such route") })
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(api)
}

/// The authenticated caller of a request.
pub struct Caller {
    /// User id.
    pub user_id: u64,
    /// The bearer token it presented.
    pub token: String,
}

impl FromRequestParts<Arc<Api>> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, api: &Arc<Api>) -> Result<Self, ApiError> {
        let header = parts
            .headers
            .get(axum::http::header::AUTHORIZATION)
            .ok_or_else(|| {
                ApiError::new(ErrorCode::Unauthenticated, "missing Authorization header")
            })?;
        let token = header
            .to_str()
            .ok()
            .and_then(|h| h.strip_prefix("Bearer "))
            .ok_or_else(|| {
                ApiError::new(
                    ErrorCode::Unauthenticated,
                    "expected `Authorization: Bearer <token>`",
                )
            })?
            .trim()
            .to_owned();
        let user_id = api.authenticate_token(&token)?;
        Ok(Caller { user_id, token })
    }
}

fn json_body<T>(body: Result<Json<T>, JsonRejection>) -> Result<T, ApiError> {
    body.map(|Json(v)| v)
        .map_err(|e| ApiError::invalid(format!("bad JSON body: {}", e.body_text())))
}

fn query<T>(q: Result<Query<T>, QueryRejection>) -> Result<T, ApiError> {
    q.map(|Query(v)| v)
        .map_err(|e| ApiError::invalid(format!("bad query: {}", e.body_text())))
}

async fn health(State(api): State<Arc<Api>>) -> Json<Value> {
    Json(json!({
        "status": "ok",
        "online_devices": api.registry.online_devices(),
        "store_queued": api.store.queued(),
    }))
}

#[derive(Deserialize)]
struct Credentials {
    name: String,
    password: String,
}

async fn register(
    State(api): State<Arc<Api>>,
    body: Result<Json<Credentials>, JsonRejection>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let creds = json_body(body)?;
    let account = api
        .blocking(move |store| Ok(store.register(&creds.name, &creds.password)?))
        .await?;
    Ok((
        StatusCode::CREATED,
        Json(json!({"user_id": account.id, "name": account.name})),
    ))
}

async fn login(
    State(api): State<Arc<Api>>,
    body: Result<Json<Credentials>, JsonRejection>,
) -> Result<Json<Value>, ApiError> {
    let creds = json_body(body)?;
    let name = creds.name.clone();
    let session = api
        .blocking(move |store| Ok(store.login(&creds.name, &creds.password)?))
        .await?;
    Ok(Json(json!({
        "token": session.token,
        "user_id": session.user_id,
        "name": name,
        "expires_at_ms": session.expires_ms,
    })))
}

async fn logout(State(api): State<Arc<Api>>, caller: Caller) -> Result<StatusCode, ApiError> {
    api.blocking(move |store| Ok(store.revoke_token(&caller.token)?))
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn me(State(api): State<Arc<Api>>, caller: Caller) -> Result<Json<Value>, ApiError> {
    let account = api
        .store
        .account(caller.user_id)?
        .ok_or_else(|| ApiError::new(ErrorCode::UnknownUser, "account is gone"))?;
    Ok(Json(json!({"user_id": account.id, "name": account.name})))
}

async fn user_by_name(
    State(api): State<Arc<Api>>,
    _caller: Caller,
    Path(name): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let account = api
        .store
        .account_by_name(&name)?
        .ok_or_else(|| ApiError::new(ErrorCode::UnknownUser, format!("no user named {name:?}")))?;
    Ok(Json(json!({"user_id": account.id, "name": account.name})))
}

async fn conversations(
    State(api): State<Arc<Api>>,
    caller: Caller,
) -> Result<Json<Value>, ApiError> {
    let list = api.store.conversations(caller.user_id)?;
    let items: Vec<Value> = list
        .into_iter()
        .map(|c| {
            let (kind, peer) = match c.conversation {
                ConversationId::Direct { .. } => ("direct", c.conversation.peer_of(caller.user_id)),
                ConversationId::Group(_) => ("group", None),
            };
            json!({
                "conversation": c.conversation.to_string(),
                "kind": kind,
                "peer": peer,
                "last_seq": c.last_seq,
                "read_seq": c.state.read_seq,
                "unread": c.last_seq.saturating_sub(c.state.read_seq),
            })
        })
        .collect();
    Ok(Json(json!({"conversations": items})))
}

#[derive(Deserialize)]
struct HistoryQuery {
    before: Option<u64>,
    after: Option<u64>,
    limit: Option<usize>,
}

async fn history(
    State(api): State<Arc<Api>>,
    caller: Caller,
    Path(id): Path<String>,
    q: Result<Query<HistoryQuery>, QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let q = query(q)?;
    let c = api.parse_conversation(&id)?;
    let range = match (q.before, q.after) {
        (Some(_), Some(_)) => return Err(ApiError::invalid("give `before` or `after`, not both")),
        (Some(before), None) => HistoryRange::Before(before),
        (None, Some(after)) => HistoryRange::After(after),
        (None, None) => HistoryRange::Latest,
    };
    let limit = q.limit.unwrap_or(0);
    if q.limit == Some(0) {
        return Err(ApiError::invalid("limit must be at least 1"));
    }
    let page = api.history(caller.user_id, &c, range, limit)?;
    Ok(Json(json!({
        "conversation": c.to_string(),
        "messages": page.messages.iter().map(convert::to_json).collect::<Vec<_>>(),
        "has_more": page.has_more,
    })))
}

#[derive(Deserialize)]
struct ReadBody {
    seq: u64,
}

async fn mark_read(
    State(api): State<Arc<Api>>,
    caller: Caller,
    Path(id): Path<String>,
    body: Result<Json<ReadBody>, JsonRejection>,
) -> Result<Json<Value>, ApiError> {
    let body = json_body(body)?;
    let c = api.parse_conversation(&id)?;
    let read_seq = api.mark_read(caller.user_id, &c, body.seq)?;
    Ok(Json(
        json!({"conversation": c.to_string(), "read_seq": read_seq}),
    ))
}
