//! Gateway configuration: embedded defaults, then a TOML file, then `COURIER_*`
//! environment variables, then command-line flags, each overriding the one before.
//!
//! Every key of [`Config`] can be set in the TOML file and as an environment variable
//! named `COURIER_` plus the key in upper case (`COURIER_MAX_FRAME_BYTES=131072`).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Everything `courier serve` can be told. Units are in the field names.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Where the store keeps its shards.
    pub data_dir: PathBuf,
    /// TCP listener for the binary protocol (port 0 picks a free port).
    pub tcp_addr: SocketAddr,
    /// HTTP API listener.
    pub http_addr: SocketAddr,
    /// QUIC listener (UDP) for the binary protocol.
    pub quic_addr: SocketAddr,
    /// Serve QUIC.
    pub quic_enabled: bool,
    /// Receive and send buffer of the QUIC UDP socket. Every QUIC connection shares
    /// this one socket, so the kernel's default (~208 KiB) overflows under load and
    /// drops datagrams; the kernel caps it at `net.core.rmem_max`/`wmem_max`.
    pub quic_socket_buffer_bytes: usize,
    /// TLS-over-TCP listener for networks that block UDP; empty = off.
    pub tls_addr: String,
    /// PEM certificate chain for QUIC and TLS; empty = a self-signed one generated
    /// into `<data_dir>/tls/`.
    pub tls_cert_path: String,
    /// PEM private key for `tls_cert_path`.
    pub tls_key_path: String,
    /// Store shards; fixed when the data directory is created.
    pub shards: usize,
    /// Largest frame payload accepted or sent, in bytes.
    pub max_frame_bytes: usize,
    /// Longest text body, in bytes.
    pub max_text_bytes: usize,
    /// Open connections beyond which new ones are refused.
    pub max_connections: usize,
    /// Frames that may wait in one connection's outbound queue; a connection whose
    /// queue is full is closed as a slow consumer (it resyncs by seq).
    pub outbound_queue_frames: usize,
    /// Sends one connection may have in flight before its reads pause.
    pub max_in_flight_per_connection: usize,
    /// Heartbeat interval the server asks clients for, in ms.
    pub heartbeat_interval_ms: u64,
    /// Silence after which a connection is closed, in ms.
    pub idle_timeout_ms: u64,
    /// Time a new connection has to complete Hello, in ms.
    pub handshake_timeout_ms: u64,
    /// Longest one write to a client may take, in ms (capped at `idle_timeout_ms`): a
    /// peer that stops reading is closed as a slow consumer after this long. Also the
    /// TCP user timeout of every connection.
    pub write_timeout_ms: u64,
    /// An HTTP request's head (request line and headers) must arrive within this, in ms.
    pub http_header_timeout_ms: u64,
    /// An HTTP request must be answered within this, in ms (uploads excepted: their
    /// body is bounded by `http_body_timeout_ms` between chunks instead).
    pub http_request_timeout_ms: u64,
    /// A request body that sends nothing for this long is abandoned, in ms.
    pub http_body_timeout_ms: u64,
    /// An HTTP connection with no request in hand that moves no byte for this long is
    /// closed (idle keep-alive), in ms.
    pub http_idle_timeout_ms: u64,
    /// Malformed or unknown frames a connection may send before it is closed.
    pub max_bad_frames: u32,
    /// How long shutdown waits for in-flight work, in ms.
    pub shutdown_grace_ms: u64,
    /// Most members a group may have.
    pub max_group_members: u64,
    /// Who may be put in a group by someone else: `invite` (the default: everyone
    /// is invited and joins on accepting), `friends` (the adder's friends are added at
    /// once, others invited) or `anyone` (added at once). Never across a block.
    pub group_add_policy: GroupAddPolicy,
    /// Groups whose member lists are kept in memory.
    pub member_cache_groups: usize,
    /// Devices one user may have bound.
    pub max_devices_per_user: usize,
    /// What happens when a new device would exceed `max_devices_per_user`.
    pub device_limit_policy: DeviceLimitPolicy,
    /// How long a sender may recall its message, in ms.
    pub recall_window_ms: u64,
    /// How long a sender may edit its text message, in ms (0 = edits are off).
    pub edit_window_ms: u64,
    /// How many times one message may be edited.
    pub edit_max_count: u32,
    /// Groups of more members than this coalesce reaction changes: those of one
    /// `reaction_window_ms` share one event (smaller conversations get one each).
    pub reaction_coalesce_members: u64,
    /// How long a big group's reaction changes are gathered into one event, in ms.
    pub reaction_window_ms: u64,
    /// Most different reactions one message may carry.
    pub reaction_max_kinds: usize,
    /// Every group member may mention everyone (`@all`), not only owner and admins.
    pub mention_all_members: bool,
    /// Keep earlier versions of an edited message (the original and the earlier edit
    /// events) in the log; false erases them with each edit, as a recall would.
    pub edit_keep_versions: bool,
    /// A user whose last device left and who returns within this time announces
    /// nothing, in ms.
    pub presence_grace_ms: u64,
    /// Presence changes for one recipient within this window share a frame, in ms.
    pub presence_window_ms: u64,
    /// Users with more friends than this are pull-only: no presence is pushed.
    pub presence_push_max_friends: usize,
    /// Also tell one-way followers (default: mutual friends only).
    pub presence_notify_followers: bool,
    /// Presence and receipt events that may queue before new ones are dropped.
    pub presence_queue: usize,
    /// Longest presence subscription lease, in ms.
    pub presence_max_lease_ms: u64,
    /// Read receipts to others are coalesced over this window, in ms.
    pub receipt_window_ms: u64,
    /// Groups larger than this get no pushed read receipts (pull on demand).
    pub receipt_push_max_group: usize,
    /// History page size when the client names none.
    pub history_default_page: usize,
    /// Largest history page.
    pub history_max_page: usize,
    /// Largest media upload, in bytes (enforced while the upload streams in).
    pub media_max_bytes: u64,
    /// MIME types (sniffed from the bytes) that may be uploaded.
    pub media_allowed_types: Vec<String>,
    /// Uploads one user may start per minute.
    pub media_uploads_per_minute: u32,
    /// `on` (the default) or `off`: every rate limit at once (`off` is for benchmarks
    /// and load tests; also `COURIER_RATE_LIMITS=off`).
    pub rate_limits: Switch,
    /// Messages one user may send per minute (a bucket this deep, refilled over a
    /// minute).
    pub rate_sends_per_minute: u32,
    /// Messages one user may send per minute to people who are not friends and have
    /// never answered in that conversation.
    pub rate_stranger_sends_per_minute: u32,
    /// Groups one user may create per hour.
    pub rate_groups_per_hour: u32,
    /// Users one user may add or invite to groups per minute.
    pub rate_member_adds_per_minute: u32,
    /// Friend requests one user may make per hour.
    pub rate_friend_requests_per_hour: u32,
    /// Presence queries and subscriptions one user may make per minute.
    pub rate_presence_queries_per_minute: u32,
    /// Login attempts one client address may make per minute.
    pub rate_logins_per_address_per_minute: u32,
    /// Failed logins of one account (four times as many for one address) before each
    /// further failure locks it out for 1 s, 2 s, 4 s, ... up to `login_backoff_max_secs`.
    pub login_free_failures: u32,
    /// Longest login lock-out, in seconds.
    pub login_backoff_max_secs: u64,
    /// Accounts one client address may register per hour.
    pub rate_registrations_per_address_per_hour: u32,
    /// HTTP requests one user may make per minute.
    pub rate_http_per_user_per_minute: u32,
    /// HTTP requests one client address may make per minute.
    pub rate_http_per_address_per_minute: u32,
    /// Password hashes (login, registration) computed at once; 0 = half the cores.
    pub password_hash_concurrency: usize,
    /// Password hashes that may wait for a slot; past it the answer is `OVERLOADED`.
    pub password_hash_queue: usize,
    /// Lifetime of a signed download URL, in seconds.
    pub media_url_ttl_secs: u64,
    /// SHA-256 hashes (hex) refused at upload and never served.
    pub media_blocklist: Vec<String>,
    /// Moderation webhook: POST `{sha256, mime, size}`, answer
    /// `{"verdict": "approve"|"reject"|"quarantine"}`; empty = blocklist only.
    pub media_moderation_webhook: String,
    /// Blobs no message refers to are deleted after this long, in seconds.
    pub media_gc_grace_secs: u64,
    /// Bearer secret for the operator routes (`/v1/admin/...`, `/metrics`,
    /// `/v1/stats`) on the public listener; empty = they answer 403 there.
    pub admin_token: String,
    /// A second HTTP listener for operators: `/metrics`, `/v1/stats` and `/v1/health`
    /// without a token (bind it where only operators and Prometheus reach it); empty =
    /// none.
    pub admin_addr: String,
    /// Sessions over WebSocket at `GET /v1/ws` on the HTTP listener (browsers).
    pub ws_enabled: bool,
    /// `Origin` values allowed to open a WebSocket, comma-separated (exact, e.g.
    /// `https://chat.example.com`); empty = any (sessions authenticate by token,
    /// never by cookie).
    pub ws_allowed_origins: String,
    /// The web chat app at `/app/` on the HTTP listener (built into the binary).
    pub app_enabled: bool,
    /// Accounts with passwords (`/v1/register`, `/v1/login`); off when the
    /// application's backend vouches for every user with its own tokens.
    pub password_accounts: bool,
    /// Shared secret of HS256 application tokens (JWTs); empty = none accepted.
    pub jwt_hs256_secret: String,
    /// File of public keys for RS256/EdDSA application tokens: PEM blocks or a JWKS
    /// document; empty = none.
    pub jwt_public_keys: String,
    /// The `iss` application tokens must carry; empty = not checked.
    pub jwt_issuer: String,
    /// The `aud` application tokens must carry; empty = not checked.
    pub jwt_audience: String,
    /// Clock difference allowed when checking `exp` and `nbf`, in seconds.
    pub jwt_leeway_secs: u64,
    /// The claim of application tokens that holds the user's display name (set on
    /// first use and whenever it changes); empty = none.
    pub jwt_name_claim: String,
    /// Key of the HMAC-SHA-256 signature on every webhook request.
    pub webhook_secret: String,
    /// URL asked about every message before it is stored (allow, reject, rewrite);
    /// empty = off.
    pub webhook_before_send_url: String,
    /// How long a send waits for the before-send hook, in ms.
    pub webhook_before_send_timeout_ms: u64,
    /// What a send does when the before-send hook fails or times out: `allow`
    /// (fail-open) or `reject` (fail-closed).
    pub webhook_before_send_on_failure: HookFailure,
    /// URL the asynchronous events go to, in signed batches; empty = off.
    pub webhook_events_url: String,
    /// Which events: comma-separated of `after_send`, `group_changed`,
    /// `user_online`, `user_offline`.
    pub webhook_events: String,
    /// How long one delivery of events may take, in ms.
    pub webhook_events_timeout_ms: u64,
    /// How many of a conversation's newest messages history serves (0 = all);
    /// pulls past it return nothing and say where retention starts.
    pub history_retention_messages: u64,
    /// Messages older than this many days are removed by the retention job (0 = kept).
    pub history_retention_days: u64,
    /// How often the retention and media lifecycle jobs run, in seconds (0 = never).
    pub lifecycle_interval_secs: u64,
    /// Blobs older than this many days move to the cold store (0 = never).
    pub media_cold_after_days: u64,
    /// The cold blob store's directory (local backend); empty = `<data_dir>/media-cold`.
    pub media_cold_dir: String,
    /// `local` (under the data directory) or `s3` (an S3-compatible service).
    pub media_backend: String,
    /// S3 endpoint URL (empty = AWS).
    pub media_s3_endpoint: String,
    /// S3 bucket for blobs.
    pub media_s3_bucket: String,
    /// S3 bucket for the cold tier.
    pub media_s3_cold_bucket: String,
    /// S3 region.
    pub media_s3_region: String,
    /// S3 access key id.
    pub media_s3_access_key: String,
    /// S3 secret access key.
    pub media_s3_secret_key: String,
    /// Where the data lives: `sled` (the embedded store in `data_dir`) or
    /// `postgres` (the database at `postgres_url`, which several gateways share).
    pub storage_backend: StorageBackend,
    /// PostgreSQL connection string (`host=/run/postgresql dbname=courier user=courier`
    /// or `postgresql://courier@localhost/courier`) when `storage_backend = "postgres"`.
    pub postgres_url: String,
    /// Several gateways serving one deployment (off unless `nats_urls` is set).
    pub cluster: ClusterConfig,
    /// Typing notices go only to conversations of at most this many members (0 = none).
    pub typing_max_members: usize,
    /// A profile change is told to the online members of the user's groups of at
    /// most this many members (0 = friends only); members of larger groups see it
    /// when they next look.
    pub profile_notify_max_members: usize,
    /// While a user keeps typing, one notice per conversation per this many ms goes
    /// out; receivers clear it after twice this without a renewal.
    pub typing_interval_ms: u64,
    /// Offline push through APNs and FCM (the `[push]` section).
    pub push: PushConfig,
    /// Appends that may queue per store shard.
    pub store_queue_depth: usize,
    /// Most appends in one group commit.
    pub store_max_batch: usize,
    /// sled page cache for all shards, in MiB (sled holds the indexes; the messages
    /// themselves live in the commit log's segments).
    pub store_cache_mib: u64,
    /// Sends per shard remembered to recognise a resend (16 bytes of memory each): a
    /// message resent after this many later sends on its shard is stored again.
    pub store_idempotency_window: usize,
    /// Argon2id memory per password hash, in KiB.
    pub password_memory_kib: u32,
    /// Argon2id passes.
    pub password_iterations: u32,
    /// Lifetime of a login token, in seconds.
    pub token_ttl_secs: u64,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            data_dir: PathBuf::from("courier-data"),
            tcp_addr: SocketAddr::from(([127, 0, 0, 1], 7100)),
            http_addr: SocketAddr::from(([127, 0, 0, 1], 7180)),
            quic_addr: SocketAddr::from(([127, 0, 0, 1], 7100)),
            quic_socket_buffer_bytes: 8 << 20,
            quic_enabled: true,
            tls_addr: String::new(),
            tls_cert_path: String::new(),
            tls_key_path: String::new(),
            shards: 4,
            max_frame_bytes: courier_protocol::DEFAULT_MAX_FRAME_BYTES,
            max_text_bytes: 16 * 1024,
            max_connections: 100_000,
            outbound_queue_frames: 1024,
            max_in_flight_per_connection: 64,
            heartbeat_interval_ms: 30_000,
            idle_timeout_ms: 90_000,
            handshake_timeout_ms: 10_000,
            write_timeout_ms: 30_000,
            http_header_timeout_ms: 10_000,
            http_request_timeout_ms: 30_000,
            http_body_timeout_ms: 30_000,
            http_idle_timeout_ms: 30_000,
            max_bad_frames: 8,
            shutdown_grace_ms: 5_000,
            max_group_members: 2_000,
            group_add_policy: GroupAddPolicy::Invite,
            member_cache_groups: 100_000,
            max_devices_per_user: 5,
            device_limit_policy: DeviceLimitPolicy::KickOldest,
            recall_window_ms: 120_000,
            edit_window_ms: 86_400_000,
            edit_max_count: 100,
            edit_keep_versions: true,
            mention_all_members: false,
            reaction_coalesce_members: 100,
            reaction_window_ms: 500,
            reaction_max_kinds: 20,
            presence_grace_ms: 3_000,
            presence_window_ms: 250,
            presence_push_max_friends: 1_000,
            presence_notify_followers: false,
            presence_queue: 65_536,
            presence_max_lease_ms: 300_000,
            receipt_window_ms: 250,
            receipt_push_max_group: 1_000,
            history_default_page: 20,
            history_max_page: 100,
            media_max_bytes: 50 * 1024 * 1024,
            media_allowed_types: [
                "image/jpeg",
                "image/png",
                "image/gif",
                "image/webp",
                "image/heif",
                "video/mp4",
                "video/webm",
                "video/quicktime",
                "audio/mpeg",
                "audio/ogg",
                "audio/x-wav",
                "audio/aac",
                "audio/m4a",
                "audio/x-flac",
                "application/pdf",
                "application/zip",
            ]
            .map(String::from)
            .to_vec(),
            media_uploads_per_minute: 60,
            rate_limits: Switch::On,
            rate_sends_per_minute: 600,
            rate_stranger_sends_per_minute: 10,
            rate_groups_per_hour: 20,
            rate_member_adds_per_minute: 200,
            rate_friend_requests_per_hour: 60,
            rate_presence_queries_per_minute: 120,
            rate_logins_per_address_per_minute: 30,
            login_free_failures: 5,
            login_backoff_max_secs: 900,
            rate_registrations_per_address_per_hour: 20,
            rate_http_per_user_per_minute: 1200,
            rate_http_per_address_per_minute: 3000,
            password_hash_concurrency: 0,
            password_hash_queue: 64,
            media_url_ttl_secs: 7 * 24 * 3600,
            media_blocklist: Vec::new(),
            media_moderation_webhook: String::new(),
            media_gc_grace_secs: 24 * 3600,
            admin_token: String::new(),
            admin_addr: String::new(),
            ws_enabled: true,
            ws_allowed_origins: String::new(),
            app_enabled: true,
            password_accounts: true,
            jwt_hs256_secret: String::new(),
            jwt_public_keys: String::new(),
            jwt_issuer: String::new(),
            jwt_audience: String::new(),
            jwt_leeway_secs: 30,
            jwt_name_claim: "name".into(),
            webhook_secret: String::new(),
            webhook_before_send_url: String::new(),
            webhook_before_send_timeout_ms: 1_000,
            webhook_before_send_on_failure: HookFailure::Allow,
            webhook_events_url: String::new(),
            webhook_events: "after_send,group_changed,user_online,user_offline".into(),
            webhook_events_timeout_ms: 5_000,
            history_retention_messages: 0,
            history_retention_days: 0,
            lifecycle_interval_secs: 3600,
            media_cold_after_days: 0,
            media_cold_dir: String::new(),
            media_backend: "local".into(),
            media_s3_endpoint: String::new(),
            media_s3_bucket: "courier-media".into(),
            media_s3_cold_bucket: "courier-media-cold".into(),
            media_s3_region: "us-east-1".into(),
            media_s3_access_key: String::new(),
            media_s3_secret_key: String::new(),
            storage_backend: StorageBackend::Sled,
            postgres_url: String::new(),
            cluster: ClusterConfig::default(),
            typing_max_members: 100,
            profile_notify_max_members: 500,
            typing_interval_ms: 3_000,
            push: PushConfig::default(),
            store_queue_depth: 4096,
            store_max_batch: 1024,
            store_cache_mib: 64,
            store_idempotency_window: 1 << 20,
            password_memory_kib: 19 * 1024,
            password_iterations: 2,
            token_ttl_secs: 30 * 24 * 3600,
        }
    }
}

