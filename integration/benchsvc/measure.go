package benchsvc

import (
	"bytes"
	"context"
	"fmt"
	"net/netip"
	"os"
	"runtime"
	"strings"
	"syscall"
	"time"

	"github.com/podnet/podnet/daemon"
)

// Result is the measurement of one service count.
type Result struct {
	Services  int
	FileBytes int
	// Elements counts the elements of each set of the table after the cold
	// start, by set name.
	Elements map[string]int
	// ReadCompare is what one poll of an unchanged file costs podnetd:
	// os.ReadFile and a byte comparison, timed in the benchmark process.
	ReadCompare time.Duration
	// Parse is daemon.ParseCluster of the file, timed in the benchmark process
	// (the fastest of up to three runs); ParseAlloc is what one parse
	// allocates, in bytes.
	Parse      time.Duration
	ParseAlloc uint64
	// ClusterHeap and TableHeap are the live heap, in bytes, that the parsed
	// *daemon.Cluster and an nft.Table that applied it hold, measured in the
	// benchmark process.
	ClusterHeap, TableHeap int64

	Cold          time.Duration // podnetd exec → probe-all's elements seen in the kernel
	ColdParsed    time.Duration // exec → "cluster file loaded" logged: process start, read, parse
	ColdSyncStart time.Duration // exec → the first node sync started
	ColdSync      time.Duration // the first node sync (status syncSeconds); 0 if not seen
	HWMCold       int64         // VmHWM in kB right after the cold start
	HWM, RSS      int64         // VmHWM and VmRSS in kB after the changes
	// IdleCPU is podnetd's CPU time per wall second while nothing changes:
	// the cost of polling the file.
	IdleCPU float64

	Changes []Change
	Connect map[string]Sample // connect() latency by target name
	// SyncInProc times nft.Table.Sync in the benchmark process with the
	// daemon's state and one endpoint changed (each sync one change away from
	// the table), after one untimed sync.
	SyncInProc Sample
	// ColdSyncInProc times, in the benchmark process, the Sync that creates
	// the table with every service; ColdSyncUser and ColdSyncSys are this
	// process's user and system CPU time during it.
	ColdSyncInProc, ColdSyncUser, ColdSyncSys time.Duration
	Problems                                  []string
}

// Connect target names: VIP of a probe service against its endpoint pods
// connected directly, in turn.
const (
	tVIPAll       = "VIP, 2 local + 2 remote endpoints"
	tDirectAll    = "direct, the same 4 pods"
	tVIPLocal     = "VIP, 4 endpoints on this node"
	tDirectLocal  = "direct, the same 4 pods (same node)"
	tVIPRemote    = "VIP, 4 endpoints on the peer"
	tDirectRemote = "direct, the same 4 pods (peer)"
)

// connectPairs are the VIP and direct target names compared in the report.
var connectPairs = [][2]string{{tVIPAll, tDirectAll}, {tVIPLocal, tDirectLocal}, {tVIPRemote, tDirectRemote}}

// measure runs every measurement for n services with a fresh podnetd.
func (e *env) measure(ctx context.Context, n int) (*Result, error) {
	r := &Result{Services: n}
	e.lab.StopDaemon(e.node, syscall.SIGTERM)
	if err := e.resetTable(); err != nil {
		return nil, fmt.Errorf("reset table: %w", err)
	}
	svcs := e.services(n)
	data := ClusterYAML(e.nodes, svcs)
	r.FileBytes = len(data)
	if err := writeAtomic(e.lab.ClusterFile(), data); err != nil {
		return nil, err
	}
	if err := e.timeParse(r, data); err != nil {
		return nil, err
	}
	if err := e.cold(ctx, r, svcs[probeAll(n)]); err != nil {
		return nil, err
	}
	pid := e.node.Daemon.Process.Pid
	defer e.lab.StopDaemon(e.node, syscall.SIGTERM)
	var err error
	if r.Elements, err = countElements(e.node.NS); err != nil {
		return nil, err
	}
	if got := r.Elements[backendsSet]; got != EndpointsPerService*n {
		r.Problems = append(r.Problems, fmt.Sprintf("%s holds %d elements, want %d", backendsSet, got, EndpointsPerService*n))
	}
	if got := r.Elements["service-ips-v4"]; got != n {
		r.Problems = append(r.Problems, fmt.Sprintf("service-ips-v4 holds %d elements, want %d", got, n))
	}
	if r.IdleCPU, err = idleCPU(pid, 3*time.Second); err != nil {
		return nil, err
	}
	fmt.Fprintf(e.out, "    cold start %s; connect() latency, %d per target ...\n", r.Cold.Round(time.Millisecond), e.cfg.Connects)
	if err := e.connects(r, svcs, n); err != nil {
		r.Problems = append(r.Problems, err.Error())
	}
	fmt.Fprintf(e.out, "    %d endpoint changes ...\n", e.cfg.Changes)
	if err := e.changes(ctx, r, svcs); err != nil {
		return nil, err
	}
	if r.HWM, err = procStatus(pid, "VmHWM"); err != nil {
		return nil, err
	}
	if r.RSS, err = procStatus(pid, "VmRSS"); err != nil {
		return nil, err
	}
	e.lab.StopDaemon(e.node, syscall.SIGTERM)
	fmt.Fprintf(e.out, "    nft.Table.Sync in this process ...\n")
	if err := e.syncInProc(r, svcs); err != nil {
		return nil, err
	}
	return r, nil
}

