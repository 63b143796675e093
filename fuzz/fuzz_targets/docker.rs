//! Any bytes on the Docker driver's socket: the HTTP reader takes requests
//! within its limits or refuses them, and each request's body is read as
//! its call or refused by name. Never a panic, never unbounded memory.
#![no_main]
use libfuzzer_sys::fuzz_target;
use ub_serve::http::Reader;

fuzz_target!(|data: &[u8]| {
    let mut r = Reader::new(data, ub_docker::HTTP_LIMITS);
    // A request is at least a request line: the loop ends with the bytes.
    while let Ok(Some(req)) = r.next_request() {
        assert!(req.body.len() <= ub_docker::HTTP_LIMITS.body);
        let method = req.path.trim_start_matches('/');
        let _ = ub_docker::driver::Call::parse(method, &req.body);
    }
});
