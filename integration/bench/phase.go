package bench

import (
	"errors"
	"fmt"
	"math"
	"slices"
	"sync"
	"time"

	"github.com/podnet/podnet/integration/sandbox"
)

// meanOf is the mean of d[from:to]; 0 when empty.
func meanOf(d []time.Duration, from, to int) time.Duration {
	from, to = max(0, from), min(len(d), to)
	if to <= from {
		return 0
	}
	var sum time.Duration
	for _, x := range d[from:to] {
		sum += x
	}
	return sum / time.Duration(to-from)
}

// errNotRun marks a job no worker picked up (every worker failed to enter the
// namespace).
var errNotRun = errors.New("not run: no worker could enter the node namespace")

// Phase is the timing of one verb (ADD or DEL) over all pods of a round.
type Phase struct {
	Wall   time.Duration   // from releasing the workers to the last call returning
	Lat    []time.Duration // per successful call, sorted ascending
	ByPod  []time.Duration // per call in pod order (the call order when serial)
	Errors []error         // failed calls, in pod order
}

// Rate is completed calls per second of wall time; 0 for an empty phase.
func (p Phase) Rate() float64 {
	if p.Wall <= 0 {
		return 0
	}
	return float64(len(p.Lat)) / p.Wall.Seconds()
}

// Percentile returns the nearest-rank q-quantile (0 < q <= 1) of the call
// latencies; 0 for an empty phase.
func (p Phase) Percentile(q float64) time.Duration { return percentile(p.Lat, q) }

// percentile returns the nearest-rank q-quantile of sorted; 0 when empty.
func percentile(sorted []time.Duration, q float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	i := int(math.Ceil(q*float64(len(sorted)))) - 1
	return sorted[max(0, min(i, len(sorted)-1))]
}

// runPhase calls fn(i) for i in [0, n) from workers goroutines, each on its own
// OS thread switched into ns, so that every plugin process libcni starts from
// it is born in ns. The clock starts only once every worker sits in ns.
func runPhase(ns *sandbox.NetNS, workers, n int, fn func(i int) error) Phase {
	jobs := make(chan int, n)
	for i := range n {
		jobs <- i
	}
	close(jobs)
	lat := make([]time.Duration, n)
	errs := make([]error, n)
	for i := range errs {
		errs[i] = errNotRun
	}
	var ready, done sync.WaitGroup
	var mu sync.Mutex
	var workerErrs []error
	start := make(chan struct{})
	for range workers {
		ready.Add(1)
		done.Add(1)
		go func() {
			defer done.Done()
			entered := false
			err := ns.Do(func() error {
				entered = true
				ready.Done()
				<-start
				for i := range jobs {
					t := time.Now()
					errs[i] = fn(i)
					lat[i] = time.Since(t)
				}
				return nil
			})
			if !entered {
				ready.Done() // ns.Do failed before fn: never block the start
			}
			if err != nil { // its jobs go to the other workers, or stay errNotRun
				mu.Lock()
				workerErrs = append(workerErrs, fmt.Errorf("worker: %w", err))
				mu.Unlock()
			}
		}()
	}
	ready.Wait()
	t0 := time.Now()
	close(start)
	done.Wait()
	p := Phase{Wall: time.Since(t0), Errors: workerErrs, ByPod: lat}
	for i := range n {
		if errs[i] != nil {
			p.Errors = append(p.Errors, fmt.Errorf("pod %d: %w", i, errs[i]))
			continue
		}
		p.Lat = append(p.Lat, lat[i])
	}
	slices.Sort(p.Lat)
	return p
}