/// The `[push]` section: offline push to devices that registered a token, through
/// APNs (HTTP/2, token authentication with an ES256 key) and FCM (HTTP v1 with a
/// service account). Environment variables name its keys `COURIER_PUSH_<KEY>`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PushConfig {
    /// The APNs signing key (`AuthKey_<key id>.p8`, PEM); empty = no APNs.
    pub apns_key_path: String,
    /// The key's id (10 characters, the JWT's `kid`).
    pub apns_key_id: String,
    /// The Apple developer team id (the JWT's `iss`).
    pub apns_team_id: String,
    /// Bundle ids devices may register (comma-separated); empty = any.
    pub apns_topics: String,
    /// The production APNs endpoint.
    pub apns_endpoint: String,
    /// The development (sandbox) APNs endpoint, for tokens registered with `sandbox`.
    pub apns_sandbox_endpoint: String,
    /// The Firebase service account (the JSON file Google issues); empty = no FCM.
    pub fcm_service_account_path: String,
    /// The FCM endpoint (`<endpoint>/v1/projects/<project>/messages:send`).
    pub fcm_endpoint: String,
    /// A PEM file of extra root certificates the push clients trust (a TLS-inspecting
    /// proxy, or the test servers); empty = the public roots only.
    pub ca_file: String,
    /// How long a push waits for more messages of the same conversation, which it
    /// then stands for (one push per burst), in ms.
    pub coalesce_ms: u64,
    /// How long an online device has to acknowledge a delivery before it is pushed
    /// to anyway, in ms.
    pub ack_window_ms: u64,
    /// Show the message's text in the notification; off: "New message" only.
    pub show_preview: bool,
    /// How long one request to APNs or FCM may take, in ms.
    pub timeout_ms: u64,
    /// Requests to APNs and FCM in flight at once.
    pub concurrency: usize,
}

