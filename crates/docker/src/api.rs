//! The remote driver protocol's messages (moby's
//! libnetwork/drivers/remote/api), as Docker 20.10 sends them.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

pub type Options = BTreeMap<String, serde_json::Value>;

/// One of the network's address pools, as Docker's IPAM chose it.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct IpamData {
    #[serde(default)]
    pub pool: Option<String>,
    /// The gateway with the pool's prefix length, `172.18.0.1/16`.
    #[serde(default)]
    pub gateway: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct CreateNetwork {
    #[serde(rename = "NetworkID")]
    pub network_id: String,
    #[serde(default)]
    pub options: Options,
    #[serde(default, rename = "IPv4Data")]
    pub ipv4_data: Option<Vec<IpamData>>,
    #[serde(default, rename = "IPv6Data")]
    pub ipv6_data: Option<Vec<IpamData>>,
}

#[derive(Debug, Deserialize)]
pub struct NetworkRef {
    #[serde(rename = "NetworkID")]
    pub network_id: String,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct EndpointInterface {
    #[serde(default)]
    pub address: Option<String>,
    #[serde(default, rename = "AddressIPv6")]
    pub address_ipv6: Option<String>,
    #[serde(default)]
    pub mac_address: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct CreateEndpoint {
    #[serde(rename = "NetworkID")]
    pub network_id: String,
    #[serde(rename = "EndpointID")]
    pub endpoint_id: String,
    #[serde(default)]
    pub interface: Option<EndpointInterface>,
    #[serde(default)]
    pub options: Options,
}

/// DeleteEndpoint, EndpointOperInfo, Leave, RevokeExternalConnectivity.
#[derive(Debug, Deserialize)]
pub struct EndpointRef {
    #[serde(rename = "NetworkID")]
    pub network_id: String,
    #[serde(rename = "EndpointID")]
    pub endpoint_id: String,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Join {
    #[serde(rename = "NetworkID")]
    pub network_id: String,
    #[serde(rename = "EndpointID")]
    pub endpoint_id: String,
    #[serde(default)]
    pub sandbox_key: String,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct InterfaceName {
    pub src_name: String,
    pub dst_prefix: String,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct Joined {
    pub interface_name: InterfaceName,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub gateway: String,
    #[serde(rename = "GatewayIPv6", skip_serializing_if = "String::is_empty")]
    pub gateway_ipv6: String,
}

/// The option key of `-p` port mappings in CreateEndpoint and
/// ProgramExternalConnectivity.
pub const PORTMAP: &str = "com.docker.network.portmap";
/// The option key of `docker network create -o K=V` options.
pub const GENERIC: &str = "com.docker.network.generic";
/// The `-o` option setting the containers' MTU, as for the bridge driver.
pub const MTU: &str = "com.docker.network.driver.mtu";
