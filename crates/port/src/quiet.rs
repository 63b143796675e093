//! A port's interface kept out of the node's IP stack, as a bridge port
//! is: the kernel consumes what arrives on an enslaved port, but an
//! interface userbridge reads with a packet socket still runs IP. In the
//! namespace of a bridge's host port (the node's, where the CNI plugin and
//! the Docker driver make the pods' veths) it would answer ARP for every
//! address of the node on each pod's veth (`arp_ignore` 0): a pod would
//! then learn its own veth's MAC for its gateway, and its traffic would
//! enter the node there, past the switch and past rules that name the
//! bridge. So the port answers no ARP, forwards nothing and runs no IPv6
//! while it is a port; the values it had come back when it stops being one.

/// The knobs set on a port's interface, as `/proc/sys/net` paths under the
/// interface's name, and the value each takes while it is a port.
const KNOBS: [(&str, &str, &str); 3] =
    [("ipv4/conf", "arp_ignore", "8"), ("ipv4/conf", "forwarding", "0"), ("ipv6/conf", "disable_ipv6", "1")];

/// The knobs changed on one interface, with what they were.
#[derive(Debug)]
pub struct Quiet {
    changed: Vec<(String, String)>,
}

fn path(family: &str, name: &str, knob: &str) -> String {
    format!("/proc/sys/net/{family}/{name}/{knob}")
}

impl Quiet {
    /// Quiets interface `name` of the calling thread's namespace. Best
    /// effort: a knob the kernel does not have (no IPv6) is left alone.
    pub fn apply(name: &str) -> Quiet {
        let mut changed = Vec::new();
        for (family, knob, want) in KNOBS {
            let p = path(family, name, knob);
            let Ok(had) = std::fs::read_to_string(&p) else { continue };
            let had = had.trim().to_string();
            if had != want && std::fs::write(&p, want).is_ok() {
                changed.push((p, had));
            }
        }
        Quiet { changed }
    }
}

impl Quiet {
    /// The knobs another daemon changed on a port it handed over, with what
    /// they were: set again (a daemon that failed to take over may have
    /// put them back as it went), and put back when this one lets the port go.
    pub fn inherit(changed: Vec<(String, String)>) -> Quiet {
        for (p, _) in &changed {
            if let Some((_, _, want)) = KNOBS.iter().find(|(_, knob, _)| p.ends_with(&format!("/{knob}"))) {
                let _ = std::fs::write(p, want);
            }
        }
        Quiet { changed }
    }

    /// The knobs changed, with what they were.
    pub fn changed(&self) -> &[(String, String)] {
        &self.changed
    }

    /// Lets the port go without putting the knobs back: the daemon that
    /// took it over has them.
    pub fn handed_over(mut self) {
        self.changed.clear();
    }
}

impl Drop for Quiet {
    fn drop(&mut self) {
        // Gone with its interface, or put back as it was.
        for (p, had) in &self.changed {
            let _ = std::fs::write(p, had);
        }
    }
}
