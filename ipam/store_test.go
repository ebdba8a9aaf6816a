package ipam

import (
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestRecovery(t *testing.T) {
	dir := t.TempDir()
	ranges := []string{"10.0.0.0/24", "fd00::/64"}
	a := newAllocator(t, dir, ranges...)
	for _, id := range []string{"c1", "c2", "c3", "c4"} {
		mustAllocate(t, a, id)
	}
	mustRelease(t, a, "c2")
	before := a.List()
	if err := a.Close(); err != nil {
		t.Fatal(err)
	}

	b := newAllocator(t, dir, ranges...)
	assertEqual(t, "List after restart", describe(b.List()), describe(before))
	var c3 []Allocation
	for _, al := range before {
		if al.ContainerID == "c3" {
			c3 = append(c3, al)
		}
	}
	assertEqual(t, "Get after restart", describe(b.Get("c3", "eth0")), describe(c3))
	// New addresses avoid the loaded ones and continue round-robin after
	// the last reserved address (.5), not at the released .3.
	assertEqual(t, "new allocation", mustAllocate(t, b, "c5"), []string{"10.0.0.6", "fd00::6"})
}

// TestRecoveryWithoutCursors checks that losing the cursor file costs only
// the round-robin order, never correctness.
func TestRecoveryWithoutCursors(t *testing.T) {
	for _, cursors := range []string{"", "{not json", `{"10.0.0.0/24":"10.0.0.2"}`, `{"10.0.0.0/24":"192.168.0.9"}`} {
		dir := t.TempDir()
		a := newAllocator(t, dir, "10.0.0.0/24")
		for _, id := range []string{"c1", "c2", "c3"} {
			mustAllocate(t, a, id)
		}
		a.Close()
		if err := os.WriteFile(filepath.Join(dir, cursorsName), []byte(cursors), 0o600); err != nil {
			t.Fatal(err)
		}
		b := newAllocator(t, dir, "10.0.0.0/24")
		assertEqual(t, "allocation with cursors "+cursors, mustAllocate(t, b, "c4"), []string{"10.0.0.5"})
	}
}

// TestCursorHintAtEndOfSlash64 places the cursor at the top of an IPv6 /64
// and checks the walk wraps to the bottom.
func TestCursorHintAtEndOfSlash64(t *testing.T) {
	dir := t.TempDir()
	hint := `{"fd00::/64":"fd00::ffff:ffff:ffff:fffe"}`
	if err := os.WriteFile(filepath.Join(dir, cursorsName), []byte(hint), 0o600); err != nil {
		t.Fatal(err)
	}
	a := newAllocator(t, dir, "fd00::/64")
	assertEqual(t, "top of range", mustAllocate(t, a, "c1"), []string{"fd00::ffff:ffff:ffff:ffff"})
	assertEqual(t, "wrapped", mustAllocate(t, a, "c2"), []string{"fd00::2"})
}

func TestCorruptFile(t *testing.T) {
	tests := []struct{ name, file, content string }{
		{"garbage", "10.0.0.7", "garbage"},
		{"empty", "10.0.0.7", ""},
		{"truncated", "10.0.0.7", `{"containerID":"c","ifName":"eth0","ran`},
		{"no range", "10.0.0.7", `{"containerID":"c","ifName":"eth0"}`},
		{"bad range", "10.0.0.7", `{"containerID":"c","ifName":"eth0","range":"10.0.0.0/99"}`},
		{"outside range", "10.0.0.7", `{"containerID":"c","ifName":"eth0","range":"10.1.0.0/24"}`},
		{"family mismatch", "fd00::7", `{"containerID":"c","ifName":"eth0","range":"10.0.0.0/24"}`},
		{"no container", "10.0.0.7", `{"ifName":"eth0","range":"10.0.0.0/24"}`},
		{"no interface", "10.0.0.7", `{"containerID":"c","range":"10.0.0.0/24"}`},
		{"non-canonical name", "fd00:0::7", `{"containerID":"c","ifName":"eth0","range":"fd00::/64"}`},
		{"bad time", "10.0.0.7", `{"containerID":"c","ifName":"eth0","range":"10.0.0.0/24","created":"yesterday"}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			path := filepath.Join(dir, tt.file)
			if err := os.WriteFile(path, []byte(tt.content), 0o600); err != nil {
				t.Fatal(err)
			}
			a, err := New(dir, prefixes("10.0.0.0/24"))
			if err == nil {
				a.Close()
				t.Fatal("New loaded a corrupt file without error")
			}
			if !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), path) {
				t.Errorf("New error = %v, want ErrCorrupt naming %s", err, path)
			}
			if _, statErr := os.Stat(path); statErr != nil {
				t.Errorf("corrupt file was removed: %v", statErr)
			}
		})
	}
}

func TestFileFormat(t *testing.T) {
	dir := t.TempDir()
	a := newAllocator(t, dir, "10.0.0.0/24")
	got, err := a.Allocate("c1", "eth0")
	if err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(filepath.Join(dir, "10.0.0.2"))
	if err != nil {
		t.Fatal(err)
	}
	var rec map[string]string
	if err := json.Unmarshal(data, &rec); err != nil {
		t.Fatal(err)
	}
	want := map[string]string{
		"containerID": "c1",
		"ifName":      "eth0",
		"range":       "10.0.0.0/24",
		"created":     got[0].Created.Format("2006-01-02T15:04:05.999999999Z07:00"),
	}
	for k, v := range want {
		if rec[k] != v {
			t.Errorf("%s = %q, want %q (file %s)", k, rec[k], v, data)
		}
	}
	mustRelease(t, a, "c1")
	if _, err := os.Stat(filepath.Join(dir, "10.0.0.2")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("address file after Release: %v, want it gone", err)
	}
}

func TestLeftoverFiles(t *testing.T) {
	dir := t.TempDir()
	tmp := filepath.Join(dir, tmpPrefix+"12345")
	other := filepath.Join(dir, "README")
	for _, f := range []string{tmp, other} {
		if err := os.WriteFile(f, []byte(`{"containerID":"half-writ`), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	a := newAllocator(t, dir, "10.0.0.0/24")
	if n := len(a.List()); n != 0 {
		t.Errorf("leftover files produced %d allocations", n)
	}
	if _, err := os.Stat(tmp); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("temporary file after New: %v, want it removed", err)
	}
	if _, err := os.Stat(other); err != nil {
		t.Errorf("unrelated file after New: %v, want it left alone", err)
	}
}

func TestLocked(t *testing.T) {
	dir := t.TempDir()
	a := newAllocator(t, dir, "10.0.0.0/24")
	b, err := New(dir, prefixes("10.0.0.0/24"))
	if err == nil {
		b.Close()
		t.Fatal("second New on a locked directory succeeded")
	}
	if !errors.Is(err, ErrLocked) || !strings.Contains(err.Error(), dir) {
		t.Errorf("second New error = %v, want ErrLocked naming %s", err, dir)
	}
	a.Close()
	newAllocator(t, dir, "10.0.0.0/24") // the lock is released by Close
}

func TestCreatesStateDir(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "var", "lib", "podnet")
	newAllocator(t, dir, "10.0.0.0/24")
	fi, err := os.Stat(dir)
	if err != nil {
		t.Fatal(err)
	}
	if perm := fi.Mode().Perm(); perm&^0o700 != 0 {
		t.Errorf("state directory mode = %v, want at most 0700", perm)
	}
}

// TestWriteFailureRollsBack makes persisting the IPv6 address fail (its
// file name is taken by a non-empty directory, which even root cannot
// rename over) and checks the IPv4 address is given back, on disk too.
func TestWriteFailureRollsBack(t *testing.T) {
	dir := t.TempDir()
	a := newAllocator(t, dir, "10.0.0.0/24", "fd00::/64")
	if err := os.MkdirAll(filepath.Join(dir, "fd00::2", "x"), 0o700); err != nil {
		t.Fatal(err)
	}
	if _, err := a.Allocate("c1", "eth0"); err == nil || !strings.Contains(err.Error(), "fd00::2") {
		t.Fatalf("Allocate error = %v, want a write error naming fd00::2", err)
	}
	if got := a.List(); len(got) != 0 {
		t.Errorf("failed Allocate left %v in memory", describe(got))
	}
	if _, err := os.Stat(filepath.Join(dir, "10.0.0.2")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("IPv4 address file after rollback: %v, want it removed", err)
	}
	entries, _ := os.ReadDir(dir)
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), tmpPrefix) {
			t.Errorf("temporary file %s left behind", e.Name())
		}
	}
}
