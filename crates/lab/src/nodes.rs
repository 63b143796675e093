//! Nodes joined like flannel's VXLAN backend: namespaces `NAME-n1`,
//! `NAME-n2` (the nodes, each a host with its own switch) joined by an
//! underlay veth `ul0` (192.168.100.i/24), pods `NAME-n{i}p{j}` with `eth0`
//! 10.244.i.(j+1)/24 and a default route via the node's gateway 10.244.i.1,
//! MTU 1450, and on every node a VXLAN device `flannel.1` (VNI 1, UDP 8472,
//! MTU 1450, no learning) with a route, a permanent neighbour and an FDB
//! entry for each other node's pod subnet, as flannel programs them.
//!
//! The gateway is `cni0` on each node: a kernel bridge ([`Switching::Kernel`],
//! made here) or the host port of a userbridge daemon the caller starts
//! ([`Switching::Userbridge`]: the lab then only makes the pods' veths,
//! `ubp{j}` in the node). Namespaces, veths, addresses and routes are made
//! over netlink; the VXLAN device and its neighbour and FDB entries with
//! iproute2 (`ip`, `bridge`), which must be installed for this lab.

use crate::{LabError, Pod, Result, quiet_ipv6, set_up_by_name};
use std::net::{IpAddr, Ipv4Addr};
use std::process::Command;
use ub_netlink::{IpNet, NetNs, Rtnl};
use ub_wire::Mac;

/// The most nodes: two share one underlay veth.
pub const MAX_NODES: usize = 2;
/// The most pods per node (addresses 10.244.i.2 ... 10.244.i.101).
pub const MAX_NODE_PODS: usize = 100;
/// flannel's VXLAN MTU: the underlay's 1500 less 50 bytes of encapsulation.
pub const POD_MTU: u32 = 1450;
/// The gateway device of every node.
pub const GATEWAY: &str = "cni0";

/// What switches a node's pods.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Switching {
    /// A Linux bridge `cni0`, as the reference CNI plugin makes it.
    Kernel,
    /// A userbridge daemon with host port `cni0`, started by the caller.
    Userbridge,
}

/// One node of the lab.
#[derive(Debug, Clone)]
pub struct Node {
    pub index: usize,
    /// The node's namespace (its "host").
    pub ns: String,
    pub underlay: Ipv4Addr,
    /// The node's pod subnet, 10.244.i.0/24.
    pub subnet: IpNet,
    /// The gateway's address on `cni0`, 10.244.i.1.
    pub gateway: Ipv4Addr,
    pub pods: Vec<Pod>,
}

/// A lab of nodes; deleted on drop unless [`NodeLab::persist`] is called.
#[derive(Debug)]
pub struct NodeLab {
    pub name: String,
    pub nodes: Vec<Node>,
    pub switching: Switching,
    keep: bool,
}

fn octet(i: usize) -> Result<u8> {
    u8::try_from(i).map_err(|_| LabError::NoPod(i))
}

/// Runs a command (`ip ...`, `bridge ...`) inside namespace `ns`.
fn exec(ns: &str, args: &[&str]) -> Result<()> {
    let o = Command::new("ip")
        .args(["netns", "exec", ns])
        .args(args)
        .output()
        .map_err(|source| LabError::Spawn { cmd: args.join(" "), source })?;
    if o.status.success() {
        Ok(())
    } else {
        let stderr = String::from_utf8_lossy(&o.stderr).trim().to_string();
        Err(LabError::Command { cmd: args.join(" "), ns: ns.to_string(), stderr })
    }
}

/// The VXLAN device's MAC on node `i` (fixed, so the other nodes can be told it).
fn vtep_mac(i: usize) -> Result<Mac> {
    Ok(Mac([0x02, 0xfa, 0x00, 0x00, 0x00, octet(i)?]))
}

impl NodeLab {
    /// A node's namespace name.
    pub fn node_ns_of(name: &str, i: usize) -> String {
        format!("{name}-n{i}")
    }

