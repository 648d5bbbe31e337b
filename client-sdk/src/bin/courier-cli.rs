//! `courier-cli`: a command-line client, like `mosquitto_pub`/`mosquitto_sub` for
//! Courier. Every command prints JSON lines on stdout; errors go to stderr as JSON
//! with a non-zero exit status.

use std::io::Write;
use std::time::Instant;

use anyhow::{bail, Context};
use clap::{Parser, Subcommand};
use courier_sdk::{
    Client, ClientOptions, Connector, ConversationId, Event, HistoryQuery, HttpClient, SdkError,
    ServerList,
};
use futures_util::stream::FuturesOrdered;
use futures_util::StreamExt;
use serde_json::{json, Value};
use tokio::io::AsyncBufReadExt;

#[derive(Parser)]
#[command(
    name = "courier-cli",
    version,
    about = "Courier command-line client (JSON lines out)"
)]
struct Cli {
    /// Server address for the binary protocol (TCP); several, comma-separated, are
    /// the nodes of one deployment, tried in turn.
    #[arg(
        long,
        env = "COURIER_SERVER",
        default_value = "127.0.0.1:7100",
        global = true
    )]
    server: String,
    /// Base URL of the HTTP API.
    #[arg(
        long,
        env = "COURIER_HTTP",
        default_value = "http://127.0.0.1:7180",
        global = true
    )]
    http: String,
    /// Bearer token from `login`.
    #[arg(long, env = "COURIER_TOKEN", global = true, hide_env_values = true)]
    token: Option<String>,
    /// Use QUIC (UDP) to --server instead of TCP.
    #[arg(long, global = true, conflicts_with = "tls")]
    quic: bool,
    /// Use TLS over TCP to --server.
    #[arg(long, global = true)]
    tls: bool,
    /// With --quic/--tls: the server certificate's SHA-256 (printed by `courier serve`).
    #[arg(long, env = "COURIER_PIN", global = true)]
    pin: Option<String>,
    /// With --quic/--tls: trust certificates signed by the CAs in this PEM file.
    #[arg(long, env = "COURIER_CA", global = true)]
    ca: Option<std::path::PathBuf>,
    /// The admin token, for `admin` commands (not needed on the operator listener:
    /// point --http at `admin_addr`).
    #[arg(
        long,
        env = "COURIER_ADMIN_TOKEN",
        global = true,
        hide_env_values = true
    )]
    admin_token: Option<String>,
    /// Device id for the binary connection (default: a random one per run).
    #[arg(long, env = "COURIER_DEVICE", global = true)]
    device: Option<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Create an account.
    Register { name: String, password: String },
    /// Log in; prints {"token": ...}.
    Login { name: String, password: String },
    /// Who the token belongs to.
    Whoami,
    /// Set the name shown for you (none: clear it).
    DisplayName { name: Option<String> },
    /// Change your profile: status line, custom fields (NAME=VALUE, replacing all),
    /// whether search finds you.
    Profile {
        #[arg(long)]
        status: Option<String>,
        /// A custom field, NAME=VALUE (repeatable; replaces all fields).
        #[arg(long = "field")]
        fields: Vec<String>,
        #[arg(long)]
        discoverable: Option<bool>,
    },
    /// Find users by exact name or display-name prefix.
    Search {
        query: String,
        /// The previous page's next_cursor.
        #[arg(long)]
        cursor: Option<String>,
    },
    /// Revoke the token (its sessions end); with --all, every token of the user.
    Logout {
        /// Log out everywhere: every token, every session.
        #[arg(long)]
        all: bool,
    },
    /// Change the password; every other token of the user is revoked.
    Passwd { current: String, new: String },
    /// Send a message to a user: TEXT, or one message per line of stdin with --stdin.
    Send {
        /// Recipient's user name.
        #[arg(long, required_unless_present = "group", conflicts_with = "group")]
        to: Option<String>,
        /// Group id, to send to a group.
        #[arg(long)]
        group: Option<u64>,
        /// Read messages from stdin, one per line.
        #[arg(long, conflicts_with = "text")]
        stdin: bool,
        /// Upload this file and send it as a media message.
        #[arg(long, conflicts_with_all = ["text", "stdin"])]
        file: Option<std::path::PathBuf>,
        /// Sends in flight at once with --stdin.
        #[arg(long, default_value_t = 64)]
        window: usize,
        /// The message text.
        text: Option<String>,
    },
    /// Print incoming events, one JSON line each.
    Listen {
        /// Stop after this many messages.
        #[arg(long)]
        count: Option<u64>,
    },
    /// Print a conversation's history, oldest first.
    History {
        /// The other user's name.
        #[arg(long, required_unless_present = "group", conflicts_with = "group")]
        with: Option<String>,
        /// Group id.
        #[arg(long)]
        group: Option<u64>,
        /// Messages below this seq.
        #[arg(long, conflicts_with = "after")]
        before: Option<u64>,
        /// Messages above this seq.
        #[arg(long)]
        after: Option<u64>,
        /// Page size.
        #[arg(long)]
        limit: Option<usize>,
    },
    /// List conversations (pinned first, then by last activity) with unread counts.
    Conversations {
        /// Page size.
        #[arg(long)]
        limit: Option<usize>,
        /// `next_cursor` of the previous page.
        #[arg(long)]
        cursor: Option<String>,
    },
    /// Mark a conversation read up to SEQ (its id, e.g. d:1:2 or g:7).
    Read { conversation: String, seq: u64 },
    /// Mute or unmute, pin or unpin a conversation.
    Flag {
        conversation: String,
        /// Mute (true) or unmute (false).
        #[arg(long)]
        muted: Option<bool>,
        /// Pin (true) or unpin (false).
        #[arg(long)]
        pinned: Option<bool>,
    },
    /// Recall message SEQ of a conversation (sender within the time limit, group admins).
    Recall { conversation: String, seq: u64 },
    /// Edit the text of one's own message SEQ of a conversation.
    Edit {
        conversation: String,
        seq: u64,
        text: String,
    },
    /// React to message SEQ of a conversation with EMOJI (or take it back).
    React {
        conversation: String,
        seq: u64,
        emoji: String,
        /// Take the reaction back.
        #[arg(long)]
        remove: bool,
    },
    /// Who reacted to message SEQ of a conversation with EMOJI.
    Reactions {
        conversation: String,
        seq: u64,
        emoji: String,
        /// Users with ids above this (the previous page's `next_after`).
        #[arg(long)]
        after: Option<u64>,
    },
    /// Delete messages SEQ... of a conversation for oneself (all one's devices).
    Hide {
        conversation: String,
        seqs: Vec<u64>,
    },
    /// Clear one's history of a conversation through SEQ.
    Clear { conversation: String, seq: u64 },
    /// Delete a conversation from one's list (until the next message).
    DeleteConversation { conversation: String },
    /// Who has read message SEQ of a conversation.
    Reads { conversation: String, seq: u64 },
    /// Presence of users, by name.
    Presence { users: Vec<String> },
    /// Your bound devices.
    Devices,
    /// Unbind a device (its session ends).
    RemoveDevice { device_id: String },
    /// Register DEVICE_ID's push token (APNs or FCM): pushes reach it while offline.
    PushRegister {
        device_id: String,
        /// `apns` or `fcm`.
        #[arg(long)]
        provider: String,
        /// The service's token for the app on the device.
        #[arg(long)]
        device_token: String,
        /// The bundle id (APNs) or the Firebase project id (FCM).
        #[arg(long)]
        app_id: String,
        /// APNs development environment.
        #[arg(long)]
        sandbox: bool,
    },
    /// Remove DEVICE_ID's push token.
    PushUnregister { device_id: String },
    /// Friends, follows and blocks.
    #[command(subcommand)]
    Friend(FriendCommand),
    /// Groups and their members.
    #[command(subcommand)]
    Group(GroupCommand),
    /// The admin API, for the application's backend and operators.
    #[command(subcommand)]
    Admin(AdminCommand),
}

