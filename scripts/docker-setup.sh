#!/usr/bin/env bash
# Docker for the network driver tests (tests/docker.rs), offline, on Debian
# 12 as root: installs docker.io (20.10) and docker-compose (1.29) without
# starting their services, and makes the image tarball the tests import
# (busybox-static as "bb").
# Idempotent and safe to run from parallel tests (one flock). Prints the
# tarball's path. Each test then runs its own dockerd (see tests/docker.rs).
#
# Facts (Docker 20.10 here): no systemd, so dpkg must not start services
# (policy-rc.d); /usr/bin/docker is the client that matches the daemon
# (another may be earlier on PATH); overlay2, cgroupfs and runc work as they
# are. Each test's dockerd runs in a namespace of the test's own with its
# iptables on (`--bridge none --iptables=true --userland-proxy=false`), so
# its rules land in that namespace's tables, never the host's.
set -euo pipefail
W=${UB_DOCKER_DIR:-/var/tmp/userbridge-docker}
mkdir -p "$W"
exec 9>"$W/setup.lock"
flock 9

installed() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q "ok installed"; }
if ! installed docker.io || ! installed busybox-static || ! installed docker-compose; then
  made=0
  [ -e /usr/sbin/policy-rc.d ] || { printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d; chmod +x /usr/sbin/policy-rc.d; made=1; }
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends docker.io busybox-static docker-compose >/dev/null
  [ $made = 1 ] && rm -f /usr/sbin/policy-rc.d
fi

if [ ! -s "$W/bb.tar" ]; then
  R=$W/rootfs
  rm -rf "$R"
  mkdir -p "$R"/{bin,etc,proc,sys,dev,tmp}
  cp /bin/busybox "$R/bin/busybox"
  for a in $("$R/bin/busybox" --list); do [ "$a" = busybox ] || ln -sf busybox "$R/bin/$a"; done
  tar -C "$R" -cf "$W/bb.tar.tmp" .
  mv "$W/bb.tar.tmp" "$W/bb.tar"
  rm -rf "$R"
fi
echo "$W/bb.tar"
