package nft

import (
	"fmt"
	"net/netip"
	"testing"

	"github.com/podnet/podnet/integration/sandbox"
)

// benchState returns n services with 4 ready endpoints each and one TCP port.
func benchState(n int) State {
	s := State{NodeName: "node1", LocalIPs: addrs("192.168.1.11"), ClusterCIDRs: prefixes("10.0.0.0/8")}
	for i := range n {
		vip := netip.AddrFrom4([4]byte{172, 16 + byte(i>>16), byte(i >> 8), byte(i)})
		svc := Service{Namespace: "bench", Name: fmt.Sprintf("svc-%d", i), ClusterIPs: []netip.Addr{vip},
			Ports: []ServicePort{{Name: "http", Protocol: TCP, Port: 80}}}
		for j := range 4 {
			ep := netip.AddrFrom4([4]byte{10, byte(j), byte(i >> 8), byte(i)})
			svc.Endpoints = append(svc.Endpoints, Endpoint{Address: ep, Ports: map[string]uint16{"http": 8080}, NodeName: "node1", Ready: true})
		}
		s.Services = append(s.Services, svc)
	}
	return s
}

// BenchmarkNormalize50k is the full computation Render and the first Sync do.
func BenchmarkNormalize50k(b *testing.B) {
	s := benchState(50000)
	b.ResetTimer()
	for range b.N {
		normalize(s)
	}
}

// BenchmarkIndexUpdate50k is the computation of a Sync that changes one
// endpoint of one of 50k services.
func BenchmarkIndexUpdate50k(b *testing.B) {
	s := benchState(50000)
	x := newSvcIndex()
	x.update(s)
	b.ResetTimer()
	for i := range b.N {
		s.Services[i%len(s.Services)].Endpoints[0].Address = netip.AddrFrom4([4]byte{10, 9, byte(i >> 8), byte(i)})
		x.update(s)
	}
}

// BenchmarkTableSyncOneChange measures Table.Sync in the kernel (sandbox) for
// one changed endpoint with N services present.
func BenchmarkTableSyncOneChange(b *testing.B) {
	for _, n := range []int{1000, 10000, 50000} {
		b.Run(fmt.Sprint(n), func(b *testing.B) {
			sandbox.Require(b)
			ns := sandbox.TestNetNS(b, fmt.Sprintf("nft-bench-%d", n))
			tbl := newTable(b, ns)
			s := benchState(n)
			if err := tbl.Sync(s); err != nil {
				b.Fatal(err)
			}
			b.ResetTimer()
			for i := range b.N {
				s.Services[(i*7919)%n].Endpoints[0].Address = netip.AddrFrom4([4]byte{10, 9, byte(i >> 8), byte(i)})
				if err := tbl.Sync(s); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkTableExplain measures Table.Explain in the kernel (sandbox) for a
// pod's packet to one ClusterIP among N services: `podnetctl trace`'s
// nftables hop. Every lookup is one single-element netlink GET, so its cost
// should not grow with N.
func BenchmarkTableExplain(b *testing.B) {
	for _, n := range []int{1000, 50000} {
		b.Run(fmt.Sprint(n), func(b *testing.B) {
			sandbox.Require(b)
			ns := sandbox.TestNetNS(b, fmt.Sprintf("nft-explain-%d", n))
			tbl := newTable(b, ns)
			s := benchState(n)
			if err := tbl.Sync(s); err != nil {
				b.Fatal(err)
			}
			p := Packet{Src: netip.MustParseAddr("10.7.0.2"), Dst: s.Services[n/2].ClusterIPs[0], Proto: 6, DstPort: 80}
			b.ResetTimer()
			for range b.N {
				e, err := tbl.Explain(p)
				if err != nil || e.Verdict != VerdictDNAT || len(e.Backends) != 4 {
					b.Fatalf("Explain = %+v, %v", e, err)
				}
			}
		})
	}
}