#[derive(Subcommand)]
enum AdminCommand {
    /// Create users: NAME:PASSWORD a password account, NAME one the application
    /// vouches for (tokens only).
    Import { users: Vec<String> },
    /// Mint a token for a user (by id).
    Token { user_id: u64 },
    /// Log a user out everywhere, or only one device with --device.
    Logout {
        user_id: u64,
        #[arg(long)]
        device: Option<String>,
    },
    /// Ban a user (sessions end at once, no login until unbanned).
    Ban { user_id: u64 },
    /// Lift a user's ban.
    Unban { user_id: u64 },
    /// Send TEXT into a conversation as --from, or as the system.
    Send {
        conversation: String,
        text: String,
        #[arg(long)]
        from: Option<u64>,
        /// Idempotency key.
        #[arg(long)]
        id: Option<String>,
    },
    /// Send TEXT from --from to each of --to (user ids), in their direct conversations.
    Notify {
        #[arg(long)]
        from: u64,
        #[arg(long, value_delimiter = ',', required = true)]
        to: Vec<u64>,
        text: String,
        /// Names the notification: sending it again stores nothing twice.
        #[arg(long)]
        id: Option<String>,
    },
    /// Devices online now, in all and per user id given.
    Online { users: Vec<u64> },
}

#[derive(Subcommand)]
enum FriendCommand {
    /// List friends.
    List,
    /// Pending requests, both ways.
    Requests,
    /// Ask USER to be friends.
    Request { user: String },
    /// Accept USER's request.
    Accept { user: String },
    /// Decline USER's request.
    Decline { user: String },
    /// Withdraw your request to USER.
    Cancel { user: String },
    /// End the friendship with USER.
    Remove { user: String },
    /// Follow USER (one-way).
    Follow { user: String },
    /// Stop following USER.
    Unfollow { user: String },
    /// Block USER.
    Block { user: String },
    /// Unblock USER.
    Unblock { user: String },
    /// How you relate to USER.
    Show { user: String },
}

