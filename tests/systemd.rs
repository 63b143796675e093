//! The documented unit (docs/systemd/userbridge.service) under a real
//! systemd: systemd is not PID 1 on these machines, so each test boots one
//! as PID 1 of namespaces of its own (PID, mount, cgroup, UTS, network),
//! with no unit but the tested one and three empty targets, in a cgroup of
//! its own. `systemctl start` waits for READY=1; `systemctl reload` runs
//! the upgrade, whose new process becomes the main one (MAINPID=) without
//! a ping lost; a failed reload leaves the old process; a crash restarts.

mod common;

use common::*;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

const UNIT: &str = include_str!("../docs/systemd/userbridge.service");
const HIERARCHIES: [&str; 2] = ["/sys/fs/cgroup/systemd", "/sys/fs/cgroup/unified"];

/// systemd as PID 1 of namespaces of its own; killed (with everything it
/// started) and its cgroups, units and files removed on drop.
struct Systemd {
    name: String,
    pid: u32,
    dir: String,
    /// `unshare`, which waits for systemd.
    boot: Option<std::process::Child>,
}

impl Systemd {
    /// Boots systemd with `units` (file name, text) as its only units.
    fn boot(name: &str, units: &[(&str, String)]) -> Systemd {
        let dir = format!("/tmp/{name}.systemd");
        let mut guard = Systemd { name: name.to_string(), pid: 0, dir: dir.clone(), boot: None };
        std::fs::create_dir_all(format!("{dir}/units")).unwrap();
        for (file, text) in units {
            let path = format!("{dir}/units/{file}");
            std::fs::create_dir_all(std::path::Path::new(&path).parent().unwrap()).unwrap();
            std::fs::write(path, text).unwrap();
        }
        for t in ["sysinit", "basic", "shutdown"] {
            let stub = format!("[Unit]\nDescription={t} (empty)\nDefaultDependencies=no\n");
            std::fs::write(format!("{dir}/units/{t}.target"), stub).unwrap();
        }
        std::fs::write(format!("{dir}/units/{name}.target"), "[Unit]\nDescription=the test's\n").unwrap();
        for h in HIERARCHIES {
            std::fs::create_dir(format!("{h}/{name}")).unwrap();
        }
        // In its cgroup first, then in namespaces whose cgroup root is that
        // one (bound over the hierarchies: systemd makes its slices there),
        // with /run a mount point (else systemd mounts an empty one over
        // /run/netns), its own /run/systemd, and an empty network namespace.
        let inner = format!(
            "mount --bind {0}/{name} {0} && mount --bind {1}/{name} {1} && mount --rbind /run /run \
             && mkdir -p /run/systemd \
             && mount -t tmpfs tmpfs /run/systemd && exec env SYSTEMD_UNIT_PATH={dir}/units \
             /lib/systemd/systemd --system --unit={name}.target",
            HIERARCHIES[0], HIERARCHIES[1]
        );
        let outer = format!(
            "echo $$ > {0}/{name}/cgroup.procs && echo $$ > {1}/{name}/cgroup.procs && exec unshare --pid --fork --kill-child \
             --mount --propagation slave --cgroup --uts --net --mount-proc sh -c '{inner}'",
            HIERARCHIES[0], HIERARCHIES[1]
        );
        let log = std::fs::File::create(format!("{dir}/boot.log")).unwrap();
        guard.boot = Some(
            Command::new("setsid")
                .args(["sh", "-c", &outer])
                .stdin(Stdio::null())
                .stdout(log.try_clone().unwrap())
                .stderr(log)
                .spawn()
                .unwrap(),
        );
        wait_until("systemd to boot", Duration::from_secs(20), || {
            guard.pid = std::fs::read_to_string(format!("{}/{name}/init.scope/cgroup.procs", HIERARCHIES[0]))
                .ok()
                .and_then(|p| p.lines().next()?.parse().ok())
                .unwrap_or(0);
            guard.pid != 0 && guard.systemctl(&["is-system-running"]).status.success()
        });
        guard
    }

