package integration

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/containernetworking/cni/libcni"

	"github.com/podnet/podnet/integration/lab"
	"github.com/podnet/podnet/integration/sandbox"
)

// addPods runs ADD for every runtime conf with the given parallelism and
// returns the IP (or error) per index.
func addPods(l *lab.Lab, list *libcni.NetworkConfigList, rts []*libcni.RuntimeConf, workers int) ([]string, []error) {
	ips, errs := make([]string, len(rts)), make([]error, len(rts))
	work := make(chan int)
	var wg sync.WaitGroup
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range work {
				res, err := l.CNI().AddNetworkList(context.Background(), list, rts[i])
				if err != nil {
					errs[i] = err
					continue
				}
				ip, _ := resultIPNoT(res)
				ips[i] = ip
			}
		}()
	}
	for i := range rts {
		work <- i
	}
	close(work)
	wg.Wait()
	return ips, errs
}

// TestConcurrentAdds: 50 concurrent ADDs on one node give 50 distinct
// addresses, each one working (a TCP connection to the node sees it).
func TestConcurrentAdds(t *testing.T) {
	l := newLab(t, 1)
	n := l.Nodes[0]
	list := confList(t, n, "1.1.0")
	var rts []*libcni.RuntimeConf
	var nss []*sandbox.NetNS
	for i := range 50 {
		ns := sandbox.TestNetNS(t, fmt.Sprintf("conc%d", i))
		nss = append(nss, ns)
		rts = append(rts, &libcni.RuntimeConf{ContainerID: fmt.Sprintf("conc-%d", i), NetNS: ns.Path, IfName: "eth0"})
	}
	ips, errs := addPods(l, list, rts, 50)
	seen := map[string]int{}
	for i, err := range errs {
		if err != nil {
			t.Fatalf("ADD %d: %v", i, err)
		}
		if j, dup := seen[ips[i]]; dup {
			t.Fatalf("pods %d and %d both got %s", j, i, ips[i])
		}
		seen[ips[i]] = i
	}
	// Every address works: the node sees each pod's own address.
	stop, saw := sourceServer(t, n.NS, netip.AddrPortFrom(n.Addr, 7000))
	defer stop()
	for i, ns := range nss {
		if err := dialFrom(ns, netip.AddrPortFrom(n.Addr, 7000)); err != nil {
			t.Fatalf("pod %d (%s) cannot reach its node: %v", i, ips[i], err)
		}
		if got, want := <-saw, netip.MustParsePrefix(ips[i]).Addr(); got != want {
			t.Fatalf("node saw %s, want pod %d's %s", got, i, want)
		}
	}
	for _, rt := range rts {
		if err := l.CNI().DelNetworkList(context.Background(), list, rt); err != nil {
			t.Fatal(err)
		}
	}
	assertClean(t, n)
}

