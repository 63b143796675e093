//! Any line on the control socket: a reply that is a JSON object with `ok`,
//! never a panic, whatever the request asks of a running daemon with one
//! portless bridge (and no host port: nothing on the host is touched).
#![no_main]
use libfuzzer_sys::fuzz_target;
use std::sync::OnceLock;
use userbridge::daemon::Daemon;

fn daemon() -> &'static std::sync::Arc<Daemon> {
    static D: OnceLock<std::sync::Arc<Daemon>> = OnceLock::new();
    D.get_or_init(|| {
        let draft = userbridge::config::file::parse("[[bridge]]\nname = \"fuzz0\"\nhost_port = false\n", "fuzz")
            .expect("a draft");
        let settings = draft.build().expect("settings");
        let d = Daemon::new(settings.clone(), None, None);
        d.add_configured_bridge(&settings.bridges[0]).expect("a bridge of no interface");
        d
    })
}

fuzz_target!(|data: &[u8]| {
    let Ok(line) = std::str::from_utf8(data) else { return };
    // Requests that would touch the host (attach interfaces, make bridges'
    // interfaces, write files) are left out.
    if line.contains("port_add") || line.contains("pcap") || line.contains("bridge_add") {
        return;
    }
    let (reply, close) = userbridge::control::handle(daemon(), line);
    // A refusal always says why; a malformed line is always refused.
    assert!(reply.ok || reply.error.is_some(), "refusal without a reason: {reply:?}");
    assert!(!close || !reply.ok, "a connection closed on an accepted request: {reply:?}");
});
