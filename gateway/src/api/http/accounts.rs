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
    Ok(Json(UserInfo {
        user_id: caller.user_id,
        name,
        display_name: api.display_name(caller.user_id).await?,
    }))
}

/// Change the caller's account: its display name.
#[utoipa::path(patch, path = "/v1/me", tag = "accounts", security(("bearer" = [])),
    request_body = UpdateMe,
    responses((status = 200, body = UserInfo), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody)))]
pub async fn update_me(
    State(api): State<Arc<Api>>,
    caller: Caller,
    body: Result<Json<UpdateMe>, JsonRejection>,
) -> ApiResult<UserInfo> {
    let body = json_body(body)?;
    api.set_display_name(caller.user_id, body.display_name.as_deref())
        .await?;
    me(State(api), caller).await
}

/// Look a user up by name.
#[utoipa::path(get, path = "/v1/users/{name}", tag = "accounts", security(("bearer" = [])),
    params(("name" = String, Path, description = "user name")),
    responses((status = 200, body = UserInfo), (status = 404, body = ErrorBody)))]
pub async fn user_by_name(
    State(api): State<Arc<Api>>,
    _caller: Caller,
    Path(name): Path<String>,
) -> ApiResult<UserInfo> {
    let (user_id, name) = api.find_user(&name).await?;
    Ok(Json(UserInfo {
        user_id,
        name,
        display_name: api.display_name(user_id).await?,
    }))
}
