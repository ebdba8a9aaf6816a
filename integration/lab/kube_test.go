package lab

import (
	"net/netip"
	"testing"

	"github.com/google/go-cmp/cmp"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
)

func TestParseSource(t *testing.T) {
	for in, want := range map[string]Source{"": SourceFile, "file": SourceFile, "kube": SourceKube} {
		if got, err := ParseSource(in); err != nil || got != want {
			t.Errorf("ParseSource(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
	if _, err := ParseSource("etcd"); err == nil {
		t.Error("ParseSource(etcd): no error")
	}
}

// TestRBACManifest reads the repository's rbac.yaml as a SourceKube lab
// does: a ServiceAccount, the ClusterRole, its binding.
func TestRBACManifest(t *testing.T) {
	path, err := findRepoFile(RBACFile)
	if err != nil {
		t.Fatal(err)
	}
	objs, err := readManifest(path)
	if err != nil {
		t.Fatal(err)
	}
	var kinds []string
	var rules string
	for _, o := range objs {
		switch o := o.(type) {
		case *corev1.ServiceAccount:
			kinds = append(kinds, "ServiceAccount "+o.Namespace+"/"+o.Name)
		case *rbacv1.ClusterRole:
			kinds = append(kinds, "ClusterRole "+o.Name)
			rules = describeRules(o.Rules)
		case *rbacv1.ClusterRoleBinding:
			kinds = append(kinds, "ClusterRoleBinding "+o.Name)
		default:
			kinds = append(kinds, "unexpected")
		}
	}
	want := []string{"ServiceAccount kube-system/podnet", "ClusterRole podnet", "ClusterRoleBinding podnet"}
	if diff := cmp.Diff(want, kinds); diff != "" {
		t.Errorf("objects (-want +got):\n%s", diff)
	}
	if want := "get,list,watch nodes,services; get,list,watch endpointslices.discovery.k8s.io"; rules != want {
		t.Errorf("rules %q, want %q", rules, want)
	}
}

// TestEndpointSlices: one slice per node, named <service>-<node>, with
// every endpoint of that node.
func TestEndpointSlices(t *testing.T) {
	n1, n2 := &Node{Name: "node1"}, &Node{Name: "node2"}
	pod := func(n *Node, ip string) *Pod { return &Pod{Node: n, IP: netip.MustParseAddr(ip)} }
	s := Service{Name: "web", VIP: WebVIP, Port: 80, TargetPort: 8080,
		Endpoints: []*Pod{pod(n2, "10.244.2.2"), pod(n1, "10.244.1.2"), pod(n2, "10.244.2.3")}}
	type slice struct {
		Name, Service string
		Port          int32
		Addrs, Nodes  []string
	}
	var got []slice
	for _, sl := range endpointSlices(s) {
		g := slice{Name: sl.Name, Service: sl.Labels["kubernetes.io/service-name"], Port: *sl.Ports[0].Port}
		for _, e := range sl.Endpoints {
			g.Addrs = append(g.Addrs, e.Addresses...)
			g.Nodes = append(g.Nodes, *e.NodeName)
		}
		got = append(got, g)
	}
	want := []slice{
		{Name: "web-node2", Service: "web", Port: 8080, Addrs: []string{"10.244.2.2", "10.244.2.3"}, Nodes: []string{"node2", "node2"}},
		{Name: "web-node1", Service: "web", Port: 8080, Addrs: []string{"10.244.1.2"}, Nodes: []string{"node1"}},
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("slices (-want +got):\n%s", diff)
	}
}
