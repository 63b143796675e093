//! A bridge's side of `run --takeover` (`crate::takeover`): its ports give
//! back what cannot travel, hand over duplicates of what carries their
//! frames, and stop reading, staying in the table; after a handover that
//! failed they are attached again on those same descriptors.

use super::{Bridge, BridgeError, Opener};
use crate::lock;
use std::os::fd::OwnedFd;
use ub_fdb::PortId;
use ub_port::{Claim, Quiet, Role};
use ub_proto::PortSpec;

/// A port whose readers stopped for a handover, with its claim and its
/// interface's IP settings still held.
#[derive(Debug)]
pub struct Frozen {
    pub spec: PortSpec,
    id: PortId,
    claim: Claim,
    quiet: Option<Quiet>,
}

impl Frozen {
    /// The daemon that took over holds the same claim and settings: this
    /// one lets them go without undoing them.
    pub fn handed_over(self) {
        self.claim.handed_over();
        if let Some(q) = self.quiet {
            q.handed_over();
        }
    }
}

/// A port as it is handed over: its name, duplicates of its descriptors
/// with what each is, and its interface's IP settings as they were.
pub type PortOut = (String, Vec<(Role, OwnedFd)>, Vec<(String, String)>);

impl Bridge {
    /// Asks every port to give back what cannot travel: a busy port steers
    /// its frames back to its sockets, and its readers read its RX rings
    /// empty as they stop.
    pub fn prepare_handover(&self) {
        for p in self.sw.ports().iter().flatten() {
            p.port.tx.prepare_handover();
        }
    }

    /// A handover refused after [`Bridge::prepare_handover`]: busy ports
    /// may take their rings again.
    pub fn cancel_handover(&self) {
        for p in self.sw.ports().iter().flatten() {
            p.port.tx.cancel_handover();
        }
    }

    /// The ports to hand over (not the way through the node's netfilter,
    /// which the next daemon makes anew).
    pub fn handover_ports(&self) -> std::io::Result<Vec<PortOut>> {
        let nf = self.netfilter_port();
        let ports = lock(&self.ports);
        let attached = ports.attached.iter().filter(|(n, _)| Some(*n) != nf.as_ref());
        attached.filter_map(|(name, a)| self.port_out(name, a.id, &a.claim, a.quiet.as_ref())).collect()
    }

    /// [`Bridge::handover_ports`] for ports already frozen (to attach them
    /// again after a handover that failed).
    pub fn handover_ports_of(&self, frozen: &[Frozen]) -> std::io::Result<Vec<PortOut>> {
        frozen.iter().filter_map(|f| self.port_out(&f.spec.name, f.id, &f.claim, f.quiet.as_ref())).collect()
    }

    /// Port `id` as it is handed over; `None` if it has left the table.
    fn port_out(
        &self,
        name: &str,
        id: PortId,
        claim: &Claim,
        quiet: Option<&Quiet>,
    ) -> Option<std::io::Result<PortOut>> {
        let p = self.sw.port(id)?;
        let out = || {
            let mut fds = p.tx.handover_fds()?;
            fds.push((Role::Claim, claim.dup_fd()?));
            Ok((name.to_string(), fds, quiet.map(|q| q.changed().to_vec()).unwrap_or_default()))
        };
        Some(out())
    }

    /// Stops every port's readers: frames wait in the ports' sockets. The
    /// ports stay in the table (their entries and transmit halves too).
    pub fn freeze(&self) -> Vec<Frozen> {
        let attached = std::mem::take(&mut lock(&self.ports).attached);
        attached
            .into_values()
            .map(|a| {
                a.reader.stop();
                Frozen { spec: a.spec, id: a.id, claim: a.claim, quiet: a.quiet }
            })
            .collect()
    }

    /// After a handover that failed: each frozen port attached again, on
    /// the descriptors it handed over (put back in `o.open.inherit`), with
    /// the entries it had. Returns what could not be.
    pub fn thaw(&self, o: &Opener, frozen: Vec<Frozen>) -> Vec<BridgeError> {
        let mut failed = Vec::new();
        let nf = self.netfilter_port();
        for f in frozen {
            if Some(&f.spec.name) == nf.as_ref() {
                // The way into the node's netfilter: attached again where its
                // twin is as it was, else made anew (the daemon that failed to
                // take over may have re-made or removed it). Its readers wait
                // with the others until the daemon turns it on as before.
                self.sw.remove_port(f.id);
                let spec = f.spec.clone();
                drop(f);
                match self.attach(o, spec) {
                    Ok(id) => {
                        *lock(&self.netfilter) = Some(id);
                        self.sw.set_netfilter(Some(id), false);
                    }
                    Err(_) => {
                        self.remove_netfilter();
                        if let Err(e) = self.attach_netfilter(o) {
                            failed.push(e);
                        }
                    }
                }
                continue;
            }
            let entries: Vec<_> =
                self.sw.fdb.entries(self.sw.now_ms()).into_iter().filter(|e| e.port == f.id && !e.is_static).collect();
            self.sw.remove_port(f.id);
            let spec = f.spec.clone();
            match self.attach(o, spec) {
                Ok(id) => {
                    let now = self.sw.now_ms();
                    for e in entries {
                        let _ = self.sw.fdb.learn(e.vid, e.mac, id, now.saturating_sub(e.age_ms));
                    }
                    // The port holds the same claim and settings anew.
                    f.handed_over();
                }
                Err(e) => failed.push(e),
            }
        }
        failed
    }
}
