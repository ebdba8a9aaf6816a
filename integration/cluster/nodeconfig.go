package cluster

import (
	"bufio"
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// nodeInitScript runs as the first process of a node's mount namespace (in the
// node's network namespace) and prepares the node's view of the machine, then
// stays as the namespace's holder. $1 is the node's directory, $2 kubelet's
// cgroupRoot, made in every cgroup v1 hierarchy (kubelet wants it to exist), $3
// the sandbox's hosts file.
//   - /sys again, so that it shows the node's network devices, and the cgroup
//     hierarchies of the machine back under it (listed in $1/cgroups), which
//     kubelet (cgroupfs driver) and runc need;
//   - a /run of its own: containerd's shim sockets, runc's state, /run/netns;
//   - $1/log over /var/log (kubelet writes /var/log/pods and /var/log/containers);
//   - for each file $1/sysctl/<name>, that file over /proc/sys/<name with / for .>:
//     kubelet with protectKernelDefaults reads these machine-wide sysctls and
//     refuses to start if they differ from its defaults; it never writes them;
//   - /etc, /opt and /var/lib as overlays of the machine's with the node's
//     writes in $1/overlay: kubelet writes /var/lib/kubelet/device-plugins
//     whatever its root dir, a hostPath volume with DirectoryOrCreate creates
//     its directory (podnet's /var/lib/podnet), and mount points need a
//     directory; none of it may land on the machine's disk. The overlay on /etc
//     hides the sandbox's hosts file, which $3 binds again;
//   - $1/cni/net.d over /etc/cni/net.d and $1/cni/bin over /opt/cni/bin, where
//     containerd looks for CNI configs and plugins and where podnet's
//     DaemonSet (hostPath volumes) writes them;
//   - every mount shared, so that hostPath volumes with HostToContainer
//     propagation pass kubelet's check.
const nodeInitScript = `set -eu
dir=$1
mount -t sysfs sysfs /sys
mount -t tmpfs -o mode=0755 cgroup /sys/fs/cgroup
while read -r mp fstype opts; do
	mkdir -p "$mp"
	mount -t "$fstype" -o "$opts" "$fstype" "$mp"
	if [ "$fstype" = cgroup ]; then mkdir -p "$mp$2"; fi
done <"$dir/cgroups"
mount -t tmpfs -o mode=0755 run /run
mkdir -p /run/netns
mount --bind "$dir/log" /var/log
for d in etc opt var/lib; do
	mount -t overlay overlay -o "lowerdir=/$d,upperdir=$dir/overlay/$d/upper,workdir=$dir/overlay/$d/work" "/$d"
done
mount --bind "$3" /etc/hosts
mkdir -p /etc/cni/net.d /opt/cni/bin
mount --bind "$dir/cni/net.d" /etc/cni/net.d
mount --bind "$dir/cni/bin" /opt/cni/bin
for f in "$dir"/sysctl/*; do
	mount --bind "$f" "/proc/sys/$(basename "$f" | tr . /)"
done
mount --make-rshared /
echo ready
exec sleep infinity
`

// nodeCleanupScript removes the node's cgroups (kubelet's cgroupRoot $2 and
// everything below, deepest first, in every hierarchy listed in $1/cgroups) once
// no process is left in them. It runs in the node's mount namespace. A shim
// that has just seen its container die may remove the container's cgroup at the
// same time (rmdir then finds nothing), so each hierarchy gets three tries, 0.2 s
// apart; what is still there after them is reported.
const nodeCleanupScript = `set -u
rc=0
while read -r mp fstype opts; do
	for try in 1 2 3; do
		[ -d "$mp$2" ] || break
		find "$mp$2" -depth -type d -exec rmdir {} + 2>/dev/null || sleep 0.2
	done
	if [ -d "$mp$2" ]; then find "$mp$2" -depth -type d -exec rmdir {} + || rc=1; fi
done <"$1/cgroups"
exit $rc
`

// protectedSysctls are the values kubelet's protectKernelDefaults check wants
// (k8s.io/component-helpers/node/util/sysctl; kubelet's setupKernelTunables). The
// node sees them through bind mounts; the machine's own stay as they are.
var protectedSysctls = map[string]string{
	"vm.overcommit_memory":      "1",
	"vm.panic_on_oom":           "0",
	"kernel.panic":              "10",
	"kernel.panic_on_oops":      "1",
	"kernel.keys.root_maxkeys":  "1000000",
	"kernel.keys.root_maxbytes": "25000000",
}

// cgroupMounts lists the cgroup hierarchies mounted under /sys/fs/cgroup in this
// mount namespace (also those the sandbox's /sys hides) as "mountpoint fstype
// options" lines, for nodeInitScript to mount again.
func cgroupMounts() (string, error) {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return "", err
	}
	defer f.Close()
	var b strings.Builder
	seen := map[string]bool{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		// 32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
		pre, post, ok := strings.Cut(sc.Text(), " - ")
		if !ok {
			continue
		}
		pf, qf := strings.Fields(pre), strings.Fields(post)
		if len(pf) < 5 || len(qf) < 3 || pf[3] != "/" {
			continue
		}
		mp, fstype := pf[4], qf[0]
		if (fstype != "cgroup" && fstype != "cgroup2") || !strings.HasPrefix(mp, "/sys/fs/cgroup/") || seen[mp] {
			continue
		}
		seen[mp] = true
		fmt.Fprintf(&b, "%s %s %s\n", mp, fstype, qf[2])
	}
	if err := sc.Err(); err != nil {
		return "", err
	}
	if b.Len() == 0 {
		return "", fmt.Errorf("no cgroup v1 hierarchies under /sys/fs/cgroup (a cgroup v2-only machine needs another layout)")
	}
	return b.String(), nil
}

