package benchkp

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"slices"
	"time"

	"golang.org/x/sys/unix"

	"github.com/podnet/podnet/integration/benchsvc"
	"github.com/podnet/podnet/integration/sandbox"
)

// kubeProxyArgs are kube-proxy's flags besides --kubeconfig: nftables
// mode, as Node kp-node, at -v=2 for its sync timings. The conntrack flags
// at 0 leave every conntrack sysctl as it is (kube-proxy would otherwise
// raise nf_conntrack_max and the conntrack module's hashsize, which are
// global to the machine, and set TCP timeouts); --oom-score-adj 0 leaves its
// OOM score alone. Health and metrics listen on the namespace's loopback.
// Everything else is kube-proxy's default, min-sync-period 1 s included
// (kube-proxy v1.37 has no periodic sync within the hour: its 30 s
// sync-period only spaces retries of a failed sync).
func kubeProxyArgs() []string {
	return []string{
		"--proxy-mode=nftables",
		"--hostname-override=" + kubeProxyNode.Name,
		"--cluster-cidr=" + clusterCIDR.String(),
		"--conntrack-max-per-core=0",
		"--conntrack-tcp-timeout-established=0",
		"--conntrack-tcp-timeout-close-wait=0",
		"--conntrack-udp-timeout=0",
		"--conntrack-udp-timeout-stream=0",
		"--oom-score-adj=0",
		"--healthz-bind-address=127.0.0.1:10256",
		"--metrics-bind-address=127.0.0.1:10249",
		"--v=2",
	}
}

// kubeProxy runs kube-proxy in nftables mode. Its table for IPv4 is `ip
// kube-proxy`: a service port is served once map service-ips holds its VIP
// and the rule of its chain service-HASH-ns/name/tcp/http maps to its
// endpoints (see kpServiceChain).
type kubeProxy struct {
	bin, kubeconfig, dir string
	ns                   *sandbox.NetNS
	k                    *kernel
	c                    *child
	log                  *kubeProxyLog
}

var _ proxy = (*kubeProxy)(nil)

var kpTable = table{family: unix.NFPROTO_IPV4, name: kubeProxyTableName}

func newKubeProxy(bin, kubeconfig, dir string, ns *sandbox.NetNS) (*kubeProxy, error) {
	k, err := dialKernel(ns)
	if err != nil {
		return nil, err
	}
	return &kubeProxy{bin: bin, kubeconfig: kubeconfig, dir: dir, ns: ns, k: k}, nil
}

func (p *kubeProxy) Name() string { return "kube-proxy" }

func (p *kubeProxy) logPath() string { return p.dir + "/kube-proxy.log" }

func (p *kubeProxy) Start() error {
	argv := append([]string{p.bin, "--kubeconfig=" + p.kubeconfig}, kubeProxyArgs()...)
	c, err := startChild(p.ns, "kube-proxy", p.logPath(), kubeProxyEnv(), argv...)
	if err != nil {
		return err
	}
	p.c = c
	tail, err := openTail(p.logPath())
	if err != nil {
		return err
	}
	p.log = &kubeProxyLog{tail: tail, ref: time.Now()}
	return nil
}

// kubeProxyEnv is this process's environment with the nft tool's
// directory in PATH: kube-proxy (knftables) runs `nft` for every
// transaction.
func kubeProxyEnv() []string {
	env := os.Environ()
	for i, kv := range env {
		if len(kv) > 5 && kv[:5] == "PATH=" {
			env[i] = kv + ":/usr/sbin:/sbin"
			return env
		}
	}
	return append(env, "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin")
}

func (p *kubeProxy) PID() int { return p.c.pid() }

func (p *kubeProxy) Serves(svc benchsvc.ServiceSpec) (bool, error) {
	if p.c.exited() {
		return false, fmt.Errorf("kube-proxy exited; see %s", p.logPath())
	}
	rules, err := p.k.chainLookups(kpTable, kpServiceChain(benchsvc.Namespace, svc.Name, "tcp", portName))
	if errors.Is(err, errNotFound) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	if len(rules) != 1 || len(rules[0]) != 1 {
		return false, nil
	}
	elems, err := p.k.elements(kpTable, rules[0][0])
	if errors.Is(err, errNotFound) { // the rule was replaced between the two requests
		return false, nil
	}
	if err != nil {
		return false, err
	}
	got := make([]netip.AddrPort, 0, len(elems))
	for _, e := range elems {
		ap, ok := addrPort(e.Data)
		if !ok {
			return false, fmt.Errorf("%s: element data %x: not ipv4_addr . inet_service", rules[0][0], e.Data)
		}
		got = append(got, ap)
	}
	slices.SortFunc(got, netip.AddrPort.Compare)
	return slices.Equal(got, endpointsOf(svc)), nil
}

func (p *kubeProxy) Count() (int, error) {
	elems, err := p.k.elements(kpTable, kpServiceIPs)
	return len(elems), err
}

func (p *kubeProxy) CachesSynced() (time.Time, error) {
	if err := p.log.read(); err != nil {
		return time.Time{}, err
	}
	if p.log.synced.IsZero() {
		return time.Time{}, fmt.Errorf("no \"Caches are synced\" in %s", p.logPath())
	}
	return p.log.synced, nil
}

func (p *kubeProxy) SyncAfter(ctx context.Context, t time.Time) (syncRecord, error) {
	return pollSync(ctx, 5*time.Second, func() (syncRecord, bool, error) {
		if err := p.log.read(); err != nil {
			return syncRecord{}, false, err
		}
		s, ok := firstSyncAfter(p.log.syncs, t)
		return s, ok, nil
	})
}

func (p *kubeProxy) Stop() (int64, error) {
	defer p.k.Close()
	if p.log != nil {
		p.log.tail.Close()
	}
	if p.c == nil {
		return 0, nil
	}
	return p.c.stop(10 * time.Second)
}
