//! The HTTP upgrade and routing path: any request head a client sends,
//! read by chatd's own head parser (plain upgrades), and parsed as hyper
//! does (httparse), then routed and checked.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    chatd::fuzzing::request_head(data);
});
