package daemon

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"

	"github.com/podnet/podnet/conntrack"
	"github.com/podnet/podnet/daemon/api"
	"github.com/podnet/podnet/ipam"
	"github.com/podnet/podnet/nft"
	"github.com/podnet/podnet/routing"
)

// Version is podnetd's version, set at build time.
var Version = "dev"

// Deps are the kernel-facing parts. Nil Kernel and NFT get the real
// implementation.
type Deps struct {
	Kernel routing.Interface
	NFT    nft.Interface
	// Conntrack deletes the UDP conntrack entries that service changes leave
	// stale (podnetd passes a *conntrack.Table). Nil turns that off: stale
	// entries then live until their clients go quiet. Never set it to a nil
	// *conntrack.Table.
	Conntrack conntrack.Interface
	// Source, when not nil, replaces the cluster-state source the config
	// selects (the cluster file or the Kubernetes API).
	Source Source
	// Tracer traces trace probes with nftables; nil: the real one, made at
	// the first trace.
	Tracer nft.TraceRunner
}

// Daemon is one podnetd.
type Daemon struct {
	cfg     Config
	log     *zap.Logger
	kernel  routing.Interface
	nft     nft.Interface
	ipam    *ipam.Allocator
	pods    *podStore
	cni     *cniHandler
	cluster atomic.Pointer[Cluster]
	source  Source
	updated chan struct{} // a new cluster state was stored (source.go)
	// waitLogged is the reason the sync waits for this node, as last logged.
	waitLogged string
	// services is what the last sync that programmed the nft table did with
	// the cluster's services; nil before it.
	services atomic.Pointer[serviceView]
	podNet   atomic.Pointer[podNet]
	trigger  chan struct{}
	sysctl   func(name, value string) error // setSysctl; replaced in tests
	// stateBuf is the storage of the last nft.State's services, reused by
	// the next sync (syncNode only).
	stateBuf []nft.Service
	// parser parses the cluster file, reusing the services of the last one.
	parser clusterParser
	// noBrNetfilter: the missing br_netfilter module was logged.
	noBrNetfilter atomic.Bool

	// ctClean deletes stale conntrack entries after syncs; nil if turned off.
	ctClean *conntrackCleaner
	// hostPorts tells CNI calls which pod records' hostPorts the table holds
	// (hostports.go).
	hostPorts *hostPortSync

	// life is readiness for /readyz and systemd's READY=1 (health.go).
	life lifecycle
	// metrics are served on /metrics (metrics.go).
	metrics *metrics

	// socketGID is the group of --socket-group, -1 without one (access.go).
	socketGID int
	// tracer traces trace probes (tracenft.go).
	tracerMu sync.Mutex
	tracer   nft.TraceRunner

	mu     sync.Mutex
	status api.Status
}

// New builds a daemon from a validated config; it touches nothing yet.
func New(cfg Config, log *zap.Logger, deps Deps) (*Daemon, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	d := &Daemon{cfg: cfg, log: log, kernel: deps.Kernel, nft: deps.NFT, trigger: make(chan struct{}, 1), sysctl: sysctlWriter(cfg.SysctlDir),
		source: deps.Source, updated: make(chan struct{}, 1), tracer: deps.Tracer, hostPorts: newHostPortSync()}
	if d.source == nil {
		src, err := newSource(cfg, d)
		if err != nil {
			return nil, err
		}
		d.source = src
	}
	if d.kernel == nil {
		d.kernel = routing.New(-1)
	}
	if d.nft == nil {
		t, err := nft.New()
		if err != nil {
			return nil, fmt.Errorf("nftables: %w", err)
		}
		d.nft = t
	}
	gid, err := lookupGroup(cfg.SocketGroup)
	if err != nil {
		return nil, err
	}
	d.socketGID = gid
	d.podNet.Store(&podNet{Reason: "first sync not done"})
	d.metrics = newMetrics(d.life.ready.Load)
	d.status = api.Status{Version: Version, Node: cfg.NodeName, Source: d.source.Name(), Bridge: cfg.Bridge, StartedAt: time.Now()}
	if deps.Conntrack != nil {
		d.ctClean = &conntrackCleaner{ct: deps.Conntrack}
		d.status.ConntrackCleanup = true
	}
	return d, nil
}