impl Default for PushConfig {
    fn default() -> Self {
        Self {
            apns_key_path: String::new(),
            apns_key_id: String::new(),
            apns_team_id: String::new(),
            apns_topics: String::new(),
            apns_endpoint: "https://api.push.apple.com".into(),
            apns_sandbox_endpoint: "https://api.sandbox.push.apple.com".into(),
            fcm_service_account_path: String::new(),
            fcm_endpoint: "https://fcm.googleapis.com".into(),
            ca_file: String::new(),
            coalesce_ms: 300,
            ack_window_ms: 3_000,
            show_preview: true,
            timeout_ms: 10_000,
            concurrency: 32,
        }
    }
}

impl PushConfig {
    /// Whether APNs is configured.
    pub fn apns_enabled(&self) -> bool {
        !self.apns_key_path.is_empty()
    }

    /// Whether FCM is configured.
    pub fn fcm_enabled(&self) -> bool {
        !self.fcm_service_account_path.is_empty()
    }

    /// Whether any push service is configured.
    pub fn enabled(&self) -> bool {
        self.apns_enabled() || self.fcm_enabled()
    }

    fn validate(&self) -> Result<(), ConfigError> {
        if self.apns_enabled() && (self.apns_key_id.is_empty() || self.apns_team_id.is_empty()) {
            return Err(ConfigError::Invalid(
                "push.apns_key_path needs push.apns_key_id and push.apns_team_id",
            ));
        }
        let urls = [
            &self.apns_endpoint,
            &self.apns_sandbox_endpoint,
            &self.fcm_endpoint,
        ];
        if urls
            .iter()
            .any(|u| !u.starts_with("https://") && !u.starts_with("http://"))
        {
            return Err(ConfigError::Invalid("push endpoints must be http(s) URLs"));
        }
        if self.coalesce_ms > 60_000 || self.ack_window_ms > 600_000 {
            return Err(ConfigError::Invalid(
                "push.coalesce_ms must be at most 60000 and push.ack_window_ms at most 600000",
            ));
        }
        if !(100..=120_000).contains(&self.timeout_ms) || !(1..=1024).contains(&self.concurrency) {
            return Err(ConfigError::Invalid(
                "push.timeout_ms must be 100..=120000 and push.concurrency 1..=1024",
            ));
        }
        Ok(())
    }
}

