#!/usr/bin/env bash
# Podman for the CNI tests (tests/cni.rs), offline, on Debian 12 as root:
# a private containers.conf and storage under $W, and an image
# localhost/ub-busybox built from busybox-static. Idempotent and safe to
# run from parallel tests (one flock). Prints the containers.conf path.
#
# Facts (podman 4.3.1, CNI backend): the runtime must be runc (Debian's
# crun refuses this kernel's hybrid cgroup layout), cgroup_manager cgroupfs
# (PID 1 is not systemd), events_logger file (no journald), ulimits within
# the hard limits. podman calls a CNI plugin with VERSION, ADD and DEL only.
set -euo pipefail
W=${UB_PODMAN_DIR:-/var/tmp/userbridge-podman}
mkdir -p "$W"
exec 9>"$W/setup.lock"
flock 9

installed() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q "ok installed"; }
if ! installed podman || ! installed runc || ! installed busybox-static || ! installed containernetworking-plugins; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends podman runc busybox-static containernetworking-plugins >/dev/null
fi

nofile=$(ulimit -Hn); nproc=$(ulimit -Hu)
[ "$nofile" = unlimited ] && nofile=1048576
if [ "$nproc" = unlimited ] || [ "$nproc" -gt 32768 ]; then nproc=32768; fi
mkdir -p "$W/bin" "$W/net.d"
cat > "$W/containers.conf.tmp" <<CONF
[containers]
default_ulimits = ["nofile=$nofile:$nofile", "nproc=$nproc:$nproc"]
[engine]
cgroup_manager = "cgroupfs"
events_logger = "file"
events_logfile_path = "$W/events.log"
runtime = "runc"
[network]
network_backend = "cni"
cni_plugin_dirs = ["$W/bin", "/usr/lib/cni"]
network_config_dir = "$W/net.d"
CONF
mv "$W/containers.conf.tmp" "$W/containers.conf"
cat > "$W/storage.conf.tmp" <<CONF
[storage]
driver = "overlay"
graphroot = "$W/storage"
runroot = "$W/runroot"
CONF
mv "$W/storage.conf.tmp" "$W/storage.conf"
export CONTAINERS_CONF=$W/containers.conf CONTAINERS_STORAGE_CONF=$W/storage.conf

if ! podman image exists localhost/ub-busybox 2>/dev/null; then
  R=$W/rootfs; rm -rf "$R"; mkdir -p "$R"/{bin,etc,proc,sys,dev,tmp,root,run,var,usr,www}
  cp /bin/busybox "$R/bin/busybox"
  for a in $(/bin/busybox --list); do [ "$a" = busybox ] || ln -sf busybox "$R/bin/$a"; done
  ln -sfn bin "$R/sbin"; ln -sfn ../bin "$R/usr/bin"; ln -sfn ../bin "$R/usr/sbin"
  printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n' > "$R/etc/passwd"
  printf 'root:x:0:\nnogroup:x:65534:\n' > "$R/etc/group"
  chmod 1777 "$R/tmp"
  tar -C "$R" --numeric-owner --owner=0 --group=0 -cf "$W/rootfs.tar" .
  out=$(podman import --change 'CMD ["/bin/sh"]' "$W/rootfs.tar" localhost/ub-busybox 2>&1) || { echo "$out" >&2; exit 1; }
  rm -rf "$R" "$W/rootfs.tar"
fi
echo "$W/containers.conf"
