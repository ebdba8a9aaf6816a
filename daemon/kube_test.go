package daemon

import (
	"context"
	"net/netip"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"
	v1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes/fake"
	"k8s.io/utils/ptr"

	"github.com/podnet/podnet/daemon/api"
	"github.com/podnet/podnet/daemon/client"
	"github.com/podnet/podnet/nft"
	"github.com/podnet/podnet/routing"
)

func kubeNode(name, address string, cidrs ...string) *v1.Node {
	return &v1.Node{ObjectMeta: metav1.ObjectMeta{Name: name},
		Spec:   v1.NodeSpec{PodCIDRs: cidrs},
		Status: v1.NodeStatus{Addresses: []v1.NodeAddress{{Type: v1.NodeInternalIP, Address: address}}}}
}

func kubeService(name, clusterIP string, proto v1.Protocol) *v1.Service {
	return &v1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: name},
		Spec: v1.ServiceSpec{ClusterIPs: []string{clusterIP},
			Ports: []v1.ServicePort{{Name: "http", Protocol: proto, Port: 80}}}}
}

func kubeSlice(service, name string, addrs ...string) *discoveryv1.EndpointSlice {
	sl := &discoveryv1.EndpointSlice{
		ObjectMeta:  metav1.ObjectMeta{Namespace: "default", Name: name, Labels: map[string]string{discoveryv1.LabelServiceName: service}},
		AddressType: discoveryv1.AddressTypeIPv4,
		Ports:       []discoveryv1.EndpointPort{{Name: ptr.To("http"), Port: ptr.To[int32](8080)}},
	}
	for _, a := range addrs {
		sl.Endpoints = append(sl.Endpoints, discoveryv1.Endpoint{Addresses: []string{a}, NodeName: ptr.To("node-b")})
	}
	return sl
}

// TestRunKubernetes runs the daemon on fakes with the Kubernetes source over
// a fake clientset: it waits for this Node and its podCIDR, then programs
// routes and services, follows changes, and reports what it leaves out.
func TestRunKubernetes(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	cfg := validConfig()
	cfg.ClusterFile, cfg.Source = "", SourceKube
	cfg.Socket = filepath.Join(dir, "podnet.sock")
	cfg.StateDir = filepath.Join(dir, "state")
	cfg.CNIConfDir = filepath.Join(dir, "net.d")
	kube := fake.NewClientset(
		kubeNode("node-b", "192.168.1.11", "10.244.1.0/24"),
		kubeService("web", "10.96.0.10", v1.ProtocolTCP),
		kubeSlice("web", "web-1", "10.244.1.5"),
		kubeService("bad", "10.96.0.11", "FOO"),
	)
	core, logs := observer.New(zap.DebugLevel)
	log := zap.New(core)
	table, kernel := &nft.Fake{}, routing.NewFake()
	d, err := New(cfg, log, Deps{Kernel: kernel, NFT: table, Source: newKubeSourceFor(kube, "https://192.0.2.100:6443", log)})
	if err != nil {
		t.Fatal(err)
	}
	d.sysctl = func(string, string) error { return nil }
	runCtx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- d.Run(runCtx) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	}()

	// This node is not there yet: the daemon serves its socket and waits,
	// saying so once, without touching the kernel.
	c := client.New(cfg.Socket, 5*time.Second)
	waitFor(t, "the wait logged", func() bool { return logs.FilterMessageSnippet("waiting for this node's podCIDR").Len() == 1 })
	s, err := c.Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if s.Source != "kube:https://192.0.2.100:6443" || s.Ready || !strings.Contains(s.LastError, "node not in cluster state") {
		t.Errorf("status while waiting = %+v", s)
	}
	if routes, _ := kernel.ListRoutes(); table.Syncs() != 0 || len(routes) != 0 {
		t.Errorf("kernel touched before this node was known: %d table syncs, routes %v", table.Syncs(), routes)
	}
	if n := logs.FilterMessage("node sync failed").Len(); n != 0 {
		t.Errorf("%d 'node sync failed' logs while waiting, want none", n)
	}
	if _, err := kube.CoreV1().Nodes().Create(ctx, kubeNode("node-a", "192.168.1.10"), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the wait for a podCIDR logged", func() bool {
		return logs.FilterMessageSnippet("waiting for this node's podCIDR").FilterFieldKey("reason").Len() == 2
	})
	if _, err := kube.CoreV1().Nodes().Update(ctx, kubeNode("node-a", "192.168.1.10", "10.244.0.0/24"), metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}

	// Now it programs routes and services.
	waitFor(t, "the table synced", func() bool { return table.Syncs() > 0 })
	st, _ := table.LastState()
	want := nft.Service{Namespace: "default", Name: "web", ClusterIPs: []netip.Addr{addr("10.96.0.10")},
		Ports:                 []nft.ServicePort{{Name: "http", Protocol: nft.TCP, Port: 80}},
		InternalTrafficPolicy: nft.PolicyCluster, ExternalTrafficPolicy: nft.PolicyCluster,
		Endpoints: []nft.Endpoint{{Address: addr("10.244.1.5"), Ports: map[string]uint16{"http": 8080}, NodeName: "node-b", Ready: true, Serving: true}}}
	if diff := cmp.Diff([]nft.Service{want}, st.Services, netipComparers); diff != "" {
		t.Errorf("services in the table (-want +got):\n%s", diff)
	}
	if routes, _ := kernel.ListRoutes(); !cmp.Equal([]routing.Route{{Dst: prefix("10.244.1.0/24"), Via: addr("192.168.1.11")}}, routes, netipComparers) {
		t.Errorf("routes = %v, want 10.244.1.0/24 via 192.168.1.11", routes)
	}
	waitFor(t, "a recorded sync", func() bool { s, err := c.Status(ctx); return err == nil && s.Ready })
	got, err := c.Services(ctx)
	if err != nil {
		t.Fatal(err)
	}
	wantRejected := []api.RejectedService{{Index: -1, Namespace: "default", Name: "bad", Field: "spec.ports[0].protocol",
		Reason: `"FOO": want TCP, UDP or SCTP`, Error: `Service default/bad: spec.ports[0].protocol "FOO": want TCP, UDP or SCTP`}}
	if diff := cmp.Diff(wantRejected, got.Rejected); diff != "" {
		t.Errorf("rejected services (-want +got):\n%s", diff)
	}
	if n := logs.FilterMessage("service rejected").Len(); n != 1 {
		t.Errorf("%d 'service rejected' logs, want 1", n)
	}

	// An endpoint more, a node more, the service gone.
	if _, err := kube.DiscoveryV1().EndpointSlices("default").Create(ctx, kubeSlice("web", "web-2", "10.244.1.6"), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "two endpoints", func() bool {
		st, _ := table.LastState()
		return len(st.Services) == 1 && len(st.Services[0].Endpoints) == 2
	})
	if _, err := kube.CoreV1().Nodes().Create(ctx, kubeNode("node-c", "192.168.1.12", "10.244.2.0/24"), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "a route to node-c", func() bool {
		routes, _ := kernel.ListRoutes()
		return len(routes) == 2
	})
	if err := kube.CoreV1().Services("default").Delete(ctx, "web", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "web gone", func() bool { st, _ := table.LastState(); return len(st.Services) == 0 })
}

