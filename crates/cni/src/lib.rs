//! userbridge's CNI plugin: what a container runtime runs for
//! `"type": "userbridge"` in a conflist, in place of the reference `bridge`
//! plugin. The `userbridge` binary acts as this plugin when `CNI_COMMAND`
//! is set (`userbridge cni install --dir /opt/cni/bin` copies it there).
//!
//! ADD makes the pod's veth pair, delegates addresses to the IPAM plugin
//! the configuration names, configures the pod's interface, and attaches
//! the host end to the daemon through the control protocol (`port_add`,
//! with the container as the port's metadata); DEL undoes it and succeeds
//! whenever there is nothing left to undo. Keys, results and error codes
//! are the reference plugin's; docs/cni.md lists them and what differs.

mod add;
mod check;
pub mod conf;
mod container;
mod daemon;
mod del;
pub mod error;
mod ipam;
mod masq;
pub mod result;

pub use conf::{NetConf, SUPPORTED_VERSIONS};
pub use error::{CniError, code};

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// What the runtime passed in the environment (the spec's `CNI_*`
/// variables), checked for the command at hand.
#[derive(Debug, Clone, Default)]
pub struct Env {
    pub command: String,
    pub container_id: String,
    /// `CNI_NETNS`: a path to the pod's network namespace.
    pub netns: Option<PathBuf>,
    pub ifname: String,
    /// `CNI_ARGS`: `K=V;K=V`.
    pub args: String,
    /// `CNI_PATH`: where to look for the IPAM plugin.
    pub path: Vec<PathBuf>,
}

impl Env {
    /// Reads and checks the environment for `CNI_COMMAND`, as the
    /// reference plugins' `skel` does: code 4 names every variable missing.
    pub fn from_env(get: impl Fn(&str) -> Option<String>) -> Result<Env, CniError> {
        let var = |k: &str| get(k).filter(|v| !v.is_empty());
        let command = var("CNI_COMMAND").unwrap_or_default();
        let needs: &[&str] = match command.as_str() {
            "ADD" | "CHECK" => &["CNI_CONTAINERID", "CNI_NETNS", "CNI_IFNAME", "CNI_PATH"],
            "DEL" => &["CNI_CONTAINERID", "CNI_IFNAME", "CNI_PATH"],
            "GC" | "STATUS" => &["CNI_PATH"],
            "VERSION" => &[],
            "" => {
                return Err(CniError::new(code::INVALID_ENVIRONMENT, "required env variables [CNI_COMMAND] missing"));
            }
            other => {
                return Err(CniError::new(
                    code::INVALID_ENVIRONMENT,
                    format!("unknown CNI_COMMAND: {other} (this plugin answers ADD, DEL, CHECK, STATUS, GC, VERSION)"),
                ));
            }
        };
        let missing: Vec<&str> = needs.iter().copied().filter(|k| var(k).is_none()).collect();
        if !missing.is_empty() {
            return Err(CniError::new(
                code::INVALID_ENVIRONMENT,
                format!("required env variables [{}] missing", missing.join(" ")),
            ));
        }
        let env = Env {
            command,
            container_id: var("CNI_CONTAINERID").unwrap_or_default(),
            netns: var("CNI_NETNS").map(PathBuf::from),
            ifname: var("CNI_IFNAME").unwrap_or_default(),
            args: var("CNI_ARGS").unwrap_or_default(),
            path: var("CNI_PATH").map(|p| std::env::split_paths(&p).collect()).unwrap_or_default(),
        };
        if needs.contains(&"CNI_CONTAINERID") {
            validate_container_id(&env.container_id)?;
            validate_ifname(&env.ifname)?;
        }
        Ok(env)
    }
}

/// The container id's rules and codes, as the reference `skel`'s.
fn validate_container_id(id: &str) -> Result<(), CniError> {
    let first_ok = id.chars().next().is_some_and(|c| c.is_ascii_alphanumeric());
    if !first_ok || !id.chars().all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c)) {
        return Err(CniError::new(code::INVALID_ENVIRONMENT, "invalid characters in containerID").with_details(id));
    }
    Ok(())
}

