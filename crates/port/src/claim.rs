//! One switch per interface. A second userbridge attached to a port another
//! one already serves would send every flood twice (the kernel bridge
//! refuses an interface that already has a master). A [`Claim`] is an
//! exclusive `flock` on a file named after the interface's network namespace
//! and ifindex, held for as long as the port is open; the kernel drops it
//! when the holder exits, however it exits, so no claim outlives its daemon.

use crate::PortError;
use rustix::fs::{FlockOperation, flock};
use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, Write};
use std::os::fd::OwnedFd;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

/// Where claims live unless told otherwise: shared by every daemon on the
/// machine, whatever its socket or state directory.
pub const CLAIM_DIR: &str = "/run/userbridge/claims";

/// An exclusive claim on one interface; released on drop.
#[derive(Debug)]
pub struct Claim {
    file: File,
    path: PathBuf,
}

/// The calling thread's network namespace, as the inode of its nsfs file.
pub fn current_netns() -> std::io::Result<u64> {
    Ok(std::fs::metadata("/proc/thread-self/ns/net")?.ino())
}

impl Claim {
    /// Claims interface `ifindex` (called `name`) of the calling thread's
    /// namespace for `holder` (who we are, shown to whoever is refused).
    pub fn take(dir: &Path, name: &str, ifindex: u32, holder: &str) -> Result<Claim, PortError> {
        let io = |what, e| PortError::io(what, name, e);
        let ns = current_netns().map_err(|e| io("reading the network namespace", e))?;
        std::fs::create_dir_all(dir).map_err(|e| io("creating the claim directory", e))?;
        let path = dir.join(format!("{ns}-{ifindex}.lock"));
        // Bounded: each retry means another daemon released this very claim
        // between our open and our lock.
        for _ in 0..16 {
            let mut file = OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .mode(0o644)
                .custom_flags(libc::O_CLOEXEC)
                .open(&path)
                .map_err(|e| io("opening the port's claim file", e))?;
            if let Err(e) = flock(&file, FlockOperation::NonBlockingLockExclusive) {
                if e == rustix::io::Errno::WOULDBLOCK {
                    let mut held_by = String::new();
                    let _ = file.read_to_string(&mut held_by);
                    let held_by = held_by.trim();
                    return Err(PortError::Claimed {
                        name: name.to_string(),
                        holder: if held_by.is_empty() { "another userbridge".into() } else { held_by.to_string() },
                    });
                }
                return Err(io("locking the port's claim file", e.into()));
            }
            // A releasing holder unlinks the file while it still holds the lock:
            // ours is only a claim if the path still names the file we locked.
            let same = std::fs::metadata(&path).is_ok_and(|m| m.ino() == file.metadata().map_or(0, |f| f.ino()));
            if !same {
                continue;
            }
            file.set_len(0).map_err(|e| io("writing the port's claim file", e))?;
            let _ = file.rewind();
            file.write_all(format!("{holder}\n").as_bytes()).map_err(|e| io("writing the port's claim file", e))?;
            return Ok(Claim { file, path });
        }
        Err(io("claiming the port", std::io::Error::other("its claim file kept changing")))
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Takes over a claim another daemon handed over (`file`, its claim
    /// file with the lock held: the lock belongs to the open file, which
    /// both processes share until the other exits), saying the new holder.
    /// A file that is no longer the claim's (removed meanwhile) is claimed
    /// afresh.
    pub fn adopt(file: OwnedFd, dir: &Path, name: &str, ifindex: u32, holder: &str) -> Result<Claim, PortError> {
        let ns = current_netns().map_err(|e| PortError::io("reading the network namespace", name, e))?;
        let path = dir.join(format!("{ns}-{ifindex}.lock"));
        let mut file = File::from(file);
        let same = std::fs::metadata(&path).is_ok_and(|m| m.ino() == file.metadata().map_or(0, |f| f.ino()));
        if !same {
            return Claim::take(dir, name, ifindex, holder);
        }
        let _ = file.set_len(0);
        let _ = file.rewind();
        let _ = file.write_all(format!("{holder}\n").as_bytes());
        Ok(Claim { file, path })
    }

    /// A duplicate of the locked claim file, to hand over.
    pub fn dup_fd(&self) -> std::io::Result<OwnedFd> {
        Ok(self.file.try_clone()?.into())
    }

    /// Lets the claim go without removing its file: the daemon that took
    /// over holds the same lock and the same file.
    pub fn handed_over(self) {
        std::mem::forget(self);
    }
}

impl Drop for Claim {
    fn drop(&mut self) {
        // Unlinked while still locked (see `take`), then the lock goes with the fd.
        let _ = std::fs::remove_file(&self.path);
        let _ = &self.file;
    }
}

/// Removes the claim files in `dir` nobody holds: those of daemons killed
/// before they could remove theirs (the lock went with them, the file
/// stayed). Each is locked before it goes, so a claim held now is never
/// touched; a daemon that opened the file just before finds it replaced
/// and takes a new one ([`Claim::take`] checks). Returns how many went.
pub fn sweep(dir: &Path) -> usize {
    let Ok(entries) = std::fs::read_dir(dir) else { return 0 };
    let mut removed = 0;
    for path in entries.filter_map(|e| Some(e.ok()?.path())).filter(|p| p.extension().is_some_and(|x| x == "lock")) {
        let Ok(file) = OpenOptions::new().read(true).custom_flags(libc::O_CLOEXEC).open(&path) else { continue };
        if flock(&file, FlockOperation::NonBlockingLockExclusive).is_ok() && std::fs::remove_file(&path).is_ok() {
            removed += 1;
        }
    }
    removed
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_claim_is_refused_with_the_holder_and_a_released_one_is_free() {
        let dir = std::env::temp_dir().join(format!("ub-claim-test-{}", std::process::id()));
        let a = Claim::take(&dir, "veth1", 7, "pid 1, socket /a.sock").unwrap();
        let e = Claim::take(&dir, "veth1", 7, "pid 2").unwrap_err().to_string();
        assert!(e.contains("'veth1'") && e.contains("pid 1, socket /a.sock"), "{e}");
        // Another interface is another claim.
        let b = Claim::take(&dir, "veth2", 8, "pid 2").unwrap();
        drop(a);
        let c = Claim::take(&dir, "veth1", 7, "pid 3").unwrap();
        assert_eq!(std::fs::read_to_string(c.path()).unwrap(), "pid 3\n");
        drop((b, c));
        assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 0, "released claims leave no file");
        let _ = std::fs::remove_dir(&dir);
    }

    #[test]
    fn a_sweep_removes_the_claims_nobody_holds_and_keeps_the_held_ones() {
        let dir = std::env::temp_dir().join(format!("ub-claim-sweep-{}", std::process::id()));
        let held = Claim::take(&dir, "veth1", 7, "pid 1").unwrap();
        // A daemon killed with its claim: the file stays, unlocked.
        std::fs::write(dir.join("4026531840-9.lock"), "pid 2\n").unwrap();
        assert_eq!(sweep(&dir), 1);
        assert!(held.path().exists(), "a held claim was swept");
        assert!(!dir.join("4026531840-9.lock").exists());
        assert!(Claim::take(&dir, "veth1", 7, "pid 3").is_err(), "the held claim still holds");
        drop(held);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
