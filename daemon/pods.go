package daemon

import (
	"cmp"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/podnet/podnet/nft"
)

// podRecord is what a successful CNI ADD knew about a pod that neither IPAM
// nor the kernel keeps: its network namespace path and its Kubernetes name.
// The debug API lists pods from these records, and trace sends its probe from
// the namespace recorded here.
type podRecord struct {
	ContainerID string    `json:"containerID"`
	IfName      string    `json:"ifName"`
	NetNS       string    `json:"netns"`
	Namespace   string    `json:"namespace,omitempty"`
	Name        string    `json:"name,omitempty"`
	HostVeth    string    `json:"hostVeth"`
	Addresses   []string  `json:"addresses"`
	Created     time.Time `json:"created"`
	// PortMappings are the attachment's hostPorts (hostports.go): the
	// table's mappings come from the records, so a record that has them is
	// written durably and must be written (and removed) for the CNI call to
	// succeed.
	PortMappings []portMapping `json:"portMappings,omitempty"`
}

type podKey struct{ containerID, ifName string }

// podStore keeps one JSON file per attachment under dir, written atomically
// at ADD and removed at DEL and GC, and a copy in memory. A record that cannot
// be written costs the debug view of the pod, never the pod: callers log the
// error and go on.
type podStore struct {
	dir string
	mu  sync.Mutex
	m   map[podKey]podRecord
	// gen counts the changes to the records' hostPorts (under mu); 0 while
	// no record ever had any.
	gen uint64
	// claimMu serialises claims: a conflict check and the insert it allows.
	claimMu sync.Mutex
}

// openPodStore loads the records under dir, creating it. Unreadable or
// malformed records are skipped and returned as one error, after the rest
// is loaded.
func openPodStore(dir string) (*podStore, error) {
	s := &podStore{dir: dir, m: map[podKey]podRecord{}}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("pod records: %w", err)
	}
	names, err := filepath.Glob(filepath.Join(dir, "*.json"))
	if err != nil {
		return nil, err
	}
	var errs []error
	for _, name := range names {
		data, err := os.ReadFile(name)
		var r podRecord
		if err == nil {
			err = json.Unmarshal(data, &r)
		}
		if err == nil && (r.ContainerID == "" || r.IfName == "") {
			err = errors.New("no container ID or interface name")
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("pod record %s: %w", name, err))
			continue
		}
		s.m[podKey{r.ContainerID, r.IfName}] = r
		if len(r.PortMappings) > 0 {
			s.gen = 1 // the table may not hold them yet
		}
	}
	return s, errors.Join(errs...)
}

// fileName is a record's file: a hash, since container IDs come from the
// runtime and may hold any byte.
func (s *podStore) fileName(k podKey) string {
	h := sha256.Sum256([]byte(k.containerID + "\x00" + k.ifName))
	return filepath.Join(s.dir, hex.EncodeToString(h[:12])+".json")
}

// put stores r, replacing the record of the same attachment. A record with
// PortMappings goes through claim instead.
func (s *podStore) put(r podRecord) error {
	if s == nil {
		return nil
	}
	if len(r.PortMappings) > 0 {
		return s.claim(r)
	}
	data, err := json.Marshal(r)
	if err != nil {
		return err
	}
	// The file first, outside the lock: calls for one attachment are
	// serialised by the CNI handler's stripes.
	k := podKey{r.ContainerID, r.IfName}
	if err := writeRecord(s.fileName(k), data); err != nil {
		return fmt.Errorf("pod record: %w", err)
	}
	s.mu.Lock()
	if len(s.m[k].PortMappings) > 0 {
		s.gen++ // a record with hostPorts replaced by one without
	}
	s.m[k] = r
	s.mu.Unlock()
	return nil
}

