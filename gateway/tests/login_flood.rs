//! A flood of wrong logins against the real server binary, with the real Argon2
//! parameters: the server's memory stays bounded and a bystander's authenticated
//! requests keep their pace. Alone in its own test binary, so that no other test
//! shares the machine while it measures.

use std::process::Stdio;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use courier_sdk::HttpClient;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Command;

/// Resident memory of a process, in KiB.
fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap()
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap()
}

/// The median time of `n` calls of `GET /v1/me`.
async fn median_me(http: &HttpClient, n: usize) -> Duration {
    let mut times = Vec::with_capacity(n);
    for _ in 0..n {
        let started = Instant::now();
        http.me().await.unwrap();
        times.push(started.elapsed());
    }
    times.sort();
    times[n / 2]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_login_flood_keeps_memory_and_a_bystander_bounded() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_courier"))
        .args(["serve", "--tcp", "127.0.0.1:0", "--http", "127.0.0.1:0"])
        .args(["--quic", "127.0.0.1:0", "--data-dir"])
        .arg(dir.path())
        // The real password hashing cost (the default), and no rate limits: the
        // worst case, an attacker with as many addresses as it likes.
        .env("COURIER_RATE_LIMITS", "off")
        .env("COURIER_LOG", "warn")
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let pid = child.id().unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let line = lines.next_line().await.unwrap().unwrap();
    let v: serde_json::Value = serde_json::from_str(&line).unwrap();
    let base = v["http"].as_str().unwrap().to_owned();
    let http = HttpClient::new(&base);
    http.register("bystander", "password123").await.unwrap();
    http.register("target", "password123").await.unwrap();
    let login = http.login("bystander", "password123").await.unwrap();
    let bystander = http.clone().with_token(&login.token);

    median_me(&bystander, 50).await;
    let quiet = median_me(&bystander, 100).await;
    let rss_before = rss_kib(pid);

    // 64 clients, each with one wrong login in flight at all times.
    let stop = Arc::new(AtomicBool::new(false));
    let (refused, overloaded, other) = (
        Arc::new(AtomicU64::new(0)),
        Arc::new(AtomicU64::new(0)),
        Arc::new(AtomicU64::new(0)),
    );
    let mut flood = Vec::new();
    for _ in 0..64 {
        let (http, stop) = (HttpClient::new(&base), stop.clone());
        let (refused, overloaded, other) = (refused.clone(), overloaded.clone(), other.clone());
        flood.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                match http.login("target", "not-the-password").await {
                    Err(e) if e.code() == Some(courier_sdk::ErrorCode::Overloaded) => {
                        overloaded.fetch_add(1, Ordering::Relaxed)
                    }
                    Err(e) if e.code() == Some(courier_sdk::ErrorCode::BadCredentials) => {
                        refused.fetch_add(1, Ordering::Relaxed)
                    }
                    Err(_) => other.fetch_add(1, Ordering::Relaxed),
                    Ok(_) => panic!("a wrong password logged in"),
                };
            }
        }));
    }
    let peak = Arc::new(AtomicU64::new(rss_before));
    let sampler = {
        let (peak, stop) = (peak.clone(), stop.clone());
        tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                peak.fetch_max(rss_kib(pid), Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
    };
    tokio::time::sleep(Duration::from_millis(500)).await;
    let flooded = median_me(&bystander, 100).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    stop.store(true, Ordering::Relaxed);
    for task in flood {
        task.await.unwrap();
    }
    sampler.await.unwrap();

    let grown_mib = peak.load(Ordering::Relaxed).saturating_sub(rss_before) as f64 / 1024.0;
    println!(
        "login flood: {} wrong logins answered, {} shed as OVERLOADED, {} failed otherwise; server RSS {:.1} MiB \
         -> peak {:.1} MiB (+{grown_mib:.1} MiB); bystander GET /v1/me median {quiet:?} quiet, \
         {flooded:?} under the flood",
        refused.load(Ordering::Relaxed),
        overloaded.load(Ordering::Relaxed),
        other.load(Ordering::Relaxed),
        rss_before as f64 / 1024.0,
        peak.load(Ordering::Relaxed) as f64 / 1024.0,
    );
    assert!(grown_mib <= 100.0, "RSS grew {grown_mib:.1} MiB");
    assert!(
        refused.load(Ordering::Relaxed) > 0,
        "no login was even tried"
    );
    assert_eq!(
        other.load(Ordering::Relaxed),
        0,
        "logins failed for other reasons"
    );
    // Twice the quiet median, with two milliseconds of slack for a sub-millisecond
    // base on a two-core machine that also runs the flood's clients.
    assert!(
        flooded <= quiet * 2 + Duration::from_millis(2),
        "bystander slowed from {quiet:?} to {flooded:?}"
    );
    child.kill().await.unwrap();
}
