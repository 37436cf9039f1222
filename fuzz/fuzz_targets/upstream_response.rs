//! Arbitrary bytes as a backend's response, through the proxy's own
//! HTTP/1.1 codec (the head parser, the chunked decoder, the framing):
//! each is a response and a body or an error with a message, never a
//! panic, and a body is never longer than the bytes it came from.
#![no_main]

use bbproxy::upstream::h1::read_response;
use bbproxy::upstream::pool::UPSTREAM_READ_BUFFER;
use http::Method;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // The first byte: the request's method and where the bytes split
    // between two reads.
    let Some((&ctl, bytes)) = data.split_first() else {
        return;
    };
    let method = if ctl & 1 == 0 { Method::GET } else { Method::HEAD };
    let split = usize::from(ctl >> 1) * bytes.len() / 128;
    match read_response(bytes, split, &method, UPSTREAM_READ_BUFFER) {
        Ok((_, body)) => {
            assert!(body.len() <= bytes.len());
            assert!(method != Method::HEAD || body.is_empty());
        }
        Err(e) => assert!(!e.to_string().is_empty()),
    }
});
