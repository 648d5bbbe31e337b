//! Every `courier-bench` scenario, run small against a real gateway started in this
//! process: each must finish, print its one JSON line with the fields BENCHMARKS.md
//! asks for, and count no lost or duplicated message. Figures are not checked here
//! (that is what the full-size runs are for); that the scenarios work is.

use std::process::Command;

use courier_gateway::{Config, Server};
use serde_json::Value;

struct Target {
    server: Server,
    _dir: tempfile::TempDir,
}

impl Target {
    /// A gateway configured the way `courier-bench --spawn-server` configures one.
    async fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let config = Config {
            max_devices_per_user: 64,
            max_group_members: 100_000,
            max_connections: 250_000,
            presence_push_max_friends: 100_000,
            rate_limits: courier_gateway::config::Switch::Off,
            group_add_policy: courier_gateway::config::GroupAddPolicy::Anyone,
            ..Config::for_tests(dir.path())
        };
        let server = Server::start(config).await.unwrap();
        Self { server, _dir: dir }
    }

    /// Runs `courier-bench` with `args` against this server; its JSON line.
    async fn bench(&self, args: &[&str]) -> Value {
        let mut command = Command::new(env!("CARGO_BIN_EXE_courier-bench"));
        command
            .args(args)
            .args(["--server", &self.server.tcp_addr().to_string()])
            .args(["--http", &format!("http://{}", self.server.http_addr())])
            .args(["--admin-token", &self.server.api().config.admin_token])
            .args(["--quic", &self.server.quic_addr().unwrap().to_string()])
            .args(["--cert-sha256", self.server.cert_fingerprint().unwrap()])
            .args(["--server-pid", &std::process::id().to_string()])
            .args(["--timeout-secs", "120"]);
        let output = tokio::task::spawn_blocking(move || command.output())
            .await
            .unwrap()
            .unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(output.status.success(), "courier-bench {args:?}: {stderr}");
        let stdout = String::from_utf8(output.stdout).unwrap();
        let line = stdout.lines().last().expect("one JSON line");
        serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"))
    }

    async fn stop(self) {
        self.server.shutdown().await;
    }
}

fn assert_fields(line: &Value, fields: &[&str]) {
    for field in fields {
        assert!(!line[field].is_null(), "no `{field}` in {line}");
    }
}

