package benchkp

import (
	"fmt"
	"maps"
	"os"
	"slices"
	"strings"

	"github.com/google/nftables"
)

// hostFiles are the machine's settings kube-proxy changes unless told not
// to: the conntrack sysctls of the namespace it runs in, and nf_conntrack_max
// and the conntrack hash size, which are global to the machine.
var hostFiles = []string{
	"/proc/sys/net/netfilter/nf_conntrack_max",
	"/proc/sys/net/netfilter/nf_conntrack_tcp_timeout_established",
	"/proc/sys/net/netfilter/nf_conntrack_tcp_timeout_close_wait",
	"/proc/sys/net/netfilter/nf_conntrack_tcp_be_liberal",
	"/proc/sys/net/netfilter/nf_conntrack_udp_timeout",
	"/proc/sys/net/netfilter/nf_conntrack_udp_timeout_stream",
	"/sys/module/nf_conntrack/parameters/hashsize",
}

// HostState is what the benchmark must leave as it found it in the
// machine's own network namespace: the conntrack settings above and an
// outline of the nftables ruleset (each table, each chain with its rule
// count, each set with its element count).
type HostState struct {
	Files   map[string]string // path → content; "absent" when unreadable
	Ruleset []string
}

// ReadHostState reads the state of the calling process's network
// namespace: call it outside the sandbox, before and after the run. It
// only reads.
func ReadHostState() (HostState, error) {
	h := HostState{Files: map[string]string{}}
	for _, p := range hostFiles {
		b, err := os.ReadFile(p)
		if err != nil {
			h.Files[p] = "absent"
			continue
		}
		h.Files[p] = strings.TrimSpace(string(b))
	}
	c, err := nftables.New()
	if err != nil {
		return h, fmt.Errorf("nftables: %w", err)
	}
	tables, err := c.ListTables()
	if err != nil {
		return h, fmt.Errorf("list tables: %w", err)
	}
	chains, err := c.ListChains()
	if err != nil {
		return h, fmt.Errorf("list chains: %w", err)
	}
	for _, t := range tables {
		h.Ruleset = append(h.Ruleset, fmt.Sprintf("table %d %s", t.Family, t.Name))
		for _, ch := range chains {
			if ch.Table.Name != t.Name || ch.Table.Family != t.Family {
				continue
			}
			rules, err := c.GetRules(t, ch)
			if err != nil {
				return h, fmt.Errorf("rules of %s %s: %w", t.Name, ch.Name, err)
			}
			h.Ruleset = append(h.Ruleset, fmt.Sprintf("chain %d %s %s: %d rules", t.Family, t.Name, ch.Name, len(rules)))
		}
		sets, err := c.GetSets(t)
		if err != nil {
			return h, fmt.Errorf("sets of %s: %w", t.Name, err)
		}
		for _, s := range sets {
			elems, err := c.GetSetElements(s)
			if err != nil {
				return h, fmt.Errorf("elements of %s %s: %w", t.Name, s.Name, err)
			}
			h.Ruleset = append(h.Ruleset, fmt.Sprintf("set %d %s %s: %d elements", t.Family, t.Name, s.Name, len(elems)))
		}
	}
	slices.Sort(h.Ruleset)
	return h, nil
}

// Diff lists what differs from before to h, one line each; nil when
// nothing does.
func (h HostState) Diff(before HostState) []string {
	var out []string
	for _, p := range slices.Sorted(maps.Keys(before.Files)) {
		if h.Files[p] != before.Files[p] {
			out = append(out, fmt.Sprintf("%s: %s, was %s", p, h.Files[p], before.Files[p]))
		}
	}
	for _, l := range before.Ruleset {
		if !slices.Contains(h.Ruleset, l) {
			out = append(out, "nftables: gone or changed: "+l)
		}
	}
	for _, l := range h.Ruleset {
		if !slices.Contains(before.Ruleset, l) {
			out = append(out, "nftables: new or changed: "+l)
		}
	}
	return out
}

// Summary is a one-line description of h for the report.
func (h HostState) Summary() string {
	return fmt.Sprintf("nf_conntrack_max %s, conntrack hashsize %s, %d nftables objects",
		h.Files[hostFiles[0]], h.Files[hostFiles[len(hostFiles)-1]], len(h.Ruleset))
}
