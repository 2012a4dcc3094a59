//! The compact event encoding the broker carries between nodes.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    chatd::fuzzing::event(data);
});
