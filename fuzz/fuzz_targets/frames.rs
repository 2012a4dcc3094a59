//! The WebSocket frame reader: any bytes a client sends after the upgrade
//! (the first byte picks whether permessage-deflate was negotiated).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    chatd::fuzzing::frames(data);
});
