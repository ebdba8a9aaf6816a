package lab

import (
	"fmt"
	"io"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"text/tabwriter"
	"time"
)

// PodService is the journey of a pod reaching a service through its ClusterIP.
const PodService Journey = "pod → service, through its ClusterIP"

// ServiceConns is how many connections every pod makes to every service, and
// maxServiceFailures how many failed ones end a pod's check early, so a broken
// service costs seconds, not minutes.
const (
	ServiceConns       = 30
	maxServiceFailures = 3
	serviceDialTimeout = 2 * time.Second
)

// ServiceCheck is one pod's connections to one service.
type ServiceCheck struct {
	Service   Service
	From      *Pod
	Tried     int
	Connected int
	// Served counts the connections each endpoint (by pod name) accepted.
	Served map[string]int
	// Saw lists the distinct client addresses the endpoints saw, Wrong the
	// connections where that was not the client's own address.
	Saw   []netip.Addr
	Wrong []string
	Took  time.Duration // mean time to connect and read the greeting
	Err   error         // the first failed connection
}

// wantSource is the client address an endpoint must see: the pod's own IP
// (no SNAT from pod to service), except when the pod reached itself, which
// podnet masquerades to the node's bridge address so that the reply comes back
// through conntrack (hairpin).
func wantSource(from *Pod, endpoint string) netip.Addr {
	if endpoint == from.Name {
		return from.Node.Gateway()
	}
	return from.IP
}

// OK reports whether every connection worked, every endpoint got some and
// every endpoint saw the wanted client address.
func (c ServiceCheck) OK() bool {
	return c.Err == nil && c.Connected == c.Tried && len(c.Wrong) == 0 && len(c.starved()) == 0
}

// starved lists the endpoints that served no connection.
func (c ServiceCheck) starved() []string {
	var out []string
	for _, e := range c.Service.EndpointNames() {
		if c.Served[e] == 0 {
			out = append(out, e)
		}
	}
	return out
}

// CheckServices connects ServiceConns times from every pod to every service
// of the lab, the pods in parallel, and records which endpoint served each
// connection and the client address it saw.
func (l *Lab) CheckServices() []ServiceCheck {
	var checks []ServiceCheck
	for _, s := range l.Services {
		for _, p := range l.Pods {
			checks = append(checks, ServiceCheck{Service: s, From: p, Served: map[string]int{}})
		}
	}
	var wg sync.WaitGroup
	for i := range checks {
		wg.Add(1)
		go func() { defer wg.Done(); checks[i].run() }()
	}
	wg.Wait()
	return checks
}

func (c *ServiceCheck) run() {
	var took time.Duration
	for failed := 0; c.Tried < ServiceConns && failed < maxServiceFailures; {
		c.Tried++
		start := time.Now()
		ep, saw, err := ProbeService(c.From.NS, c.Service.Dst(), serviceDialTimeout)
		if err != nil {
			failed++
			if c.Err == nil {
				c.Err = err
			}
			continue
		}
		took += time.Since(start)
		c.Connected++
		c.Served[ep]++
		if !slices.Contains(c.Saw, saw) {
			c.Saw = append(c.Saw, saw)
		}
		if want := wantSource(c.From, ep); saw != want {
			c.Wrong = append(c.Wrong, fmt.Sprintf("%s saw %s, want %s", ep, saw, want))
		}
	}
	if c.Connected > 0 {
		c.Took = took / time.Duration(c.Connected)
	}
}

// PrintServiceChecks writes the service journey, one line per pod and
// service, and a summary line. It returns the number of failed checks.
func PrintServiceChecks(w io.Writer, checks []ServiceCheck) int {
	failed := 0
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	var shown []string
	for _, c := range checks {
		s := c.Service
		if !slices.Contains(shown, s.Name) {
			shown = append(shown, s.Name)
			var eps []string
			for _, p := range s.Endpoints {
				eps = append(eps, fmt.Sprintf("%s %s:%d", p.Name, p.IP, s.TargetPort))
			}
			fmt.Fprintf(tw, "\n%s: %s %s/TCP → %s (%d connections per pod)\n", PodService, s.Name, s.Dst(), strings.Join(eps, ", "), ServiceConns)
		}
		mark, detail := "ok  ", sawText(c)
		if !c.OK() {
			failed++
			mark, detail = "FAIL", failText(c)
		}
		fmt.Fprintf(tw, "  %s\t%s → %s\t%s\t%d/%d connected\t%s\t%s\t%.2f ms\n", mark, c.From.Name, s.Name, s.Dst(),
			c.Connected, c.Tried, servedText(c), detail, float64(c.Took.Microseconds())/1000)
	}
	tw.Flush()
	fmt.Fprintf(w, "\nservices: %d passed, %d failed\n", len(checks)-failed, failed)
	return failed
}

func servedText(c ServiceCheck) string {
	var parts []string
	for _, e := range c.Service.EndpointNames() {
		parts = append(parts, fmt.Sprintf("%s %d", e, c.Served[e]))
	}
	return strings.Join(parts, ", ")
}

func sawText(c ServiceCheck) string {
	text := "endpoints saw " + c.From.IP.String()
	if c.Served[c.From.Name] > 0 {
		text += fmt.Sprintf(" (itself: %s, hairpin masquerade)", c.From.Node.Gateway())
	}
	return text
}

func failText(c ServiceCheck) string {
	var parts []string
	if c.Err != nil {
		parts = append(parts, c.Err.Error())
	}
	if c.Tried < ServiceConns {
		parts = append(parts, fmt.Sprintf("stopped after %d failures", maxServiceFailures))
	}
	if n := len(c.Wrong); n > 0 {
		parts = append(parts, fmt.Sprintf("%d connections with the wrong source (SNAT?), e.g. %s", n, c.Wrong[0]))
	}
	if s := c.starved(); len(s) > 0 && c.Connected > 0 {
		parts = append(parts, fmt.Sprintf("no connection reached %s", strings.Join(s, ", ")))
	}
	return strings.Join(parts, "; ")
}
