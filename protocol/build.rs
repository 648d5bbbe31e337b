//! Generates the prost types from `proto/courier.proto` (clients) and
//! `proto/cluster.proto` (between gateways) with `protox`, so no system `protoc` is
//! needed.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto/courier.proto");
    println!("cargo:rerun-if-changed=proto/cluster.proto");
    let descriptors = protox::compile(["proto/courier.proto", "proto/cluster.proto"], ["proto"])?;
    let mut config = prost_build::Config::new();
    // `bytes` fields become `Bytes`, so decoding a frame shares its buffer.
    config.bytes(["."]);
    config.compile_fds(descriptors)?;
    Ok(())
}
