//! Whether the node's netfilter would judge a kernel bridge's traffic here,
//! and so whether each bridge's IP between stations goes through its way
//! into the kernel (`bridge/netfilter.rs`). Looked at in the namespace of
//! the host ports (where a kernel bridge of the same name would be): at
//! start, at every change of the nftables ruleset (a notification), and
//! each second for br_netfilter's switch and iptables-legacy's tables,
//! which send none. docs/architecture.md, "Netfilter".

use crate::config::NetfilterMode;
use std::sync::Arc;
use std::time::Duration;
use ub_netlink::{NetNs, RulesetWatcher};

/// What the node's netfilter does to bridged traffic, as last looked at.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NodeFilter {
    /// br_netfilter calls iptables or ip6tables for bridged frames.
    pub br_netfilter: bool,
    /// The forward hooks hold a rule (or a policy other than accept) that
    /// is not userbridge's own; or that cannot be known.
    pub rules: bool,
    /// Why `rules`, in words (the log says it when it changes).
    pub why: String,
    /// Interface names the rules match (`-i`/`-o`, iifname/oifname), and
    /// whether they use `physdev`: on the way through the kernel twin these
    /// see the twin, not the bridge and the pods' veths.
    pub names: Vec<String>,
    pub physdev: bool,
    /// `bridge-nf-filter-vlan-tagged`: br_netfilter judges the IP of
    /// VLAN-tagged frames too (off by default; a kernel bridge with VLAN
    /// filtering gives every frame a tag, so its traffic passes unjudged).
    pub vlan_tagged: bool,
}

impl NodeFilter {
    /// Whether a bridge in `mode` sends its stations' IP through the kernel.
    pub fn wants(&self, mode: NetfilterMode) -> bool {
        match mode {
            NetfilterMode::Off => false,
            NetfilterMode::On => self.br_netfilter,
            NetfilterMode::Auto => self.br_netfilter && self.rules,
        }
    }
}

/// Whether br_netfilter calls iptables or ip6tables in this namespace (the
/// knobs exist only while the module is loaded).
fn br_netfilter() -> bool {
    ["iptables", "ip6tables"].iter().any(|t| {
        std::fs::read_to_string(format!("/proc/sys/net/bridge/bridge-nf-call-{t}")).is_ok_and(|v| v.trim() == "1")
    })
}

/// Whether br_netfilter judges VLAN-tagged frames in this namespace.
fn vlan_tagged() -> bool {
    std::fs::read_to_string("/proc/sys/net/bridge/bridge-nf-filter-vlan-tagged").is_ok_and(|v| v.trim() == "1")
}

/// The interface names rules match, and whether any rule uses physdev.
fn matched_names(v: &serde_json::Value) -> (Vec<String>, bool) {
    let mut names = Vec::new();
    let mut physdev = false;
    let items = v["nftables"].as_array().cloned().unwrap_or_default();
    for e in items.iter().filter_map(|i| i["rule"]["expr"].as_array()) {
        for x in e {
            let m = &x["match"];
            if matches!(m["left"]["meta"]["key"].as_str(), Some("iifname" | "oifname"))
                && let Some(n) = m["right"].as_str()
                && !names.iter().any(|h| h == n)
            {
                names.push(n.to_string());
            }
            physdev |= x["xt"]["name"] == "physdev";
        }
    }
    (names, physdev)
}

/// Whether the forward hooks hold a rule that is not userbridge's own
/// (the Docker driver's jump to its chain, which accepts what a bridge
/// carries), and why.
fn forward_rules() -> (bool, String, Option<serde_json::Value>) {
    for t in ["ip_tables_names", "ip6_tables_names"] {
        if std::fs::read_to_string(format!("/proc/net/{t}")).is_ok_and(|s| !s.trim().is_empty()) {
            return (true, "iptables-legacy tables are loaded (their rules are not looked at)".into(), None);
        }
    }
    let out = match std::process::Command::new("nft").args(["-j", "list", "ruleset"]).output() {
        Ok(o) if o.status.success() => o.stdout,
        Ok(o) => return (true, format!("nft list ruleset: {}", String::from_utf8_lossy(&o.stderr).trim()), None),
        Err(e) => {
            return (true, format!("nft: {e} (install nftables to let an empty ruleset keep the direct path)"), None);
        }
    };
    match serde_json::from_slice::<serde_json::Value>(&out) {
        Ok(v) => {
            let (rules, why) = judge(&v);
            (rules, why, Some(v))
        }
        Err(e) => (true, format!("nft -j list ruleset: {e}"), None),
    }
}

/// [`forward_rules`] on `nft -j list ruleset`'s output.
fn judge(v: &serde_json::Value) -> (bool, String) {
    let items = v["nftables"].as_array().cloned().unwrap_or_default();
    // Families whose forward hook a bridged frame passes through br_netfilter (and the bridge family's own).
    let counted = ["ip", "ip6", "inet", "bridge"];
    let key =
        |o: &serde_json::Value| (o["family"].as_str().map(str::to_string), o["table"].as_str().map(str::to_string));
    let mut forward = Vec::new();
    for c in items.iter().filter_map(|i| i.get("chain")) {
        if c["hook"] == "forward" && c["family"].as_str().is_some_and(|f| counted.contains(&f)) {
            if c["policy"].as_str().is_some_and(|p| p != "accept") {
                return (true, format!("{} {} {} has policy {}", c["family"], c["table"], c["name"], c["policy"]));
            }
            forward.push((key(c).0, c["name"].as_str().map(str::to_string), c["table"].as_str().map(str::to_string)));
        }
    }
    for r in items.iter().filter_map(|i| i.get("rule")) {
        let (family, table) = key(r);
        let chain = r["chain"].as_str().map(str::to_string);
        if !forward.contains(&(family.clone(), chain.clone(), table.clone())) {
            continue;
        }
        let ours = r["expr"].as_array().is_some_and(|e| {
            e.iter().any(|x| x["jump"]["target"].as_str().is_some_and(|t| t.starts_with("UB-DOCKER")))
        });
        if !ours {
            let (f, t, c) = (family.unwrap_or_default(), table.unwrap_or_default(), chain.unwrap_or_default());
            return (true, format!("{f} {t} {c} has rules"));
        }
    }
    (false, "the forward chains hold no rule".into())
}

