//! The protobuf parse of one frame payload, with a round-trip check.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    courier_protocol::fuzzing::parse_payload(data);
});
