//! The FastChat dialect's messages: whatever a FastChat client sends.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    chatd::fuzzing::fastchat(data);
});