/// The `[cluster]` section: this gateway is one node of several, which share a
/// PostgreSQL database and reach each other's devices over NATS. Environment
/// variables name its keys `COURIER_CLUSTER_<KEY>` (`COURIER_CLUSTER_NODE_ID=gw1`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ClusterConfig {
    /// This node's name, unique in the deployment: letters, digits, `-` and `_`.
    pub node_id: String,
    /// NATS servers, comma-separated (`nats://127.0.0.1:4222,nats://127.0.0.1:4223`);
    /// empty: no cluster (one process).
    pub nats_urls: String,
    /// First token of every subject the nodes use (deployments sharing one NATS
    /// cluster pick different ones).
    pub subject_prefix: String,
    /// How often a node renews its lease, in ms.
    pub heartbeat_ms: u64,
    /// A node not heard from for this long is gone: its devices leave the directory
    /// (presence goes offline, nothing is routed to it), in ms.
    pub lease_ms: u64,
    /// How long a device coming online waits for every live node to learn of it
    /// before its Welcome goes out anyway, in ms.
    pub ack_timeout_ms: u64,
    /// At start, how long a node listens for the others before it asks each for its
    /// directory entries, in ms.
    pub join_window_ms: u64,
    /// Publications to other nodes that may wait for the NATS connection; past it
    /// they are dropped and counted (devices catch up by seq).
    pub publish_queue: usize,
    /// How long a send forwarded to the node that owns its conversation waits for the
    /// answer before the client is told to retry, in ms.
    pub forward_timeout_ms: u64,
}

