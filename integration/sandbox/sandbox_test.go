package sandbox

import (
	"net"
	"os"
	"testing"
)

func TestMain(m *testing.M) { Main(m) }

// TestNetNSIsolated proves a new namespace has only lo and is not the sandbox's own.
func TestNetNSIsolated(t *testing.T) {
	Require(t)
	ns, err := NewNetNS("iso")
	if err != nil {
		t.Fatal(err)
	}
	defer ns.Delete()
	var names []string
	err = ns.Do(func() error {
		ifs, err := net.Interfaces()
		for _, i := range ifs {
			names = append(names, i.Name)
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(names) != 1 || names[0] != "lo" {
		t.Fatalf("interfaces in new netns = %v, want [lo]", names)
	}
	self, _ := os.Readlink("/proc/self/ns/net")
	var inner string
	ns.Do(func() error { inner, _ = os.Readlink("/proc/thread-self/ns/net"); return nil })
	if self == inner {
		t.Fatalf("namespace %s is the process's own", inner)
	}
}
