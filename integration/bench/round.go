package bench

import (
	"context"
	"errors"
	"fmt"
	"os"
	"slices"
	"time"

	"github.com/containernetworking/cni/libcni"
	current "github.com/containernetworking/cni/pkg/types/100"

	"github.com/podnet/podnet/integration/sandbox"
)

// Round is the outcome of adding, then deleting, Pods pods on one setup with
// Workers calls in flight at a time.
type Round struct {
	Setup    string
	Workers  int
	Pods     int
	Add, Del Phase
	// DaemonAdd and DaemonDel are podnetd's own time per call, sorted; empty
	// for setups without a CallLog.
	DaemonAdd, DaemonDel []time.Duration
	// SyncsAdd and SyncsDel count the node syncs podnetd ran during each phase.
	SyncsAdd, SyncsDel uint64
	// AddCPU and DelCPU are the CPU time plugins and daemon spent per phase;
	// the daemon's share is meaningful only with HasDaemon.
	AddCPU, DelCPU cpuTime
	HasDaemon      bool
	// Problems are the failed verifications; a round without any passed.
	Problems []error
}

// Rate is pods per second for a full ADD then DEL, counting only pods whose
// ADD and DEL both succeeded.
func (r *Round) Rate() float64 {
	total := r.Add.Wall + r.Del.Wall
	if total <= 0 {
		return 0
	}
	return float64(min(len(r.Add.Lat), len(r.Del.Lat))) / total.Seconds()
}

// runRound adds pods pods to s and deletes them again, timing both verbs, and
// verifies that every ADD succeeded with an address of its own and that the
// DELs left neither a veth in the node nor plugin state. Pod namespaces are
// created before and removed after the timed part. The error is for failures
// to set the round up; failed checks land in Problems.
func runRound(ctx context.Context, s *Setup, workers, pods int, tag string) (*Round, error) {
	r := &Round{Setup: s.Name, Workers: workers, Pods: pods, HasDaemon: s.DaemonPID != 0}
	baseline, err := vethNames(s.Node)
	if err != nil {
		return nil, err
	}
	rts := make([]*libcni.RuntimeConf, pods)
	for i := range pods {
		name := fmt.Sprintf("%s-%03d", tag, i)
		ns, err := sandbox.NewNetNS(name)
		if err != nil {
			return nil, fmt.Errorf("pod namespace: %w", err)
		}
		defer ns.Delete()
		rts[i] = &libcni.RuntimeConf{ContainerID: "bench-" + name, NetNS: ns.Path, IfName: "eth0"}
	}
	var logStart int64
	if s.CallLog != "" {
		if fi, err := os.Stat(s.CallLog); err == nil {
			logStart = fi.Size()
		}
	}

	syncs := func() uint64 {
		if s.Syncs == nil {
			return 0
		}
		n, err := s.Syncs(ctx)
		if err != nil {
			r.problem("%w", err)
		}
		return n
	}
	syncsBefore := syncs()

	results := make([]*current.Result, pods)
	r.Add, r.AddCPU = r.measure(s, func() Phase {
		return runPhase(s.Node, workers, pods, func(i int) error {
			res, err := s.CNI.AddNetworkList(ctx, s.List, rts[i])
			if err != nil {
				return err
			}
			results[i], err = current.NewResultFromResult(res)
			return err
		})
	})
	syncsMid := syncs()
	r.SyncsAdd = syncsMid - syncsBefore
	r.check("ADD", r.Add)
	r.checkAddresses(results)

	r.Del, r.DelCPU = r.measure(s, func() Phase {
		return runPhase(s.Node, workers, pods, func(i int) error {
			return s.CNI.DelNetworkList(ctx, s.List, rts[i])
		})
	})
	r.SyncsDel = syncs() - syncsMid
	r.check("DEL", r.Del)
	r.checkLeftovers(ctx, s, baseline)

	if s.CallLog != "" {
		times, err := daemonCallTimes(s.CallLog, logStart)
		if err != nil {
			return nil, err
		}
		r.DaemonAdd, r.DaemonDel = times["ADD"], times["DEL"]
	}
	return r, nil
}

// measure runs phase and returns it with the CPU time plugins and daemon
// spent meanwhile.
func (r *Round) measure(s *Setup, phase func() Phase) (Phase, cpuTime) {
	before, err := readCPU(s.DaemonPID)
	if err != nil {
		r.problem("cpu time: %w", err)
	}
	p := phase()
	after, err := readCPU(s.DaemonPID)
	if err != nil {
		r.problem("cpu time: %w", err)
	}
	return p, after.sub(before)
}

func (r *Round) problem(format string, a ...any) {
	r.Problems = append(r.Problems, fmt.Errorf(format, a...))
}

func (r *Round) check(verb string, p Phase) {
	if len(p.Errors) > 0 {
		r.problem("%d of %d %ss failed, first: %w", len(p.Errors), r.Pods, verb, p.Errors[0])
	}
}

// checkAddresses requires an address on every successful result and no
// address handed to two pods.
func (r *Round) checkAddresses(results []*current.Result) {
	owner := map[string]int{}
	dups := 0
	for i, res := range results {
		if res == nil {
			continue // a failed ADD, already counted
		}
		if len(res.IPs) == 0 {
			r.problem("ADD of pod %d returned no address", i)
		}
		for _, ip := range res.IPs {
			a := ip.Address.IP.String()
			if j, ok := owner[a]; ok {
				dups++
				if dups == 1 {
					r.problem("address %s given to pods %d and %d", a, j, i)
				}
				continue
			}
			owner[a] = i
		}
	}
	if dups > 1 {
		r.problem("%d duplicate addresses in all", dups)
	}
}

// checkLeftovers requires the node's veths to be back to baseline and the
// setup's own state to be empty.
func (r *Round) checkLeftovers(ctx context.Context, s *Setup, baseline map[string]bool) {
	// podnet's DEL takes a pod off the bridge at once and deletes its veth in
	// the background (one batched deletion per burst): wait for that, bounded.
	var left []string
	for deadline := time.Now().Add(3 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		now, err := vethNames(s.Node)
		if err != nil {
			r.problem("list veths after DEL: %w", err)
		}
		left = left[:0]
		for name := range now {
			if !baseline[name] {
				left = append(left, name)
			}
		}
		if len(left) == 0 || time.Now().After(deadline) {
			break
		}
	}
	if len(left) > 0 {
		slices.Sort(left)
		r.problem("%d veths left in the node after DEL (e.g. %s)", len(left), left[0])
	}
	if s.Leftovers != nil {
		if err := s.Leftovers(ctx); err != nil {
			r.problem("after DEL: %w", err)
		}
	}
}

// warmUp adds and deletes a few pods serially, untimed, so that both setups
// start the timed rounds with warm page cache and a created bridge.
func warmUp(ctx context.Context, s *Setup, pods int) error {
	if pods <= 0 {
		return nil
	}
	r, err := runRound(ctx, s, 1, pods, s.Tag+"-warm")
	if err != nil {
		return err
	}
	if len(r.Problems) > 0 {
		return fmt.Errorf("%s warm-up: %w", s.Name, errors.Join(r.Problems...))
	}
	return nil
}
