package integration

import (
	"context"
	"net/netip"
	"slices"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/podnet/podnet/integration/lab"
)

// The phases of a daemon restart, in order, that probes are counted in.
const (
	phaseUp         = "up"         // podnetd running, service programmed
	phaseDown       = "down"       // from the signal until podnetd is started again
	phaseRestarting = "restarting" // from its start until it reports the service programmed
	phaseAfter      = "after"      // after the restart
)

// downFor is how long podnetd stays down: long enough for dozens of new
// connections through the VIP.
const downFor = time.Second

// TestServiceSurvivesDaemonRestart stops the podnetd of a client pod's node,
// once with SIGTERM and once with SIGKILL, and starts it again. The node's
// table does the DNAT for the client, so it is the one that must not move:
//   - a TCP connection opened through the VIP before the stop still carries
//     data both ways while podnetd is down and after the restart;
//   - every new connection through the VIP, made every few milliseconds while
//     podnetd runs, is down and restarts, succeeds, and both endpoints (one on
//     the client's node, one on the other) keep getting them while it is down;
//   - the table is not recreated (same kernel handle), its rules and elements
//     are the same, and the kernel announced no deletion in the node's
//     namespace (no table, chain, rule, set or element deleted or flushed)
//     from before the stop until after the restart.
func TestServiceSurvivesDaemonRestart(t *testing.T) {
	for _, tc := range []struct {
		name string
		sig  syscall.Signal
	}{{"SIGTERM", syscall.SIGTERM}, {"SIGKILL", syscall.SIGKILL}} {
		t.Run(tc.name, func(t *testing.T) { testServiceRestart(t, tc.sig) })
	}
}

func testServiceRestart(t *testing.T, sig syscall.Signal) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	l := newLab(t, 2)
	n1, n2 := l.Nodes[0], l.Nodes[1]
	client := addLabPod(t, ctx, l, n1, "client")
	svc := lab.Service{Name: "web", VIP: lab.WebVIP, Port: lab.WebPort, TargetPort: lab.WebTargetPort,
		Endpoints: []*lab.Pod{addLabPod(t, ctx, l, n1, "web-a"), addLabPod(t, ctx, l, n2, "web-b")}}
	for _, p := range svc.Endpoints {
		if err := l.ServeService(p, svc.TargetPort); err != nil {
			t.Fatal(err)
		}
	}
	if err := l.ApplyServices(ctx, svc); err != nil {
		t.Fatal(err)
	}

	long, err := lab.DialService(client.NS, svc.Dst(), 2*time.Second)
	if err != nil {
		t.Fatalf("long-lived connection to %s: %v", svc.Dst(), err)
	}
	defer long.Close()
	if long.Saw != client.IP {
		t.Fatalf("%s saw the client as %s, want its own %s (no SNAT)", long.Endpoint, long.Saw, client.IP)
	}
	if err := long.Echo("before the stop"); err != nil {
		t.Fatal(err)
	}
	before := readTable(t, n1.NS)
	watch := watchNFT(t, n1.NS)

	p := startProber(client, svc)
	time.Sleep(200 * time.Millisecond)
	p.enter(phaseDown)
	l.StopDaemon(n1, sig)
	if err := long.Echo("while podnetd is down"); err != nil {
		t.Errorf("long-lived connection while podnetd is down: %v", err)
	}
	time.Sleep(downFor)
	p.enter(phaseRestarting)
	restart := time.Now()
	if err := l.StartDaemon(n1); err != nil {
		t.Fatal(err)
	}
	if err := l.WaitReady(ctx, n1); err != nil {
		t.Fatal(err)
	}
	if err := l.WaitServices(ctx); err != nil {
		t.Fatal(err)
	}
	restarted := time.Since(restart)
	p.enter(phaseAfter)
	time.Sleep(200 * time.Millisecond)
	probes := p.stop()
	events, watchErrs := watch.stop()
	after := readTable(t, n1.NS)

	if err := long.Echo("after the restart"); err != nil {
		t.Errorf("long-lived connection (served by %s) after the restart: %v", long.Endpoint, err)
	}
	t.Logf("podnetd %s, down %s, restarted and programmed in %s; long-lived connection served by %s",
		sig, downFor, restarted.Round(time.Millisecond), long.Endpoint)
	checkProbes(t, svc, probes)
	checkTableKept(t, n1, before, after, events, watchErrs)
}