    /// Builds `nodes` nodes of `pods` pods each. Fails, cleaning up, if any
    /// namespace of that lab name already exists.
    pub fn create(name: &str, nodes: usize, pods: usize, switching: Switching) -> Result<NodeLab> {
        crate::Lab::validate_name(name)?;
        if nodes != MAX_NODES {
            return Err(LabError::Nodes(nodes));
        }
        if pods == 0 || pods > MAX_NODE_PODS {
            return Err(LabError::NodePods(pods));
        }
        if NetNs::exists(&Self::node_ns_of(name, 1)) {
            return Err(LabError::Exists(name.to_string()));
        }
        // The guard is armed before anything is created: a failure half way cleans up.
        let mut lab = NodeLab { name: name.to_string(), nodes: Vec::new(), switching, keep: false };
        for i in 1..=nodes {
            let ns = Self::node_ns_of(name, i);
            NetNs::create(&ns)?.run(|| {
                quiet_ipv6();
                set_up_by_name("lo")
            })??;
            let i8 = octet(i)?;
            lab.nodes.push(Node {
                index: i,
                ns,
                underlay: Ipv4Addr::new(192, 168, 100, i8),
                subnet: IpNet::new(IpAddr::V4(Ipv4Addr::new(10, 244, i8, 0)), 24)?,
                gateway: Ipv4Addr::new(10, 244, i8, 1),
                pods: Vec::new(),
            });
        }
        lab.underlay()?;
        for n in 0..nodes {
            for j in 1..=pods {
                let pod = lab.make_pod(n, j)?;
                lab.nodes[n].pods.push(pod);
            }
            if switching == Switching::Kernel {
                lab.kernel_bridge(n)?;
            }
            lab.vxlan(n)?;
        }
        Ok(lab)
    }

    /// `ul0` in node 1 and node 2, one veth pair, 192.168.100.i/24.
    fn underlay(&self) -> Result<()> {
        let (a, b) = (&self.nodes[0], &self.nodes[1]);
        let b_ns = NetNs::open(&b.ns)?;
        NetNs::open(&a.ns)?.run(|| -> Result<()> {
            let mut nl = Rtnl::open()?;
            nl.add_veth("ul0", "ul0", Some(std::os::fd::AsFd::as_fd(&b_ns)))?;
            let l = nl.link_by_name("ul0")?.ok_or_else(|| LabError::NoInterface("ul0".into()))?;
            nl.add_addr_v4(l.index, a.underlay, 24)?;
            Ok(nl.set_up(l.index, true)?)
        })??;
        b_ns.run(|| -> Result<()> {
            let mut nl = Rtnl::open()?;
            let l = nl.link_by_name("ul0")?.ok_or_else(|| LabError::NoInterface("ul0".into()))?;
            nl.add_addr_v4(l.index, b.underlay, 24)?;
            Ok(nl.set_up(l.index, true)?)
        })?
    }