// Run starts podnetd and blocks until ctx ends. Start-up errors (unreadable or
// invalid cluster file, this node missing from it, state dir locked or corrupt,
// socket not available) are returned; later errors are logged and retried. In
// Kubernetes mode it first waits for the informers' caches to sync, and the
// sync then waits for this node's podCIDR.
func (d *Daemon) Run(ctx context.Context) error {
	stopLifecycle, err := d.startLifecycle(ctx) // health endpoints, sd_notify (health.go)
	if err != nil {
		return err
	}
	defer stopLifecycle()
	if err := d.installCNIPlugin(); err != nil { // cniinstall.go
		return err
	}
	c, stopSource, err := d.startSource(ctx) // source.go
	if err != nil || c == nil {
		return err
	}
	defer stopSource()
	node, _ := c.Node(d.cfg.NodeName) // Kubernetes mode: maybe not yet
	alloc, err := ipam.New(filepath.Join(d.cfg.StateDir, "ipam"), node.PodCIDRs)
	if err != nil {
		return fmt.Errorf("ipam: %w", err)
	}
	defer alloc.Close()
	d.ipam = alloc
	pods, err := openPodStore(filepath.Join(d.cfg.StateDir, "pods"))
	if pods == nil {
		return err
	}
	if err != nil { // the records that could be read are kept
		d.log.Warn("some pod records are unreadable; those pods show without name and namespace", zap.Error(err))
	}
	d.pods = pods
	d.cni = &cniHandler{ipam: alloc, kernel: d.kernel, state: func() podNet { return *d.podNet.Load() }, pods: pods,
		warn:      func(msg string, err error) { d.log.Warn(msg, zap.Error(err)) },
		hostPorts: d.hostPorts, trigger: d.Trigger}
	ln, err := listen(d.cfg.Socket, d.socketGID)
	if err != nil {
		return err
	}
	d.log.Info("podnetd starting", zap.String("node", d.cfg.NodeName), zap.String("version", Version),
		zap.String("socket", d.cfg.Socket), zap.Int("allocations", len(alloc.List())))
	d.Trigger()
	var wg sync.WaitGroup
	run := func(f func(context.Context)) { wg.Add(1); go func() { defer wg.Done(); f(ctx) }() }
	run(d.syncLoop)
	run(d.watchKernel)
	run(d.resyncTicker)
	err = d.serve(ctx, ln)
	wg.Wait()
	d.log.Info("podnetd stopped; pods and kernel state are left in place")
	return err
}

// Trigger asks for a sync; triggers coalesce.
func (d *Daemon) Trigger() {
	select {
	case d.trigger <- struct{}{}:
	default:
	}
}

func (d *Daemon) resyncTicker(ctx context.Context) {
	t := time.NewTicker(d.cfg.ResyncInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			d.Trigger()
		}
	}
}

func (d *Daemon) watchKernel(ctx context.Context) {
	w, ok := d.kernel.(interface {
		Watch(context.Context, string, func()) error
	})
	if !ok {
		return
	}
	for ctx.Err() == nil {
		if err := w.Watch(ctx, d.cfg.Bridge, d.Trigger); err != nil {
			d.log.Warn("kernel watch failed; relying on periodic resync", zap.Error(err))
			select {
			case <-ctx.Done():
			case <-time.After(5 * time.Second):
			}
		}
	}
}

