//! Files replaced whole (`tempfile`'s temporary file beside the target,
//! renamed over it): the daemon's state file, the Docker driver's, and the
//! CNI plugin installed into a runtime's directory while the runtime may be
//! running the old one. A reader sees the old file or the new one, never
//! part of either; a failure leaves the old one and no temporary file.
//!
//! No fsync: these files must outlive a process, not the machine, whose
//! reboot takes every interface they list with it; the CNI plugin's ADD and
//! DEL wait on these writes.

use std::fs::File;
use std::io::{self, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

/// Replaces `path` with `bytes`, creating its directory if need be.
pub fn write(path: &Path, bytes: &[u8]) -> io::Result<()> {
    replace(path, None, |f| f.write_all(bytes))
}

/// Replaces `path` with a copy of the file `from`, with mode `mode`.
pub fn copy(from: &Path, path: &Path, mode: u32) -> io::Result<()> {
    let mut src = File::open(from)?;
    replace(path, Some(mode), |f| io::copy(&mut src, f).map(drop))
}

/// Fills a temporary file in `path`'s directory with `fill`, gives it
/// `mode` (else the temporary file's 0600), and renames it over `path`.
fn replace(path: &Path, mode: Option<u32>, fill: impl FnOnce(&mut File) -> io::Result<()>) -> io::Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    std::fs::create_dir_all(dir)?;
    let mut tmp = tempfile::Builder::new().prefix(".ub-").suffix(".tmp").tempfile_in(dir)?;
    fill(tmp.as_file_mut())?;
    if let Some(m) = mode {
        tmp.as_file().set_permissions(std::fs::Permissions::from_mode(m))?;
    }
    // Closed before the rename: a file still open for writing cannot be
    // executed (ETXTBSY), and a runtime may exec the plugin the moment it
    // is there.
    tmp.into_temp_path().persist(path).map_err(|e| e.error)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir(tag: &str) -> std::path::PathBuf {
        let d = std::env::temp_dir().join(format!("ub-files-{}-{tag}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        d
    }

    #[test]
    fn a_file_is_replaced_whole_and_nothing_is_left_beside_it() {
        let d = dir("w");
        let p = d.join("sub/state.json");
        write(&p, b"one").unwrap();
        write(&p, b"two").unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"two");
        assert_eq!(std::fs::read_dir(d.join("sub")).unwrap().count(), 1, "no temporary file left");
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn a_failed_fill_leaves_the_old_file_and_no_temporary_one() {
        let d = dir("f");
        let p = d.join("state.json");
        write(&p, b"old").unwrap();
        let e = replace(&p, None, |_| Err(io::Error::other("disk full"))).unwrap_err();
        assert_eq!(e.to_string(), "disk full");
        assert_eq!(std::fs::read(&p).unwrap(), b"old");
        assert_eq!(std::fs::read_dir(&d).unwrap().count(), 1);
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn a_copy_gets_its_mode() {
        let d = dir("c");
        let src = d.join("src");
        write(&src, b"#!/bin/sh\n").unwrap();
        let dst = d.join("bin/plugin");
        copy(&src, &dst, 0o755).unwrap();
        assert_eq!(std::fs::read(&dst).unwrap(), b"#!/bin/sh\n");
        assert_eq!(std::fs::metadata(&dst).unwrap().permissions().mode() & 0o777, 0o755);
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn a_program_replaced_while_it_is_run_never_fails_to_start() {
        let d = dir("x");
        let p = d.join("prog");
        copy(Path::new("/bin/true"), &p, 0o755).unwrap();
        // Another process runs it over and over (a runtime running the
        // plugin), counting the runs refused with "Text file busy" (126).
        let stop = d.join("stop");
        let script = format!(
            "n=0; while [ ! -e {s} ]; do {p}; [ $? = 126 ] && n=$((n+1)); done 2>/dev/null; echo $n",
            s = stop.display(),
            p = p.display()
        );
        let runner = std::process::Command::new("sh")
            .args(["-c", &script])
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        for _ in 0..300 {
            copy(Path::new("/bin/true"), &p, 0o755).unwrap();
        }
        std::fs::write(&stop, b"").unwrap();
        let out = runner.wait_with_output().unwrap();
        assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "0", "runs refused: the file was open for writing");
        let _ = std::fs::remove_dir_all(&d);
    }
}
