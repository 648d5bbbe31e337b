//! `courier-cli`: a command-line client, like `mosquitto_pub`/`mosquitto_sub` for
//! Courier. Every command prints JSON lines on stdout; errors go to stderr as JSON
//! with a non-zero exit status.

use std::io::Write;
use std::time::Instant;

use anyhow::{bail, Context};
use clap::{Parser, Subcommand};
use courier_sdk::{
    Client, ClientOptions, ConversationId, Event, HistoryQuery, HttpClient, SdkError,
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
    /// Server address for the binary protocol (TCP).
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
    /// Send a message to a user: TEXT, or one message per line of stdin with --stdin.
    Send {
        /// Recipient's user name.
        #[arg(long)]
        to: String,
        /// Read messages from stdin, one per line.
        #[arg(long, conflicts_with = "text")]
        stdin: bool,
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
        #[arg(long)]
        with: String,
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
    /// List conversations with last seq, read seq and unread count.
    Conversations,
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
        Command::Conversations => {
            let list = authed(&cli, http)?.conversations().await?;
            for c in list["conversations"].as_array().into_iter().flatten() {
                print(c)?;
            }
            Ok(())
        }
        Command::History {
            with,
            before,
            after,
            limit,
        } => {
            let http = authed(&cli, http)?;
            let me = http.me().await?;
            let peer = http.user(with).await?;
            let c = ConversationId::direct(me.user_id, peer.user_id).context("that is you")?;
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
            stdin,
            window,
            text,
        } => {
            let http = authed(&cli, http)?;
            let peer = http.user(to).await?;
            let (client, events) = connect(&cli).await?;
            // This command only sends: drop the event stream so it never holds reads up.
            drop(events);
            let c = client.direct_with(peer.user_id)?;
            if *stdin {
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
                        if let Some(text) = m.body.as_ref().and_then(|b| b.as_text()) {
                            line["text"] = json!(text);
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
                    other => print(&json!({"event": "other", "debug": format!("{other:?}")}))?,
                }
            }
            Ok(())
        }
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
    Ok(Client::connect(&cli.server, token, options).await?)
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
