use crate::{Error, Result, sys};
use std::fs::{self, File};
use std::os::fd::{AsFd, BorrowedFd};
use std::path::PathBuf;

/// Where named namespaces live, as with `ip netns`.
pub const NETNS_RUN_DIR: &str = "/run/netns";

/// A named network namespace, bind-mounted at /run/netns/NAME so that
/// `ip netns exec NAME …` sees it too.
#[derive(Debug)]
pub struct NetNs {
    name: String,
    file: File,
}

impl NetNs {
    fn path_of(name: &str) -> PathBuf {
        PathBuf::from(NETNS_RUN_DIR).join(name)
    }

    /// Checks `name` is usable as a namespace name: 1 to 64 bytes of
    /// `[A-Za-z0-9_.-]`, not starting with '.'.
    pub fn validate_name(name: &str) -> Result<()> {
        let ok = !name.is_empty()
            && name.len() <= 64
            && !name.starts_with('.')
            && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.');
        if ok { Ok(()) } else { Err(Error::BadNetnsName(name.to_string())) }
    }

    /// Creates a new, empty namespace called `name`. Fails if it exists.
    pub fn create(name: &str) -> Result<NetNs> {
        Self::validate_name(name)?;
        let path = Self::path_of(name);
        fs::create_dir_all(NETNS_RUN_DIR).map_err(|e| Error::io(format!("creating {NETNS_RUN_DIR}"), e))?;
        // As iproute2 does: /run/netns a shared mount point of its own, so that
        // namespaces made here and by `ip netns` all stay visible to both.
        if sys::make_rshared(NETNS_RUN_DIR).is_err() {
            sys::rbind_self(NETNS_RUN_DIR)
                .and_then(|()| sys::make_rshared(NETNS_RUN_DIR))
                .map_err(|e| Error::io(format!("making {NETNS_RUN_DIR} a shared mount point"), e))?;
        }
        fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)
            .map_err(|e| Error::io(format!("creating namespace {name} ({})", path.display()), e))?;
        let p = path.to_string_lossy().into_owned();
        // unshare() moves only the calling thread, so do it on a thread of its own.
        let res = std::thread::scope(|s| {
            s.spawn(|| -> std::io::Result<()> {
                sys::unshare_net()?;
                sys::bind_mount("/proc/thread-self/ns/net", &p)
            })
            .join()
            .unwrap_or_else(|_| Err(std::io::Error::other("namespace thread panicked")))
        });
        if let Err(e) = res {
            let _ = fs::remove_file(&path);
            return Err(Error::io(format!("creating namespace {name}"), e));
        }
        Self::open(name)
    }

    /// The calling thread's own network namespace (for a daemon, the one it
    /// was started in: keep it before entering another).
    pub fn current() -> Result<NetNs> {
        let file = File::open("/proc/thread-self/ns/net")
            .map_err(|e| Error::io("opening this thread's network namespace", e))?;
        Ok(NetNs { name: "(start)".into(), file })
    }

    /// Opens a namespace by path (`/var/run/netns/NAME`, `/proc/PID/ns/net`),
    /// as container runtimes hand them over.
    pub fn open_path(path: &std::path::Path) -> Result<NetNs> {
        let file =
            File::open(path).map_err(|e| Error::io(format!("opening network namespace {}", path.display()), e))?;
        Ok(NetNs { name: path.display().to_string(), file })
    }

    /// Opens an existing namespace.
    pub fn open(name: &str) -> Result<NetNs> {
        Self::validate_name(name)?;
        let file = File::open(Self::path_of(name)).map_err(|e| Error::io(format!("opening namespace {name}"), e))?;
        Ok(NetNs { name: name.to_string(), file })
    }

    /// Unmounts and removes the namespace `name`. Interfaces inside it are
    /// destroyed by the kernel once nothing holds it (veth peers elsewhere go too).
    pub fn delete(name: &str) -> Result<()> {
        Self::validate_name(name)?;
        let path = Self::path_of(name);
        let p = path.to_string_lossy().into_owned();
        let _ = sys::umount_detach(&p);
        fs::remove_file(&path).map_err(|e| Error::io(format!("deleting namespace {name}"), e))
    }

    /// True if /run/netns/NAME exists.
    pub fn exists(name: &str) -> bool {
        Self::path_of(name).exists()
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// Moves the calling thread into this namespace.
    pub fn enter(&self) -> Result<()> {
        sys::setns_net(self.file.as_fd()).map_err(|e| Error::io(format!("entering namespace {}", self.name), e))
    }

    /// Runs `f` inside `ns` ([`NetNs::run`]), or on the calling thread, in
    /// its own namespace, when there is none.
    pub fn run_in<T: Send>(ns: Option<&NetNs>, f: impl FnOnce() -> T + Send) -> Result<T> {
        match ns {
            Some(ns) => ns.run(f),
            None => Ok(f()),
        }
    }

    /// Runs `f` on a fresh thread inside this namespace and returns its result.
    /// Sockets `f` opens stay in this namespace after it returns.
    pub fn run<T: Send>(&self, f: impl FnOnce() -> T + Send) -> Result<T> {
        std::thread::scope(|s| {
            s.spawn(|| {
                self.enter()?;
                Ok(f())
            })
            .join()
            .unwrap_or_else(|_| {
                Err(Error::io(format!("thread in namespace {}", self.name), std::io::Error::other("panicked")))
            })
        })
    }
}

impl AsFd for NetNs {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.file.as_fd()
    }
}
