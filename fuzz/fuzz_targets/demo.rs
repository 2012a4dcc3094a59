//! The redis-chat-demo dialect's requests: whatever a demo client sends.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    chatd::fuzzing::demo(data);
});
