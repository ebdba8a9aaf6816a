package kubesource

import (
	"context"
	"errors"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	v1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"
	"k8s.io/utils/ptr"

	"github.com/podnet/podnet/nft"
)

// run runs a Source on client until the test ends and returns its States.
func run(t *testing.T, client *fake.Clientset, opts Options) <-chan *State {
	t.Helper()
	states := make(chan *State, 100)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- New(client, opts).Run(ctx, func(s *State) { states <- s }) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	})
	return states
}

// await returns the first State from states that cond accepts.
func await(t *testing.T, states <-chan *State, what string, cond func(*State) bool) *State {
	t.Helper()
	timeout := time.After(10 * time.Second)
	for {
		select {
		case s := <-states:
			if cond(s) {
				return s
			}
		case <-timeout:
			t.Fatalf("timed out waiting for a State with %s", what)
		}
	}
}

func find(s *State, name string) *nft.Service {
	for _, svc := range s.Services {
		if svc.Name == name {
			return svc
		}
	}
	return nil
}

func names(s *State) []string {
	var out []string
	for _, svc := range s.Services {
		out = append(out, svc.Namespace+"/"+svc.Name)
	}
	return out
}

func endpointAddrs(svc *nft.Service) []string {
	var out []string
	for _, ep := range svc.Endpoints {
		out = append(out, ep.Address.String())
	}
	slices.Sort(out)
	return out
}

func created(o metav1.Object, age int) {
	o.SetCreationTimestamp(metav1.NewTime(t0.Add(time.Duration(age) * time.Second)))
}