#[derive(Subcommand)]
enum GroupCommand {
    /// Create a group; prints it with its id.
    Create {
        name: String,
        /// Users to add at once.
        #[arg(long, value_delimiter = ',')]
        members: Vec<String>,
        /// Anyone may join by id.
        #[arg(long)]
        open: bool,
        /// Anyone may ask to join by id; the owner or an admin approves.
        #[arg(long, conflicts_with = "open")]
        approval: bool,
        /// Later members see earlier messages.
        #[arg(long)]
        history_visible: bool,
    },
    /// Your groups.
    List,
    /// A group's info.
    Info { group: u64 },
    /// A group's members (paged).
    Members {
        group: u64,
        #[arg(long)]
        after: Option<u64>,
        #[arg(long)]
        limit: Option<usize>,
    },
    /// Add users.
    Add { group: u64, users: Vec<String> },
    /// Remove a member.
    Remove { group: u64, user: String },
    /// Join an open group, or ask to join one that approves its members.
    Join {
        group: u64,
        /// What to tell the owner and admins (a request).
        #[arg(long, default_value = "")]
        message: String,
    },
    /// Take back your request to join a group.
    CancelRequest { group: u64 },
    /// A group's pending join requests (owner and admins).
    Requests { group: u64 },
    /// Approve a join request: the user joins.
    Approve { group: u64, user: String },
    /// Decline a join request.
    Reject { group: u64, user: String },
    /// Ban a user (removed if a member; cannot come back), or with --off lift it.
    Ban {
        group: u64,
        user: String,
        #[arg(long)]
        off: bool,
    },
    /// A group's bans (owner and admins).
    Bans { group: u64 },
    /// Leave a group.
    Leave { group: u64 },
    /// Make a member `admin` or `member`.
    Role {
        group: u64,
        user: String,
        role: String,
    },
    /// Hand ownership to a member.
    Transfer { group: u64, user: String },
    /// Mute (or with --off unmute) a whole group: only owner and admins send.
    Mute {
        group: u64,
        #[arg(long)]
        off: bool,
    },
    /// Dismiss a group (owner only): read-only from then on.
    Dismiss { group: u64 },
    /// Pin TEXT as a group's announcement (empty takes it down).
    Announce { group: u64, text: String },
    /// Set a group's description.
    Describe { group: u64, text: String },
    /// Mute a member for SECONDS (0 unmutes).
    MuteMember {
        group: u64,
        user: String,
        seconds: u64,
    },
    /// Rename a group.
    Rename { group: u64, name: String },
    /// Your pending invitations to groups.
    Invitations,
    /// Accept an invitation: join the group.
    Accept { group: u64 },
    /// Decline an invitation.
    Decline { group: u64 },
}

#[tokio::main]
async fn main() {
    let cli = Cli::parse();
    if let Err(e) = run(cli).await {
        let code = e
            .downcast_ref::<SdkError>()
            .and_then(SdkError::code)
            .map(|c| c as i32);
        eprintln!("{}", json!({"error": format!("{e:#}"), "code": code}));
        std::process::exit(1);
    }
}