impl Default for ClusterConfig {
    fn default() -> Self {
        Self {
            node_id: String::new(),
            nats_urls: String::new(),
            subject_prefix: "courier".into(),
            heartbeat_ms: 1000,
            lease_ms: 5000,
            ack_timeout_ms: 1000,
            join_window_ms: 300,
            publish_queue: 65_536,
            forward_timeout_ms: 5000,
        }
    }
}

impl ClusterConfig {
    /// Whether this gateway is one node of a cluster.
    pub fn enabled(&self) -> bool {
        !self.nats_urls.trim().is_empty()
    }

    /// The NATS server URLs.
    pub fn urls(&self) -> Vec<String> {
        self.nats_urls
            .split(',')
            .map(str::trim)
            .filter(|u| !u.is_empty())
            .map(str::to_owned)
            .collect()
    }

    fn validate(&self) -> Result<(), ConfigError> {
        let token_ok = |t: &str| {
            !t.is_empty()
                && t.len() <= 64
                && t.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        };
        if !self.enabled() {
            return Ok(());
        }
        if !token_ok(&self.node_id) {
            return Err(ConfigError::Invalid(
                "cluster.node_id must be 1..=64 letters, digits, '-' or '_'",
            ));
        }
        if !token_ok(&self.subject_prefix) {
            return Err(ConfigError::Invalid(
                "cluster.subject_prefix must be 1..=64 letters, digits, '-' or '_'",
            ));
        }
        if self.heartbeat_ms == 0 || self.lease_ms <= self.heartbeat_ms {
            return Err(ConfigError::Invalid(
                "cluster.lease_ms must exceed cluster.heartbeat_ms",
            ));
        }
        if self.ack_timeout_ms == 0 || self.publish_queue == 0 || self.forward_timeout_ms == 0 {
            return Err(ConfigError::Invalid(
                "cluster.ack_timeout_ms, publish_queue and forward_timeout_ms must be positive",
            ));
        }
        Ok(())
    }
}

/// What a synchronous webhook's failure means for the request it was asked about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HookFailure {
    /// Go on as if it had allowed (fail-open).
    Allow,
    /// Refuse (fail-closed).
    Reject,
}

/// How users come to be in a group someone else manages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GroupAddPolicy {
    /// Everyone added is invited and joins on accepting.
    Invite,
    /// The adder's friends join at once; others are invited.
    Friends,
    /// Everyone added joins at once.
    Anyone,
}

/// Which storage backend the gateway runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StorageBackend {
    /// The embedded, sharded store in `data_dir` (one gateway process).
    Sled,
    /// PostgreSQL at `postgres_url` (any number of gateway processes).
    Postgres,
}

/// A feature switch: `on` or `off`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Switch {
    /// Enforced.
    On,
    /// Not enforced.
    Off,
}