// containerdConfig is containerd 1.6's config (version 2) for one node: every
// path under the node's directory, the CRI plugin with cgroupfs (SystemdCgroup
// false), the given snapshotter, the pause image as sandbox_image, the standard
// CNI directories (the node's own, see nodeInitScript), and oom_score_adj never
// below containerd's own.
func (n *Node) containerdConfig(snapshotter string) string {
	d := n.Dir
	return fmt.Sprintf(`version = 2
root = %[1]q
state = %[2]q
disabled_plugins = ["io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper", "io.containerd.tracing.processor.v1.otlp", "io.containerd.internal.v1.tracing"]

[grpc]
  address = %[3]q

[ttrpc]
  address = %[4]q

[plugins."io.containerd.internal.v1.opt"]
  path = %[5]q

[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = %[6]q
  enable_selinux = false
  # This machine's root lacks CAP_SYS_RESOURCE (not in the bounding set), so no
  # process may lower its oom_score_adj: kubelet's -998 for pod sandboxes made
  # runc's init fail ("failed to update /proc/self/oom_score_adj: Permission
  # denied"). Restricted, containerd raises it to its own score.
  restrict_oom_score_adj = true
  disable_apparmor = true
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = %[7]q
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
  # The node's view: bind mounts of its own directories (nodeInitScript).
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/opt/cni/bin"
    conf_dir = "/etc/cni/net.d"
`, filepath.Join(d, "containerd", "root"), filepath.Join(d, "containerd", "state"),
		n.ContainerdSocket(), filepath.Join(d, "containerd", "ttrpc.sock"),
		filepath.Join(d, "containerd", "opt"), PauseImage, snapshotter)
}

// kubeletConfig is the node's KubeletConfiguration. The choices that matter here:
// failCgroupV1 false (the machine has cgroup v1), cgroupfs under a cgroupRoot of
// the node's own, protectKernelDefaults (kubelet must never write the machine's
// sysctls), a private volume plugin dir, eviction thresholds low enough that a
// shared disk does not taint the node, and the API server's access: a serving
// certificate from the kubelet CA for the node's name and address, x509 client
// certificates from that CA (the API server's) and bearer tokens (webhook)
// authenticated, and every request authorized by the API server (webhook:
// SubjectAccessReview), no anonymous access.
func (n *Node) kubeletConfig(k kubeletFiles, clusterDNS string) string {
	return fmt.Sprintf(`apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
failCgroupV1: false
cgroupDriver: cgroupfs
cgroupRoot: %[1]s
protectKernelDefaults: true
failSwapOn: false
containerRuntimeEndpoint: unix://%[2]s
address: %[3]s
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: 10248
volumePluginDir: %[4]s
resolvConf: %[5]s
clusterDomain: cluster.local
clusterDNS: [%[6]s]
tlsCertFile: %[7]s
tlsPrivateKeyFile: %[8]s
authentication:
  anonymous:
    enabled: false
  webhook:
    enabled: true
  x509:
    clientCAFile: %[9]s
authorization:
  mode: Webhook
evictionHard:
  memory.available: 100Mi
  nodefs.available: 1%%
  nodefs.inodesFree: 1%%
  imagefs.available: 1%%
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
serializeImagePulls: false
`, n.cgroupRoot, n.ContainerdSocket(), n.Addr, filepath.Join(n.Dir, "volume-plugins"),
		filepath.Join(n.Dir, "resolv.conf"), clusterDNS, k.cert, k.key, k.clientCA)
}

// kubeletFiles are the certificate files of one kubelet.
type kubeletFiles struct{ cert, key, clientCA string }