    fn systemctl(&self, args: &[&str]) -> Output {
        Command::new("nsenter").args(["-a", "-t", &self.pid.to_string(), "systemctl"]).args(args).output().unwrap()
    }

    /// `systemctl show -p PROP UNIT`'s value.
    fn show(&self, unit: &str, prop: &str) -> String {
        let o = self.systemctl(&["show", "-p", prop, "--value", unit]);
        String::from_utf8_lossy(&o.stdout).trim().to_string()
    }

    /// Whether `pid` (of systemd's PID namespace) is a live process there.
    fn alive(&self, pid: &str) -> bool {
        let o = Command::new("nsenter")
            .args(["-a", "-t", &self.pid.to_string(), "cat", &format!("/proc/{pid}/stat")])
            .output()
            .unwrap();
        o.status.success() && !String::from_utf8_lossy(&o.stdout).contains(") Z ")
    }
}

impl Drop for Systemd {
    fn drop(&mut self) {
        if self.pid != 0 {
            // PID 1 of its namespace: the kernel kills every process in it.
            let _ = Command::new("kill").args(["-9", &self.pid.to_string()]).status();
        }
        if let Some(mut boot) = self.boot.take() {
            if self.pid == 0 {
                let _ = boot.kill();
            }
            let _ = boot.wait();
        }
        for h in HIERARCHIES {
            let root = format!("{h}/{}", self.name);
            let _ = ub_lab::wait::poll_until(Duration::from_secs(5), || {
                let _ =
                    Command::new("find").args([&root, "-depth", "-type", "d", "-exec", "rmdir", "{}", ";"]).output();
                !std::path::Path::new(&root).exists()
            });
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[test]
fn the_unit_upgrades_on_reload_without_a_lost_ping_and_restarts_after_a_crash() {
    let lab = lab("sysd", 2);
    let name = lab.name.clone();
    let socket = format!("/tmp/{name}.sock");
    let state = state_dir_of(std::path::Path::new(&socket));
    let _files = Files(vec![
        socket.clone(),
        format!("{socket}.takeover"),
        format!("/tmp/{name}.toml"),
        format!("/tmp/{name}.bin"),
    ]);
    let _state = Files(vec![state.display().to_string()]);
    let config = format!(
        "socket = \"{socket}\"\nstate_dir = \"{}\"\nnetns = \"{}\"\nports = [\"ubp1\", \"ubp2\"]\n",
        state.display(),
        lab.switch_ns()
    );
    std::fs::write(format!("/tmp/{name}.toml"), config).unwrap();
    // The binary as a package would install it: a file the upgrade replaces.
    let bin = format!("/tmp/{name}.bin");
    install(BIN, &bin);
    // The documented unit as it is, with this test's paths in a drop-in
    // (and CAP_SYS_ADMIN, which `netns` needs: docs/operations.md).
    let dropin = format!(
        "[Service]\nCapabilityBoundingSet=CAP_SYS_ADMIN\nAmbientCapabilities=CAP_SYS_ADMIN\n\
         ExecStart=\nExecStart={bin} run --config /tmp/{name}.toml\nExecReload=\n\
         ExecReload={bin} upgrade --socket {socket} --timeout 30\nReadWritePaths=/tmp\n\
         StandardOutput=append:/tmp/{name}.systemd/daemon.log\nStandardError=append:/tmp/{name}.systemd/daemon.log\n"
    );
    let sd =
        Systemd::boot(&name, &[("userbridge.service", UNIT.to_string()), ("userbridge.service.d/test.conf", dropin)]);
    let log = || std::fs::read_to_string(format!("/tmp/{name}.systemd/daemon.log")).unwrap_or_default();

    // Type=notify: `start` returns once the daemon said READY=1.
    let o = sd.systemctl(&["start", "userbridge"]);
    assert!(o.status.success(), "start: {}\n{}", String::from_utf8_lossy(&o.stderr), log());
    assert_eq!(sd.show("userbridge", "SubState"), "running");
    let first = sd.show("userbridge", "MainPID");
    assert!(ping(&lab.pods[0].ns, "10.0.0.2", 1), "the daemon forwards: {}", log());

    // SIGHUP, as the unit's comment says to send it: the file is read again.
    let o = sd.systemctl(&["kill", "--kill-whom=main", "--signal=HUP", "userbridge"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    wait_until("the configuration to be read again", Duration::from_secs(5), || {
        log().contains("configuration reloaded")
    });
    assert_eq!(sd.show("userbridge", "MainPID"), first, "SIGHUP is not an upgrade");

    // An upgrade: the file replaced, then `systemctl reload` under a 200/s ping.
    install(BIN, &bin);
    let pinging = Pinging::start(&lab, 600);
    std::thread::sleep(Duration::from_secs(1));
    let o = sd.systemctl(&["reload", "userbridge"]);
    assert!(o.status.success(), "reload: {}\n{}", String::from_utf8_lossy(&o.stderr), log());
    let (received, dups, sent) = pinging.finish();
    assert_eq!((received, dups), (sent, 0), "pings lost or doubled across the reload");
    let second = sd.show("userbridge", "MainPID");
    assert_ne!(second, first, "the new process is the main one (MAINPID=)");
    assert_eq!(sd.show("userbridge", "ActiveState"), "active");
    assert!(sd.alive(&second), "the new main process runs");
    assert!(!sd.alive(&first), "the old process exited");
    let exe = Command::new("nsenter")
        .args(["-a", "-t", &sd.pid.to_string(), "readlink", &format!("/proc/{second}/exe")])
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&exe.stdout).trim(), bin, "the new process runs the replaced file");

    // A reload whose new daemon cannot start (its client works): the
    // reload fails, the old process serves on.
    let broken =
        format!("#!/bin/sh\n[ \"$1\" = run ] && {{ echo 'a broken build' >&2; exit 3; }}\nexec {BIN} \"$@\"\n");
    std::fs::write(format!("{bin}.new"), broken).unwrap();
    std::fs::set_permissions(format!("{bin}.new"), std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    std::fs::rename(format!("{bin}.new"), &bin).unwrap();
    let o = sd.systemctl(&["reload", "userbridge"]);
    assert!(!o.status.success(), "a reload with a broken binary succeeded");
    assert!(log().contains("exited before it took over"), "{}", log());
    assert_eq!(sd.show("userbridge", "MainPID"), second);
    assert_eq!(sd.show("userbridge", "ActiveState"), "active");
    assert!(ping(&lab.pods[0].ns, "10.0.0.2", 2), "the old process forwards on");

    // A crash: Restart=always brings the daemon back, with its ports.
    install(BIN, &bin);
    let killed = Instant::now();
    let o = Command::new("nsenter").args(["-a", "-t", &sd.pid.to_string(), "kill", "-9", &second]).output().unwrap();
    assert!(o.status.success());
    wait_until("systemd to restart the daemon", Duration::from_secs(10), || {
        let main = sd.show("userbridge", "MainPID");
        main != second && main != "0" && sd.show("userbridge", "SubState") == "running"
    });
    let quick = || ns_exec(&lab.pods[0].ns, &["ping", "-c", "1", "-W", "0.05", "10.0.0.2"]).status.success();
    wait_until("the restarted daemon to forward", Duration::from_secs(5), quick);
    eprintln!("forwarding again {:?} after kill -9 of the main process", killed.elapsed());

    let o = sd.systemctl(&["stop", "userbridge"]);
    assert!(o.status.success(), "stop: {}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(sd.show("userbridge", "ActiveState"), "inactive");
}

/// Copies `from` to `to` as a package manager does: a new file renamed over.
fn install(from: &str, to: &str) {
    std::fs::copy(from, format!("{to}.new")).unwrap();
    std::fs::rename(format!("{to}.new"), to).unwrap();
}

/// Files and directories removed on drop.
struct Files(Vec<String>);

impl Drop for Files {
    fn drop(&mut self) {
        for f in &self.0 {
            let _ = std::fs::remove_file(f).or_else(|_| std::fs::remove_dir_all(f));
            let _ = std::fs::remove_file(format!("{f}.new"));
        }
    }
}