fn print(v: &Value) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    writeln!(out, "{v}")?;
    out.flush()?;
    Ok(())
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let http = HttpClient::new(&cli.http);
    match &cli.command {
        Command::Register { name, password } => {
            let user = http.register(name, password).await?;
            print(&serde_json::to_value(user)?)
        }
        Command::Login { name, password } => {
            let login = http.login(name, password).await?;
            print(&serde_json::to_value(login)?)
        }
        Command::Whoami => print(&serde_json::to_value(authed(&cli, http)?.me().await?)?),
        Command::Logout { all: false } => {
            authed(&cli, http)?.logout().await?;
            print(&json!({"logged_out": true}))
        }
        Command::Logout { all: true } => {
            let revoked = authed(&cli, http)?.logout_everywhere().await?;
            print(&json!({"logged_out": true, "revoked_tokens": revoked}))
        }
        Command::Passwd { current, new } => {
            authed(&cli, http)?.change_password(current, new).await?;
            print(&json!({"password_changed": true}))
        }
        Command::Conversations { limit, cursor } => {
            let list = authed(&cli, http)?
                .conversations(cursor.as_deref(), *limit)
                .await?;
            for c in &list.conversations {
                print(&serde_json::to_value(c)?)?;
            }
            if let Some(next) = list.next_cursor {
                print(&json!({"next_cursor": next}))?;
            }
            Ok(())
        }
        Command::Read { conversation, seq } => {
            let c: ConversationId = conversation.parse()?;
            let read_seq = authed(&cli, http)?.mark_read(&c, *seq).await?;
            print(&json!({"conversation": conversation, "read_seq": read_seq}))
        }
        Command::Flag {
            conversation,
            muted,
            pinned,
        } => {
            let c: ConversationId = conversation.parse()?;
            authed(&cli, http)?
                .set_conversation_flags(&c, *muted, *pinned)
                .await?;
            print(&json!({"conversation": conversation, "muted": muted, "pinned": pinned}))
        }
        Command::Recall { conversation, seq } => {
            let c: ConversationId = conversation.parse()?;
            let event_seq = authed(&cli, http)?.recall(&c, *seq).await?;
            print(&json!({"conversation": conversation, "seq": seq, "event_seq": event_seq}))
        }
        Command::Edit {
            conversation,
            seq,
            text,
        } => {
            let c: ConversationId = conversation.parse()?;
            let event_seq = authed(&cli, http)?.edit(&c, *seq, text).await?;
            print(&json!({"conversation": conversation, "seq": seq, "event_seq": event_seq}))
        }
        Command::React {
            conversation,
            seq,
            emoji,
            remove,
        } => {
            let c: ConversationId = conversation.parse()?;
            print(&authed(&cli, http)?.react(&c, *seq, emoji, !remove).await?)
        }
        Command::Reactions {
            conversation,
            seq,
            emoji,
            after,
        } => {
            let c: ConversationId = conversation.parse()?;
            print(
                &authed(&cli, http)?
                    .reactors(&c, *seq, emoji, *after, None)
                    .await?,
            )
        }
        Command::Hide { conversation, seqs } => {
            let c: ConversationId = conversation.parse()?;
            print(&authed(&cli, http)?.hide(&c, seqs, 0).await?)
        }
        Command::Clear { conversation, seq } => {
            let c: ConversationId = conversation.parse()?;
            print(&authed(&cli, http)?.hide(&c, &[], *seq).await?)
        }
        Command::DeleteConversation { conversation } => {
            let c: ConversationId = conversation.parse()?;
            print(&authed(&cli, http)?.delete_conversation(&c).await?)
        }
        Command::Reads { conversation, seq } => {
            let c: ConversationId = conversation.parse()?;
            print(&authed(&cli, http)?.reads(&c, *seq).await?)
        }
        Command::Presence { users } => {
            let http = authed(&cli, http)?;
            let mut ids = Vec::new();
            for u in users {
                ids.push(user_id(&http, u).await?);
            }
            print(&http.presence(&ids).await?)
        }
        Command::Devices => print(&authed(&cli, http)?.devices().await?),
        Command::RemoveDevice { device_id } => {
            authed(&cli, http)?.remove_device(device_id).await?;
            print(&json!({"device_id": device_id, "removed": true}))
        }
        Command::Profile {
            status,
            fields,
            discoverable,
        } => {
            let mut change = serde_json::Map::new();
            if let Some(s) = status {
                change.insert("status".into(), json!(s));
            }
            if !fields.is_empty() {
                let mut custom = serde_json::Map::new();
                for f in fields {
                    let (k, v) = f
                        .split_once('=')
                        .ok_or_else(|| anyhow::anyhow!("a field is NAME=VALUE"))?;
                    custom.insert(k.to_owned(), json!(v));
                }
                change.insert("custom".into(), serde_json::Value::Object(custom));
            }
            if let Some(d) = discoverable {
                change.insert("discoverable".into(), json!(d));
            }
            let me = authed(&cli, http)?
                .update_profile(&serde_json::Value::Object(change))
                .await?;
            print(&serde_json::to_value(me)?)
        }
        Command::Search { query, cursor } => print(
            &authed(&cli, http)?
                .search_users(query, cursor.as_deref(), None)
                .await?,
        ),
        Command::DisplayName { name } => {
            let me = authed(&cli, http)?
                .set_display_name(name.as_deref())
                .await?;
            print(&serde_json::to_value(me)?)
        }
        Command::PushRegister {
            device_id,
            provider,
            device_token,
            app_id,
            sandbox,
        } => {
            authed(&cli, http)?
                .set_push_token(device_id, provider, device_token, app_id, *sandbox)
                .await?;
            print(&json!({"device_id": device_id, "push": provider}))
        }
        Command::PushUnregister { device_id } => {
            authed(&cli, http)?.remove_push_token(device_id).await?;
            print(&json!({"device_id": device_id, "push": null}))
        }
        Command::Friend(cmd) => friend(authed(&cli, http)?, cmd).await,
        Command::Group(cmd) => group(authed(&cli, http)?, cmd).await,
        Command::Admin(cmd) => {
            let http = match &cli.admin_token {
                Some(token) => http.with_token(token),
                None => http,
            };
            admin(http, cmd).await
        }
        Command::History {
            with,
            group,
            before,
            after,
            limit,
        } => {
            let http = authed(&cli, http)?;
            let c = target(&http, with.as_deref(), *group).await?;
            let page = http
                .history(
                    &c,
                    HistoryQuery {
                        before: *before,
                        after: *after,
                        limit: *limit,
                    },
                )
                .await?;
            for m in &page.messages {
                print(&serde_json::to_value(m)?)?;
            }
            Ok(())
        }
        Command::Send {
            to,
            group,
            stdin,
            file,
            window,
            text,
        } => {
            let http = authed(&cli, http)?;
            let c = target(&http, to.as_deref(), *group).await?;
            let (client, events) = connect(&cli).await?;
            // This command only sends: drop the event stream so it never holds reads up.
            drop(events);
            if let Some(path) = file {
                let (receipt, media) = client.send_media(&http, &c, path).await?;
                let mut line = receipt_json(&receipt);
                line["media"] = serde_json::to_value(&media)?;
                print(&line)
            } else if *stdin {
                send_lines(&client, &c, (*window).max(1)).await
            } else {
                let Some(text) = text else {
                    bail!("give the TEXT or --stdin")
                };
                let receipt = client.send_text(&c, text.clone()).await?;
                print(&receipt_json(&receipt))
            }
        }
        Command::Listen { count } => {
            let (_client, mut events) = connect(&cli).await?;
            let mut seen = 0u64;
            while let Some(event) = events.next().await {
                match event {
                    Event::Message(m) => {
                        let mut line = json!({
                            "event": "message",
                            "conversation": m.conversation,
                            "seq": m.seq,
                            "from": m.sender,
                            "from_device": m.sender_device,
                            "server_time_ms": m.server_time_ms,
                        });
                        use courier_sdk::pb::message_body::Content;
                        match m.body.as_ref().and_then(|b| b.content.as_ref()) {
                            Some(Content::Text(t)) => line["text"] = json!(t.text),
                            Some(Content::Media(media)) => {
                                line["media"] = json!({"url": media.url, "mime": media.mime, "size": media.size})
                            }
                            Some(Content::Custom(c)) => line["custom_type"] = json!(c.r#type),
                            Some(Content::System(e)) => {
                                line["system"] = json!(format!("{:?}", e.event))
                            }
                            None => {}
                        }
                        print(&line)?;
                        seen += 1;
                        if count.is_some_and(|n| seen >= n) {
                            break;
                        }
                    }
                    Event::Kicked { code, reason } => {
                        print(&json!({"event": "kicked", "code": code as i32, "reason": reason}))?;
                    }
                    Event::Closed => {
                        print(&json!({"event": "closed"}))?;
                        break;
                    }
                    Event::ReadReceipt(r) => print(&json!({
                        "event": "read", "conversation": r.conversation, "reader": r.reader, "seq": r.seq,
                    }))?,
                    Event::Hidden(h) => print(&json!({
                        "event": "hidden", "conversation": h.conversation, "seqs": h.seqs,
                        "cleared_seq": h.cleared_seq,
                    }))?,
                    Event::Typing(t) => print(&json!({
                        "event": "typing", "conversation": t.conversation, "user_id": t.user_id,
                        "active": t.active, "expires_ms": t.expires_ms,
                    }))?,
                    other => print(&json!({"event": "other", "debug": format!("{other:?}")}))?,
                }
            }
            Ok(())
        }
    }
}

