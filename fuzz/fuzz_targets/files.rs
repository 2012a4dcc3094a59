//! Upload and download input: `Range` headers, file names, and file bytes
//! (content sniffing, image decoding within limits).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    chatd::fuzzing::files(data);
});
