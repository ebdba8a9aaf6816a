package benchkp

import (
	"fmt"
	"math/rand/v2"
	"net/netip"
	"slices"

	"github.com/podnet/podnet/integration/benchsvc"
)

// change is one planned EndpointSlice change: service Index goes from
// Before to After, which differ in one endpoint address.
type change struct {
	Index         int
	Before, After benchsvc.ServiceSpec
}

// planChanges returns count changes to svcs, each of one endpoint address
// of a service picked at random, the new address a fresh one of the same
// node's pod range. The plan depends only on len(svcs), count and seed, so
// every proxy gets the same changes; a service picked twice changes from
// where the earlier change left it. svcs is not modified.
func planChanges(svcs []benchsvc.ServiceSpec, count int, seed uint64) ([]change, error) {
	rng := rand.New(rand.NewPCG(uint64(len(svcs)), seed))
	current := map[int]benchsvc.ServiceSpec{}
	out := make([]change, 0, count)
	for j := range count {
		i := rng.IntN(len(svcs))
		before, ok := current[i]
		if !ok {
			before = svcs[i]
		}
		after := before
		after.Endpoints = slices.Clone(before.Endpoints)
		ep := &after.Endpoints[j%len(after.Endpoints)]
		cidr, err := podCIDROf(ep.Node)
		if err != nil {
			return nil, err
		}
		a, ok := benchsvc.FreshEndpoint(before, cidr, rng.IntN(252))
		if !ok {
			return nil, fmt.Errorf("no fresh endpoint address for %s", before.Name)
		}
		ep.Addr = a
		current[i] = after
		out = append(out, change{Index: i, Before: before, After: after})
	}
	return out, nil
}

// touched returns the indexes the changes touch, each once, in first-touch
// order: what must be put back before the next proxy runs.
func touched(changes []change) []int {
	var out []int
	for _, c := range changes {
		if !slices.Contains(out, c.Index) {
			out = append(out, c.Index)
		}
	}
	return out
}

func podCIDROf(node string) (netip.Prefix, error) {
	for _, n := range endpointNodes {
		if n.Name == node {
			return n.PodCIDR, nil
		}
	}
	return netip.Prefix{}, fmt.Errorf("endpoint on unknown node %q", node)
}
