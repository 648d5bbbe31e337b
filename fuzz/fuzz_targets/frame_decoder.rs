//! The length-prefix decoder over an arbitrary byte stream, then the protobuf parse of
//! every frame it yields.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    courier_protocol::fuzzing::decode_stream(data);
});