// claim stores r, which has PortMappings, unless another attachment's record
// maps one of the same hostPorts (a *conflictError, matching
// ErrHostPortConflict). The record is written durably (fsync of the file and
// the directory): a restarted podnetd programs the table from it.
func (s *podStore) claim(r podRecord) error {
	s.claimMu.Lock()
	defer s.claimMu.Unlock()
	k := podKey{r.ContainerID, r.IfName}
	want := r.hostPorts()
	s.mu.Lock()
	others := make([]podRecord, 0, len(s.m))
	for ok, o := range s.m {
		if ok != k && len(o.PortMappings) > 0 {
			others = append(others, o)
		}
	}
	s.mu.Unlock()
	sortRecords(others)
	for _, o := range others {
		for _, theirs := range o.hostPorts() {
			for _, mine := range want {
				if overlap(mine, theirs) {
					return &conflictError{mapping: mine, holder: o}
				}
			}
		}
	}
	data, err := json.Marshal(r)
	if err != nil {
		return err
	}
	path := s.fileName(k)
	if _, err := replaceFile(s.dir, ".record-*", path, 0o600, func(f *os.File) error {
		_, err := f.Write(data)
		return err
	}); err != nil {
		return fmt.Errorf("pod record: %w", err)
	}
	s.mu.Lock()
	s.m[k] = r
	s.gen++
	s.mu.Unlock()
	return nil
}

// hostPortGen is the generation of the records' hostPorts: it moves at each
// change to them.
func (s *podStore) hostPortGen() uint64 {
	if s == nil {
		return 0
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.gen
}

// hostPorts returns the table's mappings for every record, in the order of
// their container IDs, and the generation they are of.
func (s *podStore) hostPorts() ([]nft.HostPort, uint64) {
	if s == nil {
		return nil, 0
	}
	s.mu.Lock()
	var rs []podRecord
	for _, r := range s.m {
		if len(r.PortMappings) > 0 {
			rs = append(rs, r)
		}
	}
	gen := s.gen
	s.mu.Unlock()
	sortRecords(rs)
	var out []nft.HostPort
	for _, r := range rs {
		out = append(out, r.hostPorts()...)
	}
	return out, gen
}

// writeRecord replaces path with data through a temp file and a rename, so a
// reader never sees half a record, but without fsync: a record is for the
// debug view only, and a CNI ADD should not wait for the disk twice more for
// it. A crash may lose a record or leave an empty one, which openPodStore
// reports and skips; the pod then shows without its name.
func writeRecord(path string, data []byte) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), ".record-*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name()) // no-op after the rename
	_, err = tmp.Write(data)
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return err
	}
	return os.Rename(tmp.Name(), path)
}

// remove deletes the record of an attachment; a missing one is no error. The
// file goes first: a record whose file could not be removed stays, so that
// its hostPorts stay what a restarted podnetd would program.
func (s *podStore) remove(containerID, ifName string) error {
	if s == nil {
		return nil
	}
	k := podKey{containerID, ifName}
	if err := os.Remove(s.fileName(k)); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("pod record: %w", err)
	}
	s.mu.Lock()
	if len(s.m[k].PortMappings) > 0 {
		s.gen++
	}
	delete(s.m, k)
	s.mu.Unlock()
	return nil
}

// get returns the record of an attachment.
func (s *podStore) get(containerID, ifName string) (podRecord, bool) {
	if s == nil {
		return podRecord{}, false
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	r, ok := s.m[podKey{containerID, ifName}]
	return r, ok
}

// list returns the records sorted by pod name, then container ID.
func (s *podStore) list() []podRecord {
	if s == nil {
		return nil
	}
	s.mu.Lock()
	out := make([]podRecord, 0, len(s.m))
	for _, r := range s.m {
		out = append(out, r)
	}
	s.mu.Unlock()
	slices.SortFunc(out, func(a, b podRecord) int {
		return cmp.Or(cmp.Compare(a.Namespace, b.Namespace), cmp.Compare(a.Name, b.Name),
			cmp.Compare(a.ContainerID, b.ContainerID), cmp.Compare(a.IfName, b.IfName))
	})
	return out
}

// cniArgs reads the K8S_POD_NAMESPACE and K8S_POD_NAME of CNI_ARGS
// ("K=V;K=V"); the rest is ignored.
func cniArgs(args string) (namespace, name string) {
	for _, kv := range strings.Split(args, ";") {
		k, v, _ := strings.Cut(kv, "=")
		switch k {
		case "K8S_POD_NAMESPACE":
			namespace = v
		case "K8S_POD_NAME":
			name = v
		}
	}
	return namespace, name
}