fn assert_exact(line: &Value) {
    assert_eq!(line["lost"], 0, "{line}");
    assert_eq!(line["duplicated"], 0, "{line}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_over_tcp_quic_and_websocket() {
    let t = Target::start().await;
    for transport in ["tcp", "quic", "ws"] {
        let line = t
            .bench(&[
                "idle",
                "--transport",
                transport,
                "--n",
                "60",
                "--hold-secs",
                "0",
            ])
            .await;
        assert_eq!(line["scenario"], "idle");
        assert_eq!(line["transport"], transport);
        assert_eq!(line["connections"], 60);
        assert_fields(
            &line,
            &[
                "duration_s",
                "conns_per_s",
                "server_rss_kib",
                "kib_per_conn",
                "server_cpu_s",
                "client_cpu_s",
            ],
        );
    }
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pair_and_pair_light_over_tcp_quic_and_websocket() {
    let t = Target::start().await;
    for (scenario, transport) in [
        ("pair", "tcp"),
        ("pair", "quic"),
        ("pair", "ws"),
        ("pair-light", "tcp"),
    ] {
        let line = t
            .bench(&[
                scenario,
                "--transport",
                transport,
                "--n",
                "4",
                "--messages",
                "25",
            ])
            .await;
        assert_eq!(line["scenario"], scenario);
        assert_eq!(line["transport"], transport);
        assert_eq!(line["connections"], 8);
        assert_eq!(line["delivered"], 100, "{line}");
        assert_exact(&line);
        assert_fields(
            &line,
            &[
                "msgs_per_s",
                "p50_ms",
                "p99_ms",
                "max_ms",
                "server_cpu_s",
                "client_cpu_s",
            ],
        );
    }
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn group_fans_out_to_every_member() {
    let t = Target::start().await;
    for (receiver, transport) in [("lean", "tcp"), ("sdk", "tcp"), ("lean", "ws")] {
        let line = t
            .bench(&[
                "group",
                "--n",
                "30",
                "--messages",
                "5",
                "--receiver",
                receiver,
                "--transport",
                transport,
            ])
            .await;
        assert_eq!(line["scenario"], "group");
        // 10 senders x 5 messages to 30 members, a sender's own messages excluded.
        assert_eq!(line["deliveries"], 10 * 5 * 29, "{receiver}: {line}");
        assert_exact(&line);
        assert_fields(&line, &["deliveries_per_s", "p50_ms", "p99_ms", "max_ms"]);
    }
    t.stop().await;
}

/// `fill` starts its own server (it restarts it): the `courier` binary beside
/// `courier-bench`, which a workspace build makes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fill_stores_measures_and_restarts() {
    let t = Target::start().await;
    let line = t
        .bench(&[
            "fill",
            "--spawn-server",
            "--messages",
            "3000",
            "--hold-secs",
            "0",
        ])
        .await;
    assert_eq!(line["scenario"], "fill");
    assert_eq!(line["messages"], 3000, "{line}");
    assert_fields(
        &line,
        &[
            "msgs_per_s",
            "disk_bytes_per_msg",
            "server_rss_peak_kib",
            "server_rss_after_hold_kib",
            "restart_to_serving_s",
            "server_rss_fresh_start_kib",
        ],
    );
    assert!(
        line["disk_bytes_per_msg"].as_f64().unwrap() > 100.0,
        "{line}"
    );
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_pages_through_the_whole_log() {
    let t = Target::start().await;
    let line = t.bench(&["history", "--messages", "250"]).await;
    assert_eq!(line["scenario"], "history");
    let pages = line["pages"].as_array().unwrap();
    assert_eq!(pages.len(), 2);
    for (page, size) in pages.iter().zip([20, 100]) {
        assert_eq!(page["page"], size);
        assert_eq!(page["last_seq"], 250, "{page}");
        assert_fields(page, &["pages_per_s", "p50_ms", "p99_ms"]);
    }
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn presence_storm_is_debounced() {
    let t = Target::start().await;
    let line = t
        .bench(&["presence-storm", "--n", "40", "--online", "10"])
        .await;
    assert_eq!(line["scenario"], "presence-storm");
    assert_eq!(line["online_friends"], 10);
    assert_fields(
        &line,
        &[
            "presence_events_in",
            "presence_frames_out",
            "frames_received",
        ],
    );
    // Ten flaps inside the grace period: at most one frame per online friend.
    assert!(
        line["presence_frames_out"].as_u64().unwrap() <= 10,
        "{line}"
    );
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconnect_storm_resyncs_everyone() {
    let t = Target::start().await;
    let line = t
        .bench(&["reconnect-storm", "--n", "30", "--messages", "3"])
        .await;
    assert_eq!(line["scenario"], "reconnect-storm");
    assert_eq!(line["resynced"], 30, "{line}");
    assert_eq!(line["failures"], 0, "{line}");
    assert_exact(&line);
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quic_scale_steps_up() {
    let t = Target::start().await;
    let line = t
        .bench(&["quic-scale", "--steps", "20,50", "--hold-secs", "0"])
        .await;
    assert_eq!(line["scenario"], "quic-scale");
    let steps = line["steps"].as_array().unwrap();
    assert_eq!(steps.len(), 2);
    for (step, n) in steps.iter().zip([20, 50]) {
        assert_eq!(step["connections"], n, "{step}");
        assert_eq!(step["failed"], 0, "{step}");
        assert_fields(step, &["conns_per_s", "kib_per_conn"]);
    }
    t.stop().await;
}
