package deploy

import (
	"net"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/podnet/podnet/daemon"
)

// kubeDir holds the Kubernetes manifests.
var kubeDir = filepath.Join(repoRoot, "deploy", "kubernetes")

// manifests are the objects of deploy/kubernetes.
type manifests struct {
	sa      *corev1.ServiceAccount
	role    *rbacv1.ClusterRole
	binding *rbacv1.ClusterRoleBinding
	ds      *appsv1.DaemonSet
}

func loadManifests(t *testing.T) manifests {
	t.Helper()
	var m manifests
	files, err := filepath.Glob(filepath.Join(kubeDir, "*.yaml"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no manifests in %s: %v", kubeDir, err)
	}
	for _, f := range files {
		for _, obj := range decodeFile(t, f) {
			ok := false
			switch o := obj.(type) {
			case *corev1.ServiceAccount:
				ok, m.sa = m.sa == nil, o
			case *rbacv1.ClusterRole:
				ok, m.role = m.role == nil, o
			case *rbacv1.ClusterRoleBinding:
				ok, m.binding = m.binding == nil, o
			case *appsv1.DaemonSet:
				ok, m.ds = m.ds == nil, o
			}
			if !ok {
				t.Fatalf("%s: unexpected or repeated %T", f, obj)
			}
		}
	}
	if m.sa == nil || m.role == nil || m.binding == nil || m.ds == nil {
		t.Fatalf("want a ServiceAccount, a ClusterRole, a ClusterRoleBinding and a DaemonSet, got %+v", m)
	}
	return m
}

// TestManifestsStrict checks that the decoding is strict: the manifests
// decode (loadManifests), and a field the API does not have, or one given
// twice, fails.
func TestManifestsStrict(t *testing.T) {
	loadManifests(t)
	data, err := os.ReadFile(filepath.Join(kubeDir, "daemonset.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	for name, edit := range map[string][2]string{
		"unknown field":  {"      hostNetwork: true\n", "      hostNetwork: true\n      hostNetwrok: true\n"},
		"repeated field": {"      hostNetwork: true\n", "      hostNetwork: true\n      hostNetwork: true\n"},
		"wrong type":     {"maxUnavailable: 1", "maxUnavailable: [1]"},
	} {
		if !strings.Contains(string(data), edit[0]) {
			t.Fatalf("%s: daemonset.yaml has no %q to edit", name, edit[0])
		}
		bad := strings.Replace(string(data), edit[0], edit[1], 1)
		if _, _, err := strictYAML.Decode([]byte(bad), nil, nil); err == nil {
			t.Errorf("%s: decoded without error", name)
		}
	}
}

// TestRBAC checks least privilege: read access to exactly what podnetd
// watches, bound to the DaemonSet's service account.
func TestRBAC(t *testing.T) {
	m := loadManifests(t)
	want := []rbacv1.PolicyRule{
		{APIGroups: []string{""}, Resources: []string{"nodes", "services"}, Verbs: []string{"get", "list", "watch"}},
		{APIGroups: []string{"discovery.k8s.io"}, Resources: []string{"endpointslices"}, Verbs: []string{"get", "list", "watch"}},
	}
	if diff := cmp.Diff(want, m.role.Rules); diff != "" {
		t.Errorf("ClusterRole rules (-want +got):\n%s", diff)
	}
	if m.role.AggregationRule != nil {
		t.Error("ClusterRole aggregates other roles")
	}
	wantRef := rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: m.role.Name}
	if m.binding.RoleRef != wantRef {
		t.Errorf("binding roleRef %+v, want %+v", m.binding.RoleRef, wantRef)
	}
	wantSubjects := []rbacv1.Subject{{Kind: rbacv1.ServiceAccountKind, Name: m.sa.Name, Namespace: m.sa.Namespace}}
	if diff := cmp.Diff(wantSubjects, m.binding.Subjects); diff != "" {
		t.Errorf("binding subjects (-want +got):\n%s", diff)
	}
	if m.sa.Namespace != "kube-system" || m.ds.Namespace != "kube-system" {
		t.Errorf("namespaces: service account %q, DaemonSet %q; want kube-system", m.sa.Namespace, m.ds.Namespace)
	}
	if m.ds.Spec.Template.Spec.ServiceAccountName != m.sa.Name {
		t.Errorf("DaemonSet runs as %q, want the service account %q", m.ds.Spec.Template.Spec.ServiceAccountName, m.sa.Name)
	}
}

// TestDaemonSet checks the DaemonSet's scheduling, update strategy and
// security context, and that its arguments, mounts and probes agree with
// podnetd's flags and defaults and with the image.
func TestDaemonSet(t *testing.T) {
	m := loadManifests(t)
	ds, pod := m.ds, &m.ds.Spec.Template.Spec

	sel, err := metav1.LabelSelectorAsSelector(ds.Spec.Selector)
	if err != nil || !sel.Matches(labels.Set(ds.Spec.Template.Labels)) {
		t.Errorf("selector %v does not match the template's labels %v (%v)", ds.Spec.Selector, ds.Spec.Template.Labels, err)
	}
	if !pod.HostNetwork {
		t.Error("not hostNetwork")
	}
	if pod.PriorityClassName != "system-node-critical" {
		t.Errorf("priorityClassName %q", pod.PriorityClassName)
	}
	if want := []corev1.Toleration{{Operator: corev1.TolerationOpExists}}; !cmp.Equal(want, pod.Tolerations) {
		t.Errorf("tolerations %+v, want to tolerate every taint: %+v", pod.Tolerations, want)
	}
	if pod.DNSPolicy != corev1.DNSDefault {
		t.Errorf("dnsPolicy %q, want Default (cluster DNS needs the pod network first)", pod.DNSPolicy)
	}
	u := ds.Spec.UpdateStrategy
	one, zero := intstr.FromInt32(1), intstr.FromInt32(0)
	if u.Type != appsv1.RollingUpdateDaemonSetStrategyType || u.RollingUpdate == nil ||
		!cmp.Equal(u.RollingUpdate.MaxUnavailable, &one) || !cmp.Equal(u.RollingUpdate.MaxSurge, &zero) {
		t.Errorf("updateStrategy %+v, want RollingUpdate with maxUnavailable 1, maxSurge 0", u)
	}
	if len(pod.Containers) != 1 || len(pod.InitContainers) != 0 {
		t.Fatalf("%d containers, %d init containers; want podnetd alone", len(pod.Containers), len(pod.InitContainers))
	}
	c := &pod.Containers[0]
	checkSecurityContext(t, c.SecurityContext)

	args := podnetdFlags(t).parseArgs(t, "DaemonSet args", c.Args)
	if len(c.Command) != 0 {
		t.Errorf("command %q: the image's entrypoint is podnetd", c.Command)
	}
	if args["source"] != daemon.SourceKube {
		t.Errorf("--source %q, want %s", args["source"], daemon.SourceKube)
	}
	for _, f := range []string{"kubeconfig", "cluster-file"} {
		if v, ok := args[f]; ok && v != "" {
			t.Errorf("--%s %q: the DaemonSet uses the in-cluster configuration", f, v)
		}
	}
	if args["node-name"] != "$(NODE_NAME)" || !hasFieldEnv(c.Env, "NODE_NAME", "spec.nodeName") {
		t.Errorf("--node-name %q, env %+v; want $(NODE_NAME) from spec.nodeName", args["node-name"], c.Env)
	}
	for _, name := range []string{"KUBERNETES_SERVICE_HOST", "KUBERNETES_SERVICE_PORT"} {
		if !slices.ContainsFunc(c.Env, func(e corev1.EnvVar) bool { return e.Name == name && e.Value != "" }) {
			t.Errorf("no %s: the in-cluster configuration would use the kubernetes Service's ClusterIP, which podnetd programs", name)
		}
	}
	if args["cni-plugin-src"] != pluginInImage {
		t.Errorf("--cni-plugin-src %q, want the image's plugin %s", args["cni-plugin-src"], pluginInImage)
	}

	// podnetd's paths, as given or by default, must be the host's own: the
	// conflist names the socket for the host-side plugin, the runtime runs
	// the plugin from the bin dir, and IPAM state must outlive the pod.
	def := daemon.Default()
	flagOr := func(name, def string) string {
		if v, ok := args[name]; ok {
			return v
		}
		return def
	}
	for _, p := range []string{
		flagOr("cni-bin-dir", def.CNIBinDir),
		flagOr("cni-conf-dir", def.CNIConfDir),
		flagOr("state-dir", def.StateDir),
		filepath.Dir(flagOr("socket", def.Socket)),
	} {
		checkHostMount(t, pod, c, p, p, "")
	}
	sysctlDir := flagOr("sysctl-dir", def.SysctlDir)
	if sysctlDir == "/proc/sys" {
		t.Error("--sysctl-dir is /proc/sys, read-only in a container that is not privileged")
	}
	checkHostMount(t, pod, c, filepath.Join(sysctlDir, "net"), "/proc/sys/net", "")
	for _, p := range []string{"/run/netns", "/var/run/netns"} {
		checkHostMount(t, pod, c, p, "/run/netns", corev1.MountPropagationHostToContainer)
	}
	for _, vm := range c.VolumeMounts {
		if vm.MountPropagation != nil && *vm.MountPropagation == corev1.MountPropagationBidirectional {
			t.Errorf("mount %s is Bidirectional: that needs a privileged container", vm.MountPath)
		}
	}

	// One listener for /metrics and the probes, at the node's address: under
	// hostNetwork the pod's IP, where the kubelet probes and Prometheus scrapes.
	if v, ok := args["health-addr"]; ok {
		t.Errorf("--health-addr %q: deprecated, --metrics-addr serves the probes", v)
	}
	host, port, err := net.SplitHostPort(args["metrics-addr"])
	if err != nil {
		t.Fatalf("--metrics-addr %q: %v", args["metrics-addr"], err)
	}
	if host != "$(NODE_IP)" || !hasFieldEnv(c.Env, "NODE_IP", "status.hostIP") {
		t.Errorf("--metrics-addr %q, env %+v; want the node's address, $(NODE_IP) from status.hostIP", args["metrics-addr"], c.Env)
	}
	i := slices.IndexFunc(c.Ports, func(p corev1.ContainerPort) bool { return p.Name == "metrics" })
	if i < 0 || strconv.Itoa(int(c.Ports[i].ContainerPort)) != port || c.Ports[i].Protocol != corev1.ProtocolTCP {
		t.Errorf("container ports %+v, want metrics: TCP %s (--metrics-addr)", c.Ports, port)
	}
	for probe, p := range map[string]*corev1.Probe{"/healthz": c.LivenessProbe, "/readyz": c.ReadinessProbe} {
		if p == nil || p.HTTPGet == nil {
			t.Errorf("no HTTP probe for %s", probe)
			continue
		}
		g := p.HTTPGet
		if g.Path != probe || g.Host != "" || g.Port.String() != "metrics" {
			t.Errorf("probe %s: %s:%s%s, want the pod's IP, port metrics (--metrics-addr)", probe, g.Host, g.Port.String(), g.Path)
		}
	}
	ann := ds.Spec.Template.Annotations
	if ann["prometheus.io/scrape"] != "true" || ann["prometheus.io/port"] != port || ann["prometheus.io/path"] != "/metrics" {
		t.Errorf("pod annotations %v, want prometheus.io/scrape true, port %s, path /metrics", ann, port)
	}
}

// checkSecurityContext wants uid 0 with NET_ADMIN and SYS_ADMIN only, not
// privileged, on a read-only root file system.
func checkSecurityContext(t *testing.T, sc *corev1.SecurityContext) {
	t.Helper()
	if sc == nil {
		t.Fatal("no securityContext")
	}
	if sc.Privileged == nil || *sc.Privileged {
		t.Error("privileged, or not explicitly unprivileged")
	}
	if sc.RunAsUser == nil || *sc.RunAsUser != 0 {
		t.Error("runAsUser is not 0: the image's default user is nonroot, and a non-root process loses added capabilities")
	}
	if sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem {
		t.Error("root file system not read-only")
	}
	if sc.AllowPrivilegeEscalation != nil && !*sc.AllowPrivilegeEscalation {
		t.Error("allowPrivilegeEscalation false with SYS_ADMIN: the API server refuses it")
	}
	caps := sc.Capabilities
	if caps == nil || !slices.Equal(caps.Drop, []corev1.Capability{"ALL"}) ||
		!slices.Equal(caps.Add, []corev1.Capability{"NET_ADMIN", "SYS_ADMIN"}) {
		t.Errorf("capabilities %+v, want drop ALL, add NET_ADMIN and SYS_ADMIN", caps)
	}
	if sc.SeccompProfile == nil || sc.SeccompProfile.Type != corev1.SeccompProfileTypeRuntimeDefault {
		t.Errorf("seccompProfile %+v, want RuntimeDefault", sc.SeccompProfile)
	}
}

// checkHostMount wants containerPath mounted read-write from the host's
// hostPath, with the given propagation ("": none).
func checkHostMount(t *testing.T, pod *corev1.PodSpec, c *corev1.Container, containerPath, hostPath string, propagation corev1.MountPropagationMode) {
	t.Helper()
	i := slices.IndexFunc(c.VolumeMounts, func(vm corev1.VolumeMount) bool { return vm.MountPath == containerPath })
	if i < 0 {
		t.Errorf("%s is not mounted", containerPath)
		return
	}
	vm := c.VolumeMounts[i]
	if vm.ReadOnly || vm.SubPath != "" {
		t.Errorf("%s: mounted read-only or with a subPath", containerPath)
	}
	got := corev1.MountPropagationMode("")
	if vm.MountPropagation != nil {
		got = *vm.MountPropagation
	}
	if got != propagation {
		t.Errorf("%s: mountPropagation %q, want %q", containerPath, got, propagation)
	}
	j := slices.IndexFunc(pod.Volumes, func(v corev1.Volume) bool { return v.Name == vm.Name })
	if j < 0 || pod.Volumes[j].HostPath == nil {
		t.Errorf("%s: volume %q is not a hostPath", containerPath, vm.Name)
		return
	}
	if hp := pod.Volumes[j].HostPath.Path; hp != hostPath {
		t.Errorf("%s: from the host's %s, want %s", containerPath, hp, hostPath)
	}
}

func hasFieldEnv(env []corev1.EnvVar, name, fieldPath string) bool {
	return slices.ContainsFunc(env, func(e corev1.EnvVar) bool {
		return e.Name == name && e.ValueFrom != nil && e.ValueFrom.FieldRef != nil && e.ValueFrom.FieldRef.FieldPath == fieldPath
	})
}