// TestSourceFollowsChanges: the first State holds the whole cluster; each
// change of a Service, an EndpointSlice or a Node gives a State that holds
// it, and the services it does not touch are the same values as before.
func TestSourceFollowsChanges(t *testing.T) {
	ctx := context.Background()
	web := service(func(s *v1.Service) { s.ResourceVersion = "1"; created(s, 2) })
	api := service(func(s *v1.Service) {
		s.Name, s.ResourceVersion, s.Spec.ClusterIPs = "api", "5", []string{"10.96.0.11"}
		created(s, 1)
	})
	headless := service(func(s *v1.Service) { s.Name, s.Spec.ClusterIP, s.Spec.ClusterIPs = "db", "None", []string{"None"} })
	bad := service(func(s *v1.Service) {
		s.Name, s.Spec.ClusterIPs = "bad", []string{"10.96.0.12"}
		s.Spec.Ports[0].Protocol = "FOO"
	})
	web1 := slice("web-1", "2", ep("10.244.1.5", "node1"))
	web2 := slice("web-2", "3", ep("10.244.2.7", "node2"))
	orphan := slice("orphan", "4", ep("10.244.1.9", "node1"))
	delete(orphan.Labels, discoveryv1.LabelServiceName)
	node1 := node("node1", 0, []string{"192.0.2.1"}, "10.244.1.0/24")
	node2 := node("node2", 1, []string{"192.0.2.2"})
	client := fake.NewClientset(web, api, headless, bad, web1, web2, orphan, node1, node2)

	states := run(t, client, Options{})
	first := await(t, states, "the cluster", func(*State) bool { return true })
	if diff := cmp.Diff([]string{"default/api", "default/web"}, names(first)); diff != "" {
		t.Errorf("services, oldest first (-want +got):\n%s", diff)
	}
	if got := endpointAddrs(find(first, "web")); !slices.Equal(got, []string{"10.244.1.5", "10.244.2.7"}) {
		t.Errorf("web's endpoints = %v, want those of both slices", got)
	}
	if got := find(first, "web").Revision; got != "1,2,3" {
		t.Errorf("web's Revision = %q, want 1,2,3", got)
	}
	if diff := cmp.Diff([]IgnoredService{{Namespace: "default", Name: "db", Reason: "headless: no cluster IP"}}, first.Ignored); diff != "" {
		t.Errorf("ignored (-want +got):\n%s", diff)
	}
	if len(first.Rejected) != 1 || first.Rejected[0].Error() != `Service default/bad: spec.ports[0].protocol "FOO": want TCP, UDP or SCTP` {
		t.Errorf("rejected = %v", first.Rejected)
	}
	wantNodes := []Node{
		{Name: "node1", Addresses: []netip.Addr{addr("192.0.2.1")}, PodCIDRs: []netip.Prefix{prefix("10.244.1.0/24")}},
		{Name: "node2", Addresses: []netip.Addr{addr("192.0.2.2")}},
	}
	if diff := cmp.Diff(wantNodes, first.Nodes, netipComparers); diff != "" {
		t.Errorf("nodes (-want +got):\n%s", diff)
	}

	// An endpoint stops being ready: web changes, api is the same value.
	web2 = web2.DeepCopy()
	web2.ResourceVersion = "6"
	web2.Endpoints[0].Conditions.Ready = ptr.To(false)
	if _, err := client.DiscoveryV1().EndpointSlices("default").Update(ctx, web2, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	s := await(t, states, "web's endpoint not ready", func(s *State) bool {
		w := find(s, "web")
		return w != nil && len(w.Endpoints) == 2 && !w.Endpoints[1].Ready
	})
	if got := find(s, "web").Revision; got != "1,2,6" {
		t.Errorf("web's Revision = %q, want 1,2,6", got)
	}
	if find(s, "api") != find(first, "api") {
		t.Error("api was translated again although nothing of it changed")
	}

	// A third slice, then the first goes.
	if _, err := client.DiscoveryV1().EndpointSlices("default").Create(ctx, slice("web-3", "7", ep("10.244.1.6", "node1")), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	await(t, states, "web-3's endpoint", func(s *State) bool { return len(find(s, "web").Endpoints) == 3 })
	if err := client.DiscoveryV1().EndpointSlices("default").Delete(ctx, "web-1", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	s = await(t, states, "web-1 gone", func(s *State) bool { return len(find(s, "web").Endpoints) == 2 })
	if got := endpointAddrs(find(s, "web")); !slices.Equal(got, []string{"10.244.1.6", "10.244.2.7"}) {
		t.Errorf("web's endpoints = %v after web-1 was deleted", got)
	}

	// The invalid service is fixed; the node gets its podCIDR.
	bad = bad.DeepCopy()
	bad.Spec.Ports[0].Protocol = v1.ProtocolUDP
	if _, err := client.CoreV1().Services("default").Update(ctx, bad, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	s = await(t, states, "bad fixed", func(s *State) bool { return find(s, "bad") != nil })
	if len(s.Rejected) != 0 {
		t.Errorf("rejected = %v after the fix", s.Rejected)
	}
	node2 = node2.DeepCopy()
	node2.Spec.PodCIDRs = []string{"10.244.2.0/24"}
	if _, err := client.CoreV1().Nodes().Update(ctx, node2, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	await(t, states, "node2's podCIDR", func(s *State) bool { return len(s.Nodes) == 2 && len(s.Nodes[1].PodCIDRs) == 1 })

	// A Node change podnet does not read gives no State.
	node2 = node2.DeepCopy()
	node2.Status.Conditions = []v1.NodeCondition{{Type: v1.NodeReady, Status: v1.ConditionTrue}}
	if _, err := client.CoreV1().Nodes().Update(ctx, node2, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	select {
	case s := <-states:
		t.Errorf("a State after a Node change podnet does not read: %v", names(s))
	case <-time.After(300 * time.Millisecond):
	}

	// Deletes.
	if err := client.CoreV1().Services("default").Delete(ctx, "web", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	await(t, states, "web gone", func(s *State) bool { return find(s, "web") == nil && find(s, "api") != nil })
	if err := client.CoreV1().Nodes().Delete(ctx, "node1", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	await(t, states, "node1 gone", func(s *State) bool { return len(s.Nodes) == 1 && s.Nodes[0].Name == "node2" })
}

// TestSourceOrder: services are ordered by age, so that a new Service never
// takes a VIP port from an older one; one deleted and created again is new.
func TestSourceOrder(t *testing.T) {
	ctx := context.Background()
	a := service(func(s *v1.Service) { s.Name = "a"; created(s, 2) })
	b := service(func(s *v1.Service) { s.Name = "b"; created(s, 1) })
	c := service(func(s *v1.Service) { s.Name = "c"; created(s, 1) })
	client := fake.NewClientset(a, b, c)
	states := run(t, client, Options{})
	s := await(t, states, "the services", func(s *State) bool { return len(s.Services) == 3 })
	if diff := cmp.Diff([]string{"default/b", "default/c", "default/a"}, names(s)); diff != "" {
		t.Errorf("order (-want +got):\n%s", diff)
	}
	if err := client.CoreV1().Services("default").Delete(ctx, "b", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	b = b.DeepCopy()
	created(b, 3)
	if _, err := client.CoreV1().Services("default").Create(ctx, b, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	await(t, states, "b last", func(s *State) bool {
		return cmp.Equal([]string{"default/c", "default/a", "default/b"}, names(s))
	})
}

// TestSourceWaitsForSync: while a list fails, Run hands on no State (the
// datapath stays as it is) and reports the failure; once the list works,
// the first State comes.
func TestSourceWaitsForSync(t *testing.T) {
	client := fake.NewClientset(service(nil), node("node1", 0, []string{"192.0.2.1"}, "10.244.1.0/24"))
	var mu sync.Mutex
	failing := true
	client.PrependReactor("list", "endpointslices", func(k8stesting.Action) (bool, runtime.Object, error) {
		mu.Lock()
		defer mu.Unlock()
		if failing {
			return true, nil, errors.New("connection refused")
		}
		return false, nil, nil
	})
	reported := make(chan string, 100)
	states := run(t, client, Options{OnWatchError: func(resource string, err error) { reported <- resource + ": " + err.Error() }})
	select {
	case r := <-reported:
		if !strings.HasPrefix(r, "endpointslices: ") || !strings.HasSuffix(r, "connection refused") {
			t.Errorf("reported %q", r)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the failing list was not reported")
	}
	select {
	case s := <-states:
		t.Fatalf("a State before the caches synced: %v", names(s))
	case <-time.After(300 * time.Millisecond):
	}
	mu.Lock()
	failing = false
	mu.Unlock()
	await(t, states, "the service", func(s *State) bool { return len(s.Services) == 1 && len(s.Nodes) == 1 })
}

func TestTrim(t *testing.T) {
	svc := service(func(s *v1.Service) {
		s.Annotations = map[string]string{lastApplied: "{...}", "keep": "me"}
		s.ManagedFields = []metav1.ManagedFieldsEntry{{Manager: "kubectl"}}
		s.Status.Conditions = []metav1.Condition{{Type: "x"}}
	})
	got, _ := trimService(svc)
	ts := got.(*v1.Service)
	if ts.ManagedFields != nil || !cmp.Equal(ts.Annotations, map[string]string{"keep": "me"}) || ts.Status.Conditions != nil {
		t.Errorf("trimmed service metadata %+v, status %+v", ts.ObjectMeta, ts.Status)
	}
	if svc.ManagedFields == nil || len(svc.Annotations) != 2 {
		t.Error("trimService changed the object it was given")
	}
	sl := slice("web-1", "1", discoveryv1.Endpoint{Addresses: []string{"10.244.1.5"}, Hostname: ptr.To("h"),
		TargetRef: &v1.ObjectReference{Name: "pod"}, NodeName: ptr.To("node1"), Conditions: discoveryv1.EndpointConditions{Ready: ptr.To(true)}})
	got, _ = trimSlice(sl)
	want := []discoveryv1.Endpoint{{Addresses: []string{"10.244.1.5"}, NodeName: ptr.To("node1"), Conditions: discoveryv1.EndpointConditions{Ready: ptr.To(true)}}}
	if diff := cmp.Diff(want, got.(*discoveryv1.EndpointSlice).Endpoints); diff != "" {
		t.Errorf("trimmed endpoints (-want +got):\n%s", diff)
	}
	if sl.Endpoints[0].TargetRef == nil {
		t.Error("trimSlice changed the object it was given")
	}
	n := node("node1", 0, []string{"192.0.2.1"}, "10.244.1.0/24")
	n.Status.Images = []v1.ContainerImage{{Names: []string{"big"}}}
	got, _ = trimNode(n)
	tn := got.(*v1.Node)
	if tn.Status.Images != nil || !cmp.Equal(translateNode(tn).node, translateNode(n).node, netipComparers) {
		t.Errorf("trimmed node %+v", tn)
	}
}
