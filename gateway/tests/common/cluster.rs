//! Real engines and real gateway processes for the cluster tests: a NATS cluster of
//! `nats-server` processes on loopback (random ports, routes to the first server),
//! and `courier serve` processes that are nodes of one deployment.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use courier_sdk::HttpClient;

/// One `nats-server` process.
pub struct NatsServer {
    child: Child,
    /// `nats://127.0.0.1:<port>`.
    pub url: String,
    route_port: u16,
}

/// A NATS cluster.
pub struct Nats {
    pub servers: Vec<NatsServer>,
}

fn nats_binary() -> &'static str {
    for candidate in ["/usr/sbin/nats-server", "/usr/bin/nats-server"] {
        if Path::new(candidate).is_file() {
            return candidate;
        }
    }
    let found = Command::new("sh")
        .args(["-c", "command -v nats-server"])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    if !found {
        panic!(
            "nats-server is missing: install the Debian package `nats-server` \
             (.ci/run installs it when missing)"
        );
    }
    "nats-server"
}

/// The port in a `Listening for ... connections on 127.0.0.1:<port>` log line.
fn port_in(line: &str, what: &str) -> Option<u16> {
    let rest = line
        .split(&format!("Listening for {what} connections on "))
        .nth(1)?;
    rest.trim().rsplit(':').next()?.parse().ok()
}

impl NatsServer {
    fn start(name: &str, seed_route: Option<u16>) -> Self {
        let mut cmd = Command::new(nats_binary());
        cmd.args(["-a", "127.0.0.1", "-p", "-1", "-n", name])
            .args(["--cluster_name", "courier-test"])
            .args(["--cluster", "nats://127.0.0.1:-1"]);
        if let Some(seed) = seed_route {
            cmd.args(["--routes", &format!("nats://127.0.0.1:{seed}")]);
        }
        let mut child = cmd
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start nats-server: {e}"));
        let stderr = child.stderr.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        let (mut client, mut route) = (None, None);
        while client.is_none() || route.is_none() {
            let line = rx
                .recv_timeout(Duration::from_secs(10))
                .expect("nats-server printed its ports");
            client = client.or(port_in(&line, "client"));
            route = route.or(port_in(&line, "route"));
        }
        Self {
            child,
            url: format!("nats://127.0.0.1:{}", client.unwrap()),
            route_port: route.unwrap(),
        }
    }
}

impl Nats {
    /// `n` servers routed to one another.
    pub fn start(n: usize) -> Self {
        let first = NatsServer::start("nats-1", None);
        let seed = first.route_port;
        let mut servers = vec![first];
        for i in 2..=n {
            servers.push(NatsServer::start(&format!("nats-{i}"), Some(seed)));
        }
        Self { servers }
    }

    /// Every server's URL, comma-separated (what `cluster.nats_urls` takes).
    pub fn urls(&self) -> String {
        self.servers
            .iter()
            .map(|s| s.url.as_str())
            .collect::<Vec<_>>()
            .join(",")
    }

    /// Kills server `i` (SIGKILL).
    pub fn kill(&mut self, i: usize) {
        let _ = self.servers[i].child.kill();
        let _ = self.servers[i].child.wait();
    }
}

impl Drop for Nats {
    fn drop(&mut self) {
        for s in &mut self.servers {
            let _ = s.child.kill();
            let _ = s.child.wait();
        }
    }
}

/// Every test node's admin token (for `/metrics`).
pub const OPERATOR_TOKEN: &str = "cluster-test-operator-token";

/// One `courier serve` process, a node of a cluster.
pub struct Node {
    pub child: tokio::process::Child,
    pub name: String,
    pub tcp: String,
    pub http: HttpClient,
    /// `http://127.0.0.1:<port>`.
    pub http_base: String,
    _dir: tempfile::TempDir,
}

/// Settings every test node shares; `extra` adds or overrides variables.
pub async fn start_node(
    name: &str,
    postgres_url: &str,
    nats_urls: &str,
    extra: &[(&str, &str)],
) -> Node {
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_courier"));
    cmd.args(["serve", "--tcp", "127.0.0.1:0", "--http", "127.0.0.1:0"])
        .arg("--data-dir")
        .arg(dir.path())
        .env("COURIER_QUIC_ENABLED", "false")
        .env("COURIER_STORAGE_BACKEND", "postgres")
        .env("COURIER_POSTGRES_URL", postgres_url)
        .env("COURIER_CLUSTER_NODE_ID", name)
        .env("COURIER_CLUSTER_NATS_URLS", nats_urls)
        .env("COURIER_CLUSTER_HEARTBEAT_MS", "200")
        .env("COURIER_CLUSTER_LEASE_MS", "1500")
        .env("COURIER_CLUSTER_JOIN_WINDOW_MS", "200")
        .env("COURIER_PASSWORD_MEMORY_KIB", "64")
        .env("COURIER_PASSWORD_ITERATIONS", "1")
        .env("COURIER_LOG", "warn")
        .env("COURIER_RATE_LIMITS", "off")
        .env("COURIER_GROUP_ADD_POLICY", "anyone")
        .env("COURIER_ADMIN_TOKEN", OPERATOR_TOKEN);
    for (k, v) in extra {
        cmd.env(k, v);
    }
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let v = super::listening(&mut child).await;
    Node {
        child,
        name: name.to_owned(),
        tcp: v["tcp"].as_str().unwrap().to_owned(),
        http: HttpClient::new(v["http"].as_str().unwrap()),
        http_base: v["http"].as_str().unwrap().to_owned(),
        _dir: dir,
    }
}

impl Node {
    /// The value of counter `name` in the node's `/metrics`.
    pub async fn counter(&self, name: &str) -> u64 {
        let text = self
            .http
            .clone()
            .with_token(OPERATOR_TOKEN)
            .metrics()
            .await
            .unwrap();
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
            .unwrap_or_else(|| panic!("no counter {name} in /metrics"))
    }

    /// `kill -9`.
    pub async fn kill(&mut self) {
        let _ = self.child.kill().await;
    }
}
