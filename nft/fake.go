package nft

import (
	"maps"
	"slices"
	"sync"
)

// Fake is an in-memory Interface for tests of code that uses the table. The zero
// value is ready: it has no table. Methods are safe for concurrent use.
type Fake struct {
	// SyncErr, when set, is returned by Sync, which then records nothing, as
	// a failed kernel batch changes nothing.
	SyncErr error

	mu       sync.Mutex
	state    *State // nil: no table
	syncs    int
	cleanups int
}

// Sync records a copy of s as the table's content and counts the call. Like
// Table.Sync it skips invalid values and returns a *SkippedError listing them.
func (f *Fake) Sync(s State) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.SyncErr != nil {
		return f.SyncErr
	}
	_, skipped := normalize(s)
	c := s.Clone()
	f.state = &c
	f.syncs++
	return skipped
}

// Cleanup removes the table and counts the call. It never fails.
func (f *Fake) Cleanup() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.state = nil
	f.cleanups++
	return nil
}

// LastState returns a copy of the State of the last successful Sync, and false if
// there is no table (never synced, or cleaned up since).
func (f *Fake) LastState() (State, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.state == nil {
		return State{}, false
	}
	return f.state.Clone(), true
}

// Syncs returns how many Syncs succeeded.
func (f *Fake) Syncs() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.syncs
}

// Cleanups returns how many times Cleanup was called.
func (f *Fake) Cleanups() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.cleanups
}

// Dump returns what `nft list table inet podnet` would print for the real table
// (Render of the last State), or "" if there is no table.
func (f *Fake) Dump() string {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.state == nil {
		return ""
	}
	return Render(*f.state)
}

// List returns the Listing of the last synced State: the text of Render, the
// layout's rules with handle 0, and the number of elements of each set. It
// fails with ErrNoTable before the first Sync and after Cleanup.
func (f *Fake) List() (*Listing, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.state == nil {
		return nil, ErrNoTable
	}
	d, _ := normalize(*f.state)
	l := &Listing{Text: d.render()}
	for _, spec := range setSpecs {
		n := len(d.addrs[spec.name])
		switch {
		case spec.svc:
			n = len(d.svc.elems[spec.name])
		case spec.hostPort:
			n = len(d.hostPorts[spec.name])
		case spec.interval:
			n = len(d.prefixes[spec.name])
		}
		l.Sets = append(l.Sets, ListedSet{Name: spec.name, Elements: n})
	}
	for _, def := range chainDefs {
		for _, r := range def.rules() {
			l.Rules = append(l.Rules, ListedRule{Chain: def.chain.Name, Text: r.text})
		}
	}
	for _, name := range slices.Sorted(maps.Keys(d.svc.chains)) {
		for _, r := range countChainRules(d.svc.chains[name]) {
			l.Rules = append(l.Rules, ListedRule{Chain: name, Text: r.text})
		}
	}
	return l, nil
}
