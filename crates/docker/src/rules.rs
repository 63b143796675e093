//! The node's iptables rules for the driver's networks, as Docker's bridge
//! driver makes them with `--userland-proxy=false`: outbound masquerade,
//! published ports (DNAT, with hairpin and 127.0.0.1), `--internal`, and
//! isolation between networks. They live in chains of the driver's own,
//! rebuilt whole from its state in one `iptables-restore --noflush`
//! transaction at every change (declaring a chain there flushes it), so a
//! rule is never added twice, a driver restart or `SIGHUP` after a firewall
//! flush puts them back, and the last network removed takes the chains and
//! their jumps with it. IPv4 only, as the bridge driver without ip6tables.

use crate::state::{Network, State};
use std::io::Write;
use std::process::{Command, Stdio};

/// nat: the published ports' DNAT, jumped to for local destinations from
/// PREROUTING (from outside and from containers) and OUTPUT (the node).
pub const DNAT: &str = "UB-DOCKER-DNAT";
/// nat: masquerade out of the networks, and for hairpin and 127.0.0.1.
pub const POST: &str = "UB-DOCKER-POST";
/// filter: what may cross the networks' bridges, jumped to first from FORWARD.
pub const FWD: &str = "UB-DOCKER-FWD";
/// filter: no network reaches another.
pub const ISO: &str = "UB-DOCKER-ISO";

