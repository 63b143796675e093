//! `ipMasq`: the pod's address masqueraded behind the node for traffic
//! leaving its subnet, with the reference plugin's rules (`ip.SetupIPMasq`):
//! a chain per container in the nat table that accepts the pod's own subnet
//! and masquerades the rest but multicast, jumped to from POSTROUTING for
//! the pod's source address. Removed by DEL (and GC) by the chain's name.
//!
//! And `serviceMasq`: one rule per subnet for same-node Service replies
//! (see [`Nat::service`]).
//!
//! Each change is one `iptables-restore --noflush` transaction planned
//! from one listing of the nat table (`iptables -S`), not an `iptables`
//! run per rule: every run takes the xtables lock and reads the ruleset,
//! which is what a node starting many pods at once waits on. Rules are
//! matched and deleted by their spec, never by number (other pods' DELs
//! renumber them).

use crate::error::CniError;
use ipnet::IpNet;
use std::io::Write;
use std::process::{Command, Stdio};

/// The container's chain: `UB-` and a hash of the network and container
/// (the reference plugin's `CNI-` chains, ours apart).
pub fn chain_name(network: &str, container_id: &str) -> String {
    format!("UB-{:016x}", ub_netlink::fnv1a(&[network.as_bytes(), b"/", container_id.as_bytes()]))
}

/// The rules' comment. Network names and container ids have no quotes or
/// spaces (the spec's and skel's rules), so it is one quoted word group
/// that `iptables -S` prints back as written.
fn comment(network: &str, container_id: &str) -> String {
    format!("\"name: {network} id: {container_id}\"")
}

fn tool(v6: bool) -> &'static str {
    if v6 { "ip6tables" } else { "iptables" }
}

fn missing_tool(v6: bool, e: &std::io::Error) -> CniError {
    CniError::internal(format!("ipMasq and serviceMasq need {}: {e} (install iptables, or set them false)", tool(v6)))
}

/// The nat table of one family, as `iptables -S` lists it.
#[derive(Debug, Clone)]
pub struct Nat {
    v6: bool,
    lines: Vec<String>,
}

impl Nat {
    /// Lists the nat table (one `iptables -w -t nat -S`).
    pub fn load(v6: bool) -> Result<Nat, CniError> {
        let out = Command::new(tool(v6)).args(["-w", "-t", "nat", "-S"]).output().map_err(|e| missing_tool(v6, &e))?;
        if !out.status.success() {
            return Err(CniError::internal(format!(
                "{} -t nat -S: {}",
                tool(v6),
                String::from_utf8_lossy(&out.stderr).trim()
            )));
        }
        Ok(Nat::from_listing(v6, &String::from_utf8_lossy(&out.stdout)))
    }

    pub fn from_listing(v6: bool, listing: &str) -> Nat {
        Nat { v6, lines: listing.lines().map(str::to_string).collect() }
    }

    fn has(&self, line: &str) -> bool {
        self.lines.iter().any(|l| l == line)
    }

    /// The lines that make `addresses` (each with its subnet's prefix)
    /// masqueraded for this container; none if all are there.
    pub fn masq(&self, addresses: &[IpNet], network: &str, container_id: &str) -> Vec<String> {
        let chain = chain_name(network, container_id);
        let c = comment(network, container_id);
        let multicast = if self.v6 { "ff00::/8" } else { "224.0.0.0/4" };
        let mut want = Vec::new();
        for a in addresses.iter().filter(|a| a.addr().is_ipv6() == self.v6) {
            let host = IpNet::new(a.addr(), a.max_prefix_len()).unwrap_or(*a);
            want.push(format!("-A {chain} -d {} -m comment --comment {c} -j ACCEPT", a.trunc()));
            want.push(format!("-A {chain} ! -d {multicast} -m comment --comment {c} -j MASQUERADE"));
            want.push(format!("-A POSTROUTING -s {host} -m comment --comment {c} -j {chain}"));
        }
        let mut plan: Vec<String> = Vec::new();
        if !want.is_empty() && !self.has(&format!("-N {chain}")) {
            plan.push(format!(":{chain} - [0:0]"));
        }
        for w in want {
            if !self.has(&w) && !plan.contains(&w) {
                plan.push(w);
            }
        }
        plan
    }

    /// The lines that remove this container's jumps and chain; none if it
    /// has none.
    pub fn unmasq(&self, network: &str, container_id: &str) -> Vec<String> {
        let chain = chain_name(network, container_id);
        let mut plan: Vec<String> = self
            .lines
            .iter()
            .filter(|l| l.starts_with("-A POSTROUTING ") && l.ends_with(&format!(" -j {chain}")))
            .map(|l| format!("-D{}", &l[2..]))
            .collect();
        if self.has(&format!("-N {chain}")) {
            plan.push(format!("-F {chain}"));
            plan.push(format!("-X {chain}"));
        }
        plan
    }

