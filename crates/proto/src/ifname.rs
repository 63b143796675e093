//! An interface name, checked once where it enters (a flag, a file, a
//! request, a runtime's argument) and never again.

use serde::{Deserialize, Deserializer, Serialize};
use std::fmt;

/// The longest name the kernel takes (`IFNAMSIZ` less its terminating zero).
pub const IFNAME_MAX: usize = 15;

/// A name the kernel would accept for a network interface (`dev_valid_name`):
/// 1-15 bytes, not `.` or `..`, no `/`, `:`, whitespace or NUL.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct IfName(String);

/// A string that is not an interface name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("'{0}' is not a valid interface name (1-15 bytes, no '/', ':' or whitespace)")]
pub struct BadIfName(pub String);

impl IfName {
    pub fn new(name: &str) -> Result<IfName, BadIfName> {
        let ok = !name.is_empty()
            && name.len() <= IFNAME_MAX
            && name != "."
            && name != ".."
            && !name.bytes().any(|b| b == b'/' || b == b':' || b.is_ascii_whitespace() || b == 0);
        if ok { Ok(IfName(name.to_string())) } else { Err(BadIfName(name.to_string())) }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::str::FromStr for IfName {
    type Err = BadIfName;
    fn from_str(s: &str) -> Result<IfName, BadIfName> {
        IfName::new(s)
    }
}

impl TryFrom<String> for IfName {
    type Error = BadIfName;
    fn try_from(s: String) -> Result<IfName, BadIfName> {
        IfName::new(&s)
    }
}

impl<'de> Deserialize<'de> for IfName {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<IfName, D::Error> {
        let s = String::deserialize(d)?;
        IfName::new(&s).map_err(serde::de::Error::custom)
    }
}

impl std::ops::Deref for IfName {
    type Target = str;
    fn deref(&self) -> &str {
        &self.0
    }
}

impl AsRef<str> for IfName {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl std::borrow::Borrow<str> for IfName {
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl PartialEq<str> for IfName {
    fn eq(&self, other: &str) -> bool {
        self.0 == other
    }
}

impl PartialEq<&str> for IfName {
    fn eq(&self, other: &&str) -> bool {
        self.0 == *other
    }
}

impl fmt::Display for IfName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl From<IfName> for String {
    fn from(n: IfName) -> String {
        n.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_names_the_kernel_takes() {
        for good in ["eth0", "veth1a2b3c4d5e6", "cni-podman0", "a", "br.10", "x_y-z"] {
            assert_eq!(IfName::new(good).unwrap().as_str(), good);
        }
        for bad in ["", ".", "..", "a/b", "a:b", "a b", "a\tb", "sixteen-bytes-xx", "nul\0"] {
            assert_eq!(IfName::new(bad), Err(BadIfName(bad.to_string())), "{bad:?}");
        }
        assert_eq!(IfName::new("fifteen-bytes-x").unwrap().len(), IFNAME_MAX);
    }

    #[test]
    fn a_bad_name_in_json_is_refused_with_the_reason() {
        assert_eq!(serde_json::from_str::<IfName>("\"veth1\"").unwrap(), "veth1");
        let e = serde_json::from_str::<IfName>("\"bad/name\"").unwrap_err().to_string();
        assert!(e.contains("'bad/name' is not a valid interface name"), "{e}");
        assert_eq!(serde_json::to_string(&IfName::new("veth1").unwrap()).unwrap(), "\"veth1\"");
    }
}
