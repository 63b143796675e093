//! `ipMasq`: the pod's address masqueraded behind the node for traffic
//! leaving its subnet, with the reference plugin's rules (`ip.SetupIPMasq`):
//! a chain per container in the nat table that accepts the pod's own subnet
//! and masquerades the rest but multicast, jumped to from POSTROUTING for
//! the pod's source address. Removed by DEL (and GC) by the chain's name.

use crate::error::CniError;
use ipnet::IpNet;
use std::process::Command;

/// The container's chain: `UB-` and a hash of the network and container
/// (the reference plugin's `CNI-` chains, ours apart).
pub fn chain_name(network: &str, container_id: &str) -> String {
    format!("UB-{:016x}", crate::fnv1a(&[network.as_bytes(), b"/", container_id.as_bytes()]))
}

fn comment(network: &str, container_id: &str) -> String {
    format!("name: {network:?} id: {container_id:?}")
}

fn tool(v6: bool) -> &'static str {
    if v6 { "ip6tables" } else { "iptables" }
}

/// Runs `iptables -w ARGS` (or ip6tables); its stdout.
fn ipt(v6: bool, args: &[&str]) -> Result<String, CniError> {
    let out = Command::new(tool(v6)).arg("-w").args(args).output().map_err(|e| {
        CniError::internal(format!("ipMasq needs {}: {e} (install iptables, or set \"ipMasq\": false)", tool(v6)))
    })?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(CniError::internal(format!(
            "{} {}: {}",
            tool(v6),
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        )))
    }
}

fn chain_exists(v6: bool, chain: &str) -> bool {
    ipt(v6, &["-t", "nat", "-S", chain]).is_ok()
}

/// Sets up masquerading for `address` (with its prefix: the pod's subnet).
pub fn setup(address: IpNet, network: &str, container_id: &str) -> Result<(), CniError> {
    let v6 = address.addr().is_ipv6();
    let chain = chain_name(network, container_id);
    let c = comment(network, container_id);
    if !chain_exists(v6, &chain) {
        ipt(v6, &["-t", "nat", "-N", &chain])?;
    }
    let subnet = address.trunc().to_string();
    let multicast = if v6 { "ff00::/8" } else { "224.0.0.0/4" };
    let rules: [Vec<&str>; 2] = [
        vec!["-d", &subnet, "-j", "ACCEPT", "-m", "comment", "--comment", &c],
        vec!["!", "-d", multicast, "-j", "MASQUERADE", "-m", "comment", "--comment", &c],
    ];
    for r in &rules {
        ensure_rule(v6, &chain, r)?;
    }
    let src = address.addr().to_string();
    ensure_rule(v6, "POSTROUTING", &["-s", &src, "-j", &chain, "-m", "comment", "--comment", &c])
}

/// Masquerades connections DNAT'ed on the node (a Service's virtual IP)
/// from `subnet` back into `subnet`: without it the backend pod answers
/// the client pod directly across the switch, the reply never passes the
/// node's conntrack to be un-DNAT'ed, and the client drops it. The kernel
/// bridge hides this with br_netfilter; userbridge's frames never enter
/// netfilter. One rule per subnet, first in POSTROUTING (ahead of ipMasq's
/// `-d subnet -j ACCEPT`), shared by the network's pods and kept.
pub fn setup_service(subnet: IpNet, network: &str) -> Result<(), CniError> {
    let v6 = subnet.addr().is_ipv6();
    let net = subnet.trunc().to_string();
    let c = format!("userbridge: Service replies in {network:?}");
    let rule = [
        "-s",
        &net,
        "-d",
        &net,
        "-m",
        "conntrack",
        "--ctstate",
        "DNAT",
        "-m",
        "comment",
        "--comment",
        &c,
        "-j",
        "MASQUERADE",
    ];
    let mut check = vec!["-t", "nat", "-C", "POSTROUTING"];
    check.extend_from_slice(&rule);
    if ipt(v6, &check).is_ok() {
        return Ok(());
    }
    let mut insert = vec!["-t", "nat", "-I", "POSTROUTING", "1"];
    insert.extend_from_slice(&rule);
    ipt(v6, &insert).map(drop)
}

/// Appends a rule unless it is there (`-C`), so a repeated ADD adds nothing.
fn ensure_rule(v6: bool, chain: &str, rule: &[&str]) -> Result<(), CniError> {
    let mut check = vec!["-t", "nat", "-C", chain];
    check.extend_from_slice(rule);
    if ipt(v6, &check).is_ok() {
        return Ok(());
    }
    let mut add = vec!["-t", "nat", "-A", chain];
    add.extend_from_slice(rule);
    ipt(v6, &add).map(drop)
}

/// Removes the container's jumps from POSTROUTING and its chain, in both
/// families; nothing to remove is not an error (DEL may repeat). Rules go
/// by their spec, never by number: other pods' DELs change the numbers
/// under a concurrent one.
pub fn teardown(network: &str, container_id: &str) -> Result<(), CniError> {
    let chain = chain_name(network, container_id);
    let c = comment(network, container_id);
    for v6 in [false, true] {
        if !chain_exists(v6, &chain) {
            continue;
        }
        let rules = ipt(v6, &["-t", "nat", "-S", "POSTROUTING"])?;
        for src in jump_sources(&rules, &chain) {
            let gone = ipt(
                v6,
                &["-t", "nat", "-D", "POSTROUTING", "-s", &src, "-j", &chain, "-m", "comment", "--comment", &c],
            );
            if gone.is_err() && ipt(v6, &["-t", "nat", "-S", "POSTROUTING"])?.lines().any(|l| jumps_to(l, &chain)) {
                gone?;
            }
        }
        ipt(v6, &["-t", "nat", "-F", &chain])?;
        ipt(v6, &["-t", "nat", "-X", &chain])?;
    }
    Ok(())
}

fn jumps_to(rule: &str, chain: &str) -> bool {
    let f: Vec<&str> = rule.split_whitespace().collect();
    f.windows(2).any(|w| w[0] == "-j" && w[1] == chain)
}

/// The source addresses of the POSTROUTING rules (`iptables -S`) that jump
/// to `chain`.
fn jump_sources(rules: &str, chain: &str) -> Vec<String> {
    rules
        .lines()
        .filter(|l| jumps_to(l, chain))
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            f.windows(2).find(|w| w[0] == "-s").map(|w| w[1].to_string())
        })
        .collect()
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

    #[test]
    fn the_jumps_to_a_chain_are_found_by_spec() {
        let rules = "-P POSTROUTING ACCEPT\n\
            -A POSTROUTING -s 10.244.1.2/32 -m comment --comment \"name: \\\"n\\\" id: \\\"a\\\"\" -j UB-1\n\
            -A POSTROUTING -s 10.244.1.3/32 -m comment --comment \"x\" -j UB-12\n\
            -A POSTROUTING -s fd00::2/128 -j UB-1\n";
        assert_eq!(jump_sources(rules, "UB-1"), vec!["10.244.1.2/32".to_string(), "fd00::2/128".to_string()]);
        assert!(jump_sources(rules, "UB-9").is_empty());
    }
}
