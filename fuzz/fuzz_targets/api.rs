//! The REST API's JSON bodies and the `@mention` scan: whatever a client
//! sends, parsed and validated as the handlers do.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    chatd::fuzzing::api(data);
});
