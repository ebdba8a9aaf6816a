package cluster

import (
	"context"
	"fmt"
	"os"
	"sort"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// TestMain builds kube-apiserver, kube-controller-manager, kube-scheduler and
// kubelet once per machine and the pause command, then runs the tests in a
// sandbox with its own PID namespace, and fails if the machine's network
// namespace or sysctls changed.
func TestMain(m *testing.M) { Main(m) }

// TestNodesJoin brings up the control plane and two nodes, checks that both
// register, get a podCIDR and turn Ready, runs a hostNetwork pause pod on each
// through the scheduler, and tears everything down (the machine-wide sysctls
// kubelet checks are compared here, the network namespace by Main).
func TestNodesJoin(t *testing.T) {
	sysBefore := readSysctls(t)
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	start := time.Now()
	c := ForTest(t, ctx, Options{})
	t.Logf("control plane and %d nodes up in %s (registered, podCIDRs allocated)", len(c.Nodes), time.Since(start).Round(time.Millisecond))

	cidrs := map[string]string{}
	for _, n := range c.Nodes {
		err := poll(ctx, "node "+n.Name+" Ready", 500*time.Millisecond, func(ctx context.Context) (bool, error) {
			node, err := c.CP.Client.CoreV1().Nodes().Get(ctx, n.Name, metav1.GetOptions{})
			if err != nil {
				return false, err
			}
			cidrs[n.Name] = strings.Join(node.Spec.PodCIDRs, ",")
			if !NodeReady(node) {
				return false, fmt.Errorf("not Ready: %+v", node.Status.Conditions)
			}
			return true, nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	if cidrs["node1"] == cidrs["node2"] {
		t.Errorf("nodes share podCIDRs %v", cidrs)
	}
	t.Logf("nodes Ready at %s, podCIDRs %v", time.Since(start).Round(time.Millisecond), cidrs)

	pods := c.CP.Client.CoreV1().Pods("default")
	for _, n := range c.Nodes {
		pod := &corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{Name: "hostnet-" + n.Name},
			Spec: corev1.PodSpec{
				HostNetwork:                   true,
				NodeSelector:                  map[string]string{corev1.LabelHostname: n.Name},
				AutomountServiceAccountToken:  new(bool),
				TerminationGracePeriodSeconds: func() *int64 { var z int64; return &z }(),
				Containers: []corev1.Container{{
					Name: "pause", Image: PauseImage, ImagePullPolicy: corev1.PullNever,
				}},
			},
		}
		if _, err := pods.Create(ctx, pod, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	for _, n := range c.Nodes {
		name := "hostnet-" + n.Name
		err := poll(ctx, "pod "+name+" Running", 500*time.Millisecond, func(ctx context.Context) (bool, error) {
			p, err := pods.Get(ctx, name, metav1.GetOptions{})
			if err != nil {
				return false, err
			}
			if p.Spec.NodeName != n.Name {
				return false, fmt.Errorf("scheduled to %q", p.Spec.NodeName)
			}
			if p.Status.Phase != corev1.PodRunning {
				return false, fmt.Errorf("phase %s: %+v", p.Status.Phase, p.Status.ContainerStatuses)
			}
			if p.Status.PodIP != n.Addr.String() {
				return false, fmt.Errorf("pod IP %s, want the node's %s", p.Status.PodIP, n.Addr)
			}
			return true, nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	t.Logf("hostNetwork pods Running on every node at %s", time.Since(start).Round(time.Millisecond))

	downStart := time.Now()
	if err := c.Down(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Logf("torn down in %s", time.Since(downStart).Round(time.Millisecond))
	if after := readSysctls(t); after != sysBefore {
		t.Errorf("machine-wide sysctls changed:\nbefore %s\nafter  %s", sysBefore, after)
	}
}

// readSysctls reads the machine-wide (not per network namespace) sysctls
// kubelet's protectKernelDefaults covers, as one line.
func readSysctls(t *testing.T) string {
	t.Helper()
	var b strings.Builder
	var names []string
	for name := range protectedSysctls {
		names = append(names, name)
	}
	sort.Strings(names)
	for _, name := range names {
		v, err := os.ReadFile("/proc/sys/" + strings.ReplaceAll(name, ".", "/"))
		if err != nil {
			t.Fatal(err)
		}
		fmt.Fprintf(&b, "%s=%s ", name, strings.TrimSpace(string(v)))
	}
	return b.String()
}