/// The interface name's rules and codes, as the reference `skel`'s.
fn validate_ifname(name: &str) -> Result<(), CniError> {
    let bad = |m: &str| Err(CniError::new(code::INVALID_ENVIRONMENT, m).with_details(name));
    if ub_proto::IfName::new(name).is_ok() {
        Ok(())
    } else if name.is_empty() {
        bad("interface name is empty")
    } else if name.len() >= 16 {
        bad("interface name is too long")
    } else if name == "." || name == ".." {
        bad("interface name is . or ..")
    } else if name.bytes().any(|b| b == b'/' || b == b':' || b.is_ascii_whitespace()) {
        bad("interface name contains / or : or whitespace characters")
    } else {
        Ok(())
    }
}

/// The host end's name for a container's interface: `veth` and 11 hex
/// digits of a hash of the container id and interface name. The reference
/// plugin draws 8 digits at random (and draws again on a clash); a hash
/// lets DEL and GC find the port from the container alone, and 44 bits,
/// all an interface name has room for, make a clash on a node unlikely
/// (about 3 in 10^8 with 1000 pods).
pub fn host_veth_name(container_id: &str, ifname: &str) -> ub_proto::IfName {
    let h = ub_netlink::fnv1a(&[container_id.as_bytes(), b"-", ifname.as_bytes()]);
    ub_proto::IfName::new(&format!("veth{:011x}", h >> 20)).expect("veth and 11 hex digits is an interface name")
}

/// The VERSION answer.
fn version_info(conf_version: &str) -> String {
    let version = if conf_version.is_empty() { "1.1.0" } else { conf_version };
    serde_json::json!({"cniVersion": version, "supportedVersions": SUPPORTED_VERSIONS}).to_string()
}

/// Runs one plugin command: `stdin` is the network configuration. Returns
/// what goes to stdout (possibly nothing).
pub fn run(env: &Env, stdin: &[u8]) -> Result<String, CniError> {
    if env.command == "VERSION" {
        // The configuration may be absent or partial for VERSION.
        let v: serde_json::Value = serde_json::from_slice(stdin).unwrap_or_default();
        return Ok(version_info(v.get("cniVersion").and_then(|v| v.as_str()).unwrap_or("")));
    }
    let conf = NetConf::parse(stdin)?;
    conf.validate()?;
    match env.command.as_str() {
        "ADD" => add::add(env, &conf, stdin),
        "DEL" => del::del(env, &conf, stdin).map(|()| String::new()),
        "CHECK" => check::check(env, &conf, stdin).map(|()| String::new()),
        "STATUS" => del::status(env, &conf, stdin).map(|()| String::new()),
        "GC" => del::gc(env, &conf, stdin).map(|()| String::new()),
        _ => unreachable!("Env::from_env admits only the commands above"),
    }
}

