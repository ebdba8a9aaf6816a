package benchsvc

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"time"

	"github.com/podnet/podnet/daemon/api"
	"github.com/podnet/podnet/daemon/client"
)

// Change is one timed endpoint change. Each part is measured from the write
// of the file (rename): Detect until podnetd logged "cluster file changed"
// (poll wait, read, parse), Queue from there until the node sync started,
// Sync the node sync (status syncSeconds), Total until the new element was
// seen in the kernel.
type Change struct {
	Service                    string
	Total, Detect, Queue, Sync time.Duration
	Syncs                      uint64 // node syncs the change caused (want 1)
	Err                        string // the last sync's error, if it failed
}

// changes times cfg.Changes endpoint changes, each of one endpoint address of
// one service picked at random (seeded: every run makes the same changes).
func (e *env) changes(ctx context.Context, r *Result, svcs []ServiceSpec) error {
	n := len(svcs)
	tail, err := openLogTail(e.daemonLog(n))
	if err != nil {
		return err
	}
	defer tail.Close()
	rng := rand.New(rand.NewPCG(uint64(n), 3))
	c := client.New(e.node.Socket(), 5*time.Second)
	pid := e.node.Daemon.Process.Pid
	for j := range e.cfg.Changes {
		i := rng.IntN(n - len(probeNames))
		ep := &svcs[i].Endpoints[j%EndpointsPerService]
		cidr := e.nodes[0].PodCIDR
		if ep.Node != e.nodes[0].Name {
			cidr = e.nodes[1].PodCIDR
		}
		a, ok := FreshEndpoint(svcs[i], cidr, rng.IntN(252))
		if !ok {
			return fmt.Errorf("no fresh endpoint address for %s", svcs[i].Name)
		}
		ep.Addr = a
		data := ClusterYAML(e.nodes, svcs)
		before, err := c.Status(ctx)
		if err != nil {
			return err
		}
		if err := tail.skip(); err != nil {
			return err
		}
		if err := writeAtomic(e.lab.ClusterFile(), data); err != nil {
			return err
		}
		start := time.Now()
		ch, err := e.timeChange(ctx, tail, svcs[i], start, before, pid)
		if err != nil {
			return fmt.Errorf("change %d (%s): %w", j, svcs[i].Name, err)
		}
		r.Changes = append(r.Changes, ch)
		if ch.Err != "" {
			r.Problems = append(r.Problems, fmt.Sprintf("change %d (%s): node sync failed: %s", j, ch.Service, ch.Err))
			if _, err := waitHealthy(ctx, e.node.Socket(), time.Now().Add(e.cfg.ChangeTimeout)); err != nil {
				return err
			}
		} else if ch.Syncs != 1 {
			r.Problems = append(r.Problems, fmt.Sprintf("change %d (%s) caused %d node syncs, want 1", j, ch.Service, ch.Syncs))
		}
		// A random pause: past the sync loop's 50 ms rest, and at a random
		// phase of the poll ticker, so the poll wait is sampled evenly.
		time.Sleep(100*time.Millisecond + rand.N(200*time.Millisecond))
	}
	return nil
}

// timeChange waits until svc's new endpoints are in the kernel and podnetd
// recorded the sync, and splits the time since start.
func (e *env) timeChange(ctx context.Context, tail *logTail, svc ServiceSpec, start time.Time, before *api.Status, pid int) (Change, error) {
	ch := Change{Service: svc.Name}
	deadline := start.Add(e.cfg.ChangeTimeout)
	for {
		ok, err := e.k.backendsMatch(svc)
		if err != nil {
			return ch, err
		}
		if ok {
			ch.Total = time.Since(start)
			break
		}
		if !alive(pid) {
			return ch, fmt.Errorf("podnetd exited")
		}
		if time.Now().After(deadline) {
			return ch, fmt.Errorf("new endpoint not in the kernel after %s", e.cfg.ChangeTimeout)
		}
		time.Sleep(time.Millisecond)
	}
	st, err := waitSyncs(ctx, e.node.Socket(), before.Syncs, time.Now().Add(30*time.Second))
	if err != nil {
		return ch, err
	}
	time.Sleep(20 * time.Millisecond) // a second sync, if the change caused one, shows in Syncs
	if st2, err := client.New(e.node.Socket(), 5*time.Second).Status(ctx); err == nil {
		st = st2
	}
	ch.Syncs = st.Syncs - before.Syncs
	if st.LastError != "" {
		ch.Err = st.LastError
	}
	ch.Sync = seconds(st.SyncSeconds)
	changed, ok, err := tail.find("cluster file changed")
	if err != nil || !ok {
		return ch, fmt.Errorf("no \"cluster file changed\" in podnetd's log (%v)", err)
	}
	ch.Detect = changed.Sub(start)
	ch.Queue = st.LastSync.Add(-ch.Sync).Sub(changed)
	return ch, nil
}

// waitSyncs polls podnetd's status until it has run more than after syncs,
// failed or not.
func waitSyncs(ctx context.Context, socket string, after uint64, deadline time.Time) (*api.Status, error) {
	c := client.New(socket, 5*time.Second)
	for {
		st, err := c.Status(ctx)
		if err == nil && st.Syncs > after && !st.LastSync.IsZero() {
			return st, nil
		}
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("podnetd ran no sync after %d in time (last error: %v)", after, err)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// waitHealthy polls podnetd's status until its last sync succeeded.
func waitHealthy(ctx context.Context, socket string, deadline time.Time) (*api.Status, error) {
	c := client.New(socket, 5*time.Second)
	for {
		st, err := c.Status(ctx)
		if err == nil && st.Syncs > 0 && st.LastError == "" {
			return st, nil
		}
		if time.Now().After(deadline) {
			if err == nil {
				err = errors.New(st.LastError)
			}
			return nil, fmt.Errorf("podnetd did not recover from a failed sync: %w", err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