/// Looks at the node's netfilter in the calling thread's namespace.
pub fn look() -> NodeFilter {
    let (rules, why, ruleset) = forward_rules();
    let (names, physdev) = ruleset.as_ref().map(matched_names).unwrap_or_default();
    NodeFilter { br_netfilter: br_netfilter(), rules, why, names, physdev, vlan_tagged: vlan_tagged() }
}

/// How often br_netfilter's knob and the legacy tables are looked at.
const EVERY: Duration = Duration::from_secs(1);

/// Follows the node's netfilter in `ns` (the calling thread's namespace when
/// `None`), handing each change to `told` (the daemon turns each bridge's
/// way through it on or off), until `stop`.
pub fn follow(told: impl Fn(NodeFilter) + Send, ns: Option<Arc<NetNs>>, stop: crossbeam_channel::Receiver<()>) {
    let body = move || {
        let mut watcher = match RulesetWatcher::open(EVERY) {
            Ok(w) => Some(w),
            Err(e) => {
                tracing::warn!(error = %e, "nftables notifications unavailable: the ruleset is listed every second");
                None
            }
        };
        let mut seen = look();
        told(seen.clone());
        loop {
            let changed = match watcher.as_mut().map(RulesetWatcher::wait) {
                Some(Ok(c)) => c,
                Some(Err(_)) | None => {
                    std::thread::sleep(EVERY);
                    true
                }
            };
            if !matches!(stop.try_recv(), Err(crossbeam_channel::TryRecvError::Empty)) {
                return;
            }
            let now = if changed { look() } else { NodeFilter { br_netfilter: br_netfilter(), ..seen.clone() } };
            if now != seen {
                told(now.clone());
                seen = now;
            }
        }
    };
    let _ = NetNs::run_in(ns.as_deref(), body);
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn ruleset(items: serde_json::Value) -> serde_json::Value {
        json!({ "nftables": items })
    }

    #[test]
    fn an_empty_forward_chain_keeps_the_direct_path_a_rule_or_a_drop_policy_does_not() {
        let chain = |policy: &str| json!({"chain": {"family": "ip", "table": "filter", "name": "FORWARD", "hook": "forward", "policy": policy}});
        let rule = |expr: serde_json::Value| json!({"rule": {"family": "ip", "table": "filter", "chain": "FORWARD", "expr": expr}});
        assert!(!judge(&ruleset(json!([chain("accept")]))).0);
        assert!(judge(&ruleset(json!([chain("drop")]))).0);
        assert!(judge(&ruleset(json!([chain("accept"), rule(json!([{"drop": null}]))]))).0);
        // The Docker driver's own jump does not count; a rule in an input chain does not either.
        let ours = rule(json!([{"counter": {}}, {"jump": {"target": "UB-DOCKER-FWD"}}]));
        assert!(!judge(&ruleset(json!([chain("accept"), ours]))).0);
        let input =
            json!({"chain": {"family": "inet", "table": "fw", "name": "in", "hook": "input", "policy": "drop"}});
        let in_rule = json!({"rule": {"family": "inet", "table": "fw", "chain": "in", "expr": [{"drop": null}]}});
        assert!(!judge(&ruleset(json!([input, in_rule]))).0);
        // An nft inet forward chain counts as iptables' does.
        let inet =
            json!({"chain": {"family": "inet", "table": "t", "name": "fwd", "hook": "forward", "policy": "accept"}});
        let inet_rule = json!({"rule": {"family": "inet", "table": "t", "chain": "fwd", "expr": [{"accept": null}]}});
        assert!(judge(&ruleset(json!([inet, inet_rule]))).0);
    }

    #[test]
    fn interface_names_and_physdev_in_rules_are_found() {
        let r = |expr: serde_json::Value| json!({"rule": {"family": "ip", "table": "filter", "chain": "FORWARD", "expr": expr}});
        let iif =
            json!([{"match": {"op": "==", "left": {"meta": {"key": "iifname"}}, "right": "cni0"}}, {"accept": null}]);
        let phys = json!([{"xt": {"type": "match", "name": "physdev"}}, {"accept": null}]);
        assert_eq!(matched_names(&ruleset(json!([r(iif)]))), (vec!["cni0".to_string()], false));
        assert_eq!(matched_names(&ruleset(json!([r(phys)]))), (vec![], true));
    }

    #[test]
    fn modes() {
        let f = |br_netfilter, rules| NodeFilter { br_netfilter, rules, ..NodeFilter::default() };
        assert!(f(true, true).wants(NetfilterMode::Auto));
        assert!(!f(true, false).wants(NetfilterMode::Auto));
        assert!(f(true, false).wants(NetfilterMode::On));
        assert!(!f(false, true).wants(NetfilterMode::On));
        assert!(!f(true, true).wants(NetfilterMode::Off));
    }
}
