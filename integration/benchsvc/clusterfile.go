package benchsvc

import (
	"bufio"
	"bytes"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
)

// NodeSpec is one node of a generated cluster file.
type NodeSpec struct {
	Name    string
	Addr    netip.Addr
	PodCIDR netip.Prefix
}

// ServiceSpec is one generated ClusterIP service: one TCP port, ServicePort,
// forwarded to TargetPort on each endpoint.
type ServiceSpec struct {
	Name      string
	VIP       netip.Addr
	Endpoints []EndpointSpec
}

// EndpointSpec is one ready endpoint: a pod address on a node.
type EndpointSpec struct {
	Addr netip.Addr
	Node string
}

// The generated services' namespace, port and target port.
const (
	Namespace   = "bench"
	ServicePort = 80
	TargetPort  = 8080
)

// serviceCIDR holds the generated cluster IPs: 10.96.0.0/12, as kubeadm's default.
var serviceCIDR = netip.MustParsePrefix("10.96.0.0/12")

// EndpointsPerService is how many endpoints each generated service has: half
// on the local node, half on the peer.
const EndpointsPerService = 4

// GenServices returns n services named svc-00000…, cluster IPs counted up from
// 10.96.0.16, each with EndpointsPerService endpoints: two pod addresses of
// local's podCIDR and two of peer's, distinct within the service. Endpoint
// addresses repeat across services (a /24 holds 252 pod addresses), so a pod
// backs many services, as it does behind several Services in Kubernetes.
func GenServices(n int, local, peer NodeSpec) []ServiceSpec {
	out := make([]ServiceSpec, n)
	for i := range n {
		out[i] = ServiceSpec{Name: fmt.Sprintf("svc-%05d", i), VIP: addrAdd(serviceCIDR.Addr(), uint32(16+i))}
		for _, node := range []NodeSpec{local, peer} {
			for k := range EndpointsPerService / 2 {
				out[i].Endpoints = append(out[i].Endpoints, EndpointSpec{Addr: poolAddr(node.PodCIDR, 2*i+k), Node: node.Name})
			}
		}
	}
	return out
}

// poolAddr is the i-th (modulo) pod address of an IPv4 /24: .2 to .253, leaving
// out the network address, the gateway (.1), .254 and the broadcast address.
func poolAddr(cidr netip.Prefix, i int) netip.Addr {
	const size = 252
	return addrAdd(cidr.Masked().Addr(), uint32(2+i%size))
}

// addrAdd returns the IPv4 address a+n.
func addrAdd(a netip.Addr, n uint32) netip.Addr {
	b := a.As4()
	v := uint32(b[0])<<24 | uint32(b[1])<<16 | uint32(b[2])<<8 | uint32(b[3])
	v += n
	return netip.AddrFrom4([4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)})
}

// FreshEndpoint returns an address of cidr's pool, searched from start on,
// that svc does not use yet; ok is false if the pool is used up.
func FreshEndpoint(svc ServiceSpec, cidr netip.Prefix, start int) (addr netip.Addr, ok bool) {
	for i := range 252 {
		a := poolAddr(cidr, start+i)
		if !slices.ContainsFunc(svc.Endpoints, func(e EndpointSpec) bool { return e.Addr == a }) {
			return a, true
		}
	}
	return netip.Addr{}, false
}

// SortedEndpoints returns the service's endpoint addresses in the order the
// nft table gives them backend slots: by address.
func (s ServiceSpec) SortedEndpoints() []netip.Addr {
	out := make([]netip.Addr, len(s.Endpoints))
	for i, e := range s.Endpoints {
		out[i] = e.Addr
	}
	slices.SortFunc(out, netip.Addr.Compare)
	return out
}

// ClusterYAML renders a cluster file with nodes and services in the style of
// docs/services.md.
func ClusterYAML(nodes []NodeSpec, svcs []ServiceSpec) []byte {
	var b bytes.Buffer
	b.Grow(64*len(nodes) + 360*len(svcs))
	w := bufio.NewWriter(&b)
	w.WriteString("nodes:\n")
	for _, n := range nodes {
		fmt.Fprintf(w, "  - name: %s\n    addresses: [%s]\n    podCIDRs: [%s]\n", n.Name, n.Addr, n.PodCIDR)
	}
	if len(svcs) == 0 {
		w.WriteString("services: []\n")
	} else {
		w.WriteString("services:\n")
	}
	for _, s := range svcs {
		fmt.Fprintf(w, "  - name: %s\n    namespace: %s\n    clusterIPs: [%s]\n    ports:\n      - {port: %d, targetPort: %d}\n    endpoints:\n",
			s.Name, Namespace, s.VIP, ServicePort, TargetPort)
		for _, e := range s.Endpoints {
			fmt.Fprintf(w, "      - {addresses: [%s], node: %s}\n", e.Addr, e.Node)
		}
	}
	w.Flush()
	return b.Bytes()
}

// writeAtomic replaces path with data through a temporary file and a rename,
// so that a reader sees the old or the new content, never a part. It returns
// once the rename is done: the moment the new content becomes visible.
func writeAtomic(path string, data []byte) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".*")
	if err != nil {
		return err
	}
	_, werr := tmp.Write(data)
	if err := tmp.Close(); werr == nil {
		werr = err
	}
	if werr != nil {
		os.Remove(tmp.Name())
		return werr
	}
	if err := os.Chmod(tmp.Name(), 0o644); err != nil {
		os.Remove(tmp.Name())
		return err
	}
	return os.Rename(tmp.Name(), path)
}
