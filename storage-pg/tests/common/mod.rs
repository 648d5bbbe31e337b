//! A real PostgreSQL server for one test: `initdb` into a temporary directory
//! (as the `postgres` user when the tests run as root: `initdb` refuses root),
//! started on a Unix socket in that directory only (no TCP port to collide on),
//! stopped and deleted when the test ends. A machine without PostgreSQL fails
//! the test and says what to install.
// Each test binary uses a part of this.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;

pub struct PgServer {
    dir: tempfile::TempDir,
    bin: PathBuf,
    /// Connection string of the server's `postgres` database, user `courier`.
    pub url: String,
}

fn bin_dir() -> PathBuf {
    if let Some(path) = std::env::var_os("PATH") {
        for dir in std::env::split_paths(&path) {
            if dir.join("initdb").is_file() && dir.join("pg_ctl").is_file() {
                return dir;
            }
        }
    }
    // Debian keeps the server's binaries off the PATH.
    let mut versions: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .map(|d| {
            d.filter_map(|e| e.ok())
                .map(|e| e.path().join("bin"))
                .collect()
        })
        .unwrap_or_default();
    versions.sort();
    versions
        .into_iter()
        .rev()
        .find(|d| d.join("initdb").is_file())
        .unwrap_or_else(|| {
            panic!(
                "PostgreSQL is missing: no initdb on the PATH or under /usr/lib/postgresql/*/bin \
                 (install the Debian package postgresql-15; .ci/run does)"
            )
        })
}

fn running_as_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

/// Runs a PostgreSQL tool, as `postgres` when we are root.
fn run(bin: &Path, tool: &str, args: &[&str]) {
    let program = bin.join(tool);
    let mut cmd = if running_as_root() {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(&program);
        c
    } else {
        Command::new(&program)
    };
    let out = cmd
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{tool}: {e}"));
    assert!(
        out.status.success(),
        "{tool} {args:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

impl PgServer {
    pub fn start() -> Self {
        let bin = bin_dir();
        let dir = tempfile::Builder::new()
            .prefix("courier-pg-")
            .tempdir()
            .unwrap();
        if running_as_root() {
            let status = Command::new("chown")
                .args(["postgres:", dir.path().to_str().unwrap()])
                .status()
                .unwrap();
            assert!(status.success(), "chown of the test's data directory");
        }
        let data = dir.path().join("data");
        run(
            &bin,
            "initdb",
            &[
                "-D",
                data.to_str().unwrap(),
                "-U",
                "courier",
                "-A",
                "trust",
                "-E",
                "UTF8",
                "--locale=C",
                "--no-sync",
            ],
        );
        let server = Self {
            url: format!(
                "host={} port=5432 user=courier dbname=postgres",
                dir.path().display()
            ),
            dir,
            bin,
        };
        server.start_again();
        server
    }

    fn data(&self) -> String {
        self.dir.path().join("data").to_str().unwrap().to_owned()
    }

    /// Starts the (stopped) server and waits until it takes connections.
    pub fn start_again(&self) {
        let options = format!(
            "-k {} -c listen_addresses= -c max_connections=50",
            self.dir.path().display()
        );
        let log = self.dir.path().join("server.log");
        run(
            &self.bin,
            "pg_ctl",
            &[
                "-D",
                &self.data(),
                "-l",
                log.to_str().unwrap(),
                "-o",
                &options,
                "-w",
                "start",
            ],
        );
    }

    /// Stops the server (fast: open sessions are cut).
    pub fn stop(&self) {
        self.stop_mode("fast");
    }

    /// Stops the server as a crash would (`-m immediate`: no checkpoint; the next
    /// start recovers from the WAL).
    pub fn crash(&self) {
        self.stop_mode("immediate");
    }

    fn stop_mode(&self, mode: &str) {
        run(
            &self.bin,
            "pg_ctl",
            &["-D", &self.data(), "-m", mode, "-w", "stop"],
        );
    }
}

impl Drop for PgServer {
    fn drop(&mut self) {
        let program = self.bin.join("pg_ctl");
        let data = self.data();
        let args = ["-D", data.as_str(), "-m", "immediate", "stop"];
        let _ = if running_as_root() {
            Command::new("runuser")
                .args(["-u", "postgres", "--"])
                .arg(&program)
                .args(args)
                .output()
        } else {
            Command::new(&program).args(args).output()
        };
    }
}
