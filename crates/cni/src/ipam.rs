//! Delegating to the IPAM plugin the configuration names, as the reference
//! plugins' `ipam.ExecAdd/ExecDel/ExecCheck`: found in `CNI_PATH`, run
//! with this plugin's environment (only `CNI_COMMAND` set for the call)
//! and the same stdin; its errors come back with their own codes.

use crate::Env;
use crate::error::CniError;
use crate::result::CniResult;
use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};

/// The plugin's executable in `CNI_PATH`, or the reference error.
fn find(kind: &str, env: &Env) -> Result<PathBuf, CniError> {
    let found = (!kind.contains('/')).then(|| env.path.iter().map(|d| d.join(kind)).find(|p| p.is_file())).flatten();
    found.ok_or_else(|| {
        let dirs: Vec<String> = env.path.iter().map(|p| p.display().to_string()).collect();
        CniError::internal(format!("failed to find plugin {kind:?} in path [{}]", dirs.join(" ")))
    })
}

/// Runs plugin `kind` with `command` and `stdin`; its stdout when it succeeds.
pub fn exec(kind: &str, command: &str, env: &Env, stdin: &[u8]) -> Result<Vec<u8>, CniError> {
    let exe = find(kind, env)?;
    let mut child = Command::new(&exe)
        .env("CNI_COMMAND", command)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| CniError::internal(format!("running the IPAM plugin {}: {e}", exe.display())))?;
    if let Some(mut i) = child.stdin.take() {
        // A plugin that exits without reading its stdin is not an error here.
        let _ = i.write_all(stdin);
    }
    let out = child
        .wait_with_output()
        .map_err(|e| CniError::internal(format!("waiting for the IPAM plugin {}: {e}", exe.display())))?;
    if out.status.success() {
        return Ok(out.stdout);
    }
    // The plugin's own error, code and all; or what it said if that is not one.
    match serde_json::from_slice::<CniError>(&out.stdout) {
        Ok(e) => Err(e),
        Err(_) => {
            let said = String::from_utf8_lossy(if out.stdout.is_empty() { &out.stderr } else { &out.stdout });
            Err(CniError::internal(format!("netplugin failed: {:?}", said.trim())))
        }
    }
}

/// ADD: the addresses (and routes, DNS) IPAM gives this container.
pub fn add(kind: &str, env: &Env, stdin: &[u8]) -> Result<CniResult, CniError> {
    let out = exec(kind, "ADD", env, stdin)?;
    let r = CniResult::parse(&out, kind)?;
    if r.ips.is_empty() {
        return Err(CniError::internal("IPAM plugin returned missing IP config"));
    }
    Ok(r)
}

pub fn del(kind: &str, env: &Env, stdin: &[u8]) -> Result<(), CniError> {
    exec(kind, "DEL", env, stdin).map(drop)
}

pub fn check(kind: &str, env: &Env, stdin: &[u8]) -> Result<(), CniError> {
    exec(kind, "CHECK", env, stdin).map(drop)
}

/// Whether the plugin speaks CNI 1.1 (STATUS and GC): its VERSION says.
pub fn speaks_1_1(kind: &str, env: &Env) -> bool {
    exec(kind, "VERSION", env, br#"{"cniVersion":"1.1.0"}"#)
        .ok()
        .and_then(|out| serde_json::from_slice::<serde_json::Value>(&out).ok())
        .and_then(|v| v.get("supportedVersions").and_then(|s| s.as_array()).cloned())
        .is_some_and(|vs| vs.iter().any(|v| v == "1.1.0"))
}
