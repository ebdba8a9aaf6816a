package nft

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
)

// FakeTracer is an in-memory TraceRunner for tests of code that traces: Trace
// validates the probe as Tracer does, calls send, and returns the events set for
// the probe as if the kernel had reported them. Set the exported fields before
// use. Methods are safe for concurrent use.
type FakeTracer struct {
	// Events are the events Trace returns for each probe; a probe not in the
	// map gets none.
	Events map[Probe][]TraceEvent
	// Err, when set, is returned by Trace (with any error of send).
	Err error

	mu       sync.Mutex
	probes   []Probe
	cleanups int
}

// Trace records p, calls send and returns a copy of f.Events[p]. An invalid p
// gives an error matching ErrInvalid without calling send; a send error is
// wrapped and returned with the events, as Tracer does.
func (f *FakeTracer) Trace(ctx context.Context, p Probe, send func(context.Context) error) ([]TraceEvent, error) {
	p, err := p.normalize()
	if err != nil {
		return nil, err
	}
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("nft: trace %v: %w", p, err)
	}
	f.mu.Lock()
	f.probes = append(f.probes, p)
	f.mu.Unlock()
	var sendErr error
	if err := send(ctx); err != nil {
		sendErr = fmt.Errorf("nft: trace %v: send probe: %w", p, err)
	}
	return slices.Clone(f.Events[p]), errors.Join(sendErr, f.Err)
}

// Cleanup counts the call. It never fails.
func (f *FakeTracer) Cleanup() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.cleanups++
	return nil
}

// Probes returns the valid probes Trace was called with, in call order.
func (f *FakeTracer) Probes() []Probe {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.probes)
}

// Cleanups returns how many times Cleanup was called.
func (f *FakeTracer) Cleanups() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.cleanups
}
