//! The native (chat-api) command parser: any text a client sends.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    chatd::fuzzing::command(data);
});
