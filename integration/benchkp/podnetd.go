package benchkp

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"golang.org/x/sys/unix"

	"github.com/podnet/podnet/daemon/client"
	"github.com/podnet/podnet/integration/benchsvc"
	"github.com/podnet/podnet/integration/sandbox"
	"github.com/podnet/podnet/nft"
)

// podnetd runs podnetd in Kubernetes mode as Node pn-node. Its table is
// `inet podnet`: a service port is served once map backends-v4 holds its
// endpoints in slots 0 to n-1, by address, and nothing in slot n (see
// docs/nftables.md).
type podnetd struct {
	bin, kubeconfig, dir string
	ns                   *sandbox.NetNS
	k                    *kernel
	c                    *child
}

var _ proxy = (*podnetd)(nil)

var podnetTable = table{family: unix.NFPROTO_INET, name: nft.TableName}

const (
	podnetBackends   = "backends-v4"
	podnetServiceIPs = "service-ips-v4"
)

func newPodnetd(bin, kubeconfig, dir string, ns *sandbox.NetNS) (*podnetd, error) {
	k, err := dialKernel(ns)
	if err != nil {
		return nil, err
	}
	return &podnetd{bin: bin, kubeconfig: kubeconfig, dir: dir, ns: ns, k: k}, nil
}

func (p *podnetd) Name() string { return "podnetd" }

func (p *podnetd) logPath() string { return filepath.Join(p.dir, "podnetd.log") }
func (p *podnetd) socket() string  { return filepath.Join(p.dir, "podnet.sock") }

// podnetdArgs are podnetd's flags besides the paths: JSON logs at info
// level, and a resync interval of an hour, the longest kube-proxy goes
// without a sync, so that no periodic full sync lands among the timed
// changes of either proxy.
func podnetdArgs() []string {
	return []string{"--node-name", podnetdNode.Name, "--resync-interval", "1h", "--log-format", "json", "--log-level", "info"}
}

func (p *podnetd) Start() error {
	argv := append([]string{p.bin, "--kubeconfig", p.kubeconfig,
		"--socket", p.socket(), "--state-dir", filepath.Join(p.dir, "state"),
		"--cni-conf-dir", filepath.Join(p.dir, "net.d"), "--cni-bin-dir", filepath.Join(p.dir, "cni")},
		podnetdArgs()...)
	c, err := startChild(p.ns, "podnetd", p.logPath(), os.Environ(), argv...)
	if err != nil {
		return err
	}
	p.c = c
	return nil
}

func (p *podnetd) PID() int { return p.c.pid() }

func (p *podnetd) Serves(svc benchsvc.ServiceSpec) (bool, error) {
	if p.c.exited() {
		return false, fmt.Errorf("podnetd exited; see %s", p.logPath())
	}
	want := endpointsOf(svc)
	for slot := range len(want) + 1 {
		e, err := p.k.getElement(podnetTable, podnetBackends, backendKey(svc, uint32(slot)))
		if errors.Is(err, errNotFound) {
			return slot == len(want), nil
		}
		if err != nil {
			return false, err
		}
		if slot == len(want) {
			return false, nil
		}
		if got, ok := addrPort(e.Data); !ok || got != want[slot] {
			return false, nil
		}
	}
	return false, nil
}

// backendKey is the key `ipv4_addr . inet_proto . inet_service . mark` of
// slot of svc's TCP port in backends-v4; the mark is in host byte order.
func backendKey(svc benchsvc.ServiceSpec, slot uint32) []byte {
	return concatKey(serviceKey(svc.VIP, benchsvc.ServicePort), binary.NativeEndian.AppendUint32(nil, slot))
}

func (p *podnetd) Count() (int, error) {
	elems, err := p.k.elements(podnetTable, podnetServiceIPs)
	return len(elems), err
}

func (p *podnetd) CachesSynced() (time.Time, error) {
	tail, err := openTail(p.logPath())
	if err != nil {
		return time.Time{}, err
	}
	defer tail.Close()
	lines, err := tail.lines()
	if err != nil {
		return time.Time{}, err
	}
	at, ok := zapTime(lines, "Kubernetes caches synced")
	if !ok {
		return time.Time{}, fmt.Errorf("no \"Kubernetes caches synced\" in %s", p.logPath())
	}
	return at, nil
}

// SyncAfter reads podnetd's status, which holds its last sync: the sync
// returned is the last one, if it started at or after t.
func (p *podnetd) SyncAfter(ctx context.Context, t time.Time) (syncRecord, error) {
	c := client.New(p.socket(), 2*time.Second)
	return pollSync(ctx, 5*time.Second, func() (syncRecord, bool, error) {
		st, err := c.Status(ctx)
		if err != nil {
			return syncRecord{}, false, nil // not listening yet
		}
		took := time.Duration(st.SyncSeconds * float64(time.Second))
		s := syncRecord{Start: st.LastSync.Add(-took), Took: took}
		return s, st.Syncs > 0 && !s.Start.Before(t), nil
	})
}

func (p *podnetd) Stop() (int64, error) {
	defer p.k.Close()
	if p.c == nil {
		return 0, nil
	}
	return p.c.stop(10 * time.Second)
}
