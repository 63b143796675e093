//! Any line on the control socket: a reply that is a JSON object with `ok`,
//! never a panic, whatever the request asks of a running (portless) daemon.
#![no_main]
use libfuzzer_sys::fuzz_target;
use std::sync::OnceLock;
use userbridge::daemon::Daemon;

fn daemon() -> &'static std::sync::Arc<Daemon> {
    static D: OnceLock<std::sync::Arc<Daemon>> = OnceLock::new();
    D.get_or_init(|| {
        let draft = userbridge::config::file::parse("taps = [\"fuzz0\"]\n", "fuzz").expect("a draft");
        Daemon::new(draft.build().expect("settings"), None, None)
    })
}

fuzz_target!(|data: &[u8]| {
    let Ok(line) = std::str::from_utf8(data) else { return };
    // Requests that would touch the host (attach interfaces, write files) are
    // still parsed and validated, then refused here: no such port exists.
    if line.contains("port_add") || line.contains("pcap") {
        return;
    }
    let (reply, close) = userbridge::control::handle(daemon(), line);
    // A refusal always says why; a malformed line is always refused.
    assert!(reply.ok || reply.error.is_some(), "refusal without a reason: {reply:?}");
    assert!(!close || !reply.ok, "a connection closed on an accepted request: {reply:?}");
});
