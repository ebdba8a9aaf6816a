package ipam

import (
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"sync"
	"time"
)

// Allocator hands out addresses from a set of ranges and persists them in a
// state directory. It is safe for concurrent use; concurrent Allocate calls
// never return the same address.
type Allocator struct {
	mu      sync.Mutex
	st      *store // nil once closed
	ranges  []netip.Prefix
	used    map[netip.Prefix]int        // usable addresses allocated per range
	cursors map[netip.Prefix]netip.Addr // last address reserved per range
	byAddr  map[netip.Addr]Allocation
	byKey   map[attachment][]netip.Addr
}

// New opens the state directory dir, creating it with mode 0700 if missing,
// and loads all allocations recorded there. It takes an exclusive lock on
// dir/.lock, held until Close; if another Allocator holds it, New fails with
// an error wrapping ErrLocked. Leftover temporary files from a crash are
// removed. An address file that cannot be parsed makes New fail with an
// error wrapping ErrCorrupt that names the file. Invalid ranges yield an
// error wrapping ErrInvalidRange. ranges may be empty, for a node whose
// podCIDR is not known yet; Allocate then fails with ErrNoRange until
// SetRanges.
func New(dir string, ranges []netip.Prefix) (*Allocator, error) {
	if err := validateRanges(ranges); err != nil {
		return nil, fmt.Errorf("ipam: %w", err)
	}
	st, err := openStore(dir)
	if err != nil {
		return nil, err
	}
	allocs, err := st.load()
	if err != nil {
		st.close()
		return nil, err
	}
	a := &Allocator{
		st:      st,
		cursors: st.loadCursors(),
		byAddr:  make(map[netip.Addr]Allocation, len(allocs)),
		byKey:   make(map[attachment][]netip.Addr, len(allocs)),
	}
	for _, al := range allocs {
		a.index(al)
	}
	a.setRanges(ranges)
	return a, nil
}

// Close releases the state directory lock. Allocations stay on disk for
// the next New. After Close, methods that change state fail with ErrClosed;
// Close itself is idempotent.
func (a *Allocator) Close() error {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.st == nil {
		return nil
	}
	a.st.saveCursors(a.cursors)
	err := a.st.close()
	a.st = nil
	if err != nil {
		return fmt.Errorf("ipam: close: %w", err)
	}
	return nil
}

