package daemon

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/podnet/podnet/nft"
)

// HostPorts (docs/services.md, "HostPorts").
//
// Kubelet asks for a pod's hostPorts through the CNI portMappings capability:
// the conflist declares it, the runtime adds runtimeConfig.portMappings to
// the configuration, and the plugin forwards that configuration whole. An ADD
// records the attachment's mappings in its pod record, written durably, and
// waits until a sync has programmed them in table inet podnet (the sync loop
// is the table's only writer); a DEL or GC removes the record and waits until
// the mapping is gone from the table before it frees the pod's address, so
// that a new pod given the address never receives the old pod's hostPort
// traffic. A restarted podnetd programs the mappings of the records it finds.

// portMapping is one entry of runtimeConfig.portMappings, as runtimes send it
// (CNI CONVENTIONS.md) and as pod records keep it (protocol upper case).
type portMapping struct {
	HostPort      int    `json:"hostPort"`
	ContainerPort int    `json:"containerPort"`
	Protocol      string `json:"protocol,omitempty"`
	HostIP        string `json:"hostIP,omitempty"`
}

func (m portMapping) String() string {
	host := m.HostIP
	if host == "" {
		host = "*"
	} else if strings.Contains(host, ":") {
		host = "[" + host + "]"
	}
	return fmt.Sprintf("%s:%d/%s", host, m.HostPort, m.Protocol)
}

// parsePortMappings reads runtimeConfig.portMappings from a network
// configuration and checks each entry: ports 1 to 65535, protocol tcp, udp
// or sctp in any case (empty: TCP), hostIP empty or an IP address without a
// zone. It returns the entries normalised (protocol upper case, hostIP in
// canonical form) without duplicates, and fails on the first invalid entry,
// or on two entries that map the same hostIP, protocol and hostPort to
// different container ports.
func parsePortMappings(config []byte) ([]portMapping, error) {
	var conf struct {
		RuntimeConfig struct {
			PortMappings []portMapping `json:"portMappings"`
		} `json:"runtimeConfig"`
	}
	if err := json.Unmarshal(config, &conf); err != nil {
		return nil, fmt.Errorf("runtimeConfig.portMappings: %w", err)
	}
	var out []portMapping
	for i, m := range conf.RuntimeConfig.PortMappings {
		where := fmt.Sprintf("runtimeConfig.portMappings[%d]", i)
		switch p := strings.ToUpper(m.Protocol); p {
		case "":
			m.Protocol = string(nft.TCP)
		case string(nft.TCP), string(nft.UDP), string(nft.SCTP):
			m.Protocol = p
		default:
			return nil, fmt.Errorf("%s: protocol %q: want tcp, udp or sctp", where, m.Protocol)
		}
		if m.HostPort < 1 || m.HostPort > 65535 {
			return nil, fmt.Errorf("%s: hostPort %d: want 1 to 65535", where, m.HostPort)
		}
		if m.ContainerPort < 1 || m.ContainerPort > 65535 {
			return nil, fmt.Errorf("%s: containerPort %d: want 1 to 65535", where, m.ContainerPort)
		}
		if m.HostIP != "" {
			a, err := netip.ParseAddr(m.HostIP)
			if err != nil || a.Zone() != "" {
				return nil, fmt.Errorf("%s: hostIP %q: not an IP address", where, m.HostIP)
			}
			m.HostIP = a.Unmap().String()
		}
		dup := false
		for _, o := range out {
			if o.HostIP == m.HostIP && o.Protocol == m.Protocol && o.HostPort == m.HostPort {
				if o.ContainerPort != m.ContainerPort {
					return nil, fmt.Errorf("%s: %s maps to container ports %d and %d", where, m, o.ContainerPort, m.ContainerPort)
				}
				dup = true
			}
		}
		if !dup {
			out = append(out, m)
		}
	}
	return out, nil
}

// hostPorts expands the record's mappings for the table: each mapping for
// each pod address whose family it applies to. A mapping without hostIP
// applies to every family of the pod's addresses, with 0.0.0.0 or :: to
// that family's (any local address), with an address to that address's
// family only; one for a family the pod has no address of maps nothing, as
// with the reference portmap plugin.
func (r podRecord) hostPorts() []nft.HostPort {
	var out []nft.HostPort
	for _, m := range r.PortMappings {
		var host netip.Addr
		if m.HostIP != "" {
			host, _ = netip.ParseAddr(m.HostIP)
		}
		for _, s := range r.Addresses {
			pod, err := netip.ParseAddr(s)
			if err != nil || host.IsValid() && host.Is4() != pod.Is4() {
				continue
			}
			out = append(out, nft.HostPort{HostIP: host, Protocol: nft.Protocol(m.Protocol), Port: uint16(m.HostPort),
				PodIP: pod, PodPort: uint16(m.ContainerPort)})
		}
	}
	return out
}

