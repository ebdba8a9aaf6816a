package lab

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/podnet/podnet/daemon/api"
	"github.com/podnet/podnet/daemon/client"
)

// The lab's web service: a ClusterIP in the service range 10.96.0.0/16, TCP
// port 80 load-balanced to port 8080 of its endpoint pods.
var (
	WebVIP        = netip.MustParseAddr("10.96.0.10")
	WebPort       = uint16(80)
	WebTargetPort = uint16(8080)
)

// Service is a ClusterIP service of the lab: TCP Port on VIP, load-balanced to
// TargetPort of the Endpoints, in namespace default. WriteClusterFile renders
// it into the cluster file's services, each endpoint with its pod's node.
type Service struct {
	Name       string
	VIP        netip.Addr
	Port       uint16
	TargetPort uint16
	Endpoints  []*Pod
}

// Dst is the service's VIP and port, where clients connect.
func (s Service) Dst() netip.AddrPort { return netip.AddrPortFrom(s.VIP, s.Port) }

// EndpointNames lists the endpoint pods' names, in order.
func (s Service) EndpointNames() []string {
	var out []string
	for _, p := range s.Endpoints {
		out = append(out, p.Name)
	}
	return out
}

// WebService is the lab's web service, with the first pod of each of the
// first two nodes that have pods as endpoints. It fails when fewer than two
// nodes have pods: the service must spread over nodes.
func (l *Lab) WebService() (Service, error) {
	s := Service{Name: "web", VIP: WebVIP, Port: WebPort, TargetPort: WebTargetPort}
	for _, n := range l.Nodes {
		for _, p := range l.Pods {
			if p.Node == n {
				s.Endpoints = append(s.Endpoints, p)
				break
			}
		}
		if len(s.Endpoints) == 2 {
			return s, nil
		}
	}
	return s, fmt.Errorf("service web needs pods on two nodes, the lab has pods on %d", len(s.Endpoints))
}

// renderServices writes the cluster file's services list.
func renderServices(b *strings.Builder, svcs []Service) {
	if len(svcs) == 0 {
		b.WriteString("services: []\n")
		return
	}
	b.WriteString("services:\n")
	for _, s := range svcs {
		fmt.Fprintf(b, "  - name: %s\n    namespace: default\n    clusterIPs: [%s]\n", s.Name, s.VIP)
		fmt.Fprintf(b, "    ports:\n      - {name: http, protocol: TCP, port: %d, targetPort: %d}\n", s.Port, s.TargetPort)
		if len(s.Endpoints) == 0 {
			b.WriteString("    endpoints: []\n")
			continue
		}
		b.WriteString("    endpoints:\n")
		for _, p := range s.Endpoints {
			fmt.Fprintf(b, "      - addresses: [%s]\n        node: %s\n", p.IP, p.Node.Name)
		}
	}
}

// writeFileAtomic replaces path with data so that a reader (the daemons poll
// the cluster file) sees the old content or the new, never a partial write.
func writeFileAtomic(path string, data []byte) error {
	f, err := os.CreateTemp(filepath.Dir(path), ".tmp-"+filepath.Base(path))
	if err != nil {
		return err
	}
	defer os.Remove(f.Name()) // fails harmlessly after the rename
	if _, err := f.Write(data); err != nil {
		f.Close()
		return err
	}
	if err := f.Chmod(0o644); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	return os.Rename(f.Name(), path)
}

// ApplyServices replaces the lab's services with svcs in its source (the
// cluster file, or Services and EndpointSlices in the API server) and waits
// until every node's podnetd has programmed them (WaitServices).
func (l *Lab) ApplyServices(ctx context.Context, svcs ...Service) error {
	l.Services = svcs
	if err := l.source().publish(ctx, l.Nodes, l.Services); err != nil {
		return err
	}
	return l.WaitServices(ctx)
}

// PublishedText says, for the log, where ApplyServices put s ("written to
// the cluster file", "created with client-go (…)").
func (l *Lab) PublishedText(s Service) string { return l.source().published(s) }

// servicesTimeout bounds WaitServices: the daemons poll the file every 100 ms,
// or watch the API server.
const servicesTimeout = 15 * time.Second

// WaitServices waits, for up to 15 s, until every node's podnetd reports each
// of the lab's services programmed with exactly its VIP, port and endpoints
// (GET /v1/services describes what the last sync put in the nft table). It
// fails at once when a daemon rejects one of them, with the daemon's reason.
func (l *Lab) WaitServices(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, servicesTimeout)
	defer cancel()
	for _, n := range l.Nodes {
		c := client.New(n.Socket(), 2*time.Second)
		var last string
		for {
			got, err := c.Services(ctx)
			if err != nil {
				last = err.Error()
			} else if last, err = servicesMatch(got, l.Services); err != nil {
				return fmt.Errorf("%s: %w", n.Name, err)
			} else if last == "" {
				break
			}
			select {
			case <-ctx.Done():
				return fmt.Errorf("%s: services not programmed after %s: %s", n.Name, servicesTimeout, last)
			case <-time.After(20 * time.Millisecond):
			}
		}
	}
	return nil
}

// servicesMatch reports what still differs between what a daemon programmed
// and want ("" when nothing does), or an error when it rejected one of them.
func servicesMatch(got *api.Services, want []Service) (string, error) {
	for _, r := range got.Rejected {
		for _, s := range want {
			if r.Namespace == "default" && r.Name == s.Name {
				return "", fmt.Errorf("service %s rejected: %s", s.Name, r.Error)
			}
		}
	}
	for _, s := range want {
		i := slices.IndexFunc(got.Programmed, func(p api.Service) bool { return p.Namespace == "default" && p.Name == s.Name })
		if i < 0 {
			return fmt.Sprintf("service %s not programmed yet", s.Name), nil
		}
		p := got.Programmed[i]
		var eps, wantEps []string
		for _, e := range p.Endpoints {
			eps = append(eps, e.Address)
		}
		for _, e := range s.Endpoints {
			wantEps = append(wantEps, e.IP.String())
		}
		slices.Sort(eps)
		slices.Sort(wantEps)
		port := slices.ContainsFunc(p.Ports, func(sp api.ServicePort) bool { return sp.Protocol == "TCP" && sp.Port == int(s.Port) })
		if !slices.Contains(p.ClusterIPs, s.VIP.String()) || !port || !slices.Equal(eps, wantEps) {
			return fmt.Sprintf("service %s programmed as %v port %v endpoints %v, want %s:%d endpoints %v",
				s.Name, p.ClusterIPs, p.Ports, eps, s.VIP, s.Port, wantEps), nil
		}
	}
	return "", nil
}