/// The plugin's `main`: reads the environment and stdin, runs the command,
/// prints the result or the error as the spec says (error JSON on stdout,
/// exit 1).
pub fn main() -> ExitCode {
    let mut stdin = Vec::new();
    let env = Env::from_env(|k| std::env::var(k).ok());
    let read = std::io::stdin().read_to_end(&mut stdin);
    let version = serde_json::from_slice::<serde_json::Value>(&stdin)
        .ok()
        .and_then(|v| v.get("cniVersion").and_then(|v| v.as_str()).map(String::from))
        .unwrap_or_default();
    let outcome = match (env, read) {
        (Err(e), _) => Err(e),
        (Ok(_), Err(e)) => {
            Err(CniError::new(code::IO_FAILURE, format!("reading the network configuration from stdin: {e}")))
        }
        (Ok(env), Ok(_)) => run(&env, &stdin),
    };
    let mut out = std::io::stdout().lock();
    match outcome {
        Ok(s) => {
            if !s.is_empty() {
                let _ = writeln!(out, "{s}");
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            let _ = writeln!(out, "{}", e.to_json(&version));
            ExitCode::FAILURE
        }
    }
}

/// Copies the running executable to `dir/userbridge` (atomically: a
/// runtime may be running the old one), so runtimes find it as the plugin
/// for `"type": "userbridge"`. Returns the path written.
pub fn install(dir: &Path) -> std::io::Result<PathBuf> {
    let dst = dir.join("userbridge");
    ub_files::copy(&std::env::current_exe()?, &dst, 0o755)?;
    Ok(dst)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn env_of(vars: &[(&str, &str)]) -> Result<Env, CniError> {
        let m: HashMap<String, String> = vars.iter().map(|(k, v)| ((*k).to_string(), (*v).to_string())).collect();
        Env::from_env(|k| m.get(k).cloned())
    }

    #[test]
    fn the_environment_is_checked_as_skel_does() {
        let e =
            env_of(&[("CNI_COMMAND", "ADD"), ("CNI_CONTAINERID", "c1"), ("CNI_IFNAME", "eth0"), ("CNI_PATH", "/x")])
                .unwrap_err();
        assert_eq!((e.code, e.msg.as_str()), (4, "required env variables [CNI_NETNS] missing"));
        let e = env_of(&[("CNI_COMMAND", "ADD")]).unwrap_err();
        assert_eq!(e.msg, "required env variables [CNI_CONTAINERID CNI_NETNS CNI_IFNAME CNI_PATH] missing");
        // DEL needs no netns (it may be gone).
        let ok =
            env_of(&[("CNI_COMMAND", "DEL"), ("CNI_CONTAINERID", "c1"), ("CNI_IFNAME", "eth0"), ("CNI_PATH", "/a:/b")])
                .unwrap();
        assert_eq!(ok.path, vec![PathBuf::from("/a"), PathBuf::from("/b")]);
        let e =
            env_of(&[("CNI_COMMAND", "DEL"), ("CNI_CONTAINERID", "c/1"), ("CNI_IFNAME", "eth0"), ("CNI_PATH", "/x")])
                .unwrap_err();
        assert_eq!((e.code, e.msg.as_str()), (4, "invalid characters in containerID"));
        let e = env_of(&[
            ("CNI_COMMAND", "DEL"),
            ("CNI_CONTAINERID", "c1"),
            ("CNI_IFNAME", "a-very-long-name0"),
            ("CNI_PATH", "/x"),
        ])
        .unwrap_err();
        assert_eq!(e.msg, "interface name is too long");
        assert_eq!(env_of(&[("CNI_COMMAND", "FROB")]).unwrap_err().code, 4);
        assert!(env_of(&[("CNI_COMMAND", "VERSION")]).is_ok());
    }

    #[test]
    fn version_lists_every_supported_version() {
        let out = run(&Env { command: "VERSION".into(), ..Env::default() }, br#"{"cniVersion":"0.4.0"}"#).unwrap();
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        assert_eq!(v["cniVersion"], "0.4.0");
        let got: Vec<&str> = v["supportedVersions"].as_array().unwrap().iter().filter_map(|s| s.as_str()).collect();
        for want in ["0.3.1", "0.4.0", "1.0.0", "1.1.0"] {
            assert!(got.contains(&want), "{want} in {got:?}");
        }
    }

    #[test]
    fn host_veth_names_are_stable_and_fit() {
        let a = host_veth_name("0123456789abcdef", "eth0");
        assert_eq!(a, host_veth_name("0123456789abcdef", "eth0"));
        assert_ne!(a, host_veth_name("0123456789abcdef", "eth1"));
        assert!(a.starts_with("veth") && a.len() == 15, "{a}");
        assert!(ub_proto::IfName::new(&a).is_ok());
    }
}
