//! The admin API's routes (`/v1/admin/...`): for the application's own backend,
//! with `Authorization: Bearer <admin_token>`, or without a token on the operator
//! listener (`admin_addr`). See [`crate::api::admin`].

use std::sync::Arc;

use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::Json;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::{json_body, query, ApiResult, OperatorAccess};
use crate::api::admin::*;
use crate::api::dto::{ErrorBody, LoginInfo};
use crate::api::Api;
use crate::error::ApiError;

/// Create users (or find those that exist): password accounts, or accounts the
/// application vouches for (no password).
#[utoipa::path(post, path = "/v1/admin/users", tag = "admin", security(("bearer" = [])),
    request_body = ImportUsers,
    responses((status = 200, body = ImportedUsers), (status = 400, body = ErrorBody), (status = 403, body = ErrorBody)))]
pub async fn import_users(
    State(api): State<Arc<Api>>,
    _: OperatorAccess,
    body: Result<Json<ImportUsers>, JsonRejection>,
) -> ApiResult<ImportedUsers> {
    Ok(Json(api.import_users(json_body(body)?.users).await?))
}

/// Mint a token for a user (what a login would give).
#[utoipa::path(post, path = "/v1/admin/users/{user_id}/tokens", tag = "admin", security(("bearer" = [])),
    params(("user_id" = u64, Path)),
    responses((status = 200, body = LoginInfo), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn mint_token(
    State(api): State<Arc<Api>>,
    _: OperatorAccess,
    Path(user): Path<u64>,
) -> ApiResult<LoginInfo> {
    Ok(Json(api.mint_token(user).await?))
}

/// How many tokens a logout revoked.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct Revoked {
    /// Tokens revoked.
    pub revoked: u64,
}

/// Log a user out everywhere: every token revoked, every session ended at once
/// (`LOGGED_OUT`).
#[utoipa::path(post, path = "/v1/admin/users/{user_id}/logout", tag = "admin", security(("bearer" = [])),
    params(("user_id" = u64, Path)),
    responses((status = 200, body = Revoked), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn force_logout(
    State(api): State<Arc<Api>>,
    _: OperatorAccess,
    Path(user): Path<u64>,
) -> ApiResult<Revoked> {
    api.require_user(user).await?;
    let revoked = api.logout_everywhere(user).await? as u64;
    Ok(Json(Revoked { revoked }))
}

/// Ban a user: its tokens revoked, its sessions ended at once (`BANNED`), and no
/// login or token (its own or the application's) accepted until the ban is lifted.
#[utoipa::path(post, path = "/v1/admin/users/{user_id}/ban", tag = "admin", security(("bearer" = [])),
    params(("user_id" = u64, Path)),
    responses((status = 204, description = "banned"), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn ban(
    State(api): State<Arc<Api>>,
    _: OperatorAccess,
    Path(user): Path<u64>,
) -> Result<StatusCode, ApiError> {
    api.set_banned(user, true).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Lift a user's ban.
#[utoipa::path(delete, path = "/v1/admin/users/{user_id}/ban", tag = "admin", security(("bearer" = [])),
    params(("user_id" = u64, Path)),
    responses((status = 204, description = "ban lifted"), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn unban(
    State(api): State<Arc<Api>>,
    _: OperatorAccess,
    Path(user): Path<u64>,
) -> Result<StatusCode, ApiError> {
    api.set_banned(user, false).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Erase a user's data on request: sessions, tokens and devices gone, every message
/// it sent replaced by a tombstone (with a recall event by the system), every
/// relation removed. The account stays (ban it to keep it out).
#[utoipa::path(post, path = "/v1/admin/users/{user_id}/erase", tag = "admin", security(("bearer" = [])),
    params(("user_id" = u64, Path)),
    responses((status = 200, body = Erased), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn erase(
    State(api): State<Arc<Api>>,
    _: OperatorAccess,
    Path(user): Path<u64>,
) -> ApiResult<Erased> {
    Ok(Json(api.erase_user(user).await?))
}

/// Remove one device of a user: its session ends, the tokens it used are revoked.
#[utoipa::path(delete, path = "/v1/admin/users/{user_id}/devices/{device_id}", tag = "admin",
    security(("bearer" = [])), params(("user_id" = u64, Path), ("device_id" = String, Path)),
    responses((status = 204, description = "removed"), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn remove_device(
    State(api): State<Arc<Api>>,
    _: OperatorAccess,
    Path((user, device)): Path<(u64, String)>,
) -> Result<StatusCode, ApiError> {
    api.remove_device(user, &device).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Send a text into a conversation as one of its users, or as the system.
#[utoipa::path(post, path = "/v1/admin/messages", tag = "admin", security(("bearer" = [])),
    request_body = AdminSend,
    responses((status = 200, body = AdminSent), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn send(
    State(api): State<Arc<Api>>,
    _: OperatorAccess,
    body: Result<Json<AdminSend>, JsonRejection>,
) -> ApiResult<AdminSent> {
    Ok(Json(api.admin_send(json_body(body)?).await?))
}

/// Send one text to many users, each in its direct conversation with the sender.
#[utoipa::path(post, path = "/v1/admin/notifications", tag = "admin", security(("bearer" = [])),
    request_body = Notify,
    responses((status = 200, body = Notified), (status = 400, body = ErrorBody), (status = 403, body = ErrorBody)))]
pub async fn notify(
    State(api): State<Arc<Api>>,
    _: OperatorAccess,
    body: Result<Json<Notify>, JsonRejection>,
) -> ApiResult<Notified> {
    Ok(Json(api.notify(json_body(body)?).await?))
}

/// Users to count the devices of.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct OnlineQuery {
    /// Comma-separated user ids (at most 1,000; none = totals only).
    #[serde(default)]
    users: String,
}

/// Who is online: devices connected now, in all and per asked user.
#[utoipa::path(get, path = "/v1/admin/online", tag = "admin", security(("bearer" = [])),
    params(OnlineQuery),
    responses((status = 200, body = Online), (status = 400, body = ErrorBody), (status = 403, body = ErrorBody)))]
pub async fn online(
    State(api): State<Arc<Api>>,
    _: OperatorAccess,
    q: Result<Query<OnlineQuery>, QueryRejection>,
) -> ApiResult<Online> {
    let users = query(q)?
        .users
        .split(',')
        .filter(|s| !s.trim().is_empty())
        .map(|s| s.trim().parse::<u64>())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|_| ApiError::invalid("users is a list of ids"))?;
    if users.len() > 1_000 {
        return Err(ApiError::invalid("at most 1000 users at once"));
    }
    Ok(Json(api.online(&users)))
}