// overlap reports whether a and b take the same traffic: same family,
// protocol and port, and the same hostIP or either on any address. Two pods
// cannot share one, as kubelet and the scheduler see it too (a hostPort on
// 0.0.0.0 conflicts with the same port on any address).
func overlap(a, b nft.HostPort) bool {
	return a.PodIP.Is4() == b.PodIP.Is4() && a.Protocol == b.Protocol && a.Port == b.Port &&
		(a.Any() || b.Any() || a.HostIP == b.HostIP)
}

// ErrHostPortConflict is matched by errors.Is for an ADD whose hostPort
// another attachment on the node already has.
var ErrHostPortConflict = errors.New("hostPort already in use on this node")

// conflictError says which hostPort of an ADD which other pod holds.
type conflictError struct {
	mapping nft.HostPort
	holder  podRecord
}

func (e *conflictError) Error() string {
	host := "any address"
	if !e.mapping.Any() {
		host = e.mapping.HostIP.String()
	}
	pod := e.holder.Namespace + "/" + e.holder.Name
	if e.holder.Name == "" {
		pod = "an unnamed pod"
	}
	return fmt.Sprintf("hostPort %d/%s on %s is already used by pod %s (container %s, interface %s)",
		e.mapping.Port, e.mapping.Protocol, host, pod, e.holder.ContainerID, e.holder.IfName)
}

func (e *conflictError) Is(target error) bool { return target == ErrHostPortConflict }

// hostPortSync lets CNI calls wait until a sync has programmed the pod
// records' hostPorts as they were at a given generation of the pod store.
type hostPortSync struct {
	mu         sync.Mutex
	programmed uint64        // the store generation the table last got
	lastErr    error         // of the last sync that tried
	changed    chan struct{} // closed at each sync's end
}

func newHostPortSync() *hostPortSync { return &hostPortSync{changed: make(chan struct{})} }

// synced records that a sync programmed the table from generation gen, or
// failed with err.
func (s *hostPortSync) synced(gen uint64, err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err == nil && gen > s.programmed {
		s.programmed = gen
	}
	s.lastErr = err
	close(s.changed)
	s.changed = make(chan struct{})
}

// wait returns once the table holds generation gen or later. It fails when
// ctx ends first, with the last sync's error if it had one.
func (s *hostPortSync) wait(ctx context.Context, gen uint64) error {
	for {
		s.mu.Lock()
		done, ch, last := s.programmed >= gen, s.changed, s.lastErr
		s.mu.Unlock()
		if done {
			return nil
		}
		select {
		case <-ch:
		case <-ctx.Done():
			if last != nil {
				return fmt.Errorf("hostPorts not programmed: %w", last)
			}
			return fmt.Errorf("hostPorts not programmed: no sync finished in time: %w", ctx.Err())
		}
	}
}

// hostPortWait bounds how long a CNI call waits for the table.
const hostPortWait = 10 * time.Second

// awaitHostPorts has the sync loop program the pod records' hostPorts and
// waits for it, if the table may lag behind them. Without a hostPortSync
// (unit tests of other parts) it returns at once.
func (h *cniHandler) awaitHostPorts() error {
	if h.hostPorts == nil || h.pods == nil {
		return nil
	}
	gen := h.pods.hostPortGen()
	h.hostPorts.mu.Lock()
	done := h.hostPorts.programmed >= gen
	h.hostPorts.mu.Unlock()
	if done {
		return nil
	}
	if h.trigger != nil {
		h.trigger()
	}
	wait := h.hostPortWait
	if wait == 0 {
		wait = hostPortWait
	}
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	return h.hostPorts.wait(ctx, gen)
}

// sortRecords orders records by container ID and interface, so that the
// table's mappings come in a stable order.
func sortRecords(rs []podRecord) {
	slices.SortFunc(rs, func(a, b podRecord) int {
		return cmp.Or(cmp.Compare(a.ContainerID, b.ContainerID), cmp.Compare(a.IfName, b.IfName))
	})
}