// TestAddDelCycles: 1000 ADD/DEL cycles leave no address, veth or state file.
func TestAddDelCycles(t *testing.T) {
	if testing.Short() {
		t.Skip("1000 cycles: skipped in -short mode")
	}
	l := newLab(t, 1)
	n := l.Nodes[0]
	list := confList(t, n, "1.1.0")
	const workers, cycles = 4, 1000
	var wg sync.WaitGroup
	errc := make(chan error, workers)
	for w := range workers {
		ns := sandbox.TestNetNS(t, fmt.Sprintf("cyc%d", w))
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range cycles / workers {
				rt := &libcni.RuntimeConf{ContainerID: fmt.Sprintf("cyc-%d-%d", w, i), NetNS: ns.Path, IfName: "eth0"}
				if _, err := l.CNI().AddNetworkList(context.Background(), list, rt); err != nil {
					errc <- fmt.Errorf("cycle %d/%d ADD: %w", w, i, err)
					return
				}
				if err := l.CNI().DelNetworkList(context.Background(), list, rt); err != nil {
					errc <- fmt.Errorf("cycle %d/%d DEL: %w", w, i, err)
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errc)
	for err := range errc {
		t.Fatal(err)
	}
	assertClean(t, n)
}

// assertClean checks the node has no allocation, no pod veth and no address
// file in its IPAM state directory.
func assertClean(t *testing.T, n *lab.Node) {
	t.Helper()
	if a := allocations(t, n); len(a) != 0 {
		t.Fatalf("%d addresses still allocated: %+v", len(a), a[:min(len(a), 5)])
	}
	if links, err := n.WaitNoPodLinks(); err != nil || len(links) != 0 {
		t.Fatalf("pod veths left: %v %v", links, err)
	}
	entries, err := os.ReadDir(filepath.Join(n.Dir, "state", "ipam"))
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		if _, err := netip.ParseAddr(e.Name()); err == nil {
			t.Fatalf("state file left: %s", e.Name())
		}
	}
}

// TestKillDuringAddBurst: SIGKILL podnetd during a burst of ADDs, restart it,
// DEL the failed ADDs as a runtime does: no duplicate and no leaked address,
// and pods attached before the crash keep working.
func TestKillDuringAddBurst(t *testing.T) {
	l := newLab(t, 1)
	n := l.Nodes[0]
	list := confList(t, n, "1.1.0")
	// A pod attached before the crash.
	pre := sandbox.TestNetNS(t, "prekill")
	preRT := &libcni.RuntimeConf{ContainerID: "pre", NetNS: pre.Path, IfName: "eth0"}
	if _, err := l.CNI().AddNetworkList(context.Background(), list, preRT); err != nil {
		t.Fatal(err)
	}
	var rts []*libcni.RuntimeConf
	for i := range 60 {
		ns := sandbox.TestNetNS(t, fmt.Sprintf("kill%d", i))
		rts = append(rts, &libcni.RuntimeConf{ContainerID: fmt.Sprintf("kill-%d", i), NetNS: ns.Path, IfName: "eth0"})
	}
	// Kill once 10 to 20 addresses are persisted: the burst is then mid-way
	// whatever the machine's speed.
	killAt := 10 + rand.IntN(11)
	daemon := n.Daemon.Process
	go func() {
		for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); time.Sleep(time.Millisecond) {
			if entries, _ := os.ReadDir(filepath.Join(n.Dir, "state", "ipam")); len(entries) >= killAt {
				break
			}
		}
		daemon.Signal(syscall.SIGKILL)
	}()
	ips, errs := addPods(l, list, rts, 6)
	l.StopDaemon(n, syscall.SIGKILL) // reaps it
	ok, failed := 0, 0
	for _, err := range errs {
		if err == nil {
			ok++
		} else {
			failed++
		}
	}
	t.Logf("before the kill: %d ADDs succeeded, %d failed", ok, failed)
	if failed == 0 {
		t.Fatal("the daemon was not killed during the burst; the test proved nothing")
	}
	if err := l.StartDaemon(n); err != nil {
		t.Fatal(err)
	}
	if err := l.WaitReady(context.Background(), n); err != nil {
		t.Fatal(err)
	}
	for i, err := range errs {
		if err != nil {
			if err := l.CNI().DelNetworkList(context.Background(), list, rts[i]); err != nil {
				t.Fatalf("DEL after failed ADD %d: %v", i, err)
			}
		}
	}
	want := map[string]string{"pre": ""}
	for i, err := range errs {
		if err == nil {
			want[rts[i].ContainerID] = ips[i]
		}
	}
	got := allocations(t, n)
	byAddr := map[string]string{}
	for _, a := range got {
		if other, dup := byAddr[a.Address]; dup {
			t.Fatalf("address %s held by %s and %s", a.Address, other, a.ContainerID)
		}
		byAddr[a.Address] = a.ContainerID
		ip, ok := want[a.ContainerID]
		if !ok {
			t.Fatalf("leaked: %s holds %s but its ADD failed and was deleted", a.ContainerID, a.Address)
		}
		if ip != "" && ip != a.Address {
			t.Fatalf("%s: result said %s, IPAM holds %s", a.ContainerID, ip, a.Address)
		}
	}
	if len(got) != len(want) {
		t.Fatalf("allocations = %d, want %d (successful ADDs)", len(got), len(want))
	}
	if links, _ := n.PodLinks(); len(links) != len(want) {
		t.Fatalf("pod veths = %d, want %d", len(links), len(want))
	}
	if err := l.CNI().CheckNetworkList(context.Background(), list, preRT); err != nil {
		t.Fatalf("pod attached before the crash fails CHECK: %v", err)
	}
	if err := dialFrom(pre, netip.AddrPortFrom(n.Addr, 7001)); err == nil {
		t.Log("(no server on 7001 expected)")
	}
	stop, saw := sourceServer(t, n.NS, netip.AddrPortFrom(n.Addr, 7002))
	defer stop()
	if err := dialFrom(pre, netip.AddrPortFrom(n.Addr, 7002)); err != nil {
		t.Fatalf("pod attached before the crash lost connectivity: %v", err)
	}
	<-saw
}

// sourceServer accepts TCP connections on addr in ns and reports each
// client's source address.
func sourceServer(t *testing.T, ns *sandbox.NetNS, addr netip.AddrPort) (func(), <-chan netip.Addr) {
	t.Helper()
	var ln net.Listener
	if err := ns.Do(func() (err error) { ln, err = net.Listen("tcp", addr.String()); return }); err != nil {
		t.Fatal(err)
	}
	saw := make(chan netip.Addr, 64)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			saw <- c.RemoteAddr().(*net.TCPAddr).AddrPort().Addr().Unmap()
			c.Close()
		}
	}()
	return func() { ln.Close() }, saw
}

func dialFrom(ns *sandbox.NetNS, addr netip.AddrPort) error {
	return ns.Do(func() error {
		c, err := net.DialTimeout("tcp", addr.String(), 3*time.Second)
		if err != nil {
			return err
		}
		return c.Close()
	})
}
