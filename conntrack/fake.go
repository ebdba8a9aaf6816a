package conntrack

import (
	"slices"
	"sync"
)

// Fake is an in-memory Interface for tests of code that deletes entries. It
// holds a table of entries, empty in the zero value, that Delete and
// DeleteFunc remove from as Table's would, and it records every call. Methods
// are safe for concurrent use.
type Fake struct {
	// DeleteErr, when set, is returned by Delete and DeleteFunc, which then
	// record the call but delete nothing.
	DeleteErr error

	mu        sync.Mutex
	entries   []Entry
	calls     [][]Filter
	funcCalls int
}

// Add puts entries into the fake table.
func (f *Fake) Add(entries ...Entry) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.entries = append(f.entries, entries...)
}

// Entries returns a copy of the entries in the fake table, in the order added.
func (f *Fake) Entries() []Entry {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.entries)
}

// Delete records a copy of filters, then, like Table.Delete, rejects invalid
// filters with an error matching ErrInvalidFilter and otherwise removes the
// entries that match any filter and returns their count.
func (f *Fake) Delete(filters []Filter) (int, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls = append(f.calls, slices.Clone(filters))
	if f.DeleteErr != nil {
		return 0, f.DeleteErr
	}
	if err := validate(filters); err != nil {
		return 0, err
	}
	n := len(f.entries)
	f.entries = slices.DeleteFunc(f.entries, func(e Entry) bool { return matchAny(filters, e) })
	return n - len(f.entries), nil
}

// DeleteFunc counts the call, then, like Table.DeleteFunc, removes the
// entries match selects and returns their count; DeleteErr fails it as it
// fails Delete.
func (f *Fake) DeleteFunc(match func(Entry) bool) (int, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.funcCalls++
	if f.DeleteErr != nil {
		return 0, f.DeleteErr
	}
	n := len(f.entries)
	f.entries = slices.DeleteFunc(f.entries, match)
	return n - len(f.entries), nil
}

// FuncCalls returns the number of DeleteFunc calls, including failed ones.
func (f *Fake) FuncCalls() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.funcCalls
}

// Calls returns a copy of the filters of every Delete call, in call order,
// including calls that failed.
func (f *Fake) Calls() [][]Filter {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := make([][]Filter, len(f.calls))
	for i, c := range f.calls {
		out[i] = slices.Clone(c)
	}
	return out
}
