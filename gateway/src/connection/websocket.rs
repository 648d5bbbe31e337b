//! WebSocket sessions on the HTTP listener (`GET /v1/ws`), and on the TLS listener
//! for clients that choose `http/1.1` by ALPN (`wss://`): the upgrade is answered
//! here, then the connection runs the same session as TCP over a
//! [`courier_protocol::websocket::WsStream`] (one binary message per frame), with
//! the same handshake, heartbeats, limits, slow-consumer policy and error codes.
//!
//! Browsers send an `Origin`; `ws_allowed_origins` (exact values) restricts which
//! pages may connect, any when empty. A session is authenticated by the token in its
//! Hello frame, never by a cookie, so a foreign page gains nothing a script on any
//! machine could not do; the list is for operators who want it anyway.
//! Compression (permessage-deflate) is never negotiated.

use std::sync::Arc;

use axum::body::Body;
use axum::http::{header, HeaderMap, Method, Response, StatusCode};
use bytes::Bytes;
use courier_protocol::websocket::{accept_key, Role, WsStream, WS_SUBPROTOCOL};
use courier_protocol::ErrorCode;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::connection::service::Connections;
use crate::connection::session;
use crate::error::ApiError;
use crate::metrics::Transport;

/// What the HTTP listener needs to take WebSocket sessions.
#[derive(Clone)]
pub struct WsEndpoint {
    /// The sessions' connection layer.
    pub conns: Arc<Connections>,
    /// `Origin` values allowed to connect; any when empty.
    pub allowed_origins: Arc<[String]>,
}

fn has_token(headers: &HeaderMap, name: header::HeaderName, token: &str) -> bool {
    headers
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case(token))
}

fn refused(e: ApiError, status: StatusCode) -> Response<Body> {
    let mut response = axum::response::IntoResponse::into_response(e);
    *response.status_mut() = status;
    response
}

impl WsEndpoint {
    /// Answers an upgrade request: `101 Switching Protocols` (the caller then waits
    /// for the upgrade), or why not.
    pub fn answer(&self, method: &Method, headers: &HeaderMap) -> Response<Body> {
        if let Some(refusal) = self.refusal(method, headers) {
            return refusal;
        }
        let key = headers
            .get(header::SEC_WEBSOCKET_KEY)
            .map(|k| accept_key(k.as_bytes()))
            .unwrap_or_default();
        let mut response = Response::builder()
            .status(StatusCode::SWITCHING_PROTOCOLS)
            .header(header::UPGRADE, "websocket")
            .header(header::CONNECTION, "Upgrade")
            .header(header::SEC_WEBSOCKET_ACCEPT, key);
        if has_token(headers, header::SEC_WEBSOCKET_PROTOCOL, WS_SUBPROTOCOL) {
            response = response.header(header::SEC_WEBSOCKET_PROTOCOL, WS_SUBPROTOCOL);
        }
        response
            .body(Body::empty())
            .expect("a well-formed response")
    }

    /// Why an upgrade request is refused, if it is.
    fn refusal(&self, method: &Method, headers: &HeaderMap) -> Option<Response<Body>> {
        if method != Method::GET {
            return Some(refused(
                ApiError::invalid("a WebSocket upgrade is a GET"),
                StatusCode::METHOD_NOT_ALLOWED,
            ));
        }
        if !has_token(headers, header::UPGRADE, "websocket")
            || !has_token(headers, header::CONNECTION, "upgrade")
        {
            let mut response = refused(
                ApiError::invalid("this endpoint speaks WebSocket only"),
                StatusCode::UPGRADE_REQUIRED,
            );
            response
                .headers_mut()
                .insert(header::UPGRADE, "websocket".parse().expect("header"));
            return Some(response);
        }
        if headers
            .get(header::SEC_WEBSOCKET_VERSION)
            .is_none_or(|v| v != "13")
        {
            let mut response = refused(
                ApiError::invalid("WebSocket version 13 only"),
                StatusCode::UPGRADE_REQUIRED,
            );
            response
                .headers_mut()
                .insert(header::SEC_WEBSOCKET_VERSION, "13".parse().expect("header"));
            return Some(response);
        }
        if headers
            .get(header::SEC_WEBSOCKET_KEY)
            .is_none_or(|k| k.len() != 24)
        {
            return Some(refused(
                ApiError::invalid("a missing or malformed Sec-WebSocket-Key"),
                StatusCode::BAD_REQUEST,
            ));
        }
        if !self.allowed_origins.is_empty() {
            let origin = headers.get(header::ORIGIN).and_then(|o| o.to_str().ok());
            if !origin.is_some_and(|o| self.allowed_origins.iter().any(|a| a == o)) {
                return Some(refused(
                    ApiError::new(ErrorCode::Forbidden, "this origin may not connect"),
                    StatusCode::FORBIDDEN,
                ));
            }
        }
        None
    }

    /// Runs a session over `stream` (TCP or TLS), upgraded (`read` is what was read
    /// past the upgrade's head), until it ends.
    pub async fn run<S>(
        &self,
        stream: S,
        read: Bytes,
        shutdown: CancellationToken,
        tasks: TaskTracker,
    ) where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let conns = self.conns.clone();
        let stream = WsStream::with_read(stream, Role::Server, conns.config.max_frame_bytes, read);
        let (reader, writer) = tokio::io::split(stream);
        session::run(reader, writer, conns, shutdown, tasks, Transport::WebSocket).await;
    }
}
