//! CNI errors: `{"cniVersion", "code", "msg", "details"}` on stdout, exit 1.

use serde::{Deserialize, Serialize};

/// The spec's well-known codes (0-99), and the reference plugins' generic one.
pub mod code {
    pub const INCOMPATIBLE_VERSION: u32 = 1;
    pub const UNSUPPORTED_FIELD: u32 = 2;
    pub const UNKNOWN_CONTAINER: u32 = 3;
    pub const INVALID_ENVIRONMENT: u32 = 4;
    pub const IO_FAILURE: u32 = 5;
    pub const DECODING_FAILURE: u32 = 6;
    pub const INVALID_NETWORK_CONFIG: u32 = 7;
    pub const TRY_AGAIN_LATER: u32 = 11;
    /// STATUS: the plugin cannot serve ADD now.
    pub const NOT_AVAILABLE: u32 = 50;
    /// What the reference plugins answer for any other failure (their
    /// `types.ErrInternal`): a runtime sees the same code from us.
    pub const INTERNAL: u32 = 999;
}

/// A CNI error, as the plugin prints it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("{msg}")]
pub struct CniError {
    pub code: u32,
    pub msg: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub details: String,
}

impl CniError {
    pub fn new(code: u32, msg: impl Into<String>) -> CniError {
        CniError { code, msg: msg.into(), details: String::new() }
    }

    pub fn internal(msg: impl Into<String>) -> CniError {
        CniError::new(code::INTERNAL, msg)
    }

    pub fn with_details(mut self, details: impl Into<String>) -> CniError {
        self.details = details.into();
        self
    }

    /// The error as the plugin prints it, for configuration version `version`.
    pub fn to_json(&self, version: &str) -> String {
        let mut v = serde_json::json!({"code": self.code, "msg": self.msg});
        if !version.is_empty() {
            v["cniVersion"] = version.into();
        }
        if !self.details.is_empty() {
            v["details"] = self.details.clone().into();
        }
        serde_json::to_string_pretty(&v).unwrap_or_default()
    }
}

impl From<ub_netlink::Error> for CniError {
    fn from(e: ub_netlink::Error) -> CniError {
        CniError::internal(e.to_string())
    }
}
