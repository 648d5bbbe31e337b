//! Account routes: register, login, logout (this token or everywhere), password
//! change, who am I, look a user up.

use std::sync::Arc;

use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;

use super::{json_body, ApiResult, Caller, ClientAddr};
use crate::api::dto::*;
use crate::api::Api;
use crate::error::ApiError;

/// Create an account (rate-limited per client address).
#[utoipa::path(post, path = "/v1/register", tag = "accounts", request_body = Credentials,
    responses((status = 201, body = UserInfo), (status = 400, body = ErrorBody), (status = 409, body = ErrorBody),
        (status = 429, body = ErrorBody), (status = 503, body = ErrorBody)))]
pub async fn register(
    State(api): State<Arc<Api>>,
    ClientAddr(from): ClientAddr,
    body: Result<Json<Credentials>, JsonRejection>,
) -> Result<(StatusCode, Json<UserInfo>), ApiError> {
    let creds = json_body(body)?;
    let account = api.register(creds.name, creds.password, from).await?;
    Ok((
        StatusCode::CREATED,
        Json(UserInfo {
            user_id: account.id,
            name: account.name,
            display_name: None,
            status: None,
            avatar: None,
            custom: None,
            discoverable: Some(true),
        }),
    ))
}

/// Log in: a bearer token for the HTTP API and the binary protocol. Failed attempts
/// lock the account (and the address) out for growing periods: `429` with
/// `Retry-After`.
#[utoipa::path(post, path = "/v1/login", tag = "accounts", request_body = Credentials,
    responses((status = 200, body = LoginInfo), (status = 401, body = ErrorBody), (status = 429, body = ErrorBody),
        (status = 503, body = ErrorBody)))]
pub async fn login(
    State(api): State<Arc<Api>>,
    ClientAddr(from): ClientAddr,
    body: Result<Json<Credentials>, JsonRejection>,
) -> ApiResult<LoginInfo> {
    let creds = json_body(body)?;
    let name = creds.name.clone();
    let session = api.login(creds.name, creds.password, from).await?;
    Ok(Json(LoginInfo {
        token: session.token,
        user_id: session.user_id,
        name,
        expires_at_ms: session.expires_ms,
    }))
}

/// Revoke the caller's token; the sessions it opened end with `LOGGED_OUT`.
#[utoipa::path(post, path = "/v1/logout", tag = "accounts", security(("bearer" = [])),
    responses((status = 204), (status = 401, body = ErrorBody)))]
pub async fn logout(State(api): State<Arc<Api>>, caller: Caller) -> Result<StatusCode, ApiError> {
    api.logout(caller.user_id, caller.credential).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Log out everywhere: every token of the caller is revoked and every session ends
/// with `LOGGED_OUT`.
#[utoipa::path(post, path = "/v1/logout/all", tag = "accounts", security(("bearer" = [])),
    responses((status = 200, body = LoggedOut), (status = 401, body = ErrorBody)))]
pub async fn logout_everywhere(
    State(api): State<Arc<Api>>,
    caller: Caller,
) -> ApiResult<LoggedOut> {
    let revoked_tokens = api.logout_everywhere(caller.user_id).await?;
    Ok(Json(LoggedOut { revoked_tokens }))
}

/// Change the password. Every other token of the caller is revoked and its sessions
/// end; the token of this request stays valid.
#[utoipa::path(post, path = "/v1/password", tag = "accounts", security(("bearer" = [])),
    request_body = PasswordChange,
    responses((status = 204), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 429, body = ErrorBody)))]
pub async fn change_password(
    State(api): State<Arc<Api>>,
    caller: Caller,
    ClientAddr(from): ClientAddr,
    body: Result<Json<PasswordChange>, JsonRejection>,
) -> Result<StatusCode, ApiError> {
    let body = json_body(body)?;
    api.change_password(
        caller.user_id,
        caller.credential,
        body.current_password,
        body.new_password,
        from,
    )
    .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// The caller's account.
#[utoipa::path(get, path = "/v1/me", tag = "accounts", security(("bearer" = [])),
    responses((status = 200, body = UserInfo), (status = 401, body = ErrorBody)))]
pub async fn me(State(api): State<Arc<Api>>, caller: Caller) -> ApiResult<UserInfo> {
    let name = api.require_user(caller.user_id).await?;
    Ok(Json(
        api.user_info(caller.user_id, caller.user_id, name).await?,
    ))
}

/// Change the caller's display name and profile (status, picture, custom fields,
/// discoverable); fields left out stay as they are. Online friends learn of it.
#[utoipa::path(patch, path = "/v1/me", tag = "accounts", security(("bearer" = [])),
    request_body = UpdateMe,
    responses((status = 200, body = UserInfo), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody)))]
pub async fn update_me(
    State(api): State<Arc<Api>>,
    caller: Caller,
    body: Result<Json<UpdateMe>, JsonRejection>,
) -> ApiResult<UserInfo> {
    let body = json_body(body)?;
    let change = ProfileChange {
        display_name: body.display_name,
        status: body.status,
        avatar: body.avatar,
        custom: body.custom,
        discoverable: body.discoverable,
    };
    api.update_profile(caller.user_id, change).await?;
    me(State(api), caller).await
}

/// Look a user up by name.
#[utoipa::path(get, path = "/v1/users/{name}", tag = "accounts", security(("bearer" = [])),
    params(("name" = String, Path, description = "user name")),
    responses((status = 200, body = UserInfo), (status = 404, body = ErrorBody)))]
pub async fn user_by_name(
    State(api): State<Arc<Api>>,
    caller: Caller,
    Path(name): Path<String>,
) -> ApiResult<UserInfo> {
    let (user_id, name) = api.find_user(&name).await?;
    Ok(Json(api.user_info(caller.user_id, user_id, name).await?))
}

/// Find users by exact name or display-name prefix (case-insensitive), paged;
/// never one that blocks the caller or that the caller blocks, nor one that is not
/// discoverable.
#[utoipa::path(get, path = "/v1/search/users", tag = "accounts", security(("bearer" = [])),
    params(UserSearchQuery),
    responses((status = 200, body = UserSearchPage), (status = 400, body = ErrorBody)))]
pub async fn search_users(
    State(api): State<Arc<Api>>,
    caller: Caller,
    q: Result<axum::extract::Query<UserSearchQuery>, axum::extract::rejection::QueryRejection>,
) -> ApiResult<UserSearchPage> {
    let q = super::query(q)?;
    Ok(Json(
        api.search_users(
            caller.user_id,
            &q.q,
            q.cursor.as_deref(),
            q.limit.unwrap_or(20),
        )
        .await?,
    ))
}