/// Why the rules could not be applied.
#[derive(Debug, thiserror::Error)]
pub enum RulesError {
    #[error("running {tool} (the driver needs iptables for masquerade and published ports): {source}")]
    Spawn { tool: &'static str, source: std::io::Error },
    #[error("{tool}: {stderr}")]
    Failed { tool: &'static str, stderr: String },
}

/// The jumps into the driver's chains, as `iptables -S` lists them, and
/// how each is put in place.
const JUMPS: [(&str, &str, &str); 4] = [
    ("nat", "-A PREROUTING -m addrtype --dst-type LOCAL -j UB-DOCKER-DNAT", "-A"),
    ("nat", "-A OUTPUT -m addrtype --dst-type LOCAL -j UB-DOCKER-DNAT", "-A"),
    ("nat", "-A POSTROUTING -j UB-DOCKER-POST", "-I1"),
    ("filter", "-A FORWARD -j UB-DOCKER-FWD", "-I1"),
];

/// Docker's own bridge networks, as its isolation chain lists them
/// (`-A DOCKER-ISOLATION-STAGE-2 -o BRIDGE -j DROP`): the driver's networks
/// are isolated from those too, as the bridge driver's are from each other.
fn docker_bridges(filter_listing: &str) -> Vec<&str> {
    filter_listing
        .lines()
        .filter_map(|l| l.strip_prefix("-A DOCKER-ISOLATION-STAGE-2 -o "))
        .filter_map(|l| l.strip_suffix(" -j DROP"))
        .collect()
}

/// The rules of the driver's chains for `state`, per table; `others`:
/// Docker's own bridges, isolated from the driver's networks.
pub fn wanted(state: &State, others: &[&str]) -> (Vec<String>, Vec<String>) {
    let (mut nat, mut filter) = (Vec::new(), Vec::new());
    for (nid, n) in state.networks.iter().filter(|(_, n)| n.owns_bridge()) {
        let b = &n.bridge;
        for s in n.subnets_v4() {
            if n.internal {
                filter.push(format!("-A {FWD} -i {b} ! -d {s} -j DROP"));
                filter.push(format!("-A {FWD} -o {b} ! -s {s} -j DROP"));
            }
        }
        // What the switch hands to the node's netfilter (userbridge's
        // `--netfilter`) crosses the bridge's kernel twin: the network's own.
        let nf = ub_proto::netfilter_names(b).0;
        filter.push(format!("-A {FWD} -i {nf} -o {nf} -j ACCEPT"));
        filter.push(format!("-A {FWD} -i {b} ! -o {b} -j {ISO}"));
        filter.push(format!("-A {FWD} -o {b} -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT"));
        if !n.internal {
            filter.push(format!("-A {FWD} -i {b} ! -o {b} -j ACCEPT"));
        }
        let icc = if n.icc { "ACCEPT" } else { "DROP" };
        // Published ports before icc: a container reaches another's published
        // port through the node even when icc is off, as on the bridge driver.
        for (id, ep) in state.endpoints.iter().filter(|(_, e)| e.network == *nid) {
            let Some(addr) = ep.address else { continue };
            for p in &ep.published {
                let proto = p.proto_name();
                let dst = p.host_ip.map(|ip| format!("-d {ip}/32 ")).unwrap_or_default();
                let c = format!("-m comment --comment \"ep {}\"", &id[..id.len().min(12)]);
                nat.push(format!(
                    "-A {DNAT} {dst}-p {proto} -m {proto} --dport {} {c} -j DNAT --to-destination {addr}:{}",
                    p.host_port, p.port
                ));
                let accept =
                    format!("-A {FWD} -d {addr}/32 -o {b} -p {proto} -m {proto} --dport {} {c} -j ACCEPT", p.port);
                // Two host ports for one container port: one rule lets both in.
                if !filter.contains(&accept) {
                    filter.push(accept);
                }
            }
        }
        filter.push(format!("-A {FWD} -i {b} -o {b} -j {icc}"));
        filter.push(format!("-A {FWD} -o {b} -j DROP"));
        filter.push(format!("-A {ISO} -o {b} -j DROP"));
        for s in n.subnets_v4() {
            if n.masquerade && !n.internal {
                nat.push(format!("-A {POST} -s {s} ! -o {b} -j MASQUERADE"));
            }
            // A container reaching a published port of its own network through
            // the node: the reply must come back through the node too.
            nat.push(format!("-A {POST} -s {s} -d {s} -o {b} -m conntrack --ctstate DNAT -j MASQUERADE"));
        }
        // The node reaching a published port at 127.0.0.1 (route_localnet).
        nat.push(format!("-A {POST} -o {b} -m addrtype --src-type LOCAL -j MASQUERADE"));
    }
    if !filter.is_empty() {
        for o in others {
            filter.push(format!("-A {ISO} -o {o} -j DROP"));
        }
    }
    (nat, filter)
}

/// The `iptables-restore --noflush` input that brings the node's tables
/// (`nat_listing`, `filter_listing`: `iptables -t T -S`) to `state`'s
/// rules (`nat`, `filter`: what [`wanted`] says of it); `None` when there
/// is nothing to do (no network and nothing of ours left).
pub fn plan(
    state: &State,
    (nat, filter): (&[String], &[String]),
    nat_listing: &str,
    filter_listing: &str,
) -> Option<String> {
    let listed = |table: &str| if table == "nat" { nat_listing } else { filter_listing };
    let has = |table: &str, line: &str| listed(table).lines().any(|l| l == line);
    let ours = |table: &str| -> Vec<&str> { if table == "nat" { vec![DNAT, POST] } else { vec![FWD, ISO] } };
    let mut out = String::new();
    let any = state.networks.values().any(Network::owns_bridge);
    // The FORWARD jump goes first, ahead of Docker's own accepts (which dockerd
    // puts first again when it starts): moved back whenever it is not.
    let forward_first = filter_listing.lines().find(|l| l.starts_with("-A FORWARD ")) == Some(JUMPS[3].1);
    let mut changed = false;
    for (table, rules) in [("nat", nat), ("filter", filter)] {
        let mut t = format!("*{table}\n");
        if any {
            for chain in ours(table) {
                t.push_str(&format!(":{chain} - [0:0]\n"));
            }
            for r in rules {
                t.push_str(r);
                t.push('\n');
            }
            for (jt, jump, how) in JUMPS.iter().filter(|(jt, ..)| *jt == table) {
                if *jump == JUMPS[3].1 && has(jt, jump) && !forward_first {
                    for _ in listed(jt).lines().filter(|l| l == jump) {
                        t.push_str(&format!("-D{}\n", &jump[2..]));
                    }
                }
                if !has(jt, jump) || (*jump == JUMPS[3].1 && !forward_first) {
                    let rest = &jump[3..];
                    t.push_str(&match *how {
                        "-I1" => {
                            let (chain, spec) = rest.split_once(' ').unwrap_or((rest, ""));
                            format!("-I {chain} 1 {spec}\n")
                        }
                        _ => format!("{jump}\n"),
                    });
                }
            }
            changed = true;
        } else {
            for (_, jump, _) in JUMPS.iter().filter(|(jt, ..)| *jt == table) {
                if has(table, jump) {
                    t.push_str(&format!("-D{}\n", &jump[2..]));
                    changed = true;
                }
            }
            for chain in ours(table) {
                if has(table, &format!("-N {chain}")) {
                    t.push_str(&format!("-F {chain}\n-X {chain}\n"));
                    changed = true;
                }
            }
        }
        t.push_str("COMMIT\n");
        out.push_str(&t);
    }
    changed.then_some(out)
}

fn listing(table: &str) -> Result<String, RulesError> {
    let o = Command::new("iptables")
        .args(["-w", "-t", table, "-S"])
        .output()
        .map_err(|source| RulesError::Spawn { tool: "iptables", source })?;
    if !o.status.success() {
        return Err(RulesError::Failed { tool: "iptables", stderr: String::from_utf8_lossy(&o.stderr).trim().into() });
    }
    Ok(String::from_utf8_lossy(&o.stdout).into_owned())
}

/// Brings the node's rules to `state`: one listing of each table, one
/// transaction. Also what forwarding and 127.0.0.1 publishing need.
pub fn apply(state: &State) -> Result<(), RulesError> {
    sync(state).map(drop)
}

/// [`apply`], saying whether the rules were not as the state says (a jump
/// missing or not first, a chain gone): put back then.
pub fn sync(state: &State) -> Result<bool, RulesError> {
    let nets: Vec<&Network> = state.networks.values().filter(|n| n.owns_bridge()).collect();
    if nets.iter().any(|n| !n.internal) {
        sysctl("net/ipv4/ip_forward", "1");
    }
    for n in &nets {
        sysctl(&format!("net/ipv4/conf/{}/route_localnet", n.bridge), "1");
    }
    let (nat, filter) = (listing("nat")?, listing("filter")?);
    let (want_nat, want_filter) = wanted(state, &docker_bridges(&filter));
    let Some(input) = plan(state, (&want_nat, &want_filter), &nat, &filter) else { return Ok(false) };
    let same = |rules: &[String], listing: &str, chain: &str| {
        let head = format!("-A {chain} ");
        rules
            .iter()
            .map(String::as_str)
            .filter(|r| r.starts_with(&head))
            .eq(listing.lines().filter(|l| l.starts_with(&head)))
    };
    let count = |rules: &[String], listing: &str, chain: &str| {
        let head = format!("-A {chain} ");
        rules.iter().filter(|r| r.starts_with(&head)).count()
            == listing.lines().filter(|l| l.starts_with(&head)).count()
    };
    // Nothing to do when the chains hold exactly their rules and the jumps
    // are in place (the periodic check, mostly): counters keep counting.
    let chains =
        [(&want_nat, &nat, DNAT), (&want_nat, &nat, POST), (&want_filter, &filter, FWD), (&want_filter, &filter, ISO)];
    let jumps_moved = input.contains("\n-I ") || input.contains("\n-D ");
    if !jumps_moved && chains.iter().all(|(r, l, c)| same(r, l, c)) {
        return Ok(false);
    }
    // Put back, rather than changed: a jump missing or moved, or a chain of
    // ours not holding as many rules as it should (a flush, a reload).
    let stale = jumps_moved || !chains.iter().all(|(r, l, c)| count(r, l, c));
    let mut child = Command::new("iptables-restore")
        .args(["-w", "--noflush"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|source| RulesError::Spawn { tool: "iptables-restore", source })?;
    if let Some(mut i) = child.stdin.take() {
        i.write_all(input.as_bytes()).map_err(|source| RulesError::Spawn { tool: "iptables-restore", source })?;
    }
    let o = child.wait_with_output().map_err(|source| RulesError::Spawn { tool: "iptables-restore", source })?;
    if o.status.success() {
        tracing::debug!(put_back = stale, "the driver's chains rebuilt");
        Ok(stale)
    } else {
        Err(RulesError::Failed { tool: "iptables-restore", stderr: String::from_utf8_lossy(&o.stderr).trim().into() })
    }
}

/// Best effort: a knob that cannot be written (no such interface yet) is
/// written at the next apply.
fn sysctl(key: &str, value: &str) {
    if let Err(e) = std::fs::write(format!("/proc/sys/{key}"), value) {
        tracing::debug!(key, error = %e, "sysctl not set");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::{Endpoint, Published};

    fn net(bridge: &str, gw: &str) -> Network {
        Network {
            bridge: bridge.into(),
            shared: false,
            added: vec![],
            gateways: vec![gw.parse().unwrap()],
            mtu: 0,
            masquerade: true,
            icc: true,
            internal: false,
        }
    }

    /// [`plan`] of what `s` wants against these listings.
    fn plan_of(s: &State, nat: &str, filter: &str) -> Option<String> {
        let (n, f) = wanted(s, &docker_bridges(filter));
        plan(s, (&n, &f), nat, filter)
    }

    fn state() -> State {
        let mut s = State::default();
        s.networks.insert("n1".into(), net("ub-n1", "10.1.0.1/24"));
        s.networks.insert("n2".into(), Network { internal: true, ..net("ub-n2", "10.2.0.1/24") });
        s.endpoints.insert(
            "e1abcdef0123456789".into(),
            Endpoint {
                network: "n1".into(),
                address: Some("10.1.0.2".parse().unwrap()),
                published: vec![Published { proto: 6, host_ip: None, host_port: 8080, port: 80 }],
                ..Endpoint::default()
            },
        );
        s
    }

    #[test]
    fn the_rules_of_two_networks_one_internal_one_publishing() {
        let (nat, filter) = wanted(&state(), &["br-docker1"]);
        assert!(nat.contains(&"-A UB-DOCKER-POST -s 10.1.0.0/24 ! -o ub-n1 -j MASQUERADE".to_string()), "{nat:#?}");
        assert!(!nat.iter().any(|r| r.contains("10.2.0.0/24 ! -o ub-n2")), "an internal network is not masqueraded");
        assert!(nat.iter().any(|r| r.starts_with("-A UB-DOCKER-DNAT -p tcp -m tcp --dport 8080")
            && r.ends_with("-j DNAT --to-destination 10.1.0.2:80")));
        assert!(filter.contains(&"-A UB-DOCKER-ISO -o ub-n2 -j DROP".to_string()));
        assert!(filter.contains(&"-A UB-DOCKER-ISO -o br-docker1 -j DROP".to_string()), "Docker's own bridges too");
        assert!(filter.contains(&"-A UB-DOCKER-FWD -i ub-n2 ! -d 10.2.0.0/24 -j DROP".to_string()));
        assert!(!filter.contains(&"-A UB-DOCKER-FWD -i ub-n2 ! -o ub-n2 -j ACCEPT".to_string()));
        // Isolation comes before the way out.
        let iso = filter.iter().position(|r| r == "-A UB-DOCKER-FWD -i ub-n1 ! -o ub-n1 -j UB-DOCKER-ISO").unwrap();
        let out = filter.iter().position(|r| r == "-A UB-DOCKER-FWD -i ub-n1 ! -o ub-n1 -j ACCEPT").unwrap();
        assert!(iso < out);
    }

    #[test]
    fn the_plan_adds_jumps_once_and_takes_everything_away_with_the_last_network() {
        let s = state();
        let p = plan_of(&s, "-P PREROUTING ACCEPT\n", "-P FORWARD DROP\n").unwrap();
        assert!(p.contains(":UB-DOCKER-DNAT - [0:0]\n") && p.contains("-I POSTROUTING 1 -j UB-DOCKER-POST\n"), "{p}");
        assert!(p.contains("-I FORWARD 1 -j UB-DOCKER-FWD\n"), "{p}");
        // With the jumps listed, they are not added again; the chains are rebuilt.
        let nat = JUMPS.iter().filter(|j| j.0 == "nat").map(|j| j.1).collect::<Vec<_>>().join("\n");
        let p = plan_of(&s, &nat, "-A FORWARD -j UB-DOCKER-FWD\n-A FORWARD -j DOCKER-USER").unwrap();
        assert!(!p.contains("-I ") && !p.contains("-A PREROUTING"), "{p}");
        // dockerd put its own jump first: ours moves back ahead of it.
        let p = plan_of(&s, &nat, "-A FORWARD -j DOCKER-USER\n-A FORWARD -j UB-DOCKER-FWD").unwrap();
        assert!(p.contains("-D FORWARD -j UB-DOCKER-FWD\n-I FORWARD 1 -j UB-DOCKER-FWD\n"), "{p}");
        // No network: the jumps and chains go; nothing of ours: nothing to do.
        let empty = State::default();
        let p = plan_of(&empty, &format!("-N UB-DOCKER-DNAT\n-N UB-DOCKER-POST\n{nat}"), "-N UB-DOCKER-FWD\n").unwrap();
        assert!(p.contains("-D POSTROUTING -j UB-DOCKER-POST\n") && p.contains("-X UB-DOCKER-FWD\n"), "{p}");
        assert!(!p.contains("-X UB-DOCKER-ISO"), "a chain not there is not deleted: {p}");
        assert_eq!(plan_of(&empty, "-P PREROUTING ACCEPT\n", "-P FORWARD ACCEPT\n"), None);
    }
}
