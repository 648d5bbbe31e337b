//! The TypeScript SDK's tests (`client-sdk/ts`, Node's test runner) against this
//! build's `courier` binary: its dependencies come from the committed lockfile
//! (`npm ci`), its protobuf types are generated from `protocol/proto` by the build.
//! Node.js and npm must be installed (`.ci/run` installs Debian's when missing).

use std::path::Path;
use std::process::Command;

fn run(dir: &Path, program: &str, args: &[&str]) {
    let status = Command::new(program)
        .args(args)
        .current_dir(dir)
        .env("COURIER_BIN", env!("CARGO_BIN_EXE_courier"))
        .status()
        .unwrap_or_else(|e| {
            panic!("cannot run {program}: {e}; install Node.js 18+ and npm (Debian: nodejs npm)")
        });
    assert!(
        status.success(),
        "{program} {args:?} failed in {}",
        dir.display()
    );
}

#[test]
fn the_typescript_sdk_passes_its_tests_against_this_gateway() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../client-sdk/ts");
    // Dependencies exactly as locked; skipped when they are installed already.
    let installed = dir.join("node_modules/.package-lock.json");
    let locked = dir.join("package-lock.json");
    let fresh = match (installed.metadata(), locked.metadata()) {
        (Ok(i), Ok(l)) => i.modified().ok() >= l.modified().ok(),
        _ => false,
    };
    if !fresh {
        run(&dir, "npm", &["ci", "--no-audit", "--no-fund"]);
    }
    run(&dir, "npm", &["test"]);
}
