//! Two nodes joined like flannel's VXLAN backend (`userbridge lab up
//! --nodes 2`), each with its own userbridge and host port `cni0`: pods
//! reach pods on the other node, both nodes' gateways, and the underlay
//! carries their traffic only as VXLAN.

mod common;

use common::*;

/// A node lab made by the binary, as a user would; `lab down` on drop.
struct NodeLab(String);

impl NodeLab {
    fn up(tag: &str, pods: usize) -> NodeLab {
        let name = unique(tag);
        let o = std::process::Command::new(BIN)
            .args(["lab", "up", "--nodes", "2", "--pods", &pods.to_string(), "--name", &name])
            .output()
            .unwrap();
        let lab = NodeLab(name);
        assert!(o.status.success(), "lab up: {}", String::from_utf8_lossy(&o.stderr));
        lab
    }
    fn pod(&self, node: usize, pod: usize) -> String {
        format!("{}-n{node}p{pod}", self.0)
    }
    fn node(&self, node: usize) -> String {
        format!("{}-n{node}", self.0)
    }
}

impl Drop for NodeLab {
    fn drop(&mut self) {
        let _ = std::process::Command::new(BIN).args(["lab", "down", "--name", &self.0]).output();
    }
}

#[test]
fn pods_on_two_nodes_talk_over_vxlan_like_flannel() {
    let lab = NodeLab::up("vx", 2);
    let (a, b) = (lab.pod(1, 1), lab.pod(2, 1));
    // Each pod reaches its own node's gateway and the other node's.
    assert!(ping(&a, "10.244.1.1", 1), "own node");
    assert!(ping(&a, "10.244.2.1", 1), "the other node");
    // The underlay sees the pods' traffic only inside VXLAN (UDP 8472).
    let dump = Tcpdump::start_on(&lab.node(1), "ul0", &[], "");
    assert!(ping(&a, "10.244.2.2", 4), "pod on node 1 -> pod on node 2");
    let lines =
        dump.finish_when("four echo replies", |l| l.iter().filter(|l| l.contains("ICMP echo reply")).count() >= 4);
    // tcpdump prints a decoded VXLAN frame's inner packet on the next line,
    // without a timestamp: the outer (timestamped) lines are all the underlay's.
    let out = lines.join("\n");
    let outer: Vec<&String> = lines.iter().filter(|l| l.starts_with(|c: char| c.is_ascii_digit())).collect();
    for l in &outer {
        assert!(
            l.contains(" IP 192.168.100.") && l.contains(".8472: OTV") || l.contains("ARP"),
            "not VXLAN: {l}\n{out}"
        );
    }
    assert!(outer.iter().filter(|l| l.contains(".8472: OTV")).count() >= 8, "{out}");
    assert!(out.contains("IP 10.244.1.2 > 10.244.2.2: ICMP echo request"), "the inner packets: {out}");
    // TCP across the nodes, through both switches and the tunnel.
    tcp_100_mb(&a, &b, "10.244.2.2", false);
}