// timeParse times what podnetd does with the file, in this process: one poll
// of the unchanged file, and the parse of a changed one.
func (e *env) timeParse(r *Result, data []byte) error {
	var reads Sample
	for range 5 {
		start := time.Now()
		b, err := os.ReadFile(e.lab.ClusterFile())
		if err != nil {
			return err
		}
		if !bytes.Equal(b, data) {
			return fmt.Errorf("%s: not what was written", e.lab.ClusterFile())
		}
		reads = append(reads, time.Since(start))
	}
	r.ReadCompare = reads.Percentile(.5)
	runtime.GC()
	budget := time.Now().Add(10 * time.Second)
	for i := 0; i < 3 && (i == 0 || time.Now().Before(budget)); i++ {
		stop, err := e.profile(fmt.Sprintf("parse-%d.pprof", r.Services), i == 0)
		if err != nil {
			return err
		}
		var m0, m1 runtime.MemStats
		runtime.ReadMemStats(&m0)
		start := time.Now()
		_, err = daemon.ParseCluster(data)
		took := time.Since(start)
		runtime.ReadMemStats(&m1)
		stop()
		r.ParseAlloc = m1.TotalAlloc - m0.TotalAlloc
		if err != nil {
			return fmt.Errorf("parse the generated file: %w", err)
		}
		if r.Parse == 0 || took < r.Parse {
			r.Parse = took
		}
		runtime.GC()
	}
	return nil
}

// cold starts podnetd with the file in place and an empty table, and times it
// until the last service's backends are in the kernel.
func (e *env) cold(ctx context.Context, r *Result, last ServiceSpec) error {
	logPath := e.daemonLog(r.Services)
	start := time.Now()
	if err := startDaemon(e.lab, e.node, e.cfg, logPath); err != nil {
		return err
	}
	pid := e.node.Daemon.Process.Pid
	deadline := start.Add(e.cfg.ColdTimeout)
	for {
		ok, err := e.k.backendsMatch(last)
		if err != nil {
			return err
		}
		if ok {
			r.Cold = time.Since(start)
			break
		}
		if !alive(pid) {
			return fmt.Errorf("podnetd exited during the cold start; see %s", logPath)
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("cold start: %s not in the kernel after %s; see %s", last.Name, e.cfg.ColdTimeout, logPath)
		}
		time.Sleep(2 * time.Millisecond)
	}
	var err error
	if r.HWMCold, err = procStatus(pid, "VmHWM"); err != nil {
		return err
	}
	st, err := waitSyncs(ctx, e.node.Socket(), 0, time.Now().Add(30*time.Second))
	if err != nil {
		return err
	}
	if st.Syncs == 1 { // else a later sync overwrote the first one's duration
		r.ColdSync = seconds(st.SyncSeconds)
		r.ColdSyncStart = st.LastSync.Add(-r.ColdSync).Sub(start)
	}
	if st.LastError != "" {
		r.Problems = append(r.Problems, fmt.Sprintf("the first node sync failed (podnetd retries it): %s", st.LastError))
		if _, err := waitHealthy(ctx, e.node.Socket(), time.Now().Add(e.cfg.ColdTimeout)); err != nil {
			return err
		}
	}
	tail, err := openLogTail(logPath)
	if err != nil {
		return err
	}
	defer tail.Close()
	at, ok, err := tail.find("cluster file loaded")
	if err != nil || !ok {
		return fmt.Errorf("no \"cluster file loaded\" in %s (%v)", logPath, err)
	}
	r.ColdParsed = at.Sub(start)
	return nil
}

// connects times connect() to each probe VIP and to its pods directly.
func (e *env) connects(r *Result, svcs []ServiceSpec, n int) error {
	vip := func(i int) []netip.AddrPort { return []netip.AddrPort{netip.AddrPortFrom(svcs[i].VIP, ServicePort)} }
	targets := []Target{
		{Name: tVIPAll, Addrs: vip(probeAll(n))},
		{Name: tDirectAll, Addrs: addrPorts(TargetPort, e.local[0], e.remote[0], e.local[1], e.remote[1])},
		{Name: tVIPLocal, Addrs: vip(probeLocal(n))},
		{Name: tDirectLocal, Addrs: addrPorts(TargetPort, e.local...)},
		{Name: tVIPRemote, Addrs: vip(probeRemote(n))},
		{Name: tDirectRemote, Addrs: addrPorts(TargetPort, e.remote...)},
	}
	var err error
	r.Connect, err = connectRound(e.client, targets, 50, e.cfg.Connects, time.Now().Add(5*time.Minute))
	return err
}

// idleCPU is pid's CPU time per wall second over a window of d.
func idleCPU(pid int, d time.Duration) (float64, error) {
	c0, err := procCPU(pid)
	if err != nil {
		return 0, err
	}
	start := time.Now()
	time.Sleep(d)
	c1, err := procCPU(pid)
	if err != nil {
		return 0, err
	}
	return (c1 - c0).Seconds() / time.Since(start).Seconds(), nil
}

// alive reports whether pid runs (a zombie does not).
func alive(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	_, rest, _ := strings.Cut(string(b), ") ")
	return !strings.HasPrefix(rest, "Z") && !strings.HasPrefix(rest, "X")
}

func seconds(s float64) time.Duration { return time.Duration(s * float64(time.Second)) }
