package benchkp

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"runtime"
	"sync/atomic"
	"time"

	"github.com/podnet/podnet/integration/benchsvc"
)

// measure fills the API server up to n services, then runs kube-proxy and
// podnetd in turn against it: each cold start, the same changes, and the
// changed slices put back afterwards. The Result is returned with what was
// measured also when err is not nil.
func (e *env) measure(ctx context.Context, n int) (*Result, error) {
	r := &Result{Services: n}
	all := genServices(n)
	fresh := all[len(e.svcs):]
	fmt.Fprintf(e.out, "▸ %d services: creating %d Services and EndpointSlices with %d clients ...\n", n, len(fresh), e.cfg.Workers)
	var done atomic.Int64
	stop := e.progress(&done, len(fresh))
	took, err := createServices(ctx, e.client, fresh, e.cfg.Workers, &done)
	stop()
	if err != nil {
		return nil, err
	}
	e.svcs = all
	r.Created, r.Create = len(fresh), took
	fmt.Fprintf(e.out, "    the API server holds them after %s (%.0f objects/s)\n", ms(took), float64(2*len(fresh))/took.Seconds())
	plan, err := planChanges(all, e.cfg.Changes, e.cfg.Seed)
	if err != nil {
		return nil, err
	}
	settle(ctx, time.Minute)
	if r.List, err = listTime(ctx, e.client); err != nil {
		return nil, err
	}
	for _, kind := range []string{"kube-proxy", "podnetd"} {
		run, err := e.runProxy(ctx, kind, all, plan)
		if run != nil {
			r.Runs = append(r.Runs, run)
		}
		if err != nil {
			return r, fmt.Errorf("%s: %w", kind, err)
		}
	}
	return r, nil
}

// progress prints, every 30 s until stop is called, how many of total
// services done counts and the rate since the last line: the API server's
// rate falls as it fills.
func (e *env) progress(done *atomic.Int64, total int) (stop func()) {
	quit := make(chan struct{})
	finished := make(chan struct{})
	go func() {
		defer close(finished)
		last, at := int64(0), time.Now()
		for {
			select {
			case <-quit:
				return
			case <-time.After(30 * time.Second):
			}
			n := done.Load()
			fmt.Fprintf(e.out, "      %d/%d (%.0f objects/s over the last %s)\n", n, total,
				float64(2*(n-last))/time.Since(at).Seconds(), time.Since(at).Round(time.Second))
			last, at = n, time.Now()
		}
	}()
	return func() { close(quit); <-finished }
}

// newProxy makes the namespace and the proxy of one run.
func (e *env) newProxy(kind string, n int) (proxy, error) {
	dir := filepath.Join(e.cfg.WorkDir, fmt.Sprintf("%s-%d", kind, n))
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	switch kind {
	case "kube-proxy":
		ns, err := e.proxyNS(fmt.Sprintf("kp-%d", n), kubeProxyNode.Addr)
		if err != nil {
			return nil, err
		}
		return newKubeProxy(e.cfg.KubeProxy, e.kubeProxyKubeconfig, dir, ns)
	case "podnetd":
		ns, err := e.proxyNS(fmt.Sprintf("pn-%d", n), podnetdNode.Addr)
		if err != nil {
			return nil, err
		}
		return newPodnetd(e.podnetd, e.podnetdKubeconfig, dir, ns)
	}
	return nil, fmt.Errorf("unknown proxy %q", kind)
}

