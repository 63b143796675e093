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

/// ProgramExternalConnectivity: the container's published ports, on the
/// network that gives it its default gateway.
#[derive(Debug, Deserialize)]
pub struct ExternalConnectivity {
    #[serde(rename = "NetworkID")]
    pub network_id: String,
    #[serde(rename = "EndpointID")]
    pub endpoint_id: String,
    #[serde(default, rename = "Options")]
    pub options: Options,
}

/// One `-p` mapping as Docker sends it (`Proto` 6 is TCP, 17 UDP;
/// `HostPort` 0 with `-P` or `-p CTR`: the driver picks one).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct PortBinding {
    pub proto: u8,
    #[serde(default, rename = "IP")]
    pub ip: String,
    pub port: u16,
    #[serde(default, rename = "HostIP")]
    pub host_ip: String,
    #[serde(default)]
    pub host_port: u16,
    #[serde(default)]
    pub host_port_end: u16,
}

/// The option key of `-p` port mappings in CreateEndpoint, Join and
/// ProgramExternalConnectivity, and of EndpointOperInfo's answer.
pub const PORTMAP: &str = "com.docker.network.portmap";
/// The option key of `--expose`d ports.
pub const EXPOSED: &str = "com.docker.network.endpoint.exposedports";
/// The option key of `docker network create -o K=V` options.
pub const GENERIC: &str = "com.docker.network.generic";
/// `--internal`: no route out, no masquerade, no published port.
pub const INTERNAL: &str = "com.docker.network.internal";
/// `--ipv6`.
pub const ENABLE_IPV6: &str = "com.docker.network.enable_ipv6";
/// The `-o` options this driver takes, with the bridge driver's meaning.
pub const MTU: &str = "com.docker.network.driver.mtu";
pub const BRIDGE_NAME: &str = "com.docker.network.bridge.name";
pub const ENABLE_IP_MASQUERADE: &str = "com.docker.network.bridge.enable_ip_masquerade";
pub const ENABLE_ICC: &str = "com.docker.network.bridge.enable_icc";
/// What Docker adds to every network's options on its own.
pub const DOCKER_OWN: [&str; 3] = [GENERIC, INTERNAL, ENABLE_IPV6];
