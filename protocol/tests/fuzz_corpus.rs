//! Runs every committed fuzz corpus file through the same entry points the fuzz
//! targets use, so a crash found once stays fixed without needing nightly or
//! cargo-fuzz in CI.

use std::path::Path;

fn corpus(target: &str) -> Vec<(String, Vec<u8>)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../fuzz/corpus")
        .join(target);
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_file())
        .map(|p| (p.display().to_string(), std::fs::read(&p).unwrap()))
        .collect();
    files.sort();
    files
}

#[test]
fn frame_decoder_corpus() {
    let files = corpus("frame_decoder");
    assert!(files.len() >= 10, "the seed corpus is committed");
    for (name, data) in files {
        let outcome = std::panic::catch_unwind(|| courier_protocol::fuzzing::decode_stream(&data));
        assert!(outcome.is_ok(), "{name} crashes the decoder");
    }
}

#[test]
fn frame_parse_corpus() {
    let files = corpus("frame_parse");
    assert!(files.len() >= 10, "the seed corpus is committed");
    for (name, data) in files {
        let outcome = std::panic::catch_unwind(|| courier_protocol::fuzzing::parse_payload(&data));
        assert!(outcome.is_ok(), "{name} crashes the parser");
    }
}