// SetRanges replaces the ranges, for example when the node's podCIDR
// changes. Existing allocations, even outside the new ranges, are kept until
// released; new allocations come only from the new ranges. Invalid ranges
// yield an error wrapping ErrInvalidRange and leave the ranges unchanged.
func (a *Allocator) SetRanges(ranges []netip.Prefix) error {
	if err := validateRanges(ranges); err != nil {
		return fmt.Errorf("ipam: %w", err)
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.st == nil {
		return fmt.Errorf("ipam: set ranges: %w", ErrClosed)
	}
	a.setRanges(ranges)
	return nil
}

// Ranges returns a copy of the configured ranges.
func (a *Allocator) Ranges() []netip.Prefix {
	a.mu.Lock()
	defer a.mu.Unlock()
	return slices.Clone(a.ranges)
}

// Allocate gives the attachment (containerID, ifName) one address per IP
// family present in the ranges, each persisted durably before Allocate
// returns. If the attachment already holds addresses they are returned
// unchanged (like host-local), and only families it lacks are allocated.
// If any family fails, addresses taken by this call are released again.
// A family whose ranges are all full yields an error wrapping ErrExhausted;
// no configured range yields ErrNoRange; bad identifiers yield
// ErrInvalidAttachment. The result is sorted by address.
func (a *Allocator) Allocate(containerID, ifName string) ([]Allocation, error) {
	if err := validateAttachment(containerID, ifName); err != nil {
		return nil, fmt.Errorf("ipam: allocate: %w", err)
	}
	key := attachment{containerID, ifName}
	a.mu.Lock()
	defer a.mu.Unlock()
	if err := a.writable(); err != nil {
		return nil, fmt.Errorf("ipam: allocate %s: %w", key, err)
	}
	if len(a.ranges) == 0 {
		return nil, fmt.Errorf("ipam: allocate %s: %w", key, ErrNoRange)
	}
	var taken []netip.Addr
	for _, is4 := range a.missingFamilies(key) {
		addr, err := a.take(key, is4)
		if err != nil {
			err = errors.Join(err, a.rollback(taken))
			return nil, fmt.Errorf("ipam: allocate %s: %w", key, err)
		}
		taken = append(taken, addr)
	}
	if len(taken) > 0 {
		a.st.saveCursors(a.cursors)
	}
	return a.get(key), nil
}

// Get returns the attachment's allocations sorted by address, or nil if it
// holds none.
func (a *Allocator) Get(containerID, ifName string) []Allocation {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.get(attachment{containerID, ifName})
}

// Release frees all addresses of the attachment and returns them.
// Releasing an attachment that holds nothing is not an error. On a
// filesystem error it returns what it did release along with the error.
func (a *Allocator) Release(containerID, ifName string) ([]Allocation, error) {
	if err := validateAttachment(containerID, ifName); err != nil {
		return nil, fmt.Errorf("ipam: release: %w", err)
	}
	key := attachment{containerID, ifName}
	a.mu.Lock()
	defer a.mu.Unlock()
	if err := a.writable(); err != nil {
		return nil, fmt.Errorf("ipam: release %s: %w", key, err)
	}
	return a.release([]attachment{key})
}

// GC releases every allocation whose attachment keep reports false for and
// returns what it released, sorted by address. keep is called with the
// Allocator locked and must not call back into it; a nil keep is an error.
// On a filesystem error GC stops and returns what it released so far along
// with the error.
func (a *Allocator) GC(keep func(containerID, ifName string) bool) ([]Allocation, error) {
	if keep == nil {
		return nil, errors.New("ipam: gc: nil keep function")
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if err := a.writable(); err != nil {
		return nil, fmt.Errorf("ipam: gc: %w", err)
	}
	var drop []attachment
	for key := range a.byKey {
		if !keep(key.containerID, key.ifName) {
			drop = append(drop, key)
		}
	}
	return a.release(drop)
}

// List returns all allocations, including those outside the current
// ranges, sorted by address.
func (a *Allocator) List() []Allocation {
	a.mu.Lock()
	defer a.mu.Unlock()
	out := make([]Allocation, 0, len(a.byAddr))
	for _, al := range a.byAddr {
		out = append(out, al)
	}
	sortByAddr(out)
	return out
}

// Stats returns the size and occupancy of each configured range, in the
// order of Ranges. Allocations outside the current ranges are not counted.
func (a *Allocator) Stats() []RangeStats {
	a.mu.Lock()
	defer a.mu.Unlock()
	out := make([]RangeStats, len(a.ranges))
	for i, r := range a.ranges {
		out[i] = RangeStats{Range: r, Size: rangeSize(r), Used: a.used[r]}
	}
	return out
}

func (a *Allocator) writable() error {
	if a.st == nil {
		return ErrClosed
	}
	return nil
}

// setRanges installs validated ranges and recounts their usage.
func (a *Allocator) setRanges(ranges []netip.Prefix) {
	a.ranges = slices.Clone(ranges)
	a.used = make(map[netip.Prefix]int, len(ranges))
	for addr := range a.byAddr {
		a.count(addr, 1)
	}
	for r := range a.cursors {
		if !slices.Contains(a.ranges, r) {
			delete(a.cursors, r)
		}
	}
}

// count adds delta to the usage of the configured range addr is usable in.
func (a *Allocator) count(addr netip.Addr, delta int) {
	for _, r := range a.ranges {
		if usable(r, addr) {
			a.used[r] += delta
			return
		}
	}
}

func (a *Allocator) index(al Allocation) {
	addr := al.Addr.Addr()
	key := attachment{al.ContainerID, al.IfName}
	a.byAddr[addr] = al
	a.byKey[key] = append(a.byKey[key], addr)
	a.count(addr, 1)
}

func (a *Allocator) unindex(addr netip.Addr) {
	al, ok := a.byAddr[addr]
	if !ok {
		return
	}
	key := attachment{al.ContainerID, al.IfName}
	delete(a.byAddr, addr)
	rest := slices.DeleteFunc(a.byKey[key], func(x netip.Addr) bool { return x == addr })
	if len(rest) == 0 {
		delete(a.byKey, key)
	} else {
		a.byKey[key] = rest
	}
	a.count(addr, -1)
}

func (a *Allocator) get(key attachment) []Allocation {
	addrs := a.byKey[key]
	if len(addrs) == 0 {
		return nil
	}
	out := make([]Allocation, len(addrs))
	for i, addr := range addrs {
		out[i] = a.byAddr[addr]
	}
	sortByAddr(out)
	return out
}

// missingFamilies returns the families of the ranges (IPv4 first) in which
// the attachment holds no address.
func (a *Allocator) missingFamilies(key attachment) []bool {
	var out []bool
	for _, is4 := range families(a.ranges) {
		if !slices.ContainsFunc(a.byKey[key], func(x netip.Addr) bool { return x.Is4() == is4 }) {
			out = append(out, is4)
		}
	}
	return out
}

// take reserves and persists a free address of one family for key.
func (a *Allocator) take(key attachment, is4 bool) (netip.Addr, error) {
	r, addr, err := a.pick(is4)
	if err != nil {
		return netip.Addr{}, err
	}
	al := Allocation{
		ContainerID: key.containerID,
		IfName:      key.ifName,
		Addr:        netip.PrefixFrom(addr, r.Bits()),
		Range:       r,
		Created:     time.Now().UTC().Round(0),
	}
	if err := a.st.put(al); err != nil {
		return netip.Addr{}, err
	}
	a.index(al)
	a.cursors[r] = addr
	return addr, nil
}

// rollback releases addresses taken by a failed Allocate.
func (a *Allocator) rollback(addrs []netip.Addr) error {
	if len(addrs) == 0 {
		return nil
	}
	var errs []error
	for _, addr := range addrs {
		if err := a.st.remove(addr); err != nil {
			errs = append(errs, err)
			continue
		}
		a.unindex(addr)
	}
	errs = append(errs, a.st.syncDir())
	return errors.Join(errs...)
}

// release frees every address of keys, then makes the removals durable.
func (a *Allocator) release(keys []attachment) ([]Allocation, error) {
	var done []Allocation
	var err error
	for _, key := range keys {
		for _, al := range a.get(key) {
			if err = a.st.remove(al.Addr.Addr()); err != nil {
				break
			}
			a.unindex(al.Addr.Addr())
			done = append(done, al)
		}
		if err != nil {
			break
		}
	}
	if len(done) > 0 {
		err = errors.Join(err, a.st.syncDir())
	}
	sortByAddr(done)
	return done, err
}

func sortByAddr(s []Allocation) {
	slices.SortFunc(s, func(x, y Allocation) int { return x.Addr.Addr().Compare(y.Addr.Addr()) })
}