    /// The line that masquerades connections DNAT'ed on the node (a
    /// Service's virtual IP) from `subnet` back into `subnet`; none if it
    /// is there. Without it the backend pod answers the client pod directly
    /// across the switch, the reply never passes the node's conntrack to be
    /// un-DNAT'ed, and the client drops it. The kernel bridge hides this
    /// with br_netfilter; userbridge's frames never enter netfilter. One
    /// rule per subnet, first in POSTROUTING (ahead of ipMasq's
    /// `-d subnet -j ACCEPT`), shared by the network's pods and kept.
    pub fn service(&self, subnet: IpNet, network: &str) -> Vec<String> {
        let net = subnet.trunc();
        let rule = format!(
            "-s {net} -d {net} -m conntrack --ctstate DNAT -m comment --comment \"userbridge Service replies in {network}\" -j MASQUERADE"
        );
        if self.has(&format!("-A POSTROUTING {rule}")) { Vec::new() } else { vec![format!("-I POSTROUTING 1 {rule}")] }
    }

    /// Applies `plan` in one `iptables-restore --noflush` transaction.
    pub fn apply(&self, plan: &[String]) -> Result<(), CniError> {
        if plan.is_empty() {
            return Ok(());
        }
        let restore = format!("{}-restore", tool(self.v6));
        let mut input = String::from("*nat\n");
        for l in plan {
            input.push_str(l);
            input.push('\n');
        }
        input.push_str("COMMIT\n");
        let mut child = Command::new(&restore)
            .args(["-w", "--noflush"])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| missing_tool(self.v6, &e))?;
        if let Some(mut i) = child.stdin.take() {
            i.write_all(input.as_bytes()).map_err(|e| CniError::internal(format!("{restore}: {e}")))?;
        }
        let out = child.wait_with_output().map_err(|e| CniError::internal(format!("{restore}: {e}")))?;
        if out.status.success() {
            Ok(())
        } else {
            Err(CniError::internal(format!(
                "{restore}: {} (applying: {})",
                String::from_utf8_lossy(&out.stderr).trim(),
                plan.join("; ")
            )))
        }
    }
}

/// Removes the container's masquerade rules in both families; nothing to
/// remove is not an error (DEL may repeat).
pub fn teardown(network: &str, container_id: &str) -> Result<(), CniError> {
    for v6 in [false, true] {
        let nat = match Nat::load(v6) {
            Ok(n) => n,
            // No ip6tables (or no IPv6 nat) on this node: nothing of ours there.
            Err(_) if v6 => continue,
            Err(e) => return Err(e),
        };
        nat.apply(&nat.unmasq(network, container_id))?;
    }
    Ok(())
}

/// Serializes the check-then-insert of the shared Service rule among
/// concurrent ADDs (no duplicate rule); held until dropped.
pub fn service_lock() -> Option<std::fs::File> {
    let dir = std::path::Path::new("/run/userbridge");
    let _ = std::fs::create_dir_all(dir);
    let f = std::fs::OpenOptions::new().create(true).truncate(false).write(true).open(dir.join("cni-nat.lock")).ok()?;
    f.lock().ok()?;
    Some(f)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chain_names_fit_iptables() {
        let c = chain_name("k8s-pod-network", &"f".repeat(64));
        assert!(c.len() <= 28, "{c}");
        assert_ne!(c, chain_name("other", &"f".repeat(64)));
    }

    fn net(s: &str) -> IpNet {
        s.parse().unwrap()
    }

    #[test]
    fn masquerade_is_planned_once_and_undone_by_spec() {
        let empty = Nat::from_listing(false, "-P POSTROUTING ACCEPT\n");
        let plan = empty.masq(&[net("10.244.1.5/24")], "n", "c1");
        let chain = chain_name("n", "c1");
        assert_eq!(
            plan,
            vec![
                format!(":{chain} - [0:0]"),
                format!("-A {chain} -d 10.244.1.0/24 -m comment --comment \"name: n id: c1\" -j ACCEPT"),
                format!("-A {chain} ! -d 224.0.0.0/4 -m comment --comment \"name: n id: c1\" -j MASQUERADE"),
                format!("-A POSTROUTING -s 10.244.1.5/32 -m comment --comment \"name: n id: c1\" -j {chain}"),
            ]
        );
        // Listed back as `iptables -S` prints them: nothing more to do.
        let listing = format!("-N {chain}\n{}\n", plan[1..].join("\n"));
        let done = Nat::from_listing(false, &listing);
        assert!(done.masq(&[net("10.244.1.5/24")], "n", "c1").is_empty());
        // The other family is not this table's.
        assert!(empty.masq(&[net("fd00::5/64")], "n", "c1").is_empty());
        assert_eq!(
            done.unmasq("n", "c1"),
            vec![
                format!("-D POSTROUTING -s 10.244.1.5/32 -m comment --comment \"name: n id: c1\" -j {chain}"),
                format!("-F {chain}"),
                format!("-X {chain}"),
            ]
        );
        assert!(done.unmasq("n", "c2").is_empty(), "another container's rules are not ours");
    }

    #[test]
    fn the_service_rule_goes_first_once() {
        let empty = Nat::from_listing(false, "");
        let plan = empty.service(net("10.244.1.5/24"), "n");
        assert_eq!(plan.len(), 1);
        assert!(plan[0].starts_with("-I POSTROUTING 1 -s 10.244.1.0/24 -d 10.244.1.0/24"), "{}", plan[0]);
        let listed = Nat::from_listing(false, &plan[0].replace("-I POSTROUTING 1", "-A POSTROUTING"));
        assert!(listed.service(net("10.244.1.9/24"), "n").is_empty());
    }
}