// watchFile re-reads the cluster file when its content changes; an invalid file
// is logged and the last good state kept. It looks at the file when inotify
// reports a change in its directory, and at every poll: it reads it only if
// its size, modification time or inode changed, or 10 s went by since the last
// read (a file of 50k services takes milliseconds to read).
func (d *Daemon) watchFile(ctx context.Context, last []byte) {
	t := time.NewTicker(d.cfg.PollInterval)
	defer t.Stop()
	changed, err := watchDir(ctx, filepath.Dir(d.cfg.ClusterFile))
	if err != nil {
		d.log.Warn("cannot watch the cluster file's directory; polling only", zap.Error(err), zap.Duration("pollInterval", d.cfg.PollInterval))
	}
	var seen os.FileInfo
	var readAt time.Time
	var spare []byte // a buffer to read into: at 50k services a read is 16 MB
	for {
		notified := false
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case _, ok := <-changed:
			if !ok {
				changed = nil // the watch ended: the ticker goes on
			}
			notified = ok
		}
		// A poll trusts size, mtime and inode; a write inotify reported may
		// keep all three (coarse timestamps), so it is always read.
		fi, err := os.Stat(d.cfg.ClusterFile)
		if !notified && err == nil && seen != nil && sameFile(fi, seen) && time.Since(readAt) < 10*time.Second {
			continue
		}
		seen, readAt = fi, time.Now()
		// Read into the buffer nobody holds: not last, nor the parser's last
		// good file (the same one unless the last parse failed).
		var buf []byte
		if spare != nil && (len(last) == 0 || &spare[:1][0] != &last[:1][0]) && !d.parser.holds(spare) {
			buf = spare[:0]
		}
		readStart := time.Now()
		data, err := readFile(d.cfg.ClusterFile, buf)
		if err != nil {
			if len(last) > 0 { // warn once; the file is re-parsed when it is back
				d.log.Warn("cluster file unreadable; keeping last good state", zap.Error(err))
				last = nil
			}
			continue
		}
		if slices.Equal(data, last) {
			spare = data
			continue
		}
		spare, last = last, data
		parseStart := time.Now()
		c, err := d.parser.parse(data)
		if err != nil {
			d.log.Error("cluster file invalid; keeping last good state", zap.String("file", d.cfg.ClusterFile), zap.Error(err))
			continue
		}
		d.cluster.Store(c)
		d.logLoad("cluster file changed", c, zap.Duration("read", parseStart.Sub(readStart)), zap.Duration("parse", time.Since(parseStart)))
		d.Trigger()
	}
}

// readFile reads the file at path, into buf's storage if it is large enough.
func readFile(path string, buf []byte) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	if fi, err := f.Stat(); err == nil && int64(cap(buf)) < fi.Size()+512 {
		buf = make([]byte, 0, fi.Size()+512)
	}
	for {
		if len(buf) == cap(buf) {
			buf = slices.Grow(buf, 4096)
		}
		n, err := f.Read(buf[len(buf):cap(buf)])
		buf = buf[:len(buf)+n]
		if err == io.EOF {
			return buf, nil
		}
		if err != nil {
			return nil, err
		}
	}
}

// sameFile reports whether a and b describe the same version of a file: same
// size, modification time and inode.
func sameFile(a, b os.FileInfo) bool {
	return a.Size() == b.Size() && a.ModTime().Equal(b.ModTime()) && os.SameFile(a, b)
}

// syncLoop runs syncNode on each trigger, at most every 50 ms, retrying failures
// with exponential backoff up to 30 s.
func (d *Daemon) syncLoop(ctx context.Context) {
	backoff := time.Duration(0)
	for {
		select {
		case <-ctx.Done():
			return
		case <-d.trigger:
		}
		start := time.Now()
		d.syncing(start) // liveness (health.go)
		err := d.syncNode()
		d.recordSync(start, err)
		d.synced(err) // readiness, sd_notify (health.go)
		// Waiting for this node's podCIDR is no failure (source.go).
		if waiting := d.waiting(err); err != nil && !waiting {
			backoff = min(max(2*backoff, 200*time.Millisecond), 30*time.Second)
			d.log.Error("node sync failed", zap.Error(err), zap.Duration("retryIn", backoff))
			time.AfterFunc(backoff, d.Trigger)
		} else {
			backoff = 0
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(50 * time.Millisecond):
		}
	}
}

