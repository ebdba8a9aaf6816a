package lab

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/podnet/podnet/daemon/client"
)

// Run is the lab's main job: bring the cluster up, attach PodsPerNode pods to
// every node through libcni, check and print the connectivity matrix, tear
// everything down through CNI DEL, and verify no address was left allocated.
// It returns an error unless every check passed.
func Run(ctx context.Context, o Options) error {
	out := o.Log
	start := time.Now()
	l, err := Up(ctx, o)
	if err != nil {
		if l != nil {
			l.Down(ctx)
		}
		return fmt.Errorf("lab up: %w", err)
	}
	l.logf("▸ %d nodes up on underlay 192.0.2.0/24, one podnetd each (%s)", len(l.Nodes), time.Since(start).Round(time.Millisecond))
	for _, n := range l.Nodes {
		l.logf("    %s  %-12s podCIDR %s  bridge podnet0 %s", n.Name, n.Addr, n.PodCIDR, n.Gateway())
	}
	for _, n := range l.Nodes {
		for i := 1; i <= o.PodsPerNode; i++ {
			p, err := l.AddPod(ctx, n, fmt.Sprintf("%s-pod%d", n.Name, i))
			if err != nil {
				l.Down(ctx)
				return err
			}
			l.logf("▸ CNI ADD %-12s → eth0 %s (host %s)", p.Name, p.IP, p.Result.Interfaces[0].Name)
		}
	}
	checks, err := l.Matrix()
	if err != nil {
		l.Down(ctx)
		return err
	}
	failed := 0
	if out != nil {
		failed = PrintMatrix(out, checks)
	} else {
		for _, c := range checks {
			if !c.OK() {
				failed++
			}
		}
	}
	l.logf("▸ tearing down: CNI DEL for every pod (twice, second with the netns gone)")
	delErr := l.DelAllPods(ctx)
	leakErr := l.CheckNoLeaks(ctx)
	l.Down(ctx)
	switch {
	case failed > 0:
		return fmt.Errorf("%d of %d connectivity checks failed", failed, len(checks))
	case delErr != nil:
		return delErr
	case leakErr != nil:
		return leakErr
	}
	l.logf("▸ no address or veth left behind; lab passed in %s", time.Since(start).Round(time.Millisecond))
	return nil
}

// DelAllPods runs CNI DEL for every pod.
func (l *Lab) DelAllPods(ctx context.Context) error {
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
