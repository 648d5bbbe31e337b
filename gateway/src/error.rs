//! The one place where failures become what clients see: an [`ApiError`] carries a
//! stable [`ErrorCode`] and a message safe to show, and turns into either an `Error`
//! frame or an HTTP response `{code, name, message}`. Internal details are logged,
//! never sent.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use courier_protocol::pb::Frame;
use courier_protocol::ErrorCode;
use courier_storage::StorageError;

/// An error as shown to a client.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{code:?}: {message}")]
pub struct ApiError {
    /// The stable code.
    pub code: ErrorCode,
    /// A human-readable explanation without internals.
    pub message: String,
    /// For `RATE_LIMITED` and `OVERLOADED`: when to try again.
    pub retry_after: Option<std::time::Duration>,
}

impl ApiError {
    /// An error with `code` and `message`.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
            retry_after: None,
        }
    }

    /// `RATE_LIMITED`: try again after `wait`.
    pub fn rate_limited(message: impl Into<String>, wait: std::time::Duration) -> Self {
        Self::new(ErrorCode::RateLimited, message).retry_after(wait)
    }

    /// `OVERLOADED`: the server sheds this request; try again after `wait`.
    pub fn overloaded(message: impl Into<String>, wait: std::time::Duration) -> Self {
        Self::new(ErrorCode::Overloaded, message).retry_after(wait)
    }

    /// The same error, telling the client when to try again.
    pub fn retry_after(mut self, wait: std::time::Duration) -> Self {
        self.retry_after = Some(wait);
        self
    }

    /// `INVALID_ARGUMENT`.
    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::InvalidArgument, message)
    }

    /// `FORBIDDEN`.
    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::Forbidden, message)
    }

    /// `INTERNAL`, after logging the cause.
    pub fn internal(cause: impl std::fmt::Display) -> Self {
        tracing::error!(error = %cause, "internal error");
        Self::new(ErrorCode::Internal, "internal server error")
    }

    /// The `Error` frame answering request `request_id`.
    pub fn to_frame(&self, request_id: u64) -> Frame {
        let mut frame = Frame::error(request_id, self.code, self.message.clone());
        if let (Some(wait), Some(courier_protocol::pb::frame::Kind::Error(e))) =
            (self.retry_after, frame.kind.as_mut())
        {
            e.retry_after_ms = u32::try_from(wait.as_millis()).unwrap_or(u32::MAX).max(1);
        }
        frame
    }

    /// The code's short name, e.g. `bad_token`.
    pub fn name(&self) -> String {
        code_name(self.code)
    }

    /// The HTTP status that goes with the code.
    pub fn http_status(&self) -> StatusCode {
        match self.code {
            ErrorCode::Unauthenticated | ErrorCode::BadToken | ErrorCode::BadCredentials => {
                StatusCode::UNAUTHORIZED
            }
            ErrorCode::Forbidden
            | ErrorCode::Blocked
            | ErrorCode::Banned
            | ErrorCode::BannedFromGroup
            | ErrorCode::MessageRejected
            | ErrorCode::Muted => StatusCode::FORBIDDEN,
            ErrorCode::NotFound | ErrorCode::UnknownUser | ErrorCode::UnknownConversation => {
                StatusCode::NOT_FOUND
            }
            ErrorCode::AlreadyExists => StatusCode::CONFLICT,
            ErrorCode::RateLimited | ErrorCode::TooManyInFlight => StatusCode::TOO_MANY_REQUESTS,
            ErrorCode::RequestTimeout => StatusCode::REQUEST_TIMEOUT,
            ErrorCode::Overloaded | ErrorCode::GoingAway | ErrorCode::StorageUnavailable => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            ErrorCode::NotImplemented => StatusCode::NOT_IMPLEMENTED,
            ErrorCode::Internal | ErrorCode::Unspecified => StatusCode::INTERNAL_SERVER_ERROR,
            ErrorCode::FrameTooLarge | ErrorCode::TextTooLong | ErrorCode::MediaTooLarge => {
                StatusCode::PAYLOAD_TOO_LARGE
            }
            ErrorCode::MediaTypeNotAllowed => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ErrorCode::MediaRejected | ErrorCode::MediaUnavailable => {
                StatusCode::UNAVAILABLE_FOR_LEGAL_REASONS
            }
            ErrorCode::BadSignature => StatusCode::FORBIDDEN,
            ErrorCode::BeyondRetention => StatusCode::GONE,
            _ => StatusCode::BAD_REQUEST,
        }
    }
}