func (d *Daemon) recordSync(start time.Time, err error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.status.LastSync = time.Now()
	d.status.SyncSeconds = time.Since(start).Seconds()
	d.status.Syncs++
	d.status.LastError = ""
	if err != nil {
		d.status.LastError = err.Error()
	}
	d.metrics.nodeSynced(time.Since(start), err)
}

// syncNode makes the kernel match the cluster state: IPAM ranges, bridge, peer
// routes, nft table (masquerade, services and the pods' hostPorts), then the
// CNI conflist. Values the table skips as invalid are logged and reported,
// not retried. CNI calls waiting for hostPorts learn the outcome.
func (d *Daemon) syncNode() (err error) {
	hostPorts, hpGen := d.pods.hostPorts()
	hpDone := false
	defer func() {
		if !hpDone { // the table was not reached
			d.hostPorts.synced(0, err)
		}
	}()
	c := d.cluster.Load()
	node, ok := c.Node(d.cfg.NodeName)
	if !ok {
		d.podNet.Store(&podNet{Reason: errNoNode.Error()})
		return fmt.Errorf("%w: %s", errNoNode, d.cfg.NodeName)
	}
	if len(node.PodCIDRs) == 0 {
		d.podNet.Store(&podNet{Reason: "node has no podCIDR"})
		return fmt.Errorf("node %s has %w", node.Name, errNoPodCIDR)
	}
	steps := d.metrics.steps() // each step's duration and result (metrics.go)
	if !slices.Equal(d.ipam.Ranges(), node.PodCIDRs) {
		if err := d.ipam.SetRanges(node.PodCIDRs); err != nil {
			return steps.done(ctlIPAM, fmt.Errorf("ipam ranges: %w", err))
		}
		d.log.Info("pod ranges changed", zap.Any("podCIDRs", node.PodCIDRs))
	}
	d.metrics.setIPAM(d.ipam.Stats())
	steps.done(ctlIPAM, nil)
	if err := d.setForwarding(node.PodCIDRs); err != nil {
		return steps.done(ctlBridge, err)
	}
	mtu := d.mtu(node)
	if err := d.kernel.EnsureBridge(routing.Bridge{Name: d.cfg.Bridge, Gateways: gateways(node.PodCIDRs), MTU: mtu}); err != nil {
		return steps.done(ctlBridge, err)
	}
	steps.done(ctlBridge, nil)
	routes, skipped := desiredRoutes(c, node.Name)
	for _, e := range skipped {
		d.log.Warn("peer route skipped", zap.Error(e))
	}
	ch, routeErr := d.kernel.SyncRoutes(routes)
	d.logRouteChanges(ch)
	d.metrics.routesSynced(routes, ch, routeErr)
	steps.done(ctlRoutes, routeErr)
	state := desiredNFT(c, node.Name, d.stateBuf)
	d.stateBuf = state.Services
	state.HostPorts = hostPorts
	nftSkipped, nftErr := splitSkipped(d.nft.Sync(state))
	d.hostPorts.synced(hpGen, nftErr)
	hpDone = true
	steps.done(ctlServices, nftErr)
	var programmed []*nft.Service // nil: the table was not programmed
	if nftErr == nil {            // the table holds this state, less what it skipped
		v := newServiceView(c, nftSkipped)
		d.logRefused(d.services.Swap(v), v)
		d.metrics.setServices(v)
		programmed = v.programmed
	}
	if r, ok := d.kernel.(interface{ Reap() error }); ok {
		err := r.Reap()
		if err != nil { // pods retired before a crash
			d.log.Warn("deleting retired pod links failed", zap.Error(err))
		}
		steps.done(ctlReap, err)
	}
	d.podNet.Store(&podNet{Ready: true, Bridge: d.cfg.Bridge, MTU: mtu})
	// After the node is ready for pods: the first sync's reconciliation reads
	// the whole conntrack table, which CNI calls need not wait for.
	if nftErr == nil {
		ctErr := d.cleanConntrack(c, programmed, hostPorts, hpGen)
		if d.ctClean != nil {
			steps.done(ctlConntrack, ctErr)
		}
	}
	d.mu.Lock()
	d.status.PodCIDRs = prefixStrings(node.PodCIDRs)
	d.status.MTU, d.status.Peers, d.status.Routes = mtu, len(c.Nodes)-1, len(routes)
	d.status.Ready = true
	d.mu.Unlock()
	confErr := d.writeCNIConfig()
	steps.done(ctlCNIConfig, confErr)
	return errors.Join(routeErr, nftErr, confErr)
}

