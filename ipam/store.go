package ipam

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// Names in the state directory; see the package documentation.
const (
	lockName    = ".lock"
	cursorsName = ".cursors"
	tmpPrefix   = ".tmp-"
)

// record is the JSON content of an address file.
type record struct {
	ContainerID string       `json:"containerID"`
	IfName      string       `json:"ifName"`
	Range       netip.Prefix `json:"range"`
	Created     time.Time    `json:"created"`
}

// store persists allocations in a locked state directory.
type store struct {
	dir     string
	dirFile *os.File // for fsync of the directory
	lock    *os.File // holds the flock until close
}

// openStore creates dir if missing, takes its lock and opens it for fsync.
func openStore(dir string) (*store, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("ipam: create state directory: %w", err)
	}
	lock, err := lockDir(dir)
	if err != nil {
		return nil, err
	}
	d, err := os.Open(dir)
	if err != nil {
		lock.Close()
		return nil, fmt.Errorf("ipam: open state directory: %w", err)
	}
	return &store{dir: dir, dirFile: d, lock: lock}, nil
}

// close releases the directory lock.
func (s *store) close() error {
	return errors.Join(s.dirFile.Close(), s.lock.Close())
}

// load removes leftover temporary files and reads every address file.
func (s *store) load() ([]Allocation, error) {
	entries, err := os.ReadDir(s.dir)
	if err != nil {
		return nil, fmt.Errorf("ipam: read state directory: %w", err)
	}
	var allocs []Allocation
	removed := false
	for _, e := range entries {
		name := e.Name()
		if strings.HasPrefix(name, tmpPrefix) {
			if err := os.Remove(filepath.Join(s.dir, name)); err != nil && !errors.Is(err, fs.ErrNotExist) {
				return nil, fmt.Errorf("ipam: remove leftover temporary file: %w", err)
			}
			removed = true
			continue
		}
		addr, err := netip.ParseAddr(name)
		if err != nil {
			continue // not an address file
		}
		a, err := s.read(name, addr)
		if err != nil {
			return nil, err
		}
		allocs = append(allocs, a)
	}
	if removed {
		return allocs, s.syncDir()
	}
	return allocs, nil
}

// read parses and checks the address file name holding addr.
func (s *store) read(name string, addr netip.Addr) (Allocation, error) {
	path := filepath.Join(s.dir, name)
	data, err := os.ReadFile(path)
	if err != nil {
		return Allocation{}, fmt.Errorf("ipam: read %s: %w", path, err)
	}
	var rec record
	if err := json.Unmarshal(data, &rec); err != nil {
		return Allocation{}, fmt.Errorf("ipam: %w %s: %w", ErrCorrupt, path, err)
	}
	if err := checkRecord(name, addr, rec); err != nil {
		return Allocation{}, fmt.Errorf("ipam: %w %s: %w", ErrCorrupt, path, err)
	}
	return Allocation{
		ContainerID: rec.ContainerID,
		IfName:      rec.IfName,
		Addr:        netip.PrefixFrom(addr, rec.Range.Bits()),
		Range:       rec.Range,
		Created:     rec.Created,
	}, nil
}

// checkRecord validates a record read from the address file name.
func checkRecord(name string, addr netip.Addr, rec record) error {
	switch {
	case addr.String() != name:
		return fmt.Errorf("file name is not the canonical form %q", addr)
	case !rec.Range.IsValid() || rec.Range != rec.Range.Masked():
		return fmt.Errorf("missing or non-canonical range %q", rec.Range)
	case !rec.Range.Contains(addr):
		return fmt.Errorf("address %s is outside its range %s", addr, rec.Range)
	}
	return validateAttachment(rec.ContainerID, rec.IfName)
}

// put durably writes the address file of a.
func (s *store) put(a Allocation) error {
	data, err := json.Marshal(record{
		ContainerID: a.ContainerID,
		IfName:      a.IfName,
		Range:       a.Range,
		Created:     a.Created,
	})
	if err != nil {
		return fmt.Errorf("ipam: encode %s: %w", a.Addr.Addr(), err)
	}
	return s.writeFile(a.Addr.Addr().String(), data, true)
}

// remove deletes the address file of addr; the caller must syncDir. A file
// that is already gone is not an error.
func (s *store) remove(addr netip.Addr) error {
	err := os.Remove(filepath.Join(s.dir, addr.String()))
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("ipam: release %s: %w", addr, err)
	}
	return nil
}

// syncDir makes renames and removals in the directory durable.
func (s *store) syncDir() error {
	if err := s.dirFile.Sync(); err != nil {
		return fmt.Errorf("ipam: sync state directory: %w", err)
	}
	return nil
}

// writeFile atomically replaces name with data. If durable, the data and
// the rename are fsynced before it returns.
func (s *store) writeFile(name string, data []byte, durable bool) (err error) {
	f, err := os.CreateTemp(s.dir, tmpPrefix+"*")
	if err != nil {
		return fmt.Errorf("ipam: write %s: %w", name, err)
	}
	defer func() {
		if err != nil {
			f.Close()
			os.Remove(f.Name())
			err = fmt.Errorf("ipam: write %s: %w", name, err)
		}
	}()
	if _, err = f.Write(data); err != nil {
		return err
	}
	if durable {
		if err = f.Sync(); err != nil {
			return err
		}
	}
	if err = f.Close(); err != nil {
		return err
	}
	if err = os.Rename(f.Name(), filepath.Join(s.dir, name)); err != nil {
		return err
	}
	if durable {
		return s.syncDir()
	}
	return nil
}

// loadCursors reads the cursor hints; any problem yields no hints.
func (s *store) loadCursors() map[netip.Prefix]netip.Addr {
	cursors := make(map[netip.Prefix]netip.Addr)
	data, err := os.ReadFile(filepath.Join(s.dir, cursorsName))
	if err != nil || json.Unmarshal(data, &cursors) != nil {
		return make(map[netip.Prefix]netip.Addr)
	}
	return cursors
}

// saveCursors writes the cursor hints without fsync. Failure only costs
// round-robin order after a restart, so it is ignored.
func (s *store) saveCursors(cursors map[netip.Prefix]netip.Addr) {
	data, err := json.Marshal(cursors)
	if err == nil {
		_ = s.writeFile(cursorsName, data, false)
	}
}