/// What to do when a login from a new device would exceed the device cap.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeviceLimitPolicy {
    /// Unbind the least recently seen device and kick its session.
    KickOldest,
    /// Refuse the new login with `DEVICE_LIMIT`.
    RefuseNew,
}

/// Why a configuration cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The TOML file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The TOML file or an environment variable does not parse.
    #[error("invalid configuration: {0}")]
    Parse(String),
    /// A value is out of range.
    #[error("invalid configuration: {0}")]
    Invalid(&'static str),
}

/// The admin token of [`Config::for_tests`].
pub const TEST_ADMIN_TOKEN: &str = "courier-test-admin-token";

impl Config {
    /// Defaults for tests: ephemeral loopback ports, the given data directory, cheap
    /// password hashing.
    pub fn for_tests(data_dir: impl Into<PathBuf>) -> Self {
        Self {
            data_dir: data_dir.into(),
            tcp_addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            http_addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            quic_addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            shards: 2,
            store_cache_mib: 16,
            password_memory_kib: 64,
            password_iterations: 1,
            shutdown_grace_ms: 2_000,
            // The suites register hundreds of users and send thousands of messages
            // from one loopback address, and build groups by adding members; the
            // abuse suite turns both defaults back on.
            rate_limits: Switch::Off,
            group_add_policy: GroupAddPolicy::Anyone,
            admin_token: TEST_ADMIN_TOKEN.into(),
            ..Self::default()
        }
    }

