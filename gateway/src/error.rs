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
}

impl ApiError {
    /// An error with `code` and `message`.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
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
        Frame::error(request_id, self.code, self.message.clone())
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
            ErrorCode::Forbidden | ErrorCode::Blocked => StatusCode::FORBIDDEN,
            ErrorCode::NotFound | ErrorCode::UnknownUser | ErrorCode::UnknownConversation => {
                StatusCode::NOT_FOUND
            }
            ErrorCode::AlreadyExists => StatusCode::CONFLICT,
            ErrorCode::RateLimited | ErrorCode::TooManyInFlight => StatusCode::TOO_MANY_REQUESTS,
            ErrorCode::Overloaded | ErrorCode::GoingAway => StatusCode::SERVICE_UNAVAILABLE,
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
        (self.http_status(), axum::Json(body)).into_response()
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
}