// setForwarding turns on forwarding for the families of cidrs, and makes
// bridged IP traffic pass through netfilter: a pod reaching a service whose
// chosen endpoint is on the same bridge gets its reply straight over the
// bridge, and only with bridge-nf-call-iptables does conntrack see it and undo
// the DNAT (kube-proxy needs the same). Without the br_netfilter module that
// sysctl does not exist: that is logged, once, and not an error.
func (d *Daemon) setForwarding(cidrs []netip.Prefix) error {
	for _, p := range cidrs {
		name, bridge := "net.ipv4.ip_forward", "net.bridge.bridge-nf-call-iptables"
		if p.Addr().Is6() {
			name, bridge = "net.ipv6.conf.all.forwarding", "net.bridge.bridge-nf-call-ip6tables"
		}
		if err := d.sysctl(name, "1"); err != nil {
			return err
		}
		if err := d.sysctl(bridge, "1"); err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				if d.noBrNetfilter.CompareAndSwap(false, true) {
					d.log.Warn("br_netfilter is not loaded: a pod's connection to a service whose endpoint is on the same node will fail (load the module: modprobe br_netfilter)")
				}
				continue
			}
			return err
		}
	}
	return nil
}

func (d *Daemon) mtu(n Node) int {
	if d.cfg.MTU > 0 {
		return d.cfg.MTU
	}
	for _, a := range n.Addresses {
		if m, err := d.kernel.MTUOf(a); err == nil {
			return m
		}
	}
	return 1500
}

func (d *Daemon) logRouteChanges(ch routing.RouteChanges) {
	for _, r := range ch.Added {
		d.log.Info("route added", zap.Stringer("dst", r.Dst), zap.Stringer("via", r.Via))
	}
	for _, r := range ch.Replaced {
		d.log.Info("route replaced", zap.Stringer("dst", r.Dst), zap.Stringer("via", r.Via))
	}
	for _, r := range ch.Removed {
		d.log.Info("route removed", zap.Stringer("dst", r.Dst), zap.Stringer("via", r.Via))
	}
	for _, r := range ch.Conflicts {
		d.log.Warn("route not installed: a route podnet does not own has this destination", zap.Stringer("dst", r.Dst))
	}
}

func (d *Daemon) writeCNIConfig() error {
	data, err := renderConflist(d.cfg.CNIVersion, d.cfg.Socket)
	if err != nil {
		return err
	}
	path := filepath.Join(d.cfg.CNIConfDir, ConflistName)
	wrote, err := writeFileAtomic(path, data, 0o644)
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if wrote {
		d.log.Info("CNI config written", zap.String("path", path))
	}
	return nil
}

// Status returns a snapshot of the daemon's state.
func (d *Daemon) Status() api.Status {
	d.mu.Lock()
	s := d.status
	d.mu.Unlock()
	if d.ipam != nil {
		s.Allocations = len(d.ipam.List())
	}
	if v := d.services.Load(); v != nil {
		s.ServicesProgrammed, s.ServicesIgnored = len(v.programmed), len(v.ignored)
		s.ServicesRejected = len(v.rejected) + len(v.refused)
	}
	return s
}

func prefixStrings(ps []netip.Prefix) []string {
	var out []string
	for _, p := range ps {
		out = append(out, p.String())
	}
	return out
}