    /// Loads defaults, then `file` (if any), then `COURIER_*` variables from `env`.
    pub fn load(
        file: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Self, ConfigError> {
        let mut table = match toml::Value::try_from(Config::default()) {
            Ok(toml::Value::Table(t)) => t,
            _ => unreachable!("Config serialises to a table"),
        };
        if let Some(path) = file {
            let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                path: path.to_owned(),
                source,
            })?;
            let from_file: toml::Table = text
                .parse()
                .map_err(|e: toml::de::Error| ConfigError::Parse(e.to_string()))?;
            for (k, v) in from_file {
                if !table.contains_key(&k) {
                    return Err(ConfigError::Parse(format!(
                        "unknown key `{k}` in {}",
                        path.display()
                    )));
                }
                table.insert(k, v);
            }
        }
        for (name, value) in env {
            let Some(key) = name.strip_prefix("COURIER_") else {
                continue;
            };
            let key = key.to_ascii_lowercase();
            // `COURIER_CLUSTER_NODE_ID` sets `node_id` in the `[cluster]` table.
            let (table, key) = if table.contains_key(&key) {
                (&mut table, key)
            } else {
                match section_key(&mut table, &key) {
                    Some(found) => found,
                    None => continue,
                }
            };
            let current = &table[&key];
            let parsed = match current {
                toml::Value::Integer(_) => value
                    .trim()
                    .parse::<i64>()
                    .map(toml::Value::Integer)
                    .map_err(|_| ConfigError::Parse(format!("{name} must be an integer"))),
                toml::Value::Boolean(_) => value
                    .trim()
                    .parse::<bool>()
                    .map(toml::Value::Boolean)
                    .map_err(|_| ConfigError::Parse(format!("{name} must be true or false"))),
                _ => Ok(toml::Value::String(value)),
            }?;
            table.insert(key, parsed);
        }
        let config: Config = toml::Value::Table(table)
            .try_into()
            .map_err(|e: toml::de::Error| ConfigError::Parse(e.to_string()))?;
        config.validate()?;
        Ok(config)
    }

    /// The origins `ws_allowed_origins` lists.
    pub fn ws_origins(&self) -> Vec<String> {
        self.ws_allowed_origins
            .split(',')
            .map(str::trim)
            .filter(|o| !o.is_empty())
            .map(str::to_owned)
            .collect()
    }

    /// Checks ranges that would make the server misbehave.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.cluster.validate()?;
        self.push.validate()?;
        if self.cluster.enabled() && self.storage_backend != StorageBackend::Postgres {
            return Err(ConfigError::Invalid(
                "a cluster needs storage_backend = \"postgres\" (sled belongs to one process)",
            ));
        }
        if self.storage_backend == StorageBackend::Postgres && self.postgres_url.trim().is_empty() {
            return Err(ConfigError::Invalid(
                "storage_backend = \"postgres\" needs postgres_url",
            ));
        }
        if !self.jwt_hs256_secret.is_empty() && self.jwt_hs256_secret.len() < 32 {
            return Err(ConfigError::Invalid(
                "jwt_hs256_secret must be at least 32 bytes",
            ));
        }
        let hooks = [
            (
                &self.webhook_before_send_url,
                self.webhook_before_send_timeout_ms,
                10..=30_000,
            ),
            (
                &self.webhook_events_url,
                self.webhook_events_timeout_ms,
                100..=60_000,
            ),
        ];
        for (url, timeout_ms, allowed) in hooks.into_iter().filter(|h| !h.0.is_empty()) {
            if !url.starts_with("http://") && !url.starts_with("https://") {
                return Err(ConfigError::Invalid("webhook URLs must be http(s) URLs"));
            }
            if self.webhook_secret.len() < 16 {
                return Err(ConfigError::Invalid(
                    "webhooks need a webhook_secret of at least 16 bytes",
                ));
            }
            if !allowed.contains(&timeout_ms) {
                return Err(ConfigError::Invalid(
                    "webhook timeouts must be 10..=30000 ms (before send), 100..=60000 ms (events)",
                ));
            }
        }
        if self.reaction_window_ms > 60_000 {
            return Err(ConfigError::Invalid(
                "reaction_window_ms must be at most 60000",
            ));
        }
        if !(1..=100).contains(&self.reaction_max_kinds) {
            return Err(ConfigError::Invalid("reaction_max_kinds must be 1..=100"));
        }
        if !(1..=1_000).contains(&self.edit_max_count) {
            return Err(ConfigError::Invalid("edit_max_count must be 1..=1000"));
        }
        if !(100..=60_000).contains(&self.typing_interval_ms) {
            return Err(ConfigError::Invalid(
                "typing_interval_ms must be 100..=60000",
            ));
        }
        if self.jwt_leeway_secs > 600 {
            return Err(ConfigError::Invalid("jwt_leeway_secs must be at most 600"));
        }
        if self.shards == 0 || self.shards > 1024 {
            return Err(ConfigError::Invalid("shards must be 1..=1024"));
        }
        if self.max_frame_bytes < 1024 || self.max_frame_bytes > 16 * 1024 * 1024 {
            return Err(ConfigError::Invalid(
                "max_frame_bytes must be 1 KiB..=16 MiB",
            ));
        }
        if self.max_text_bytes == 0 || self.max_text_bytes >= self.max_frame_bytes {
            return Err(ConfigError::Invalid(
                "max_text_bytes must be positive and below max_frame_bytes",
            ));
        }
        if self.outbound_queue_frames == 0 || self.max_in_flight_per_connection == 0 {
            return Err(ConfigError::Invalid("queue sizes must be positive"));
        }
        if self.heartbeat_interval_ms == 0 || self.idle_timeout_ms <= self.heartbeat_interval_ms {
            return Err(ConfigError::Invalid(
                "idle_timeout_ms must exceed heartbeat_interval_ms",
            ));
        }
        if self.write_timeout_ms == 0 {
            return Err(ConfigError::Invalid("write_timeout_ms must be positive"));
        }
        if [
            self.http_header_timeout_ms,
            self.http_request_timeout_ms,
            self.http_body_timeout_ms,
            self.http_idle_timeout_ms,
        ]
        .contains(&0)
        {
            return Err(ConfigError::Invalid("HTTP timeouts must be positive"));
        }
        if self.max_group_members < 2 || self.max_group_members > 1_000_000 {
            return Err(ConfigError::Invalid(
                "max_group_members must be 2..=1000000",
            ));
        }
        if !self.tls_addr.is_empty() && self.tls_addr.parse::<SocketAddr>().is_err() {
            return Err(ConfigError::Invalid("tls_addr must be empty or an address"));
        }
        if !self.admin_addr.is_empty() && self.admin_addr.parse::<SocketAddr>().is_err() {
            return Err(ConfigError::Invalid(
                "admin_addr must be empty or an address",
            ));
        }
        if self.max_devices_per_user == 0 {
            return Err(ConfigError::Invalid(
                "max_devices_per_user must be at least 1",
            ));
        }
        if self.history_default_page == 0 || self.history_default_page > self.history_max_page {
            return Err(ConfigError::Invalid(
                "history_default_page must be 1..=history_max_page",
            ));
        }
        Ok(())
    }

    /// The PostgreSQL backend's configuration this gateway configuration implies.
    pub fn postgres_config(&self) -> courier_storage_pg::PgConfig {
        let mut pg = courier_storage_pg::PgConfig::new(&self.postgres_url);
        pg.queue_depth = self.store_queue_depth;
        pg.max_batch = self.store_max_batch;
        pg.max_page = self.history_max_page;
        pg.password = courier_storage::PasswordParams {
            memory_kib: self.password_memory_kib,
            iterations: self.password_iterations,
            parallelism: 1,
        };
        pg.token_ttl = std::time::Duration::from_secs(self.token_ttl_secs);
        pg
    }

    /// The store configuration this gateway configuration implies.
    pub fn store_config(&self) -> courier_storage::StoreConfig {
        let mut store = courier_storage::StoreConfig::new(&self.data_dir);
        store.shards = self.shards;
        store.queue_depth = self.store_queue_depth;
        store.max_batch = self.store_max_batch;
        store.cache_bytes = self.store_cache_mib * 1024 * 1024;
        store.idempotency_window = self.store_idempotency_window;
        store.max_page = self.history_max_page;
        store.password = courier_storage::PasswordParams {
            memory_kib: self.password_memory_kib,
            iterations: self.password_iterations,
            parallelism: 1,
        };
        store.token_ttl = Duration::from_secs(self.token_ttl_secs);
        store
    }

    /// `heartbeat_interval_ms` as a duration.
    pub fn heartbeat_interval(&self) -> Duration {
        Duration::from_millis(self.heartbeat_interval_ms)
    }

    /// `idle_timeout_ms` as a duration.
    pub fn idle_timeout(&self) -> Duration {
        Duration::from_millis(self.idle_timeout_ms)
    }

    /// `handshake_timeout_ms` as a duration.
    pub fn handshake_timeout(&self) -> Duration {
        Duration::from_millis(self.handshake_timeout_ms)
    }

    /// `write_timeout_ms` (at most `idle_timeout_ms`) as a duration.
    pub fn write_timeout(&self) -> Duration {
        Duration::from_millis(self.write_timeout_ms.min(self.idle_timeout_ms))
    }

    /// The limits of the HTTP listener.
    pub fn http_limits(&self) -> crate::connection::http::HttpLimits {
        crate::connection::http::HttpLimits {
            header_timeout: Duration::from_millis(self.http_header_timeout_ms),
            idle_timeout: Duration::from_millis(self.http_idle_timeout_ms),
            grace: self.shutdown_grace(),
        }
    }

    /// How many password hashes may run at once.
    pub fn password_hash_slots(&self) -> usize {
        match self.password_hash_concurrency {
            0 => std::thread::available_parallelism()
                .map_or(1, |n| n.get() / 2)
                .max(1),
            n => n,
        }
    }

    /// `shutdown_grace_ms` as a duration.
    pub fn shutdown_grace(&self) -> Duration {
        Duration::from_millis(self.shutdown_grace_ms)
    }
}