    /// Pod `j` of node `n` (0-based): its namespace, veth `ubp{j}` (node) -
    /// `eth0` (pod), address, MTU, default route via the gateway.
    fn make_pod(&self, n: usize, j: usize) -> Result<Pod> {
        let node = &self.nodes[n];
        let (i8, j8) = (octet(node.index)?, octet(j + 1)?);
        let pod = Pod {
            index: j,
            ns: format!("{}-n{}p{j}", self.name, node.index),
            ip: Ipv4Addr::new(10, 244, i8, j8),
            mac: Mac([0x02, 0x00, 0x0a, 0xf4, i8, j8]),
            port: format!("ubp{j}"),
        };
        let ns = NetNs::create(&pod.ns)?;
        NetNs::open(&node.ns)?.run(|| -> Result<()> {
            let mut nl = Rtnl::open()?;
            nl.add_veth(&pod.port, "eth0", Some(std::os::fd::AsFd::as_fd(&ns)))?;
            let l = nl.link_by_name(&pod.port)?.ok_or_else(|| LabError::NoInterface("the host end".into()))?;
            nl.set_mtu(l.index, POD_MTU)?;
            Ok(nl.set_up(l.index, true)?)
        })??;
        let gw = node.gateway;
        ns.run(|| -> Result<()> {
            quiet_ipv6();
            set_up_by_name("lo")?;
            let mut nl = Rtnl::open()?;
            let l = nl.link_by_name("eth0")?.ok_or_else(|| LabError::NoInterface("eth0".into()))?;
            nl.set_mac(l.index, pod.mac.0)?;
            nl.set_mtu(l.index, POD_MTU)?;
            nl.add_addr_v4(l.index, pod.ip, 24)?;
            nl.set_up(l.index, true)?;
            let default = IpNet::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 0)?;
            Ok(nl.add_route(default, Some(IpAddr::V4(gw)), Some(l.index))?)
        })??;
        Ok(pod)
    }

    /// `cni0` as the reference bridge plugin makes it: a Linux bridge with
    /// the gateway address, the pods' host ends its ports.
    fn kernel_bridge(&self, n: usize) -> Result<()> {
        let node = &self.nodes[n];
        let ns = &node.ns;
        exec(ns, &["ip", "link", "add", GATEWAY, "type", "bridge"])?;
        exec(ns, &["ip", "link", "set", GATEWAY, "mtu", &POD_MTU.to_string()])?;
        exec(ns, &["ip", "addr", "add", &format!("{}/24", node.gateway), "dev", GATEWAY])?;
        exec(ns, &["ip", "link", "set", GATEWAY, "up"])?;
        for p in &node.pods {
            exec(ns, &["ip", "link", "set", &p.port, "master", GATEWAY])?;
        }
        Ok(())
    }

    /// flannel.1 on node `n`, with routes to every other node's pods.
    fn vxlan(&self, n: usize) -> Result<()> {
        let node = &self.nodes[n];
        let ns = &node.ns;
        let local = node.underlay.to_string();
        exec(
            ns,
            &[
                "ip",
                "link",
                "add",
                "flannel.1",
                "type",
                "vxlan",
                "id",
                "1",
                "local",
                &local,
                "dev",
                "ul0",
                "dstport",
                "8472",
                "nolearning",
            ],
        )?;
        exec(
            ns,
            &[
                "ip",
                "link",
                "set",
                "flannel.1",
                "address",
                &vtep_mac(node.index)?.to_string(),
                "mtu",
                &POD_MTU.to_string(),
                "up",
            ],
        )?;
        exec(ns, &["ip", "addr", "add", &format!("{}/32", node.subnet.network()), "dev", "flannel.1"])?;
        for other in self.nodes.iter().filter(|o| o.index != node.index) {
            let vtep = other.subnet.network().to_string();
            let mac = vtep_mac(other.index)?.to_string();
            exec(ns, &["ip", "route", "add", &other.subnet.to_string(), "via", &vtep, "dev", "flannel.1", "onlink"])?;
            exec(ns, &["ip", "neigh", "add", &vtep, "lladdr", &mac, "dev", "flannel.1", "nud", "permanent"])?;
            exec(ns, &["bridge", "fdb", "append", &mac, "dev", "flannel.1", "dst", &other.underlay.to_string()])?;
        }
        NetNs::open(ns)?
            .run(|| std::fs::write("/proc/sys/net/ipv4/ip_forward", "1"))?
            .map_err(|source| LabError::Sysctl { what: "enabling forwarding", ns: ns.to_string(), source })
    }

    /// Keeps the namespaces after this value is dropped (for `lab up`).
    pub fn persist(mut self) {
        self.keep = true;
    }

    /// Deletes the namespaces of node lab `name`. Returns how many went.
    pub fn destroy(name: &str) -> Result<usize> {
        crate::Lab::validate_name(name)?;
        let mut n = 0;
        let entries =
            std::fs::read_dir(ub_netlink::NETNS_RUN_DIR).map(|d| d.flatten().collect::<Vec<_>>()).unwrap_or_default();
        let prefix = format!("{name}-n");
        // Pods first, then the nodes (their veths go with the pods).
        let mut names: Vec<String> = entries
            .into_iter()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|f| {
                f.strip_prefix(&prefix)
                    .is_some_and(|rest| !rest.is_empty() && rest.bytes().all(|b| b.is_ascii_digit() || b == b'p'))
            })
            .collect();
        names.sort_by_key(|f| std::cmp::Reverse(f.contains('p')));
        for f in names {
            if NetNs::delete(&f).is_ok() {
                n += 1;
            }
        }
        Ok(n)
    }
}

impl Drop for NodeLab {
    fn drop(&mut self) {
        if !self.keep {
            let _ = NodeLab::destroy(&self.name);
        }
    }
}
