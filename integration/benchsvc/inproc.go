package benchsvc

import (
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"runtime"
	"runtime/pprof"
	"slices"
	"time"

	"golang.org/x/sys/unix"

	"github.com/podnet/podnet/daemon"
	"github.com/podnet/podnet/nft"
)

// syncInProc times nft.Table.Sync in this process against the measured
// node's table, which holds the daemon's last state (the daemon is stopped):
// one untimed sync of that state, then four syncs that each change one
// endpoint address of one service (alternately to a new address and back).
// This is the nft part of an incremental change without the daemon around it,
// and what the profile in ProfileDir shows. It also measures the live heap the
// parsed cluster and the table (its index of applied services) hold, and
// then a cold sync (coldSyncInProc).
func (e *env) syncInProc(r *Result, svcs []ServiceSpec) error {
	data := ClusterYAML(e.nodes, svcs)
	h0 := liveHeap()
	c, err := daemon.ParseCluster(data)
	if err != nil {
		return err
	}
	h1 := liveHeap()
	state := nftState(c, e.node.Name)
	t, err := nft.New(nft.WithNetNSFd(e.node.NS.Fd()))
	if err != nil {
		return err
	}
	if err := t.Sync(state); err != nil {
		return fmt.Errorf("in-process sync: %w", err)
	}
	h2 := liveHeap()
	r.ClusterHeap, r.TableHeap = int64(h1)-int64(h0), int64(h2)-int64(h1)
	runtime.KeepAlive(c)
	ep := &state.Services[0].Endpoints[0]
	alt, ok := FreshEndpoint(svcs[0], e.nodes[0].PodCIDR, 100)
	if !ok || svcs[0].Endpoints[0].Node != e.nodes[0].Name {
		return fmt.Errorf("in-process sync: no address to change %s to", svcs[0].Name)
	}
	addrs := [2]netip.Addr{alt, ep.Address}
	stop, err := e.profile(fmt.Sprintf("sync-%d.pprof", r.Services), true)
	if err != nil {
		return err
	}
	for i := range 4 {
		ep.Address = addrs[i%2]
		start := time.Now()
		if err := t.Sync(state); err != nil {
			stop()
			return fmt.Errorf("in-process sync: %w", err)
		}
		r.SyncInProc = append(r.SyncInProc, time.Since(start))
	}
	stop()
	runtime.KeepAlive(t)
	return e.coldSyncInProc(r, state)
}

// coldSyncInProc deletes the table and times a Sync of state by a new Table
// in this process, which creates the table whole: the nft part of a cold
// start. The CPU time of this process splits it into Go (user) and the
// kernel's processing of the batch (system: netlink sends are processed in
// the sender's context).
func (e *env) coldSyncInProc(r *Result, state nft.State) error {
	if err := e.resetTable(); err != nil {
		return err
	}
	t, err := nft.New(nft.WithNetNSFd(e.node.NS.Fd()))
	if err != nil {
		return err
	}
	runtime.GC()
	var u0, u1 unix.Rusage
	if err := unix.Getrusage(unix.RUSAGE_SELF, &u0); err != nil {
		return err
	}
	start := time.Now()
	if err := t.Sync(state); err != nil {
		return fmt.Errorf("in-process cold sync: %w", err)
	}
	r.ColdSyncInProc = time.Since(start)
	if err := unix.Getrusage(unix.RUSAGE_SELF, &u1); err != nil {
		return err
	}
	r.ColdSyncUser = time.Duration(u1.Utime.Nano() - u0.Utime.Nano())
	r.ColdSyncSys = time.Duration(u1.Stime.Nano() - u0.Stime.Nano())
	return nil
}

// liveHeap returns the bytes of live heap objects right after a collection.
func liveHeap() uint64 {
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.HeapAlloc
}

// nftState is the table state podnetd derives from c on node self (as the
// daemon's desiredNFT does): masquerade for every node's podCIDRs and
// addresses, and the cluster's services.
func nftState(c *daemon.Cluster, self string) nft.State {
	s := nft.State{NodeName: self}
	for _, svc := range c.Services {
		s.Services = append(s.Services, *svc)
	}
	for _, n := range c.Nodes {
		s.ClusterCIDRs = append(s.ClusterCIDRs, n.PodCIDRs...)
		s.NodeIPs = append(s.NodeIPs, n.Addresses...)
		if n.Name == self {
			s.LocalIPs = slices.Clone(n.Addresses)
			s.LocalPodCIDRs = slices.Clone(n.PodCIDRs)
		}
	}
	return s
}

// profile starts a CPU profile into ProfileDir/name when a dir is set and on
// is true; the returned func stops it. Otherwise it does nothing.
func (e *env) profile(name string, on bool) (stop func(), err error) {
	if e.cfg.ProfileDir == "" || !on {
		return func() {}, nil
	}
	f, err := os.Create(filepath.Join(e.cfg.ProfileDir, name))
	if err != nil {
		return nil, err
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		f.Close()
		return nil, err
	}
	return func() { pprof.StopCPUProfile(); f.Close() }, nil
}
