package bench

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"time"

	"github.com/containernetworking/cni/libcni"
	"github.com/containernetworking/cni/pkg/invoke"
	"github.com/containernetworking/cni/pkg/version"

	"github.com/podnet/podnet/daemon/client"
	"github.com/podnet/podnet/integration/lab"
	"github.com/podnet/podnet/integration/sandbox"
)

// cniVersion is the spec version both setups are driven at, so that result
// conversion costs the same on both sides.
const cniVersion = "1.0.0"

// Setup is one CNI setup under test: a conflist, the libcni client that finds
// its plugins, and the node namespace the plugins act in.
type Setup struct {
	Name string
	Tag  string // short, unique: prefixes pod namespace names and container IDs
	// Node is the node's network namespace. libcni is called from threads
	// switched into it, so every plugin process starts there.
	Node *sandbox.NetNS
	CNI  *libcni.CNIConfig
	List *libcni.NetworkConfigList
	// Leftovers reports plugin state that outlived the DEL of every pod, such
	// as addresses still allocated. Veths left in Node are checked separately.
	Leftovers func(ctx context.Context) error
	// CallLog, when set, is a podnetd debug log whose "cni call" lines give
	// the daemon-side time of each call.
	CallLog string
	// DaemonPID, when set, is a daemon whose CPU time counts with the plugins'.
	DaemonPID int
	// Syncs, when set, reads podnetd's count of node syncs, to show how much
	// background work ran alongside the calls.
	Syncs func(ctx context.Context) (uint64, error)
}

// podnetSetup drives the first node of l through the conflist its podnetd
// wrote, with cniVersion lowered to the common version.
func podnetSetup(l *lab.Lab) (*Setup, error) {
	node := l.Nodes[0]
	list, err := node.ConfList()
	if err != nil {
		return nil, fmt.Errorf("podnet conflist: %w", err)
	}
	list, err = withVersion(list, cniVersion)
	if err != nil {
		return nil, fmt.Errorf("podnet conflist: %w", err)
	}
	client := client.New(node.Socket(), 5*time.Second)
	return &Setup{
		Name: "podnet",
		Tag:  "pn",
		Node: node.NS,
		CNI:  l.CNI(),
		List: list,
		Leftovers: func(ctx context.Context) error {
			st, err := client.Status(ctx)
			if err != nil {
				return fmt.Errorf("podnetd status: %w", err)
			}
			if st.Allocations != 0 {
				return fmt.Errorf("podnetd still holds %d allocations", st.Allocations)
			}
			return nil
		},
		CallLog:   filepath.Join(node.Dir, "podnetd.log"),
		DaemonPID: node.Daemon.Process.Pid,
		Syncs: func(ctx context.Context) (uint64, error) {
			st, err := client.Status(ctx)
			if err != nil {
				return 0, fmt.Errorf("podnetd status: %w", err)
			}
			return st.Syncs, nil
		},
	}, nil
}

// withVersion returns list with its top-level cniVersion replaced, reparsed
// so that the cached config libcni stores says the same.
func withVersion(list *libcni.NetworkConfigList, version string) (*libcni.NetworkConfigList, error) {
	var raw map[string]any
	if err := json.Unmarshal(list.Bytes, &raw); err != nil {
		return nil, err
	}
	raw["cniVersion"] = version
	b, err := json.Marshal(raw)
	if err != nil {
		return nil, err
	}
	return libcni.ConfListFromBytes(b)
}

// refNetwork is the reference conflist's network name; host-local keeps its
// reservations in <dataDir>/<refNetwork>.
const refNetwork = "ref"

// refSetup makes a node namespace for the reference plugins bridge and
// host-local from binDir, keeping their state and libcni's cache under dir.
// The caller deletes Node when done.
func refSetup(binDir, dir string) (*Setup, error) {
	dataDir := filepath.Join(dir, "host-local")
	conf := map[string]any{
		"cniVersion": cniVersion,
		"name":       refNetwork,
		"plugins": []map[string]any{{
			"type":        "bridge",
			"bridge":      "cni0",
			"isGateway":   true,
			"ipMasq":      false,
			"hairpinMode": true,
			"ipam": map[string]any{
				"type":    "host-local",
				"ranges":  [][]map[string]string{{{"subnet": "10.88.0.0/16"}}},
				"dataDir": dataDir,
			},
		}},
	}
	b, err := json.Marshal(conf)
	if err != nil {
		return nil, err
	}
	list, err := libcni.ConfListFromBytes(b)
	if err != nil {
		return nil, fmt.Errorf("reference conflist: %w", err)
	}
	ns, err := sandbox.NewNetNS("bench-ref")
	if err != nil {
		return nil, err
	}
	// The same executor the lab gives podnet's client: libcni fills a nil one
	// in lazily, which races when workers call it concurrently.
	exec := &invoke.DefaultExec{RawExec: &invoke.RawExec{Stderr: os.Stderr}, PluginDecoder: version.PluginDecoder{}}
	return &Setup{
		Name: "reference",
		Tag:  "ref",
		Node: ns,
		CNI:  libcni.NewCNIConfigWithCacheDir([]string{binDir}, filepath.Join(dir, "cni-cache"), exec),
		List: list,
		Leftovers: func(context.Context) error {
			return hostLocalLeftovers(filepath.Join(dataDir, refNetwork))
		},
	}, nil
}

// hostLocalLeftovers fails if host-local still holds a reservation in dir: it
// keeps one file per reserved address, named by the address.
func hostLocalLeftovers(dir string) error {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return fmt.Errorf("host-local data dir: %w", err)
	}
	var held []string
	for _, e := range entries {
		if net.ParseIP(e.Name()) != nil {
			held = append(held, e.Name())
		}
	}
	if len(held) > 0 {
		return fmt.Errorf("host-local still holds %d reservations (e.g. %s)", len(held), held[0])
	}
	return nil
}

// vethNames lists the veth links in ns by name.
func vethNames(ns *sandbox.NetNS) (map[string]bool, error) {
	c, err := ns.Dial()
	if err != nil {
		return nil, fmt.Errorf("rtnetlink in %s: %w", ns.Name, err)
	}
	defer c.Close()
	links, err := c.Link.List()
	if err != nil {
		return nil, fmt.Errorf("list links in %s: %w", ns.Name, err)
	}
	out := map[string]bool{}
	for _, l := range links {
		if a := l.Attributes; a != nil && a.Info != nil && a.Info.Kind == "veth" {
			out[a.Name] = true
		}
	}
	return out, nil
}
