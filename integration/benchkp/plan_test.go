package benchkp

import (
	"slices"
	"testing"

	"github.com/podnet/podnet/integration/benchsvc"
)

func TestPlanChanges(t *testing.T) {
	svcs := genServices(5)
	orig := slices.Clone(svcs)
	a, err := planChanges(svcs, 30, 1)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := planChanges(svcs, 30, 1)
	if len(a) != 30 {
		t.Fatalf("%d changes, want 30", len(a))
	}
	current := map[int]benchsvc.ServiceSpec{}
	for j, c := range a {
		if c.Index != b[j].Index || !slices.Equal(c.After.Endpoints, b[j].After.Endpoints) {
			t.Fatalf("change %d differs between two plans of the same seed", j)
		}
		before, ok := current[c.Index]
		if !ok {
			before = orig[c.Index]
		}
		if !slices.Equal(c.Before.Endpoints, before.Endpoints) {
			t.Errorf("change %d starts from %v, want %v", j, c.Before.Endpoints, before.Endpoints)
		}
		diff := 0
		for k := range c.After.Endpoints {
			if c.After.Endpoints[k] != c.Before.Endpoints[k] {
				diff++
				if c.After.Endpoints[k].Node != c.Before.Endpoints[k].Node {
					t.Errorf("change %d moved an endpoint to another node", j)
				}
			}
		}
		if diff != 1 {
			t.Errorf("change %d changes %d endpoints, want 1", j, diff)
		}
		seen := map[any]bool{}
		for _, e := range c.After.Endpoints {
			if seen[e.Addr] {
				t.Errorf("change %d: %s twice", j, e.Addr)
			}
			seen[e.Addr] = true
		}
		current[c.Index] = c.After
	}
	for i := range svcs {
		if !slices.Equal(svcs[i].Endpoints, orig[i].Endpoints) {
			t.Errorf("planChanges modified service %d", i)
		}
	}
	if got := touched(a); len(got) != len(current) {
		t.Errorf("touched = %v, want the %d services changed", got, len(current))
	}
}