/// The conversation with a user (by name) or of a group.
async fn target(
    http: &HttpClient,
    user: Option<&str>,
    group: Option<u64>,
) -> anyhow::Result<ConversationId> {
    match (user, group) {
        (_, Some(g)) => Ok(ConversationId::Group(g)),
        (Some(name), None) => {
            let me = http.me().await?;
            let peer = http.user(name).await?;
            ConversationId::direct(me.user_id, peer.user_id).context("that is you")
        }
        (None, None) => bail!("name a user or a group"),
    }
}

async fn user_id(http: &HttpClient, name: &str) -> anyhow::Result<u64> {
    Ok(http.user(name).await?.user_id)
}

async fn friend(http: HttpClient, cmd: &FriendCommand) -> anyhow::Result<()> {
    let relation = match cmd {
        FriendCommand::List => {
            let mut after = None;
            loop {
                let page = http.friends(after).await?;
                for r in &page.users {
                    print(&serde_json::to_value(r)?)?;
                }
                match page.next_after {
                    Some(next) => after = Some(next),
                    None => return Ok(()),
                }
            }
        }
        FriendCommand::Requests => {
            return print(&serde_json::to_value(http.friend_requests().await?)?)
        }
        FriendCommand::Request { user } => http.request_friend(user_id(&http, user).await?).await?,
        FriendCommand::Accept { user } => http.accept_friend(user_id(&http, user).await?).await?,
        FriendCommand::Decline { user } => http.decline_friend(user_id(&http, user).await?).await?,
        FriendCommand::Cancel { user } => {
            http.cancel_friend_request(user_id(&http, user).await?)
                .await?
        }
        FriendCommand::Remove { user } => http.remove_friend(user_id(&http, user).await?).await?,
        FriendCommand::Follow { user } => {
            http.set_follow(user_id(&http, user).await?, true).await?
        }
        FriendCommand::Unfollow { user } => {
            http.set_follow(user_id(&http, user).await?, false).await?
        }
        FriendCommand::Block { user } => http.set_block(user_id(&http, user).await?, true).await?,
        FriendCommand::Unblock { user } => {
            http.set_block(user_id(&http, user).await?, false).await?
        }
        FriendCommand::Show { user } => http.relation(user_id(&http, user).await?).await?,
    };
    print(&serde_json::to_value(relation)?)
}