/// `ERROR_CODE_BAD_TOKEN` -> `bad_token`.
pub fn code_name(code: ErrorCode) -> String {
    code.as_str_name()
        .trim_start_matches("ERROR_CODE_")
        .to_ascii_lowercase()
}

impl From<StorageError> for ApiError {
    fn from(e: StorageError) -> Self {
        match e {
            StorageError::NameTaken => Self::new(ErrorCode::AlreadyExists, "user name is taken"),
            StorageError::InvalidName(why) => Self::invalid(format!("invalid user name: {why}")),
            StorageError::InvalidPassword(why) => Self::invalid(format!("invalid password: {why}")),
            StorageError::InvalidArgument(why) => Self::invalid(why),
            StorageError::BadCredentials => {
                Self::new(ErrorCode::BadCredentials, "unknown user or wrong password")
            }
            StorageError::NotParticipant => {
                Self::forbidden("not a participant of this conversation")
            }
            StorageError::ShuttingDown => {
                Self::new(ErrorCode::GoingAway, "server is shutting down")
            }
            StorageError::Recall(refusal) => refusal.into(),
            StorageError::Edit(refusal) => refusal.into(),
            StorageError::Muted { until_ms: u64::MAX } => Self::new(
                ErrorCode::Muted,
                "the group is muted: only its owner and admins may send",
            ),
            StorageError::Muted { until_ms } => Self::new(
                ErrorCode::Muted,
                format!("you are muted in this group until {until_ms} (ms since the epoch)"),
            ),
            // The disk or the device failed a write: nothing was stored, and a retry
            // may well succeed once space is back.
            e if e.is_unavailable() => {
                tracing::warn!(error = %e, "storage unavailable");
                Self::new(
                    ErrorCode::StorageUnavailable,
                    "the store cannot write now; retry later",
                )
                .retry_after(std::time::Duration::from_secs(1))
            }
            other => Self::internal(other),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = serde_json::json!({
            "code": self.code as i32,
            "name": self.name(),
            "message": self.message,
        });
        let mut response = (self.http_status(), axum::Json(body)).into_response();
        if let Some(wait) = self.retry_after {
            // Whole seconds, rounded up: `Retry-After: 0` would invite a retry storm.
            let secs = wait.as_millis().div_ceil(1000).max(1) as u64;
            response.headers_mut().insert(
                axum::http::header::RETRY_AFTER,
                axum::http::HeaderValue::from(secs),
            );
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_short_and_stable() {
        assert_eq!(code_name(ErrorCode::BadToken), "bad_token");
        assert_eq!(ErrorCode::BadToken as i32, 201);
        let e: ApiError = StorageError::NameTaken.into();
        assert_eq!(e.http_status(), StatusCode::CONFLICT);
    }

    #[test]
    fn a_rate_limit_says_when_to_retry() {
        let e = ApiError::rate_limited("slow down", std::time::Duration::from_millis(1500));
        let response = e.clone().into_response();
        assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(response.headers()["retry-after"], "2");
        match e.to_frame(7).kind {
            Some(courier_protocol::pb::frame::Kind::Error(err)) => {
                assert_eq!(err.code, ErrorCode::RateLimited as i32);
                assert_eq!(err.retry_after_ms, 1500);
            }
            other => panic!("{other:?}"),
        }
    }
}