// checkTableKept fails the test if the node's table was recreated or changed,
// or if the kernel announced a new table or any deletion in its namespace.
func checkTableKept(t *testing.T, n *lab.Node, before, after tableState, events map[string]int, watchErrs []error) {
	t.Helper()
	t.Logf("nft in %s from before the stop until after the restart: %v; table handle %d before, %d after",
		n.Name, events, before.Handle, after.Handle)
	for _, err := range watchErrs {
		t.Errorf("nft monitor: %v", err)
	}
	if after.Handle != before.Handle {
		t.Errorf("table inet podnet was recreated: handle %d before, %d after", before.Handle, after.Handle)
	}
	for _, ev := range []string{"add table", "delete table", "delete chain", "delete rule", "delete set", "delete element"} {
		if events[ev] > 0 {
			t.Errorf("the restart changed the table: %d %q events (all: %v)", events[ev], ev, events)
		}
	}
	if d := cmp.Diff(before, after); d != "" {
		t.Errorf("table inet podnet changed across the restart (-before +after):\n%s", d)
	}
}

// addLabPod attaches a pod named name to n through CNI.
func addLabPod(t *testing.T, ctx context.Context, l *lab.Lab, n *lab.Node, name string) *lab.Pod {
	t.Helper()
	p, err := l.AddPod(ctx, n, name)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// checkProbes fails the test unless every probe connected and saw the
// client's own address, each phase had probes (down: at least 20), and both
// endpoints served probes while podnetd was down.
func checkProbes(t *testing.T, svc lab.Service, probes []probe) {
	t.Helper()
	byPhase := map[string][]probe{}
	for _, pr := range probes {
		byPhase[pr.phase] = append(byPhase[pr.phase], pr)
	}
	for _, phase := range []string{phaseUp, phaseDown, phaseRestarting, phaseAfter} {
		ps := byPhase[phase]
		served, failed := map[string]int{}, 0
		for _, pr := range ps {
			switch {
			case pr.err != nil:
				failed++
				t.Errorf("new connection while %s (at +%s) failed: %v", phase, pr.at.Round(time.Millisecond), pr.err)
			case pr.saw != pr.want:
				t.Errorf("new connection while %s: %s saw %s, want the client's own %s", phase, pr.endpoint, pr.saw, pr.want)
			default:
				served[pr.endpoint]++
			}
		}
		t.Logf("new connections while %-10s %3d, %d failed, served by %v", phase+":", len(ps), failed, served)
		min := 1
		if phase == phaseDown {
			min = 20
		}
		if len(ps) < min {
			t.Errorf("only %d new connections while %s, want at least %d: the test did not cover it", len(ps), phase, min)
		}
		if phase == phaseDown {
			for _, ep := range svc.EndpointNames() {
				if served[ep] == 0 {
					t.Errorf("endpoint %s got none of the %d connections made while podnetd was down (%v)", ep, len(ps), served)
				}
			}
		}
	}
}

// probe is one new connection through the VIP.
type probe struct {
	phase     string
	at        time.Duration // since the prober started
	endpoint  string
	saw, want netip.Addr
	err       error
}

// prober connects through a service's VIP every 5 ms from one pod, tagging
// each connection with the phase it started in, until stopped or 5000
// connections were made.
type prober struct {
	mu     sync.Mutex
	phase  string
	probes []probe
	stopc  chan struct{}
	done   chan struct{}
}

func startProber(from *lab.Pod, svc lab.Service) *prober {
	p := &prober{phase: phaseUp, stopc: make(chan struct{}), done: make(chan struct{})}
	start := time.Now()
	go func() {
		defer close(p.done)
		for range 5000 {
			select {
			case <-p.stopc:
				return
			case <-time.After(5 * time.Millisecond):
			}
			p.mu.Lock()
			pr := probe{phase: p.phase, at: time.Since(start), want: from.IP}
			p.mu.Unlock()
			pr.endpoint, pr.saw, pr.err = lab.ProbeService(from.NS, svc.Dst(), 2*time.Second)
			p.mu.Lock()
			p.probes = append(p.probes, pr)
			p.mu.Unlock()
		}
	}()
	return p
}

func (p *prober) enter(phase string) {
	p.mu.Lock()
	p.phase = phase
	p.mu.Unlock()
}

// stop ends the probing and returns every probe made.
func (p *prober) stop() []probe {
	close(p.stopc)
	<-p.done
	return slices.Clone(p.probes)
}