async fn group(http: HttpClient, cmd: &GroupCommand) -> anyhow::Result<()> {
    let value = match cmd {
        GroupCommand::Create {
            name,
            members,
            open,
            approval,
            history_visible,
        } => {
            let mut ids = Vec::new();
            for m in members {
                ids.push(user_id(&http, m).await?);
            }
            let new = courier_sdk::NewGroup {
                name: name.clone(),
                join_policy: Some(
                    match (open, approval) {
                        (true, _) => "open",
                        (_, true) => "approval",
                        _ => "invite",
                    }
                    .into(),
                ),
                history_visible: Some(*history_visible),
                members: ids,
            };
            serde_json::to_value(http.create_group(&new).await?)?
        }
        GroupCommand::List => {
            for g in http.groups().await? {
                print(&serde_json::to_value(g)?)?;
            }
            return Ok(());
        }
        GroupCommand::Info { group } => serde_json::to_value(http.group(*group).await?)?,
        GroupCommand::Members {
            group,
            after,
            limit,
        } => {
            let page = http.members(*group, *after, *limit).await?;
            for m in &page.members {
                print(&serde_json::to_value(m)?)?;
            }
            if let Some(next) = page.next_after {
                print(&json!({"next_after": next}))?;
            }
            return Ok(());
        }
        GroupCommand::Add { group, users } => {
            let mut ids = Vec::new();
            for u in users {
                ids.push(user_id(&http, u).await?);
            }
            serde_json::to_value(http.add_members(*group, &ids).await?)?
        }
        GroupCommand::Remove { group, user } => {
            let id = user_id(&http, user).await?;
            http.remove_member(*group, id).await?;
            json!({"group_id": group, "removed": id})
        }
        GroupCommand::Join { group, message } => http.request_to_join(*group, message).await?,
        GroupCommand::CancelRequest { group } => {
            http.cancel_join_request(*group).await?;
            json!({"group_id": group, "cancelled": true})
        }
        GroupCommand::Requests { group } => http.join_requests(*group, 0, 500).await?,
        GroupCommand::Approve { group, user } => {
            http.approve_join(*group, user_id(&http, user).await?)
                .await?
        }
        GroupCommand::Reject { group, user } => {
            let id = user_id(&http, user).await?;
            http.decline_join(*group, id).await?;
            json!({"group_id": group, "declined": id})
        }
        GroupCommand::Ban { group, user, off } => {
            let id = user_id(&http, user).await?;
            http.ban(*group, id, !off).await?;
            json!({"group_id": group, "user_id": id, "banned": !off})
        }
        GroupCommand::Bans { group } => http.bans(*group, 0, 500).await?,
        GroupCommand::Invitations => http.invitations().await?,
        GroupCommand::Accept { group } => {
            serde_json::to_value(http.accept_invitation(*group).await?)?
        }
        GroupCommand::Decline { group } => {
            http.decline_invitation(*group).await?;
            json!({"group_id": group, "declined": true})
        }
        GroupCommand::Leave { group } => {
            http.leave_group(*group).await?;
            json!({"group_id": group, "left": true})
        }
        GroupCommand::Role { group, user, role } => serde_json::to_value(
            http.set_role(*group, user_id(&http, user).await?, role)
                .await?,
        )?,
        GroupCommand::Transfer { group, user } => serde_json::to_value(
            http.transfer_group(*group, user_id(&http, user).await?)
                .await?,
        )?,
        GroupCommand::Mute { group, off } => http.mute_group(*group, !off).await?,
        GroupCommand::Dismiss { group } => serde_json::to_value(http.dismiss_group(*group).await?)?,
        GroupCommand::Announce { group, text } => {
            serde_json::to_value(http.set_announcement(*group, text).await?)?
        }
        GroupCommand::Describe { group, text } => {
            serde_json::to_value(http.set_group_profile(*group, Some(text), None).await?)?
        }
        GroupCommand::MuteMember {
            group,
            user,
            seconds,
        } => {
            http.mute_member(*group, user_id(&http, user).await?, seconds * 1000)
                .await?
        }
        GroupCommand::Rename { group, name } => {
            serde_json::to_value(http.update_group(*group, Some(name), None, None).await?)?
        }
    };
    print(&value)
}

