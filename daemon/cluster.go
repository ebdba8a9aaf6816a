package daemon

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"os"

	"sigs.k8s.io/yaml"

	"github.com/podnet/podnet/nft"
)

// Cluster is the cluster state podnetd works from: in standalone mode, the
// content of the cluster file; in Kubernetes mode, what the API server holds.
type Cluster struct {
	Nodes []Node `json:"nodes"`
	// Services are the file's valid services, in file order, as the nft table
	// programs them. They are never changed: successive Clusters share them.
	Services []*nft.Service
	// RejectedServices are the file's invalid services, left out one by one
	// without failing the file; the daemon logs them at each load.
	RejectedServices []*ServiceError
	// IgnoredServices are valid services no proxy programs (headless, or
	// labelled for another proxy).
	IgnoredServices []IgnoredService

	serviceIndex []int // position in the file's services of each of Services
	fromAPI      bool  // read from the Kubernetes API: no file, no position
}

// fileIndex returns the position of Services[i] in the file's services, or
// -1 for a Cluster read from the Kubernetes API.
func (c *Cluster) fileIndex(i int) int {
	if c.fromAPI {
		return -1
	}
	if i < len(c.serviceIndex) {
		return c.serviceIndex[i]
	}
	return i // a Cluster built in code, not parsed
}

// Node is one node of the cluster.
type Node struct {
	Name      string         `json:"name"`
	Addresses []netip.Addr   `json:"addresses"`
	PodCIDRs  []netip.Prefix `json:"podCIDRs"`
}

// LoadClusterFile reads and validates a cluster file.
func LoadClusterFile(path string) (*Cluster, []byte, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, nil, fmt.Errorf("cluster file: %w", err)
	}
	c, err := ParseCluster(data)
	if err != nil {
		return nil, data, fmt.Errorf("cluster file %s: %w", path, err)
	}
	return c, data, nil
}

// ParseCluster decodes cluster YAML strictly (unknown fields are errors) and
// validates it. A YAML error or an invalid node fails the whole file, with an
// error naming the field, e.g. nodes[1].podCIDRs[0]. An invalid service only
// leaves that service out: it is listed in RejectedServices.
func ParseCluster(data []byte) (*Cluster, error) {
	js, err := yaml.YAMLToJSON(data)
	if err != nil {
		return nil, fmt.Errorf("yaml: %w", err)
	}
	dec := json.NewDecoder(bytes.NewReader(js))
	dec.DisallowUnknownFields()
	var f clusterFile
	if err := dec.Decode(&f); err != nil {
		return nil, fmt.Errorf("decode: %w", err)
	}
	c := &Cluster{}
	for i, fn := range f.Nodes {
		n := Node{Name: fn.Name}
		for j, s := range fn.Addresses {
			a, err := netip.ParseAddr(s)
			if err != nil {
				return nil, fmt.Errorf("nodes[%d].addresses[%d]: %q is not an IP address", i, j, s)
			}
			n.Addresses = append(n.Addresses, a)
		}
		for j, s := range fn.PodCIDRs {
			p, err := netip.ParsePrefix(s)
			if err != nil {
				return nil, fmt.Errorf("nodes[%d].podCIDRs[%d]: %q is not a CIDR", i, j, s)
			}
			n.PodCIDRs = append(n.PodCIDRs, p)
		}
		c.Nodes = append(c.Nodes, n)
	}
	if err := c.Validate(); err != nil {
		return nil, err
	}
	names := map[string]bool{}
	for _, n := range c.Nodes {
		names[n.Name] = true
	}
	c.Services, c.serviceIndex, c.RejectedServices, c.IgnoredServices = parseServices(f.Services, names)
	return c, nil
}

// clusterFile is the file's shape before parsing addresses, so errors can name
// the field.
type clusterFile struct {
	Nodes []struct {
		Name      string   `json:"name"`
		Addresses []string `json:"addresses"`
		PodCIDRs  []string `json:"podCIDRs"`
	} `json:"nodes"`
	Services []json.RawMessage `json:"services"` // each checked on its own
}

// Validate checks the nodes: names are unique and present, addresses and CIDRs
// well formed (CIDRs masked), and no two nodes' podCIDRs overlap. Services are
// checked by ParseCluster.
func (c *Cluster) Validate() error {
	seen := map[string]bool{}
	var cidrs []netip.Prefix
	var owners []string
	for i, n := range c.Nodes {
		field := fmt.Sprintf("nodes[%d]", i)
		if n.Name == "" {
			return fmt.Errorf("%s.name: required", field)
		}
		if seen[n.Name] {
			return fmt.Errorf("%s.name: duplicate node %q", field, n.Name)
		}
		seen[n.Name] = true
		for j, a := range n.Addresses {
			if !a.IsValid() || a.IsUnspecified() || a.IsLoopback() || a.Zone() != "" {
				return fmt.Errorf("%s.addresses[%d]: %q is not a usable node address", field, j, a)
			}
		}
		for j, p := range n.PodCIDRs {
			f := fmt.Sprintf("%s.podCIDRs[%d]", field, j)
			if !p.IsValid() || p != p.Masked() {
				return fmt.Errorf("%s: %q must be a network prefix (e.g. 10.244.1.0/24)", f, p)
			}
			if (p.Addr().Is4() && p.Bits() > 30) || (p.Addr().Is6() && p.Bits() > 126) {
				return fmt.Errorf("%s: %s is too small for pods", f, p)
			}
			for k, q := range cidrs {
				if p.Overlaps(q) {
					return fmt.Errorf("%s: %s overlaps %s of node %s", f, p, q, owners[k])
				}
			}
			cidrs, owners = append(cidrs, p), append(owners, n.Name)
		}
		if len(n.PodCIDRs) > 0 && len(n.Addresses) == 0 {
			return fmt.Errorf("%s.addresses: a node with podCIDRs needs an address", field)
		}
	}
	return nil
}

// Node returns the named node.
func (c *Cluster) Node(name string) (Node, bool) {
	for _, n := range c.Nodes {
		if n.Name == name {
			return n, true
		}
	}
	return Node{}, false
}

var errNoNode = errors.New("node not in cluster state")
