package nft

import (
	"errors"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

func TestFakeExplain(t *testing.T) {
	var f Fake
	if err := f.Sync(explainState); err != nil {
		t.Fatal(err)
	}
	for _, tc := range explainCases {
		t.Run(tc.name, func(t *testing.T) {
			got, err := f.Explain(tc.p)
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(strings.TrimPrefix(tc.want, "\n"), got.String()); diff != "" {
				t.Errorf("Explain(%+v) (-want +got):\n%s", tc.p, diff)
			}
		})
	}
}

// pinned answers as src does, and also holds one affinity-v4 element.
type pinned struct {
	*memSource
	key []byte
}

func (p pinned) get(set string, key []byte) (element, time.Duration, bool, error) {
	if set == "affinity-v4" && string(key) == string(p.key) {
		e := setElem(newKey())
		e.b, e.klen = key, uint8(len(key))
		e.keyFields, _, _ = setFields(set)
		return e, 4*time.Minute + 10*time.Second, true, nil
	}
	return p.memSource.get(set, key)
}

// A client with an affinity element goes to the endpoint of its slot only.
func TestExplainAffinityPinned(t *testing.T) {
	p := tcpTo("10.244.1.2", "10.96.0.30", 80)
	key := newKey().addr(p.Src).addr(p.Dst).proto(p.Proto).port(p.DstPort).slot(1).key
	got, err := explain(pinned{newMemSource(explainState), key}, p)
	if err != nil {
		t.Fatal(err)
	}
	want := `verdict dnat
service 10.96.0.30 . tcp . 80
chains prerouting services lba-v4-2-600
backends 10.244.3.2:8080
masquerade no: the pod 10.244.1.2 reaches 10.244.3.2:8080, in the cluster CIDRs (10.244.0.0/16): no rule matches, the client keeps its address
[prerouting] jump services
    a new connection arriving at the node goes to the services chain
[services] ip daddr . meta l4proto . th dport vmap @service-ips-v4
    element 10.96.0.30 . tcp . 80 : goto lba-v4-2-600
    the service port has 2 endpoints: goto lba-v4-2-600
[lba-v4-2-600] ip saddr . ip daddr . meta l4proto . th dport . numgen inc mod 1 offset 1 @affinity-v4 update @affinity-v4 { ip saddr . ip daddr . meta l4proto . th dport . numgen inc mod 1 offset 1 timeout 10m } dnat ip to ip daddr . meta l4proto . th dport . numgen inc mod 1 offset 1 map @backends-v4
    element 10.244.1.2 . 10.96.0.30 . tcp . 80 . 0x00000001, 10.96.0.30 . tcp . 80 . 0x00000001 : 10.244.3.2 . 8080
    the client 10.244.1.2 is pinned to slot 1 by affinity-v4 (expires in 4m10s): DNAT to 10.244.3.2:8080, of the endpoints 10.244.2.2:8080, 10.244.3.2:8080
[postrouting] (no rule)
    the pod 10.244.1.2 reaches 10.244.3.2:8080, in the cluster CIDRs (10.244.0.0/16): no rule matches, the client keeps its address
`
	if diff := cmp.Diff(want, got.String()); diff != "" {
		t.Errorf("(-want +got):\n%s", diff)
	}
}

// nothing answers every lookup with "no element" and every address as not
// local, so that a packet meets every rule of the layout.
type nothing struct{}

func (nothing) get(string, []byte) (element, time.Duration, bool, error) {
	return element{}, 0, false, nil
}
func (nothing) local(netip.Addr) (bool, error) { return false, nil }

// Every rule of chains services, hostports and postrouting has a case in the walk: a
// rule added to the layout without one fails here.
func TestExplainKnowsEveryRule(t *testing.T) {
	for _, p := range []Packet{tcpTo("192.0.2.1", "192.0.2.2", 80), tcpTo("2001:db8::1", "2001:db8::2", 80)} {
		got, err := explain(nothing{}, p)
		if err != nil {
			t.Fatalf("%s: %v", p.Dst, err)
		}
		if got.Verdict != VerdictNone || len(got.Steps) != 5 {
			t.Errorf("%s: got %s", p.Dst, got)
		}
	}
}

func TestExplainErrors(t *testing.T) {
	var f Fake
	p := tcpTo("10.244.1.2", "10.96.0.10", 80)
	if _, err := f.Explain(p); !errors.Is(err, ErrNoTable) {
		t.Errorf("before Sync: got %v, want ErrNoTable", err)
	}
	if err := f.Sync(explainState); err != nil {
		t.Fatal(err)
	}
	for _, bad := range []Packet{tcpTo("10.244.1.2", "fd00:96::10", 80), {Dst: p.Dst, Proto: p.Proto, DstPort: 80}} {
		if _, err := f.Explain(bad); err == nil {
			t.Errorf("Explain(%+v): no error", bad)
		}
	}
	if err := f.Cleanup(); err != nil {
		t.Fatal(err)
	}
	if _, err := f.Explain(p); !errors.Is(err, ErrNoTable) {
		t.Errorf("after Cleanup: got %v, want ErrNoTable", err)
	}
}

// Fake.Explain follows the last Sync.
func TestFakeExplainFollowsSync(t *testing.T) {
	var f Fake
	s := explainState.Clone()
	if err := f.Sync(s); err != nil {
		t.Fatal(err)
	}
	p := tcpTo("10.244.1.2", "10.96.0.10", 80)
	s.Services[0].Endpoints = s.Services[0].Endpoints[1:]
	if err := f.Sync(s); err != nil {
		t.Fatal(err)
	}
	got, err := f.Explain(p)
	if err != nil {
		t.Fatal(err)
	}
	want := []netip.AddrPort{netip.MustParseAddrPort("10.244.3.2:8080")}
	if got.Verdict != VerdictDNAT || !slices.Equal(got.Backends, want) || got.Chains[2] != "lb-v4-1" {
		t.Errorf("after removing an endpoint: got\n%s", got)
	}
}