async fn admin(http: HttpClient, cmd: &AdminCommand) -> anyhow::Result<()> {
    match cmd {
        AdminCommand::Import { users } => {
            let users: Vec<(&str, Option<&str>)> = users
                .iter()
                .map(|u| match u.split_once(':') {
                    Some((name, password)) => (name, Some(password)),
                    None => (u.as_str(), None),
                })
                .collect();
            let answer = http.admin_import_users(&users).await?;
            for user in answer["users"].as_array().into_iter().flatten() {
                print(user)?;
            }
            Ok(())
        }
        AdminCommand::Token { user_id } => print(&serde_json::to_value(
            http.admin_mint_token(*user_id).await?,
        )?),
        AdminCommand::Logout {
            user_id,
            device: Some(device),
        } => {
            http.admin_remove_device(*user_id, device).await?;
            print(&json!({"user_id": user_id, "device_id": device, "removed": true}))
        }
        AdminCommand::Logout {
            user_id,
            device: None,
        } => {
            let revoked = http.admin_logout(*user_id).await?;
            print(&json!({"user_id": user_id, "revoked_tokens": revoked}))
        }
        AdminCommand::Ban { user_id } | AdminCommand::Unban { user_id } => {
            let banned = matches!(cmd, AdminCommand::Ban { .. });
            http.admin_ban(*user_id, banned).await?;
            print(&json!({"user_id": user_id, "banned": banned}))
        }
        AdminCommand::Send {
            conversation,
            text,
            from,
            id,
        } => {
            let c: ConversationId = conversation.parse()?;
            print(&http.admin_send(&c, *from, text, id.as_deref()).await?)
        }
        AdminCommand::Notify { from, to, text, id } => {
            print(&http.admin_notify(*from, to, text, id.as_deref()).await?)
        }
        AdminCommand::Online { users } => print(&http.admin_online(users).await?),
    }
}

