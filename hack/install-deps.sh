#!/usr/bin/env bash
# Installs what podnet's lab and tests need on a fresh Debian machine. Idempotent.
set -euo pipefail
need=()
command -v ip >/dev/null 2>&1 || need+=(iproute2)
command -v nft >/dev/null 2>&1 || need+=(nftables)
command -v unshare >/dev/null 2>&1 || need+=(util-linux)
# etcd behind the real kube-apiserver in integration/kube (binary /usr/bin/etcd).
[ -x /usr/bin/etcd ] || need+=(etcd-server)
# systemd-analyze, for deploy/'s `systemd-analyze verify` of the podnetd unit (only
# the tool is used: nothing needs systemd to run, and no unit is started).
command -v systemd-analyze >/dev/null 2>&1 || need+=(systemd)
# The e2e cluster's nodes (integration/cluster): Debian's containerd 1.6 and runc, one
# containerd per node started by the harness inside its sandbox, never as a service
# (policy-rc.d below keeps the package from starting a machine-wide one), and
# nsenter (util-linux) to start it in the node's namespaces.
[ -x /usr/bin/containerd ] || need+=(containerd)
command -v runc >/dev/null 2>&1 || need+=(runc)
command -v nsenter >/dev/null 2>&1 || need+=(util-linux)
# The e2e images (hack/images, make images) carry Debian's tools.
dpkg -s busybox-static >/dev/null 2>&1 || need+=(busybox-static)   # replaces a dynamic busybox
[ -x /bin/nc.openbsd ] || need+=(netcat-openbsd)
command -v curl >/dev/null 2>&1 || need+=(curl)
command -v dig >/dev/null 2>&1 || need+=(bind9-dnsutils)
[ -s /etc/ssl/certs/ca-certificates.crt ] || need+=(ca-certificates)
if [ ${#need[@]} -gt 0 ]; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "install-deps: missing ${need[*]} and not root; install them first" >&2
    exit 1
  fi
  echo "install-deps: installing ${need[*]}"
  # etcd-server's and containerd's postinst would start a machine-wide etcd or
  # containerd: a policy-rc.d that refuses every service start keeps them from doing
  # so (machines built like Docker images already have one; ours is removed afterwards).
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
    chmod 755 /usr/sbin/policy-rc.d
    trap 'rm -f /usr/sbin/policy-rc.d' EXIT
  fi
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
  # The package also enables its unit for the next boot; a containerd installed here
  # only ever runs as the harness's per-node child, so it is disabled again.
  if [[ " ${need[*]} " == *" containerd "* ]] && command -v systemctl >/dev/null 2>&1; then
    systemctl disable --quiet containerd.service
  fi
fi
command -v go >/dev/null 2>&1 || { echo "install-deps: Go toolchain not found (expected at /usr/local/go/bin)" >&2; exit 1; }
