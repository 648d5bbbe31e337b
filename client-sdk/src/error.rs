//! The SDK's error type.

use courier_protocol::ErrorCode;

/// What can go wrong for a client.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SdkError {
    /// The connection failed or could not be made.
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
    /// The server sent bytes that are not a valid frame.
    #[error("protocol: {0}")]
    Codec(#[from] courier_protocol::CodecError),
    /// The server refused a request over the binary protocol.
    #[error("server error {code:?}: {message}")]
    Server {
        /// The stable error code.
        code: ErrorCode,
        /// The server's explanation.
        message: String,
        /// With `RATE_LIMITED`, `OVERLOADED` and `STORAGE_UNAVAILABLE`: how long to
        /// wait before trying again (0: not said).
        retry_after_ms: u32,
    },
    /// The HTTP API refused a request.
    #[error("http {status}: {name} ({code}): {message}")]
    Http {
        /// HTTP status.
        status: u16,
        /// Numeric error code (see [`ErrorCode`]).
        code: i32,
        /// Short code name.
        name: String,
        /// The server's explanation.
        message: String,
    },
    /// The HTTP request itself failed.
    #[error("http transport: {0}")]
    HttpTransport(#[from] reqwest::Error),
    /// The session ended (kicked, server going away, network gone).
    #[error("connection closed{}", .0.as_ref().map(|(c, r)| format!(": {c:?} {r}")).unwrap_or_default())]
    Closed(Option<(ErrorCode, String)>),
    /// No answer within the request timeout.
    #[error("request timed out")]
    Timeout,
    /// The server answered something that makes no sense here.
    #[error("unexpected answer: {0}")]
    Unexpected(String),
}

impl SdkError {
    /// Whether the same request may succeed if made again later: the server was
    /// saturated, limited the caller, or could not write, and did nothing.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self.code(),
            Some(ErrorCode::RateLimited | ErrorCode::Overloaded | ErrorCode::StorageUnavailable)
        )
    }

    /// How long the server asked to wait before a retry, if it said.
    pub fn retry_after(&self) -> Option<std::time::Duration> {
        match self {
            SdkError::Server { retry_after_ms, .. } if *retry_after_ms > 0 => {
                Some(std::time::Duration::from_millis(u64::from(*retry_after_ms)))
            }
            _ => None,
        }
    }

    /// The server's error code, for errors that carry one.
    pub fn code(&self) -> Option<ErrorCode> {
        match self {
            SdkError::Server { code, .. } => Some(*code),
            SdkError::Http { code, .. } => ErrorCode::try_from(*code).ok(),
            SdkError::Closed(Some((code, _))) => Some(*code),
            _ => None,
        }
    }
}

/// Shorthand for results of this crate.
pub type Result<T, E = SdkError> = std::result::Result<T, E>;