fn authed(cli: &Cli, http: HttpClient) -> anyhow::Result<HttpClient> {
    let token = cli
        .token
        .as_deref()
        .context("this command needs --token or COURIER_TOKEN")?;
    Ok(http.with_token(token))
}

async fn connect(cli: &Cli) -> anyhow::Result<(Client, courier_sdk::Events)> {
    let token = cli
        .token
        .as_deref()
        .context("this command needs --token or COURIER_TOKEN")?;
    let mut options = ClientOptions {
        platform: courier_sdk::pb::Platform::Cli,
        ..ClientOptions::default()
    };
    if let Some(device) = &cli.device {
        options.device_id = device.clone();
    }
    // A comma-separated --server is the nodes of one deployment: each is tried in
    // turn until one takes the session.
    let servers: Vec<&str> = cli.server.split(',').map(str::trim).collect();
    let mut connectors = Vec::with_capacity(servers.len());
    if !cli.quic && !cli.tls {
        connectors.extend(servers.iter().map(|s| Connector::Tcp(s.to_string())));
    } else {
        let trust = match (&cli.pin, &cli.ca) {
            (Some(pin), _) => courier_sdk::Trust::Pinned(pin.clone()),
            (None, Some(ca)) => courier_sdk::Trust::ca_file(ca)?,
            (None, None) => bail!("--quic and --tls need --pin SHA256 or --ca FILE"),
        };
        let quic = match cli.quic {
            true => Some(courier_sdk::QuicConnector::new(
                &trust,
                "localhost",
                std::time::Duration::from_secs(10),
            )?),
            false => None,
        };
        for server in servers {
            let addr = tokio::net::lookup_host(server)
                .await?
                .next()
                .with_context(|| format!("--server {server} does not resolve"))?;
            connectors.push(match &quic {
                Some(quic) => Connector::Quic(quic.clone(), addr),
                None => Connector::Tls {
                    addr,
                    trust: trust.clone(),
                    server_name: "localhost".into(),
                },
            });
        }
    }
    Ok(ServerList::new(connectors).connect(token, &options).await?)
}

fn receipt_json(r: &courier_sdk::SendReceipt) -> Value {
    json!({
        "conversation": r.conversation.to_string(),
        "seq": r.seq,
        "client_msg_id": r.client_msg_id,
        "server_time_ms": r.server_time_ms,
        "duplicate": r.duplicate,
    })
}

/// One message per stdin line, `window` in flight, acks printed in input order.
async fn send_lines(client: &Client, c: &ConversationId, window: usize) -> anyhow::Result<()> {
    let started = Instant::now();
    let mut lines = tokio::io::BufReader::new(tokio::io::stdin()).lines();
    let mut in_flight = FuturesOrdered::new();
    let mut sent = 0u64;
    let mut eof = false;
    loop {
        while !eof && in_flight.len() < window {
            match lines.next_line().await? {
                Some(line) if line.is_empty() => continue,
                Some(line) => {
                    let client = client.clone();
                    let c = *c;
                    in_flight.push_back(async move { client.send_text(&c, line).await });
                }
                None => eof = true,
            }
        }
        match in_flight.next().await {
            Some(receipt) => {
                print(&receipt_json(&receipt?))?;
                sent += 1;
            }
            None => break,
        }
    }
    let elapsed = started.elapsed().as_secs_f64();
    eprintln!(
        "{}",
        json!({"sent": sent, "elapsed_s": elapsed, "msgs_per_s": if elapsed > 0.0 { sent as f64 / elapsed } else { 0.0 }})
    );
    Ok(())
}
