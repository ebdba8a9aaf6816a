package kubesource

import (
	"fmt"
	"testing"
	"time"

	v1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	"k8s.io/client-go/kubernetes/fake"
)

// TestScale: at 50k Services of 4 endpoints each, the first translation and
// then one changed EndpointSlice stay within bounds that leave podnetd's
// incremental target (a change in milliseconds) reachable.
func TestScale(t *testing.T) {
	if testing.Short() {
		t.Skip("scale test")
	}
	const n = 50000
	s := New(fake.NewClientset(), Options{})
	keys := map[string]bool{}
	for i := range n {
		svc := service(func(s *v1.Service) {
			s.Name = fmt.Sprintf("svc-%d", i)
			s.ResourceVersion = fmt.Sprint(2 * i)
			s.Spec.ClusterIPs = []string{fmt.Sprintf("10.96.%d.%d", i/250, i%250+1)}
		})
		sl := slice(fmt.Sprintf("svc-%d-abc", i), fmt.Sprint(2*i+1),
			ep(fmt.Sprintf("10.%d.%d.1", 100+i/65536, i/256%256), "node1"), ep(fmt.Sprintf("10.%d.%d.2", 100+i/65536, i/256%256), "node1"),
			ep(fmt.Sprintf("10.%d.%d.3", 100+i/65536, i/256%256), "node2"), ep(fmt.Sprintf("10.%d.%d.4", 100+i/65536, i/256%256), "node2"))
		sl.Labels[discoveryv1.LabelServiceName] = svc.Name
		s.services.GetIndexer().Add(svc)
		s.slices.GetIndexer().Add(sl)
		keys["default/"+svc.Name] = true
	}
	start := time.Now()
	s.applyServices(keys)
	st := s.state()
	cold := time.Since(start)
	if len(st.Services) != n {
		t.Fatalf("%d services, want %d", len(st.Services), n)
	}
	start = time.Now()
	s.applyServices(map[string]bool{"default/svc-777": true})
	st2 := s.state()
	change := time.Since(start)
	t.Logf("%d services: first translation %s, one change %s", n, cold, change)
	if st2.Services[0] != st.Services[0] {
		t.Error("an unchanged service was translated again")
	}
	if change > 50*time.Millisecond {
		t.Errorf("one change took %s", change)
	}
}
