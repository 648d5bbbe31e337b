//! The Courier client SDK.
//!
//! - [`Client`]: the long-lived connection (TCP) — login with a token, send, receive
//!   [`Event`]s, pull history, sync.
//! - [`Session`]: the same, resilient: reconnects with backoff, resends unacknowledged
//!   sends, resyncs from cursors, hands over each message once and in order.
//! - [`HttpClient`]: the HTTP API — accounts, relations, groups, the conversation
//!   list, read cursors, history pages.
//!
//! ```no_run
//! # async fn demo() -> Result<(), courier_sdk::SdkError> {
//! use courier_sdk::{Client, ClientOptions, HttpClient};
//! let http = HttpClient::new("http://127.0.0.1:7180");
//! let login = http.login("alice", "correct horse").await?;
//! let (client, mut events) = Client::connect("127.0.0.1:7100", &login.token, ClientOptions::default()).await?;
//! let bob = http.clone().with_token(&login.token).user("bob").await?;
//! let receipt = client.send_text(&client.direct_with(bob.user_id)?, "hi bob").await?;
//! println!("stored as seq {}", receipt.seq);
//! while let Some(event) = events.next().await {
//!     println!("{event:?}");
//! }
//! # Ok(()) }
//! ```
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod client;
mod cursor;
mod error;
mod http;
mod session;
mod transport;
mod types;

pub use client::{
    new_client_msg_id, Client, ClientOptions, Event, Events, PushRegistration, SendReceipt,
};
pub use courier_protocol::{pb, ConversationId, ErrorCode};
pub use cursor::{CursorStore, FileCursorStore, MemoryCursorStore};
pub use error::{Result, SdkError};
pub use http::{HistoryMessage, HistoryPage, HistoryQuery, HttpClient, LoginInfo, UserInfo};
pub use session::{Connector, ServerList, Session, SessionEvent, SessionEvents, SessionOptions};
pub use transport::{client_crypto, connect_tls, connect_wss, QuicConnector, Trust, ALPN};
pub use types::{
    AddedMembers, Conversation, ConversationList, FriendRequests, Group, Media, Member, MemberList,
    NewGroup, Relation, RelationList,
};
