//! Push-token registration over HTTP: `PUT` and `DELETE /v1/devices/{device_id}/push`.
//! See [`crate::api::push`].

use std::sync::Arc;

use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use courier_storage::PushProvider;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::{json_body, ApiResult, Caller};
use crate::api::dto::ErrorBody;
use crate::api::push::Registration;
use crate::api::Api;
use crate::error::ApiError;

/// Where to push to a device while it is offline.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct PushTokenBody {
    /// `apns` or `fcm`.
    pub provider: String,
    /// The service's token for the app on this device (APNs: hexadecimal).
    pub token: String,
    /// APNs: the app's bundle id; FCM: the Firebase project id.
    pub app_id: String,
    /// APNs development environment (the sandbox endpoint).
    #[serde(default)]
    pub sandbox: bool,
}

/// The registration's state.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct PushTokenView {
    /// Whether the device has a push registration now.
    pub registered: bool,
}

/// Register the push token of one of the caller's devices (replacing any earlier
/// one). It lasts while the caller's credential does: a logout ends it.
#[utoipa::path(put, path = "/v1/devices/{device_id}/push", tag = "devices", security(("bearer" = [])),
    params(("device_id" = String, Path)), request_body = PushTokenBody,
    responses((status = 200, body = PushTokenView), (status = 400, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 501, body = ErrorBody)))]
pub async fn set_push_token(
    State(api): State<Arc<Api>>,
    caller: Caller,
    Path(device): Path<String>,
    body: Result<Json<PushTokenBody>, JsonRejection>,
) -> ApiResult<PushTokenView> {
    let body = json_body(body)?;
    let provider = match body.provider.as_str() {
        "apns" => PushProvider::Apns,
        "fcm" => PushProvider::Fcm,
        _ => return Err(ApiError::invalid("provider must be \"apns\" or \"fcm\"")),
    };
    let registration = Registration {
        provider,
        token: body.token,
        app_id: body.app_id,
        sandbox: body.sandbox,
    };
    let registered = api
        .set_push_token(
            caller.user_id,
            &device,
            &caller.credential,
            caller.credential_expires_ms,
            Some(registration),
        )
        .await?;
    Ok(Json(PushTokenView { registered }))
}

/// Remove the push token of one of the caller's devices.
#[utoipa::path(delete, path = "/v1/devices/{device_id}/push", tag = "devices", security(("bearer" = [])),
    params(("device_id" = String, Path)),
    responses((status = 204), (status = 404, body = ErrorBody)))]
pub async fn remove_push_token(
    State(api): State<Arc<Api>>,
    caller: Caller,
    Path(device): Path<String>,
) -> Result<StatusCode, ApiError> {
    api.set_push_token(
        caller.user_id,
        &device,
        &caller.credential,
        caller.credential_expires_ms,
        None,
    )
    .await?;
    Ok(StatusCode::NO_CONTENT)
}
