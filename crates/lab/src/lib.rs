//! Container-node labs: a switch namespace holding the host ends of one veth
//! pair per pod, and one namespace per pod with `eth0` and an address in
//! 10.0.0.0/24 — the topology of a CNI bridge node, built over netlink.
//! IPv6 is disabled in the pods so that a lab is silent until used.
//!
//! A [`Lab`] deletes every namespace it created when dropped (panics
//! included), unless [`Lab::persist`] is called.

mod nodes;
pub mod wait;

pub use nodes::{GATEWAY, MAX_NODE_PODS, MAX_NODES, Node, NodeLab, POD_MTU, Switching};

use std::net::Ipv4Addr;
use ub_netlink::{NetNs, Rtnl};
use ub_wire::Mac;

/// The most pods one lab may have (addresses are 10.0.0.1 … 10.0.0.250).
pub const MAX_PODS: usize = 250;

/// One pod: a namespace with `eth0`, joined to the switch namespace by a veth pair.
#[derive(Debug, Clone)]
pub struct Pod {
    pub index: usize,
    /// The pod's namespace name.
    pub ns: String,
    pub ip: Ipv4Addr,
    pub mac: Mac,
    /// The host end of the pod's veth, in the switch namespace: the switch port.
    pub port: String,
}

/// A lab: namespaces `NAME-sw` (the switch side) and `NAME-p1`… (the pods).
#[derive(Debug)]
pub struct Lab {
    pub name: String,
    pub pods: Vec<Pod>,
    keep: bool,
}

