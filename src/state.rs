//! Bridges and ports that survive a restart. The bridges made at run time
//! (`bridge add`, the CNI plugin), the ports added at run time (one per
//! pod), spec and owner's metadata, and the addresses put on host ports at
//! run time are recorded, bridge by bridge, in a state file replaced whole
//! (`ub_files`: a temporary file renamed over it) on every change; a daemon
//! that starts makes the recorded bridges again and re-attaches every
//! recorded port whose interface still exists, dropping the rest with a log
//! line. Kernel bridges keep their ports across anything short of being
//! deleted; so must we across `systemctl restart`. A file of version 1
//! (before bridges: one daemon, one bridge) is read as the daemon's only
//! bridge's, and written back as version 2.
//!
//! The file is `STATE_DIR/SOCKET-NAME.state.json`, beside a lock file that
//! keeps two daemons off one state file.

use rustix::fs::{FlockOperation, flock};
use serde::{Deserialize, Serialize};
use std::fs::{File, OpenOptions};
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use ub_netlink::IpNet;
use ub_proto::{BridgeAdd, IfName, Origin, PortSpec};

/// The file's format version; a newer one is refused, not misread.
const VERSION: u32 = 2;

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("state directory {}: {source}", path.display())]
    Dir { path: PathBuf, source: std::io::Error },
    #[error("state file {} is used by another userbridge ({holder}): give this one another --state-dir or --socket", path.display())]
    InUse { path: PathBuf, holder: String },
    #[error("state file {}: {source}", path.display())]
    Io { path: PathBuf, source: std::io::Error },
    #[error("state file {} is unreadable ({why}); kept as {}", path.display(), kept.display())]
    Corrupt { path: PathBuf, why: Unreadable, kept: PathBuf },
}

/// Why a state file could not be read.
#[derive(Debug, thiserror::Error)]
pub enum Unreadable {
    #[error("{0}")]
    Json(#[from] serde_json::Error),
    #[error("format version {0} is newer than this userbridge's {VERSION}")]
    Newer(u32),
}

#[derive(Debug, Serialize, Deserialize)]
struct State {
    version: u32,
    #[serde(default)]
    bridges: Vec<SavedBridge>,
    /// Version 1: the daemon's one bridge's run-time ports...
    #[serde(default, skip_serializing)]
    ports: Vec<PortSpec>,
    /// ...and its host port's run-time addresses.
    #[serde(default, skip_serializing)]
    host_addresses: Vec<IpNet>,
}

/// What a daemon records of one bridge.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SavedBridge {
    /// `None` only from a version 1 file: the daemon's only bridge.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<IfName>,
    /// How it was made, if at run time (a configured bridge comes from the configuration).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub made: Option<BridgeAdd>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ports: Vec<PortSpec>,
    /// Addresses put on its host port at run time (by the CNI plugin's `isGateway`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub host_addresses: Vec<IpNet>,
}

/// What a daemon records: its bridges made at run time, and of every
/// bridge the ports added and host addresses put on at run time.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Saved {
    pub bridges: Vec<SavedBridge>,
}

/// The state file of one daemon, locked for its life.
#[derive(Debug)]
pub struct StateFile {
    path: PathBuf,
    lock_path: PathBuf,
    _lock: File,
    /// What was last written, so an unchanged state is not rewritten.
    written: Mutex<Option<Saved>>,
}

impl StateFile {
    /// The state file of the daemon whose control socket is `socket`, in `dir`.
    pub fn open(dir: &Path, socket: &Path) -> Result<StateFile, StateError> {
        std::fs::create_dir_all(dir).map_err(|source| StateError::Dir { path: dir.into(), source })?;
        let stem = socket.file_stem().map_or_else(|| "userbridge".into(), |s| s.to_string_lossy().into_owned());
        let path = dir.join(format!("{stem}.state.json"));
        let lock_path = dir.join(format!("{stem}.state.lock"));
        let io = |source| StateError::Io { path: lock_path.clone(), source };
        let mut lock =
            OpenOptions::new().read(true).write(true).create(true).truncate(false).open(&lock_path).map_err(io)?;
        if flock(&lock, FlockOperation::NonBlockingLockExclusive).is_err() {
            let holder = std::fs::read_to_string(&lock_path).unwrap_or_default().trim().to_string();
            return Err(StateError::InUse { path, holder });
        }
        lock.set_len(0).map_err(io)?;
        writeln!(lock, "pid {}, socket {}", std::process::id(), socket.display()).map_err(io)?;
        Ok(StateFile { path, lock_path, _lock: lock, written: Mutex::new(None) })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The recorded run-time ports. No file is no ports; an unreadable one is
    /// set aside (`.corrupt`) and reported, and the daemon starts without it.
    pub fn load(&self) -> Result<Saved, StateError> {
        let text = match std::fs::read_to_string(&self.path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                // Nothing on disk is the same as no ports: nothing to write until one comes.
                *self.written.lock().unwrap_or_else(|e| e.into_inner()) = Some(Saved::default());
                return Ok(Saved::default());
            }
            Err(source) => return Err(StateError::Io { path: self.path.clone(), source }),
        };
        let parsed = serde_json::from_str::<State>(&text)
            .map_err(Unreadable::from)
            .and_then(|s| if s.version > VERSION { Err(Unreadable::Newer(s.version)) } else { Ok(s) });
        match parsed {
            Ok(s) => {
                let runtime =
                    |ports: Vec<PortSpec>| ports.into_iter().filter(|p| p.origin == Origin::Runtime).collect();
                let mut bridges: Vec<SavedBridge> =
                    s.bridges.into_iter().map(|b| SavedBridge { ports: runtime(b.ports), ..b }).collect();
                if !s.ports.is_empty() || !s.host_addresses.is_empty() {
                    bridges.push(SavedBridge {
                        name: None,
                        made: None,
                        ports: runtime(s.ports),
                        host_addresses: s.host_addresses,
                    });
                }
                let saved = Saved { bridges };
                *self.written.lock().unwrap_or_else(|e| e.into_inner()) = Some(saved.clone());
                Ok(saved)
            }
            Err(why) => {
                let kept = self.path.with_extension("json.corrupt");
                let _ = std::fs::rename(&self.path, &kept);
                Err(StateError::Corrupt { path: self.path.clone(), why, kept })
            }
        }
    }

