//! The network configuration the runtime passes on stdin: the reference
//! bridge plugin's keys, with the same meaning, plus `socket`.

use crate::error::{CniError, code};
use serde::Deserialize;
use serde_json::Value;
use std::path::PathBuf;

/// The CNI versions this plugin speaks (VERSION answers them).
pub const SUPPORTED_VERSIONS: [&str; 5] = ["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"];

/// One entry of `vlanTrunk`: an id, or a range.
#[derive(Debug, Clone, Deserialize)]
pub struct VlanTrunk {
    #[serde(rename = "minID")]
    pub min_id: Option<i64>,
    #[serde(rename = "maxID")]
    pub max_id: Option<i64>,
    pub id: Option<i64>,
}

/// `cni.dev/valid-attachments`, for GC.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
pub struct Attachment {
    #[serde(rename = "containerID")]
    pub container_id: String,
    pub ifname: String,
}

fn default_bridge() -> String {
    "cni0".into()
}

fn yes() -> bool {
    true
}

/// The plugin's network configuration. Keys it does not know are ignored,
/// as the reference plugin ignores them (a conflist may carry other
/// plugins' and runtimes' keys).
#[derive(Debug, Clone, Deserialize)]
pub struct NetConf {
    #[serde(rename = "cniVersion", default)]
    pub cni_version: String,
    #[serde(default)]
    pub name: String,
    #[serde(rename = "type", default)]
    pub kind: String,
    /// The bridge, made on the first ADD if the daemon has none of that name.
    #[serde(default = "default_bridge")]
    pub bridge: String,
    #[serde(rename = "isGateway", default)]
    pub is_gateway: bool,
    #[serde(rename = "isDefaultGateway", default)]
    pub is_default_gateway: bool,
    #[serde(rename = "forceAddress", default)]
    pub force_address: bool,
    #[serde(rename = "ipMasq", default)]
    pub ip_masq: bool,
    #[serde(default)]
    pub mtu: i64,
    #[serde(rename = "hairpinMode", default)]
    pub hairpin_mode: bool,
    #[serde(rename = "promiscMode", default)]
    pub promisc_mode: bool,
    #[serde(default)]
    pub vlan: i64,
    #[serde(rename = "vlanTrunk", default)]
    pub vlan_trunk: Option<Vec<VlanTrunk>>,
    #[serde(rename = "preserveDefaultVlan", default = "yes")]
    pub preserve_default_vlan: bool,
    #[serde(rename = "portIsolation", default)]
    pub port_isolation: bool,
    #[serde(default)]
    pub macspoofchk: bool,
    #[serde(default)]
    pub enabledad: bool,
    #[serde(default)]
    pub ipam: Option<Value>,
    #[serde(default)]
    pub dns: Option<Value>,
    #[serde(default)]
    pub args: Option<Value>,
    #[serde(rename = "runtimeConfig", default)]
    pub runtime_config: Option<Value>,
    #[serde(rename = "prevResult", default)]
    pub prev_result: Option<Value>,
    /// The daemon's control socket (default /run/userbridge/userbridge.sock).
    #[serde(default)]
    pub socket: Option<PathBuf>,
    /// Masquerade Service traffic (DNAT'ed on the node) from a pod back into
    /// its own subnet, so the reply passes the node's conntrack: what the
    /// kernel bridge gets from br_netfilter. On by default with `isGateway`.
    #[serde(rename = "serviceMasq", default)]
    pub service_masq: Option<bool>,
    #[serde(rename = "cni.dev/valid-attachments", default)]
    pub valid_attachments: Option<Vec<Attachment>>,
}

impl NetConf {
    /// Parses stdin: code 6 if it is not the JSON of a configuration, 1 if
    /// its version is not one this plugin speaks.
    pub fn parse(stdin: &[u8]) -> Result<NetConf, CniError> {
        let conf: NetConf = serde_json::from_slice(stdin).map_err(|e| {
            CniError::new(code::DECODING_FAILURE, format!("error unmarshalling the network config: {e}"))
        })?;
        if !SUPPORTED_VERSIONS.contains(&conf.cni_version.as_str()) {
            return Err(CniError::new(code::INCOMPATIBLE_VERSION, "incompatible CNI versions").with_details(format!(
                "config is {:?}, plugin supports {SUPPORTED_VERSIONS:?}: set \"cniVersion\" to one of them",
                conf.cni_version
            )));
        }
        Ok(conf)
    }

    /// Checks the values, as the reference plugin does when it loads them
    /// (same messages and codes where it has them).
    pub fn validate(&self) -> Result<(), CniError> {
        if !(0..=4094).contains(&self.vlan) {
            return Err(CniError::internal(format!("invalid VLAN ID {} (must be between 0 and 4094)", self.vlan)));
        }
        let trunk = self.trunk_vids()?;
        if self.vlan > 0 && !trunk.is_empty() {
            return Err(CniError::internal("cannot set vlan and vlanTrunk at the same time"));
        }
        if self.hairpin_mode && self.promisc_mode {
            return Err(CniError::internal("cannot set hairpin mode and promiscuous mode at the same time"));
        }
        if !(0..=65_535).contains(&self.mtu) || (1..68).contains(&self.mtu) {
            return Err(CniError::new(
                code::INVALID_NETWORK_CONFIG,
                format!("mtu {}: use 68 to 65535 (or leave it out for the default)", self.mtu),
            ));
        }
        if ub_proto::IfName::new(&self.bridge).is_err() {
            return Err(CniError::new(
                code::INVALID_NETWORK_CONFIG,
                format!("bridge '{}' is not an interface name (at most 15 bytes, no / or spaces)", self.bridge),
            ));
        }
        Ok(())
    }