/// Building or removing a lab failed; each names what and the fix.
#[derive(Debug, thiserror::Error)]
pub enum LabError {
    #[error("lab name '{0}' must be 1-40 of A-Z a-z 0-9 _ -")]
    BadName(String),
    #[error("--pods {0}: a lab has 1 to {MAX_PODS} pods")]
    Pods(usize),
    #[error("--pods {0}: a node has 1 to {max} pods", max = nodes::MAX_NODE_PODS)]
    NodePods(usize),
    #[error("--nodes {0}: a node lab has {n} nodes (joined by one underlay veth)", n = nodes::MAX_NODES)]
    Nodes(usize),
    #[error("lab '{0}' already exists (remove it with `userbridge lab down --name {0}`)")]
    Exists(String),
    #[error("the lab has no pod {0}")]
    NoPod(usize),
    #[error("no interface {0}")]
    NoInterface(String),
    #[error("running `{cmd}` (is iproute2 installed?): {source}")]
    Spawn { cmd: String, source: std::io::Error },
    #[error("`{cmd}` in {ns}: {stderr}")]
    Command { cmd: String, ns: String, stderr: String },
    #[error("{what} in {ns}: {source}")]
    Sysctl { what: &'static str, ns: String, source: std::io::Error },
    #[error(transparent)]
    Netlink(#[from] ub_netlink::Error),
    #[error(transparent)]
    Prefix(#[from] ipnet::PrefixLenError),
}

pub type Result<T> = std::result::Result<T, LabError>;

impl Lab {
    /// The switch namespace's name for a lab called `name`.
    pub fn switch_ns_of(name: &str) -> String {
        format!("{name}-sw")
    }

    pub fn switch_ns(&self) -> String {
        Self::switch_ns_of(&self.name)
    }

    /// Checks a lab name: it prefixes namespace names, so 1-40 of [A-Za-z0-9_-].
    pub fn validate_name(name: &str) -> Result<()> {
        let ok = !name.is_empty()
            && name.len() <= 40
            && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        if ok { Ok(()) } else { Err(LabError::BadName(name.to_string())) }
    }

    /// Builds a lab of `pods` pods. Fails, cleaning up, if any namespace of
    /// that lab name already exists.
    pub fn create(name: &str, pods: usize) -> Result<Lab> {
        Self::validate_name(name)?;
        if pods == 0 || pods > MAX_PODS {
            return Err(LabError::Pods(pods));
        }
        if NetNs::exists(&Self::switch_ns_of(name)) {
            return Err(LabError::Exists(name.to_string()));
        }
        // The guard is armed before anything is created: a failure half way cleans up.
        let mut lab = Lab { name: name.to_string(), pods: Vec::new(), keep: false };
        let sw = NetNs::create(&lab.switch_ns())?;
        sw.run(|| {
            // The host ends are switch ports, not hosts: no IPv6 chatter from them.
            quiet_ipv6();
            set_up_by_name("lo")
        })??;
        for _ in 0..pods {
            lab.add_pod()?;
        }
        Ok(lab)
    }

    /// Adds pod number `len + 1` (namespace, veth pair, address) to the lab.
    pub fn add_pod(&mut self) -> Result<&Pod> {
        let i = self.pods.len() + 1;
        if i > MAX_PODS {
            return Err(LabError::Pods(i));
        }
        let pod = self.make_pod(i)?;
        self.pods.push(pod);
        Ok(&self.pods[i - 1])
    }

    /// Deletes pod `i`'s namespace (its veth pair goes with it) and makes it
    /// again with the same names and addresses: a pod restarted in place.
    pub fn recreate_pod(&mut self, i: usize) -> Result<()> {
        let pod = self.pods.get(i - 1).ok_or(LabError::NoPod(i))?.clone();
        NetNs::delete(&pod.ns)?;
        // The kernel removes the veth pair asynchronously; wait (bounded) until its name is free.
        let sw = NetNs::open(&self.switch_ns())?;
        wait::poll_until(std::time::Duration::from_secs(2), || {
            let present = sw.run(|| Rtnl::open().and_then(|mut nl| nl.link_by_name(&pod.port)));
            matches!(present, Ok(Ok(None)))
        });
        self.pods[i - 1] = self.make_pod(i)?;
        Ok(())
    }

    /// Makes pod `i`; cleaning up after a failure is `destroy`'s job (by name).
    fn make_pod(&self, i: usize) -> Result<Pod> {
        let name = self.name.clone();
        let sw = NetNs::open(&self.switch_ns())?;
        let host = u8::try_from(i).ok().filter(|&h| usize::from(h) <= MAX_PODS).ok_or(LabError::NoPod(i))?;
        let pod = Pod {
            index: i,
            ns: format!("{name}-p{i}"),
            ip: Ipv4Addr::new(10, 0, 0, host),
            mac: Mac([0x02, 0x00, 0x00, 0x00, 0x00, host]),
            port: format!("ubp{i}"),
        };
        let ns = NetNs::create(&pod.ns)?;
        sw.run(|| -> Result<()> {
            let mut nl = Rtnl::open()?;
            nl.add_veth(&pod.port, "eth0", Some(std::os::fd::AsFd::as_fd(&ns)))?;
            set_up_by_name(&pod.port)
        })??;
        ns.run(|| -> Result<()> {
            quiet_ipv6();
            set_up_by_name("lo")?;
            let mut nl = Rtnl::open()?;
            let link = nl.link_by_name("eth0")?.ok_or_else(|| LabError::NoInterface("eth0".into()))?;
            nl.set_mac(link.index, pod.mac.0)?;
            nl.add_addr_v4(link.index, pod.ip, 24)?;
            Ok(nl.set_up(link.index, true)?)
        })??;
        Ok(pod)
    }

    /// Deletes the last pod's namespace (its veth pair goes with it).
    pub fn remove_last_pod(&mut self) -> Result<()> {
        let pod = self.pods.pop().ok_or(LabError::NoPod(1))?;
        Ok(NetNs::delete(&pod.ns)?)
    }

    /// Keeps the namespaces after this value is dropped (for `lab up`).
    pub fn persist(mut self) {
        self.keep = true;
    }

    /// Port names, in pod order.
    pub fn ports(&self) -> Vec<String> {
        self.pods.iter().map(|p| p.port.clone()).collect()
    }

    /// Deletes the namespaces of lab `name` (pods and switch side). Returns
    /// how many were removed.
    pub fn destroy(name: &str) -> Result<usize> {
        Self::validate_name(name)?;
        let prefix = format!("{name}-p");
        let mut n = 0;
        let entries =
            std::fs::read_dir(ub_netlink::NETNS_RUN_DIR).map(|d| d.flatten().collect::<Vec<_>>()).unwrap_or_default();
        for e in entries {
            let f = e.file_name().to_string_lossy().into_owned();
            let is_pod = f
                .strip_prefix(&prefix)
                .is_some_and(|rest| !rest.is_empty() && rest.bytes().all(|b| b.is_ascii_digit()));
            if is_pod && NetNs::delete(&f).is_ok() {
                n += 1;
            }
        }
        if NetNs::delete(&Self::switch_ns_of(name)).is_ok() {
            n += 1;
        }
        Ok(n)
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        if !self.keep {
            let _ = Lab::destroy(&self.name);
        }
    }
}

/// IPv4 only: no router solicitations, DAD or MLD frames, so the only traffic
/// in a lab is what its user sends. Applies to the calling thread's namespace.
pub(crate) fn quiet_ipv6() {
    for conf in ["all", "default"] {
        let _ = std::fs::write(format!("/proc/sys/net/ipv6/conf/{conf}/disable_ipv6"), "1");
    }
}

pub(crate) fn set_up_by_name(name: &str) -> Result<()> {
    let mut nl = Rtnl::open()?;
    let link = nl.link_by_name(name)?.ok_or_else(|| LabError::NoInterface(name.to_string()))?;
    Ok(nl.set_up(link.index, true)?)
}