    /// Records `saved` atomically, unless it is what was last written.
    pub fn save(&self, saved: &Saved) -> Result<(), StateError> {
        let mut written = self.written.lock().unwrap_or_else(|e| e.into_inner());
        if written.as_ref() == Some(saved) {
            return Ok(());
        }
        let io = |source| StateError::Io { path: self.path.clone(), source };
        let state =
            State { version: VERSION, bridges: saved.bridges.clone(), ports: Vec::new(), host_addresses: Vec::new() };
        let text = serde_json::to_string_pretty(&state).map_err(|e| io(std::io::Error::other(e)))?;
        ub_files::write(&self.path, text.as_bytes()).map_err(io)?;
        *written = Some(saved.clone());
        Ok(())
    }
}

impl Drop for StateFile {
    fn drop(&mut self) {
        // The state file stays (the next start reads it); only the lock goes.
        let _ = std::fs::remove_file(&self.lock_path);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ub_proto::Backend;

    fn dir(tag: &str) -> PathBuf {
        std::env::temp_dir().join(format!("ub-state-test-{}-{tag}", std::process::id()))
    }

    #[test]
    fn ports_round_trip_and_a_second_daemon_is_refused() {
        let d = dir("rt");
        let sock = Path::new("/tmp/node.sock");
        let s = StateFile::open(&d, sock).unwrap();
        assert_eq!(s.load().unwrap(), Saved::default());
        let mut p = PortSpec::new(ub_proto::IfName::new("veth1").unwrap(), Backend::Afpacket, Origin::Runtime);
        p.meta.container_id = Some("abc".into());
        let bridge = |n: &str| Some(ub_proto::IfName::new(n).unwrap());
        let made =
            BridgeAdd { addresses: vec!["10.88.1.1/24".parse().unwrap()], ..BridgeAdd::named(bridge("cni1").unwrap()) };
        let saved = Saved {
            bridges: vec![
                SavedBridge {
                    name: bridge("cni0"),
                    made: None,
                    ports: vec![p],
                    host_addresses: vec!["10.244.1.1/24".parse().unwrap()],
                },
                SavedBridge { name: bridge("cni1"), made: Some(made), ports: vec![], host_addresses: vec![] },
            ],
        };
        s.save(&saved).unwrap();
        assert_eq!(s.path(), d.join("node.state.json"));
        let e = StateFile::open(&d, sock).unwrap_err().to_string();
        assert!(e.contains("used by another userbridge") && e.contains(&format!("pid {}", std::process::id())), "{e}");
        drop(s);
        let s = StateFile::open(&d, sock).unwrap();
        assert_eq!(s.load().unwrap(), saved);
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn a_file_of_the_release_before_bridges_is_the_only_bridges() {
        let d = dir("v1");
        let s = StateFile::open(&d, Path::new("/x/old.sock")).unwrap();
        let fixture = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/state-v1.json");
        std::fs::copy(fixture, s.path()).unwrap();
        let saved = s.load().unwrap();
        assert_eq!(saved.bridges.len(), 1);
        let b = &saved.bridges[0];
        assert_eq!((&b.name, &b.made), (&None, &None), "the daemon's only bridge");
        assert_eq!(b.ports.len(), 1);
        assert_eq!(b.ports[0].name, "vfix1");
        assert!(b.ports[0].policy.isolated);
        assert_eq!(b.ports[0].meta.container_id.as_deref(), Some("c0ffee"));
        assert_eq!(b.host_addresses, vec!["fd88::1/64".parse::<IpNet>().unwrap()]);
        // Written back as version 2, named now.
        let named = Saved { bridges: vec![SavedBridge { name: Some(IfName::new("cni0").unwrap()), ..b.clone() }] };
        s.save(&named).unwrap();
        let text = std::fs::read_to_string(s.path()).unwrap();
        assert!(text.contains("\"version\": 2") && text.contains("\"bridges\""), "{text}");
        assert_eq!(s.load().unwrap(), named);
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn a_corrupt_file_is_set_aside_and_reported() {
        let d = dir("bad");
        let s = StateFile::open(&d, Path::new("/x/n.sock")).unwrap();
        std::fs::write(s.path(), "{\"version\":1,\"ports\":[{\"name\":").unwrap();
        let e = s.load().unwrap_err().to_string();
        assert!(e.contains("unreadable") && e.contains("n.state.json.corrupt"), "{e}");
        assert!(d.join("n.state.json.corrupt").exists());
        assert_eq!(s.load().unwrap(), Saved::default(), "set aside: the next load finds none");
        std::fs::write(s.path(), "{\"version\":99,\"ports\":[]}").unwrap();
        assert!(s.load().unwrap_err().to_string().contains("newer"));
        let _ = std::fs::remove_dir_all(&d);
    }
}
