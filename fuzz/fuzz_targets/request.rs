//! The HTTP upgrade and routing path: any request head a client sends,
//! read by chatd's own head parser (plain upgrades), and parsed as hyper
//! does (httparse), then routed and checked.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    chatd::fuzzing::head(data);
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut parsed = httparse::Request::new(&mut headers);
    let Ok(httparse::Status::Complete(_)) = parsed.parse(data) else {
        return;
    };
    let mut req = hyper::Request::builder()
        .method(parsed.method.unwrap_or("GET"))
        .uri(parsed.path.unwrap_or("/"))
        .version(match parsed.version {
            Some(0) => hyper::Version::HTTP_10,
            _ => hyper::Version::HTTP_11,
        });
    for h in parsed.headers.iter() {
        req = req.header(h.name, h.value);
    }
    // Requests hyper itself would refuse (bad URI or header) never reach us.
    if let Ok(req) = req.body(()) {
        chatd::fuzzing::request(&req);
    }
});
