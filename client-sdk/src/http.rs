//! The HTTP side of the SDK: accounts, user lookup, history pages, conversation list.

use courier_protocol::ConversationId;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::{Result, SdkError};

/// A client of the HTTP API.
#[derive(Debug, Clone)]
pub struct HttpClient {
    base: String,
    token: Option<String>,
    http: reqwest::Client,
}

/// A registered account.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserInfo {
    /// User id.
    pub user_id: u64,
    /// User name.
    pub name: String,
}

/// The answer to a login.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LoginInfo {
    /// Bearer token for the HTTP API and the binary protocol's Hello.
    pub token: String,
    /// User id.
    pub user_id: u64,
    /// User name.
    pub name: String,
    /// When the token expires (ms since the Unix epoch).
    pub expires_at_ms: u64,
}

/// One message as the HTTP API lists it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HistoryMessage {
    /// Conversation id.
    pub conversation: String,
    /// Seq in the conversation.
    pub seq: u64,
    /// Sender's user id.
    pub from: u64,
    /// Sender's device.
    #[serde(default)]
    pub from_device: String,
    /// The sender's idempotency key.
    #[serde(default)]
    pub client_msg_id: String,
    /// When the server stored it.
    pub server_time_ms: u64,
    /// The text, for text messages.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
    /// The body as JSON (`{"type": "text", ...}`).
    #[serde(default)]
    pub body: Value,
}

/// A page of history.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HistoryPage {
    /// Conversation id.
    pub conversation: String,
    /// Messages in ascending seq order.
    pub messages: Vec<HistoryMessage>,
    /// More messages lie beyond this page.
    pub has_more: bool,
}

/// Which page of history to fetch.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HistoryQuery {
    /// Messages below this seq.
    pub before: Option<u64>,
    /// Messages above this seq.
    pub after: Option<u64>,
    /// Page size (server default 20, capped by the server).
    pub limit: Option<usize>,
}

impl HttpClient {
    /// A client for the API at `base` (e.g. `http://127.0.0.1:7180`).
    pub fn new(base: impl Into<String>) -> Self {
        Self {
            base: base.into().trim_end_matches('/').to_owned(),
            token: None,
            http: reqwest::Client::new(),
        }
    }

    /// The same client, authenticating with `token`.
    pub fn with_token(mut self, token: impl Into<String>) -> Self {
        self.token = Some(token.into());
        self
    }

    /// Creates an account.
    pub async fn register(&self, name: &str, password: &str) -> Result<UserInfo> {
        let body = serde_json::json!({"name": name, "password": password});
        self.call(self.http.post(self.url("/v1/register")).json(&body))
            .await
    }

    /// Logs in and returns a token.
    pub async fn login(&self, name: &str, password: &str) -> Result<LoginInfo> {
        let body = serde_json::json!({"name": name, "password": password});
        self.call(self.http.post(self.url("/v1/login")).json(&body))
            .await
    }

    /// The account the token belongs to.
    pub async fn me(&self) -> Result<UserInfo> {
        self.call(self.http.get(self.url("/v1/me"))).await
    }

    /// Looks a user up by name.
    pub async fn user(&self, name: &str) -> Result<UserInfo> {
        self.call(self.http.get(self.url(&format!("/v1/users/{name}"))))
            .await
    }

    /// A page of a conversation's history.
    pub async fn history(
        &self,
        conversation: &ConversationId,
        q: HistoryQuery,
    ) -> Result<HistoryPage> {
        let mut req = self
            .http
            .get(self.url(&format!("/v1/conversations/{conversation}/messages")));
        let mut params = Vec::new();
        if let Some(b) = q.before {
            params.push(("before", b.to_string()));
        }
        if let Some(a) = q.after {
            params.push(("after", a.to_string()));
        }
        if let Some(l) = q.limit {
            params.push(("limit", l.to_string()));
        }
        if !params.is_empty() {
            req = req.query(&params);
        }
        self.call(req).await
    }

    /// Every message of a conversation after `after`, paging forward.
    pub async fn history_all(
        &self,
        conversation: &ConversationId,
        after: u64,
    ) -> Result<Vec<HistoryMessage>> {
        let mut out = Vec::new();
        let mut cursor = after;
        loop {
            let page = self
                .history(
                    conversation,
                    HistoryQuery {
                        after: Some(cursor),
                        limit: Some(100),
                        ..HistoryQuery::default()
                    },
                )
                .await?;
            let Some(last) = page.messages.last() else {
                break;
            };
            cursor = last.seq;
            out.extend(page.messages);
            if !page.has_more {
                break;
            }
        }
        Ok(out)
    }

    /// The caller's conversation list (raw JSON).
    pub async fn conversations(&self) -> Result<Value> {
        self.call(self.http.get(self.url("/v1/conversations")))
            .await
    }

    /// Moves the read cursor of a conversation forward; returns the cursor in force.
    pub async fn mark_read(&self, conversation: &ConversationId, seq: u64) -> Result<u64> {
        let body = serde_json::json!({"seq": seq});
        let v: Value = self
            .call(
                self.http
                    .post(self.url(&format!("/v1/conversations/{conversation}/read")))
                    .json(&body),
            )
            .await?;
        v["read_seq"]
            .as_u64()
            .ok_or_else(|| SdkError::Unexpected("no read_seq in the answer".into()))
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    async fn call<T: serde::de::DeserializeOwned>(
        &self,
        mut req: reqwest::RequestBuilder,
    ) -> Result<T> {
        if let Some(token) = &self.token {
            req = req.bearer_auth(token);
        }
        let resp = req.send().await?;
        let status = resp.status();
        if status.is_success() {
            return Ok(resp.json().await?);
        }
        let body: Value = resp.json().await.unwrap_or(Value::Null);
        Err(SdkError::Http {
            status: status.as_u16(),
            code: body["code"].as_i64().unwrap_or(0) as i32,
            name: body["name"].as_str().unwrap_or("unknown").to_owned(),
            message: body["message"].as_str().unwrap_or("").to_owned(),
        })
    }
}
