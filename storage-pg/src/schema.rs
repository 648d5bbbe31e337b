//! The schema, as numbered migrations embedded in the binary and applied at open.
//!
//! Each migration runs in its own transaction under an advisory lock, so that
//! gateways starting together against one database apply each exactly once.

use tokio_postgres::Client;

use crate::error::pg;
use courier_storage::Result;

/// Key of the advisory lock migrations take (any constant all gateways agree on).
const MIGRATION_LOCK: i64 = 0x636f_7572_6965_7231;

/// The migrations, oldest first; a migration is never edited once released.
const MIGRATIONS: &[(i32, &str)] = &[
    (
        1,
        r"
    -- One row per conversation: its seq counter, the row a batch locks to append.
    CREATE TABLE conversations (
        id text PRIMARY KEY,
        last_seq bigint NOT NULL DEFAULT 0,
        first_retained bigint NOT NULL DEFAULT 1,
        last_activity bigint NOT NULL DEFAULT 0
    );
    CREATE TABLE messages (
        conv text NOT NULL,
        seq bigint NOT NULL,
        sender bigint NOT NULL,
        sender_device text NOT NULL,
        client_msg_id text NOT NULL,
        server_time_ms bigint NOT NULL,
        reply_to_seq bigint NOT NULL,
        body bytea NOT NULL,
        recalled_by bigint,
        recalled_at_ms bigint,
        PRIMARY KEY (conv, seq)
    );
    -- A resend of a stored message finds it here (checked under the conversation's lock).
    CREATE UNIQUE INDEX messages_idempotency ON messages (conv, sender, client_msg_id);
    -- Who has ever sent in a conversation (outlives retention).
    CREATE TABLE conversation_senders (
        conv text NOT NULL,
        sender bigint NOT NULL,
        PRIMARY KEY (conv, sender)
    );
    -- Group membership as the message path checks it (a later migration adds the
    -- rest of a member's record with the group capabilities).
    CREATE TABLE group_members (
        group_id bigint NOT NULL,
        user_id bigint NOT NULL,
        PRIMARY KEY (group_id, user_id)
    );
    -- Orders conversations by when they last moved, across every gateway.
    CREATE SEQUENCE activity;
    ",
    ),
    (
        2,
        r"
    CREATE TABLE accounts (
        id bigint PRIMARY KEY,
        name text NOT NULL UNIQUE,
        password_hash text NOT NULL,
        created_ms bigint NOT NULL
    );
    -- Tokens by their SHA-256 only: a copy of the database leaks no live token.
    CREATE TABLE tokens (
        hash bytea PRIMARY KEY,
        user_id bigint NOT NULL,
        expires_ms bigint NOT NULL
    );
    CREATE INDEX tokens_user ON tokens (user_id);
    CREATE INDEX tokens_expiry ON tokens (expires_ms);
    ",
    ),
    (
        3,
        r"
    -- A user's entry for each conversation in their list: cursors and flags.
    CREATE TABLE user_conversations (
        user_id bigint NOT NULL,
        conv text NOT NULL,
        read_seq bigint NOT NULL DEFAULT 0,
        delivered_seq bigint NOT NULL DEFAULT 0,
        joined_seq bigint NOT NULL DEFAULT 0,
        muted boolean NOT NULL DEFAULT false,
        pinned boolean NOT NULL DEFAULT false,
        created_ms bigint NOT NULL,
        since_seq bigint NOT NULL DEFAULT 0,
        PRIMARY KEY (user_id, conv)
    );
    ",
    ),
    (
        4,
        r"
    -- The devices a user signed in from, with the tokens each used (oldest first),
    -- which removing the device revokes.
    CREATE TABLE devices (
        user_id bigint NOT NULL,
        device_id text NOT NULL,
        platform integer NOT NULL,
        first_seen_ms bigint NOT NULL,
        last_seen_ms bigint NOT NULL,
        tokens bytea[] NOT NULL DEFAULT '{}',
        PRIMARY KEY (user_id, device_id)
    );
    ",
    ),
    (
        5,
        r"
    -- Each side of a pair is its user's view (courier_storage::Relation); both
    -- change in one transaction under the pair's advisory lock. An empty view is
    -- deleted.
    CREATE TABLE relations (
        user_id bigint NOT NULL,
        peer_id bigint NOT NULL,
        friend boolean NOT NULL,
        request_sent boolean NOT NULL,
        request_received boolean NOT NULL,
        following boolean NOT NULL,
        followed_by boolean NOT NULL,
        blocking boolean NOT NULL,
        blocked_by boolean NOT NULL,
        since_ms bigint NOT NULL,
        PRIMARY KEY (user_id, peer_id)
    );
    ",
    ),
    (
        6,
        r"
    CREATE SEQUENCE group_ids;
    -- Written only by a change decided under the group's conversation lock, in
    -- order with its messages (courier_storage::group_rules).
    CREATE TABLE groups (
        id bigint PRIMARY KEY,
        name text NOT NULL,
        owner bigint NOT NULL,
        join_policy smallint NOT NULL,
        history_visible boolean NOT NULL,
        member_count bigint NOT NULL,
        created_ms bigint NOT NULL
    );
    ALTER TABLE group_members
        ADD COLUMN role smallint NOT NULL DEFAULT 1,
        ADD COLUMN joined_seq bigint NOT NULL DEFAULT 0,
        ADD COLUMN joined_ms bigint NOT NULL DEFAULT 0,
        ADD COLUMN since_seq bigint NOT NULL DEFAULT 0;
    CREATE TABLE invitations (
        user_id bigint NOT NULL,
        group_id bigint NOT NULL,
        inviter bigint NOT NULL,
        created_ms bigint NOT NULL,
        PRIMARY KEY (user_id, group_id)
    );
    -- Media records: the bytes live in the gateway's blob store.
    CREATE TABLE blobs (
        sha256 text PRIMARY KEY,
        size bigint NOT NULL,
        mime text NOT NULL,
        width integer NOT NULL,
        height integer NOT NULL,
        created_ms bigint NOT NULL,
        status smallint NOT NULL,
        referenced boolean NOT NULL
    );
    CREATE TABLE blob_owners (
        sha256 text NOT NULL,
        user_id bigint NOT NULL,
        PRIMARY KEY (sha256, user_id)
    );
    ",
    ),
    (
        7,
        r"
    -- Set while an operator bans the user (ms since the epoch): no login, no token.
    ALTER TABLE accounts ADD COLUMN banned_ms bigint;
    ",
    ),
    (
        8,
        r"
    -- A device's push registration (APNs or FCM), and the credential it was made with.
    ALTER TABLE devices
        ADD COLUMN push_provider smallint,
        ADD COLUMN push_token text,
        ADD COLUMN push_app text,
        ADD COLUMN push_sandbox boolean,
        ADD COLUMN push_credential bytea,
        ADD COLUMN push_expires_ms bigint,
        ADD COLUMN push_registered_ms bigint;
    -- A token has one holder: registering it elsewhere takes it from the old one.
    CREATE INDEX devices_push_token ON devices (push_token) WHERE push_token IS NOT NULL;
    ",
    ),
    (
        9,
        r"
    -- The name shown for the user (its own, or from the application's token).
    ALTER TABLE accounts ADD COLUMN display_name text;
    ",
    ),
    (
        10,
        r"
    -- Edits: an edit event names the message it edits (edit_of); the edited message
    -- names its latest edit event (edit_seq) and says who, when and how often.
    ALTER TABLE messages
        ADD COLUMN edit_of bigint,
        ADD COLUMN edit_seq bigint,
        ADD COLUMN edited_by bigint,
        ADD COLUMN edited_at_ms bigint,
        ADD COLUMN edit_count integer NOT NULL DEFAULT 0;
    CREATE INDEX messages_edit_of ON messages (conv, edit_of) WHERE edit_of IS NOT NULL;
    ",
    ),
    (
        11,
        r"
    -- Reactions: one row per user, message and emoji.
    CREATE TABLE reactions (
        conv text NOT NULL,
        seq bigint NOT NULL,
        emoji text NOT NULL,
        user_id bigint NOT NULL,
        at_ms bigint NOT NULL,
        PRIMARY KEY (conv, seq, emoji, user_id)
    );
    ",
    ),
    (
        12,
        r"
    -- Who a message mentions (0 = everyone), for the mention counts.
    ALTER TABLE messages ADD COLUMN mentions bigint[];
    ",
    ),
    (
        13,
        r"
    -- What one user removed from its own view: single messages, and everything up
    -- to a seq.
    CREATE TABLE user_hidden (
        user_id bigint NOT NULL,
        conv text NOT NULL,
        seq bigint NOT NULL,
        PRIMARY KEY (user_id, conv, seq)
    );
    -- One row per user and conversation whose view changed: the cleared seq, and
    -- the view version of the last change (so devices learn what changed).
    CREATE TABLE user_cleared (
        user_id bigint NOT NULL,
        conv text NOT NULL,
        seq bigint NOT NULL,
        version bigint NOT NULL,
        PRIMARY KEY (user_id, conv)
    );
    CREATE SEQUENCE view_versions;
    ",
    ),
    (
        14,
        r"
    -- Moderation: a muted group (only owner and admins send), a muted member.
    ALTER TABLE groups ADD COLUMN muted boolean NOT NULL DEFAULT false;
    ALTER TABLE groups ADD COLUMN dismissed boolean NOT NULL DEFAULT false;
    ALTER TABLE group_members ADD COLUMN muted_until_ms bigint NOT NULL DEFAULT 0;
    -- What a group says of itself, and its pinned announcement.
    ALTER TABLE groups
        ADD COLUMN description text NOT NULL DEFAULT '',
        ADD COLUMN avatar text NOT NULL DEFAULT '',
        ADD COLUMN announcement text NOT NULL DEFAULT '',
        ADD COLUMN announcement_version bigint NOT NULL DEFAULT 0,
        ADD COLUMN announcement_at_ms bigint NOT NULL DEFAULT 0,
        ADD COLUMN announcement_by bigint NOT NULL DEFAULT 0;
    ",
    ),
    (
        15,
        r"
    -- Profiles, and the display-name search.
    CREATE TABLE profiles (
        user_id bigint PRIMARY KEY,
        status text NOT NULL,
        avatar text NOT NULL,
        custom_keys text[] NOT NULL,
        custom_values text[] NOT NULL,
        discoverable boolean NOT NULL
    );
    CREATE INDEX accounts_display_name_search
        ON accounts ((lower(display_name)) text_pattern_ops) WHERE display_name IS NOT NULL;
    ",
    ),
    (
        16,
        r"
    -- Bans (written by group changes, in the group's transaction) and join requests.
    CREATE TABLE group_bans (
        group_id bigint NOT NULL,
        user_id bigint NOT NULL,
        by_user bigint NOT NULL,
        at_ms bigint NOT NULL,
        PRIMARY KEY (group_id, user_id)
    );
    CREATE TABLE join_requests (
        group_id bigint NOT NULL,
        user_id bigint NOT NULL,
        message text NOT NULL,
        created_ms bigint NOT NULL,
        PRIMARY KEY (group_id, user_id)
    );
    ",
    ),
    (
        17,
        r"
    -- Edit and reaction events change other messages: they count in nobody's
    -- unread number (reaction events are the server's, sender 0).
    ALTER TABLE messages ADD COLUMN quiet boolean NOT NULL DEFAULT false;
    UPDATE messages SET quiet = true WHERE edit_of IS NOT NULL OR sender = 0;
    CREATE INDEX messages_quiet ON messages (conv, seq) WHERE quiet;
    ",
    ),
];

/// Brings the database's schema up to date.
pub async fn migrate(client: &mut Client) -> Result<()> {
    client
        .batch_execute(
            "CREATE TABLE IF NOT EXISTS courier_schema (
                version integer PRIMARY KEY,
                applied_at timestamptz NOT NULL DEFAULT now()
            )",
        )
        .await
        .map_err(pg)?;
    for &(version, sql) in MIGRATIONS {
        let tx = client.transaction().await.map_err(pg)?;
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
            .await
            .map_err(pg)?;
        let done = tx
            .query_opt(
                "SELECT 1 FROM courier_schema WHERE version = $1",
                &[&version],
            )
            .await
            .map_err(pg)?
            .is_some();
        if !done {
            tx.batch_execute(sql).await.map_err(pg)?;
            tx.execute(
                "INSERT INTO courier_schema (version) VALUES ($1)",
                &[&version],
            )
            .await
            .map_err(pg)?;
            tracing::info!(version, "postgres schema migrated");
        }
        tx.commit().await.map_err(pg)?;
    }
    Ok(())
}

/// The newest migration this build knows.
pub fn latest() -> i32 {
    MIGRATIONS.last().map_or(0, |m| m.0)
}
