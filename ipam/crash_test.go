package ipam

import (
	"bufio"
	"bytes"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"
)

// Environment of the helper process run by TestCrashSafety.
const (
	crashDirEnv   = "PODNET_IPAM_CRASH_DIR"
	crashRoundEnv = "PODNET_IPAM_CRASH_ROUND"
)

var crashRanges = []string{"10.0.0.0/16", "fd00::/64"}

// TestCrashHelper is the helper process of TestCrashSafety: it allocates
// and releases in a loop, reporting each operation on stdout once it has
// returned, until it is killed.
func TestCrashHelper(t *testing.T) {
	dir := os.Getenv(crashDirEnv)
	if dir == "" {
		t.Skip("helper process for TestCrashSafety")
	}
	round := os.Getenv(crashRoundEnv)
	a, err := New(dir, prefixes(crashRanges...))
	if err != nil {
		fmt.Printf("ERROR %v\n", err)
		return
	}
	fmt.Println("READY")
	for i := range 50000 {
		id := fmt.Sprintf("%s-%d", round, i)
		got, err := a.Allocate(id, "eth0")
		if err != nil {
			fmt.Printf("ERROR %v\n", err)
			return
		}
		fmt.Printf("A %s %s\n", id, strings.Join(addrs(got), " "))
		if i%3 == 2 {
			victim := fmt.Sprintf("%s-%d", round, i-1)
			fmt.Printf("r %s\n", victim)
			if _, err := a.Release(victim, "eth0"); err != nil {
				fmt.Printf("ERROR %v\n", err)
				return
			}
			fmt.Printf("R %s\n", victim)
		}
	}
}

// TestCrashSafety SIGKILLs a process allocating in a loop at a random
// moment, then checks the state directory loads cleanly and holds every
// address the process reported, with no address given twice.
func TestCrashSafety(t *testing.T) {
	if testing.Short() {
		t.Skip("runs subprocesses")
	}
	dir := t.TempDir()
	m := crashModel{
		live:      map[string][]string{},
		owner:     map[string]string{},
		releasing: map[string]bool{},
		released:  map[string]bool{},
	}
	for round := range 10 {
		lines := runAndKill(t, dir, round)
		if err := m.apply(lines); err != nil {
			t.Fatalf("round %d: %v", round, err)
		}
		a, err := New(dir, prefixes(crashRanges...))
		if err != nil {
			t.Fatalf("round %d: New after SIGKILL: %v", round, err)
		}
		t.Logf("round %d: %d lines, %d allocations so far", round, len(lines), m.allocs)
		m.check(t, round, a)
		a.Close()
		if t.Failed() {
			return
		}
	}
}

// runAndKill starts the helper, kills it at a random moment after its
// first allocation, and returns the lines it printed.
func runAndKill(t *testing.T, dir string, round int) []string {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^TestCrashHelper$")
	cmd.Env = append(os.Environ(), crashDirEnv+"="+dir, fmt.Sprintf("%s=r%d", crashRoundEnv, round))
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	ready := make(chan struct{}) // closed at the first allocation
	eof := make(chan struct{})   // closed when the helper's stdout ends
	var lines []string
	go func() {
		defer close(eof)
		sc := bufio.NewScanner(out)
		allocated := false
		for sc.Scan() {
			lines = append(lines, sc.Text())
			if !allocated && strings.HasPrefix(sc.Text(), "A ") {
				allocated = true
				close(ready)
			}
		}
	}()
	select {
	case <-ready:
		time.Sleep(time.Duration(rand.IntN(150)) * time.Millisecond)
	case <-eof:
	case <-time.After(60 * time.Second):
		t.Error("helper reported no allocation within a minute")
	}
	cmd.Process.Kill()
	<-eof
	cmd.Wait()
	if ws, ok := cmd.ProcessState.Sys().(syscall.WaitStatus); !ok || !ws.Signaled() {
		t.Fatalf("round %d: helper ended before being killed (%v):\n%s\n%s",
			round, cmd.ProcessState, strings.Join(lines, "\n"), stderr.String())
	}
	return lines
}