    /// The VIDs `vlanTrunk` lists, sorted, each once (the reference
    /// plugin's rules and messages).
    pub fn trunk_vids(&self) -> Result<Vec<u16>, CniError> {
        let mut vids = std::collections::BTreeSet::new();
        let ok = |v: i64| (1..=4094).contains(&v);
        for t in self.vlan_trunk.iter().flatten() {
            match (t.min_id, t.max_id) {
                (Some(lo), Some(hi)) => {
                    if !ok(lo) {
                        return Err(CniError::internal("incorrect trunk minID parameter"));
                    }
                    if !ok(hi) {
                        return Err(CniError::internal("incorrect trunk maxID parameter"));
                    }
                    if hi < lo {
                        return Err(CniError::internal("minID is greater than maxID in trunk parameter"));
                    }
                    vids.extend((lo..=hi).filter_map(|v| u16::try_from(v).ok()));
                }
                (None, Some(_)) => {
                    return Err(CniError::internal(
                        "minID and maxID should be configured simultaneously, minID is missing",
                    ));
                }
                (Some(_), None) => {
                    return Err(CniError::internal(
                        "minID and maxID should be configured simultaneously, maxID is missing",
                    ));
                }
                (None, None) => {}
            }
            if let Some(id) = t.id {
                if !ok(id) {
                    return Err(CniError::internal("incorrect trunk id parameter"));
                }
                vids.extend(u16::try_from(id).ok());
            }
        }
        Ok(vids.into_iter().collect())
    }

    /// The IPAM plugin's name, if the configuration has one (L2 only if not).
    pub fn ipam_type(&self) -> Option<&str> {
        self.ipam.as_ref().and_then(|i| i.get("type")).and_then(Value::as_str).filter(|t| !t.is_empty())
    }

    /// The container interface's MAC asked for: `CNI_ARGS` `MAC=`, then
    /// `args.cni.mac`, then `runtimeConfig.mac` (the later wins, as in the
    /// reference plugin).
    pub fn mac(&self, cni_args: &str) -> Result<Option<ub_wire::Mac>, CniError> {
        let mut mac = cni_args
            .split(';')
            .filter_map(|kv| kv.split_once('='))
            .find(|(k, _)| *k == "MAC")
            .map(|(_, v)| v.to_string());
        if let Some(m) = self.args.as_ref().and_then(|a| a.pointer("/cni/mac")).and_then(Value::as_str) {
            mac = Some(m.to_string());
        }
        if let Some(m) = self.runtime_config.as_ref().and_then(|r| r.get("mac")).and_then(Value::as_str) {
            mac = Some(m.to_string());
        }
        mac.filter(|m| !m.is_empty())
            .map(|m| {
                m.parse()
                    .map_err(|e: ub_wire::ParseMacError| CniError::new(code::INVALID_NETWORK_CONFIG, e.to_string()))
            })
            .transpose()
    }

    /// Whether ADD puts the Service-reply masquerade rule in place.
    pub fn service_masq(&self) -> bool {
        self.service_masq.unwrap_or(self.is_gateway || self.is_default_gateway)
    }

    /// Results of version 0.x carry `"version"` in each IP.
    pub fn legacy_result(&self) -> bool {
        self.cni_version.starts_with("0.")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conf(extra: &str) -> Result<NetConf, CniError> {
        NetConf::parse(format!(r#"{{"cniVersion":"1.0.0","name":"n","type":"userbridge"{extra}}}"#).as_bytes())
    }

    #[test]
    fn codes_as_the_reference_plugin() {
        assert_eq!(NetConf::parse(br#"{"cniVersion":"1.0.0","na"#).unwrap_err().code, 6);
        assert_eq!(NetConf::parse(br#"{"cniVersion":"9.9.9","name":"n"}"#).unwrap_err().code, 1);
        let c = conf(r#","vlan":5000"#).unwrap();
        let e = c.validate().unwrap_err();
        assert_eq!((e.code, e.msg.as_str()), (999, "invalid VLAN ID 5000 (must be between 0 and 4094)"));
        let c = conf(r#","vlanTrunk":[{"minID":5,"maxID":2}]"#).unwrap();
        assert!(c.validate().unwrap_err().msg.contains("minID is greater"));
        let c = conf(r#","vlanTrunk":[{"minID":2,"maxID":4},{"id":10},{"id":3}]"#).unwrap();
        assert_eq!(c.trunk_vids().unwrap(), vec![2, 3, 4, 10]);
        assert_eq!(conf(r#","mtu":20"#).unwrap().validate().unwrap_err().code, 7);
        assert_eq!(conf(r#","hairpinMode":true,"promiscMode":true"#).unwrap().validate().unwrap_err().code, 999);
    }

    #[test]
    fn the_mac_the_runtime_asks_for() {
        let c = conf("").unwrap();
        assert_eq!(c.mac("IgnoreUnknown=1;K8S_POD_NAME=x").unwrap(), None);
        assert_eq!(c.mac("IgnoreUnknown=1;MAC=02:00:00:00:00:07").unwrap(), Some("02:00:00:00:00:07".parse().unwrap()));
        let c = conf(r#","runtimeConfig":{"mac":"02:00:00:00:00:09"}"#).unwrap();
        assert_eq!(c.mac("MAC=02:00:00:00:00:07").unwrap(), Some("02:00:00:00:00:09".parse().unwrap()));
        assert_eq!(c.mac("").unwrap(), Some("02:00:00:00:00:09".parse().unwrap()));
        assert!(conf(r#","runtimeConfig":{"mac":"zz"}"#).unwrap().mac("").is_err());
    }
}
