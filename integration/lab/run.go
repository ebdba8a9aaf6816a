package lab

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/podnet/podnet/daemon/client"
)

// Report is what Run checked.
type Report struct {
	// Sources are the sources of cluster state the nodes' podnetds
	// reported, in node order ("file:<path>", "kube:<server>").
	Sources  []string
	Checks   []Check        // the connectivity matrix
	Services []ServiceCheck // pod → service through the ClusterIP
	Traces   []TraceCheck   // podnetctl trace of each journey
}

// Run is the lab's main job: bring the cluster up, attach PodsPerNode pods to
// every node through libcni, check and print the connectivity matrix, add the
// web service (WebService) to the lab's source (the cluster file, or the API
// server with SourceKube) once its endpoint pods exist,
// check and print every pod's connections to it, tear everything down through
// CNI DEL, and verify no address was left allocated. It returns what it
// checked, and an error unless every check passed.
func Run(ctx context.Context, o Options) (Report, error) {
	var rep Report
	start := time.Now()
	l, err := Up(ctx, o)
	if err != nil {
		if l != nil {
			l.Down(ctx)
		}
		return rep, fmt.Errorf("lab up: %w", err)
	}
	l.logf("▸ %d nodes up on underlay 192.0.2.0/24, one podnetd each %s (%s)", len(l.Nodes), l.SourceDescription(), time.Since(start).Round(time.Millisecond))
	for _, n := range l.Nodes {
		l.logf("    %s  %-12s podCIDR %s  bridge podnet0 %s", n.Name, n.Addr, n.PodCIDR, n.Gateway())
		rep.Sources = append(rep.Sources, n.Source)
	}
	for _, n := range l.Nodes {
		for i := 1; i <= o.PodsPerNode; i++ {
			p, err := l.AddPod(ctx, n, fmt.Sprintf("%s-pod%d", n.Name, i))
			if err != nil {
				l.Down(ctx)
				return rep, err
			}
			l.logf("▸ CNI ADD %-12s → eth0 %s (host %s)", p.Name, p.IP, p.Result.Interfaces[0].Name)
		}
	}
	rep.Checks, err = l.Matrix()
	if err != nil {
		l.Down(ctx)
		return rep, err
	}
	failed := countFailed(rep.Checks, Check.OK)
	if o.Log != nil {
		PrintMatrix(o.Log, rep.Checks)
	}
	rep.Services, err = l.serviceJourney(ctx)
	if err != nil {
		l.Down(ctx)
		return rep, err
	}
	svcFailed := countFailed(rep.Services, ServiceCheck.OK)
	if o.Log != nil && len(rep.Services) > 0 {
		PrintServiceChecks(o.Log, rep.Services)
	}
	rep.Traces, err = l.traceJourneys(ctx)
	if err != nil {
		l.Down(ctx)
		return rep, err
	}
	traceFailed := countFailed(rep.Traces, TraceCheck.OK)
	if o.Log != nil && len(rep.Traces) > 0 {
		PrintTraces(o.Log, rep.Traces)
	}
	l.logf("▸ tearing down: CNI DEL for every pod (twice, second with the netns gone)")
	delErr := l.DelAllPods(ctx)
	leakErr := l.CheckNoLeaks(ctx)
	l.Down(ctx)
	switch {
	case failed > 0 || svcFailed > 0 || traceFailed > 0:
		return rep, fmt.Errorf("%d of %d connectivity checks, %d of %d service checks and %d of %d traces failed",
			failed, len(rep.Checks), svcFailed, len(rep.Services), traceFailed, len(rep.Traces))
	case delErr != nil:
		return rep, delErr
	case leakErr != nil:
		return rep, leakErr
	}
	l.logf("▸ no address or veth left behind; lab passed in %s", time.Since(start).Round(time.Millisecond))
	return rep, nil
}

// serviceJourney starts the web service's servers in its endpoint pods, puts
// the service in the lab's source, waits until every node programmed it and
// checks every pod's connections to it. With pods on fewer than two nodes it
// says why it skips and checks nothing.
func (l *Lab) serviceJourney(ctx context.Context) ([]ServiceCheck, error) {
	svc, err := l.WebService()
	if err != nil {
		l.logf("▸ skipping the service journey: %v", err)
		return nil, nil
	}
	for _, p := range svc.Endpoints {
		if err := l.ServeService(p, svc.TargetPort); err != nil {
			return nil, err
		}
	}
	start := time.Now()
	if err := l.ApplyServices(ctx, svc); err != nil {
		return nil, err
	}
	l.logf("\n▸ service %s (ClusterIP %s, TCP %d → %d, endpoints %s) %s; programmed on every node in %s",
		svc.Name, svc.VIP, svc.Port, svc.TargetPort, strings.Join(svc.EndpointNames(), ", "), l.PublishedText(svc), time.Since(start).Round(time.Millisecond))
	return l.CheckServices(), nil
}

// traceJourneys adds the service without endpoints next to web, then traces
// each journey from its source pod's node (the web servers still serve).
func (l *Lab) traceJourneys(ctx context.Context) ([]TraceCheck, error) {
	if len(l.Services) == 0 {
		return nil, nil
	}
	web := l.Services[0]
	if err := l.ApplyServices(ctx, web, EmptyService()); err != nil {
		return nil, err
	}
	checks, err := l.traceChecks(web)
	if err != nil {
		l.logf("▸ skipping the traces: %v", err)
		return nil, nil
	}
	return l.Traces(ctx, checks), nil
}

func countFailed[T any](checks []T, ok func(T) bool) int {
	n := 0
	for _, c := range checks {
		if !ok(c) {
			n++
		}
	}
	return n
}

// DelAllPods stops the service servers and runs CNI DEL for every pod.
func (l *Lab) DelAllPods(ctx context.Context) error {
	l.stopServers()
	var errs []error
	for _, p := range l.Pods {
		errs = append(errs, l.DelPod(ctx, p))
	}
	l.Pods = nil
	return errors.Join(errs...)
}

// CheckNoLeaks asks every daemon for its allocation count and lists each node's
// links: after all pods are gone, no address and no pod veth may remain.
func (l *Lab) CheckNoLeaks(ctx context.Context) error {
	var errs []error
	for _, n := range l.Nodes {
		st, err := client.New(n.Socket(), 5*time.Second).Status(ctx)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: status: %w", n.Name, err))
		} else if st.Allocations != 0 {
			errs = append(errs, fmt.Errorf("%s: %d addresses still allocated", n.Name, st.Allocations))
		}
		links, err := n.WaitNoPodLinks()
		if err != nil {
			errs = append(errs, err)
		} else if len(links) > 0 {
			errs = append(errs, fmt.Errorf("%s: pod veths left: %v", n.Name, links))
		}
	}
	return errors.Join(errs...)
}