// runProxy measures one proxy: cold start, the planned changes, memory;
// then stops it and puts the changed slices back.
func (e *env) runProxy(ctx context.Context, kind string, svcs []benchsvc.ServiceSpec, plan []change) (run *ProxyRun, err error) {
	n := len(svcs)
	p, err := e.newProxy(kind, n)
	if err != nil {
		return nil, err
	}
	run = &ProxyRun{Proxy: p.Name()}
	stopped := false
	defer func() {
		if !stopped {
			p.Stop()
		}
		for _, i := range touched(plan) {
			if rerr := updateSlice(ctx, e.client, svcs[i]); rerr != nil && err == nil {
				err = fmt.Errorf("put the changed slices back: %w", rerr)
			}
		}
	}()
	settle(ctx, time.Minute)
	runtime.GC()
	fmt.Fprintf(e.out, "    %s: cold start ...\n", kind)
	if err := e.cold(ctx, p, run, svcs[n-1]); err != nil {
		return run, err
	}
	if run.Programmed, err = p.Count(); err != nil {
		return run, err
	}
	if run.Programmed < n {
		run.Problems = append(run.Problems, fmt.Sprintf("%d service ports in the table after the cold start, want at least %d", run.Programmed, n))
	}
	fmt.Fprintf(e.out, "    %s: cold start %s (caches synced %s, first sync %s); %d changes ...\n",
		kind, ms(run.Cold), ms(run.CachesSynced), ms(run.FirstSync), len(plan))
	for j, c := range plan {
		time.Sleep(e.cfg.Pause + rand.N(300*time.Millisecond))
		ch, err := e.change(ctx, p, c)
		if err != nil {
			return run, fmt.Errorf("change %d (%s): %w", j, c.After.Name, err)
		}
		run.Changes = append(run.Changes, ch)
	}
	if run.HWM, err = procStatus(p.PID(), "VmHWM"); err != nil {
		return run, err
	}
	stopped = true
	if run.MaxRSS, err = p.Stop(); err != nil {
		return run, err
	}
	return run, nil
}

// cold starts p and times it until the kernel forwards last, polling every
// 2 ms; then reads the split from p's log and status.
func (e *env) cold(ctx context.Context, p proxy, run *ProxyRun, last benchsvc.ServiceSpec) error {
	start := time.Now()
	if err := p.Start(); err != nil {
		return err
	}
	var err error
	if run.BenchHWM, err = procStatus(os.Getpid(), "VmHWM"); err != nil {
		return err
	}
	deadline := start.Add(e.cfg.ColdTimeout)
	for {
		ok, err := p.Serves(last)
		if err != nil {
			return err
		}
		if ok {
			run.Cold = time.Since(start)
			break
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("cold start: %s not served after %s", last.Name, e.cfg.ColdTimeout)
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		time.Sleep(2 * time.Millisecond)
	}
	if run.HWMCold, err = procStatus(p.PID(), "VmHWM"); err != nil {
		return err
	}
	if synced, err := p.CachesSynced(); err == nil {
		run.CachesSynced = synced.Sub(start)
	} else {
		run.Problems = append(run.Problems, err.Error())
	}
	// The sync ends after its changes are visible (kube-proxy reaps nft,
	// podnetd finishes the node); CPU is read once it has.
	if s, err := p.SyncAfter(ctx, start); err == nil && !s.Start.After(start.Add(run.Cold)) {
		run.SyncStart, run.FirstSync = s.Start.Sub(start), s.Took
	}
	if run.ColdCPU, err = procCPU(p.PID()); err != nil {
		return err
	}
	return nil
}

// change applies one planned change through the API and times it until
// the kernel forwards to the new endpoints, polling every millisecond.
func (e *env) change(ctx context.Context, p proxy, c change) (Change, error) {
	ch := Change{Service: c.After.Name}
	start := time.Now()
	if err := updateSlice(ctx, e.client, c.After); err != nil {
		return ch, err
	}
	ch.API = time.Since(start)
	deadline := start.Add(e.cfg.ChangeTimeout)
	for {
		ok, err := p.Serves(c.After)
		if err != nil {
			return ch, err
		}
		if ok {
			ch.Total = time.Since(start)
			break
		}
		if time.Now().After(deadline) {
			return ch, fmt.Errorf("new endpoints not in the kernel after %s", e.cfg.ChangeTimeout)
		}
		time.Sleep(time.Millisecond)
	}
	if s, err := p.SyncAfter(ctx, start); err == nil {
		ch.SyncStart, ch.Sync = s.Start.Sub(start), s.Took
	}
	return ch, nil
}
