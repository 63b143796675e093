//! The result of ADD (and the `prevResult` of CHECK): interfaces, IPs,
//! routes and DNS, in the shape of the reference plugins' `current.Result`.

use crate::error::{CniError, code};
use ipnet::IpNet;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::net::IpAddr;

fn is_empty(s: &str) -> bool {
    s.is_empty()
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Interface {
    pub name: String,
    #[serde(default, skip_serializing_if = "is_empty")]
    pub mac: String,
    /// The network namespace it is in; empty for the host's.
    #[serde(default, skip_serializing_if = "is_empty")]
    pub sandbox: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IpConfig {
    /// Index into `interfaces`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interface: Option<usize>,
    /// The address with its prefix length: `10.244.1.5/24`.
    pub address: IpNet,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway: Option<IpAddr>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Route {
    pub dst: IpNet,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gw: Option<IpAddr>,
    /// What else the IPAM plugin said of the route (1.1's mtu, priority...),
    /// passed through.
    #[serde(flatten)]
    pub other: Map<String, Value>,
}

/// A result, as the plugin prints it and as IPAM plugins print theirs.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct CniResult {
    #[serde(rename = "cniVersion", default)]
    pub cni_version: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub interfaces: Vec<Interface>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ips: Vec<IpConfig>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub routes: Vec<Route>,
    #[serde(default)]
    pub dns: Value,
}

impl CniResult {
    /// Parses a result (an IPAM plugin's output, a `prevResult`).
    pub fn parse(v: &[u8], whose: &str) -> Result<CniResult, CniError> {
        serde_json::from_slice(v)
            .map_err(|e| CniError::new(code::DECODING_FAILURE, format!("decoding the result of {whose}: {e}")))
    }

    pub fn from_value(v: Value, whose: &str) -> Result<CniResult, CniError> {
        serde_json::from_value(v)
            .map_err(|e| CniError::new(code::DECODING_FAILURE, format!("decoding the result of {whose}: {e}")))
    }

    /// The result as JSON for configuration version `version`: 0.3.x and
    /// 0.4.0 results carry each IP's `"version"`, as the reference plugins'
    /// do; `dns` is always there (`{}` when empty).
    pub fn to_json(&self, version: &str) -> String {
        let mut v = serde_json::to_value(self).unwrap_or_default();
        v["cniVersion"] = version.into();
        if !v["dns"].is_object() {
            v["dns"] = Value::Object(Map::new());
        }
        if version.starts_with("0.")
            && let Some(ips) = v.get_mut("ips").and_then(Value::as_array_mut)
        {
            for (ip, c) in ips.iter_mut().zip(&self.ips) {
                ip["version"] = if c.address.addr().is_ipv4() { "4" } else { "6" }.into();
            }
        }
        serde_json::to_string_pretty(&v).unwrap_or_default()
    }

    /// The gateway for an address's family: the first IP of that family
    /// that names one.
    pub fn gateway_for(&self, v4: bool) -> Option<IpAddr> {
        self.ips.iter().filter(|c| c.address.addr().is_ipv4() == v4).find_map(|c| c.gateway)
    }
}

/// The subnet's first host address: the gateway when IPAM names none
/// (`calcGatewayIP` of the reference plugin).
pub fn first_host(net: IpNet) -> IpAddr {
    match net.network() {
        IpAddr::V4(a) => IpAddr::V4(std::net::Ipv4Addr::from(u32::from(a).wrapping_add(1))),
        IpAddr::V6(a) => IpAddr::V6(std::net::Ipv6Addr::from(u128::from(a).wrapping_add(1))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOST_LOCAL: &str = r#"{"cniVersion":"0.4.0","ips":[{"version":"4","address":"10.244.1.5/24","gateway":"10.244.1.1"}],
        "routes":[{"dst":"0.0.0.0/0"}],"dns":{}}"#;

    #[test]
    fn an_ipam_result_parses_and_prints_per_version() {
        let r = CniResult::parse(HOST_LOCAL.as_bytes(), "host-local").unwrap();
        assert_eq!(r.ips[0].address, "10.244.1.5/24".parse::<IpNet>().unwrap());
        assert_eq!(r.gateway_for(true), Some("10.244.1.1".parse().unwrap()));
        assert_eq!(r.gateway_for(false), None);
        let old: Value = serde_json::from_str(&r.to_json("0.4.0")).unwrap();
        assert_eq!(old["ips"][0]["version"], "4");
        assert_eq!(old["ips"][0]["address"], "10.244.1.5/24");
        let new: Value = serde_json::from_str(&r.to_json("1.0.0")).unwrap();
        assert_eq!(new["cniVersion"], "1.0.0");
        assert!(new["ips"][0].get("version").is_none());
        assert_eq!(new["dns"], serde_json::json!({}));
        assert!(new.get("interfaces").is_none());
    }

    #[test]
    fn the_gateway_is_the_first_host() {
        assert_eq!(first_host("10.244.1.5/24".parse().unwrap()), "10.244.1.1".parse::<IpAddr>().unwrap());
        assert_eq!(first_host("fd00:1::9/64".parse().unwrap()), "fd00:1::1".parse::<IpAddr>().unwrap());
    }
}