func TestConfigSource(t *testing.T) {
	t.Setenv("KUBERNETES_SERVICE_HOST", "")
	tests := []struct {
		name   string
		change func(*Config)
		source string
		err    string
	}{
		{"cluster file", nil, SourceFile, ""},
		{"kubeconfig", func(c *Config) { c.ClusterFile, c.Kubeconfig = "", "/etc/podnet/kubeconfig" }, SourceKube, ""},
		{"kube, in-cluster", func(c *Config) { c.ClusterFile, c.Source = "", SourceKube }, SourceKube, ""},
		{"both", func(c *Config) { c.Kubeconfig = "/etc/podnet/kubeconfig" }, SourceKube, "--cluster-file: not used in Kubernetes mode"},
		{"file with a kubeconfig", func(c *Config) { c.Source, c.Kubeconfig = SourceFile, "/k" }, SourceFile, "--kubeconfig: not used with --source file"},
		{"neither", func(c *Config) { c.ClusterFile = "" }, SourceFile, "--cluster-file: required in standalone mode"},
		{"unknown", func(c *Config) { c.Source = "etcd" }, "etcd", `--source: must be file or kube, got "etcd"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := validConfig()
			if tt.change != nil {
				tt.change(&c)
			}
			if got := c.source(); got != tt.source {
				t.Errorf("source() = %q, want %q", got, tt.source)
			}
			err := c.Validate()
			if tt.err == "" && err != nil || tt.err != "" && (err == nil || !strings.Contains(err.Error(), tt.err)) {
				t.Errorf("Validate() = %v, want %q", err, tt.err)
			}
		})
	}
	t.Setenv("KUBERNETES_SERVICE_HOST", "10.96.0.1")
	c := validConfig()
	c.ClusterFile = ""
	if got := c.source(); got != SourceKube {
		t.Errorf("in a pod without --cluster-file: source() = %q, want kube", got)
	}
}

// The wait for this node is logged once per reason, and a sync that
// succeeds ends it.
func TestWaitingLogsOnce(t *testing.T) {
	td := newTestDaemon(t, nil)
	for range 3 {
		td.cluster.Store(&Cluster{})
		if !td.waiting(td.syncNode()) {
			t.Fatal("a missing node is not a wait")
		}
	}
	if n := td.logs.FilterMessageSnippet("waiting for this node").Len(); n != 1 {
		t.Errorf("%d wait logs over three syncs, want 1", n)
	}
	td.cluster.Store(threeNodes())
	if td.waiting(td.syncNode()) {
		t.Fatal("waiting after a good sync")
	}
	td.cluster.Store(&Cluster{})
	td.waiting(td.syncNode())
	if n := td.logs.FilterMessageSnippet("waiting for this node").Len(); n != 2 {
		t.Errorf("%d wait logs, want 2: the node left again after a good sync", n)
	}
}