// crashModel is what the helpers reported across rounds.
type crashModel struct {
	live      map[string][]string // attachment -> addresses it holds
	owner     map[string]string   // address -> attachment holding it
	releasing map[string]bool     // release started, not reported done
	released  map[string]bool     // release reported done
	allocs    int                 // allocations reported, for a sanity check
}

// apply replays the lines of one helper run.
func (m *crashModel) apply(lines []string) error {
	for _, line := range lines {
		f := strings.Fields(line)
		switch {
		case len(f) > 0 && f[0] == "ERROR":
			return fmt.Errorf("helper: %s", line)
		case len(f) >= 2 && f[0] == "A":
			for _, addr := range f[2:] {
				if prev, ok := m.owner[addr]; ok {
					return fmt.Errorf("%s handed to %s while %s holds it", addr, f[1], prev)
				}
				m.owner[addr] = f[1]
			}
			m.live[f[1]] = f[2:]
			m.allocs++
		case len(f) == 2 && f[0] == "r":
			m.releasing[f[1]] = true
		case len(f) == 2 && f[0] == "R":
			m.forget(f[1])
			delete(m.releasing, f[1])
			m.released[f[1]] = true
		}
	}
	return nil
}

func (m *crashModel) forget(id string) {
	for _, addr := range m.live[id] {
		delete(m.owner, addr)
	}
	delete(m.live, id)
}

// check compares the reloaded state with the model, then adopts what the
// killed operation left behind (an interrupted Allocate or Release).
func (m *crashModel) check(t *testing.T, round int, a *Allocator) {
	t.Helper()
	if m.allocs == 0 {
		t.Fatalf("round %d: helper reported no allocation before being killed", round)
	}
	held := map[string][]string{}
	for _, al := range a.List() {
		held[al.ContainerID] = append(held[al.ContainerID], al.Addr.Addr().String())
	}
	for id, want := range m.live {
		got := held[id]
		if m.releasing[id] {
			if !isSubset(got, want) {
				t.Errorf("round %d: %s mid-release holds %v, want a subset of %v", round, id, got, want)
			}
			continue
		}
		if !slices.Equal(got, want) {
			t.Errorf("round %d: %s holds %v after crash, reported %v", round, id, got, want)
		}
	}
	unreported := 0
	for id, got := range held {
		if m.released[id] {
			t.Errorf("round %d: %s was released but still holds %v", round, id, got)
		} else if _, ok := m.live[id]; !ok {
			unreported++
			if len(got) > 2 || (len(got) == 2 && !strings.Contains(got[1], ":")) {
				t.Errorf("round %d: interrupted %s holds %v, want at most one per family", round, id, got)
			}
		}
	}
	if unreported > 1 {
		t.Errorf("round %d: %d attachments on disk were never reported, want at most 1", round, unreported)
	}
	m.adopt(held)
	checkNewAvoidsOld(t, a)
}

// adopt makes the model match disk for attachments whose last operation
// was interrupted; check has verified these are legitimate outcomes.
func (m *crashModel) adopt(held map[string][]string) {
	for id := range m.releasing {
		m.forget(id)
	}
	clear(m.releasing)
	for id, got := range held {
		if _, ok := m.live[id]; !ok {
			m.live[id] = got
			for _, addr := range got {
				m.owner[addr] = id
			}
		}
	}
}

func checkNewAvoidsOld(t *testing.T, a *Allocator) {
	t.Helper()
	before := a.List()
	got, err := a.Allocate("parent", "eth0")
	if err != nil {
		t.Fatal(err)
	}
	for _, al := range before {
		if slices.Contains(addrs(got), al.Addr.Addr().String()) {
			t.Errorf("new allocation %s collides with %s", al.Addr, al.ContainerID)
		}
	}
	if _, err := a.Release("parent", "eth0"); err != nil {
		t.Fatal(err)
	}
}

func isSubset(sub, set []string) bool {
	for _, s := range sub {
		if !slices.Contains(set, s) {
			return false
		}
	}
	return true
}