/// The section table and key an environment variable's key names inside a section
/// (`cluster_node_id` -> the `[cluster]` table, `node_id`), if any.
fn section_key<'t>(table: &'t mut toml::Table, key: &str) -> Option<(&'t mut toml::Table, String)> {
    let (section, inner) = table.iter().find_map(|(name, value)| {
        let inner = key.strip_prefix(name.as_str())?.strip_prefix('_')?;
        let toml::Value::Table(t) = value else {
            return None;
        };
        t.contains_key(inner)
            .then(|| (name.clone(), inner.to_owned()))
    })?;
    match table.get_mut(&section) {
        Some(toml::Value::Table(t)) => Some((t, inner)),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layers_file_then_environment() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("courier.toml");
        std::fs::write(
            &file,
            "shards = 8\nmax_text_bytes = 1000\ndata_dir = \"/tmp/x\"\n",
        )
        .unwrap();
        let env = vec![
            ("COURIER_SHARDS".to_string(), "16".to_string()),
            ("COURIER_TCP_ADDR".to_string(), "127.0.0.1:9999".to_string()),
            ("UNRELATED".to_string(), "1".to_string()),
        ];
        let c = Config::load(Some(&file), env).unwrap();
        assert_eq!(c.shards, 16);
        assert_eq!(c.max_text_bytes, 1000);
        assert_eq!(c.data_dir, PathBuf::from("/tmp/x"));
        assert_eq!(c.tcp_addr, "127.0.0.1:9999".parse().unwrap());
        assert_eq!(c.http_addr, Config::default().http_addr);
    }

    #[test]
    fn rejects_unknown_keys_and_bad_values() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("courier.toml");
        std::fs::write(&file, "shardz = 8\n").unwrap();
        assert!(Config::load(Some(&file), Vec::new()).is_err());
        let env = vec![("COURIER_SHARDS".to_string(), "many".to_string())];
        assert!(Config::load(None, env).is_err());
        let env = vec![("COURIER_SHARDS".to_string(), "0".to_string())];
        assert!(Config::load(None, env).is_err());
        assert_eq!(Config::load(None, Vec::new()).unwrap(), Config::default());
    }

    #[test]
    fn the_cluster_section_is_set_by_variables_and_checked() {
        let var = |k: &str, v: &str| (k.to_string(), v.to_string());
        let pg = [
            var("COURIER_STORAGE_BACKEND", "postgres"),
            var("COURIER_POSTGRES_URL", "host=/tmp"),
        ];
        let cluster = [
            var("COURIER_CLUSTER_NODE_ID", "gw-1"),
            var(
                "COURIER_CLUSTER_NATS_URLS",
                "nats://127.0.0.1:4222, nats://127.0.0.1:4223",
            ),
            var("COURIER_CLUSTER_LEASE_MS", "3000"),
        ];
        let config = Config::load(None, pg.iter().chain(&cluster).cloned()).unwrap();
        assert!(config.cluster.enabled());
        assert_eq!(config.cluster.node_id, "gw-1");
        assert_eq!(config.cluster.lease_ms, 3000);
        assert_eq!(
            config.cluster.urls(),
            ["nats://127.0.0.1:4222", "nats://127.0.0.1:4223"]
        );
        let err = Config::load(None, cluster.iter().cloned()).unwrap_err();
        assert!(err.to_string().contains("postgres"), "{err}");
        let bad_id = [var("COURIER_CLUSTER_NODE_ID", "gw.1")];
        let err = Config::load(None, pg.iter().chain(&cluster).chain(&bad_id).cloned());
        assert!(err.unwrap_err().to_string().contains("node_id"));
        assert!(!Config::default().cluster.enabled());
    }

    #[test]
    fn the_postgres_backend_is_chosen_by_variables_and_needs_a_url() {
        assert_eq!(Config::default().storage_backend, StorageBackend::Sled);
        let backend = || {
            (
                "COURIER_STORAGE_BACKEND".to_string(),
                "postgres".to_string(),
            )
        };
        assert!(Config::load(None, vec![backend()]).is_err());
        let url = ("COURIER_POSTGRES_URL".to_string(), "host=/tmp".to_string());
        let config = Config::load(None, vec![backend(), url]).unwrap();
        assert_eq!(config.storage_backend, StorageBackend::Postgres);
        assert_eq!(config.postgres_config().url, "host=/tmp");
        let bad = ("COURIER_STORAGE_BACKEND".to_string(), "mongodb".to_string());
        assert!(Config::load(None, vec![bad]).is_err());
    }

    #[test]
    fn rate_limits_are_on_by_default_and_one_variable_turns_them_off() {
        assert_eq!(Config::default().rate_limits, Switch::On);
        let env = vec![("COURIER_RATE_LIMITS".to_string(), "off".to_string())];
        assert_eq!(Config::load(None, env).unwrap().rate_limits, Switch::Off);
        let env = vec![("COURIER_RATE_LIMITS".to_string(), "maybe".to_string())];
        assert!(Config::load(None, env).is_err());
    }
}
