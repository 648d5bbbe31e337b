//! Login timing does not tell whether an account exists. Alone in its own test
//! binary, so that no other test's work lands inside its measurements.

mod common;

use std::time::Instant;

use common::TestServer;
use courier_gateway::config::Switch;
use courier_gateway::Config;
use courier_sdk::{ErrorCode, SdkError};

/// With real Argon2 parameters, a login for a name that does not exist costs what a
/// wrong password costs: timing does not tell which accounts exist.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_time_does_not_tell_whether_an_account_exists() {
    let t = TestServer::start_with(|c| {
        let real = Config::default();
        c.password_memory_kib = real.password_memory_kib;
        c.password_iterations = real.password_iterations;
        c.rate_limits = Switch::Off;
    })
    .await;
    t.http.register("alice", "password123").await.unwrap();
    let mut known = Vec::new();
    let mut unknown = Vec::new();
    for _ in 0..11 {
        for (name, times) in [("alice", &mut known), ("nobody-at-all", &mut unknown)] {
            let started = Instant::now();
            let e = t.http.login(name, "wrong-password").await.unwrap_err();
            times.push(started.elapsed());
            let e_code = e.code();
            // The same answer either way.
            match e {
                SdkError::Http {
                    status, message, ..
                } => {
                    assert_eq!(status, 401);
                    assert_eq!(message, "unknown user or wrong password");
                }
                other => panic!("{other:?}"),
            }
            assert_eq!(e_code, Some(ErrorCode::BadCredentials));
        }
    }
    known.sort();
    unknown.sort();
    let (k, u) = (known[5].as_secs_f64(), unknown[5].as_secs_f64());
    println!("wrong login, median: existing account {k:.4} s, unknown name {u:.4} s");
    // An oracle is a factor of fifty (a hash against none); equal costs are within
    // scheduling noise of each other.
    assert!(
        u > k / 3.0 && u < k * 3.0,
        "unknown names answer in {u:.4} s, known in {k:.4} s"
    );
    t.stop().await;
}
