package nft

import (
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"

	"github.com/google/nftables"
)

// Explaining a packet: the table's rules are fixed (layout.go, svclayout.go)
// and all service state is in set and map elements, so what the table does
// with a new connection is the walk of those rules in order, each set lookup
// answered by an element source. Table answers from the kernel, one
// single-element read per lookup (getelem.go); Fake from the elements the last
// synced State gives. The walk is explain_walk.go, the sources
// explain_source.go.

// Packet is the first packet of a new connection, the only one the table's nat
// chains see.
type Packet struct {
	// Src and Dst are the addresses, of one family.
	Src, Dst netip.Addr
	// Proto is the IP protocol (unix.IPPROTO_TCP, …). The table keys services
	// by protocol and destination port; any other protocol only meets the
	// reject of unknown ClusterIP ports.
	Proto   uint8
	DstPort uint16
	// Local says the node itself sends the packet: it enters the table through
	// the output hook instead of prerouting. Its Src should then be one of the
	// node's addresses, as the kernel would pick.
	Local bool
}

// Explanation says what table inet podnet does with a Packet.
type Explanation struct {
	// Steps are the rules that matched, in the order the packet meets them.
	Steps []ExplainStep
	// Verdict is "dnat" (to one of Backends), "reject", "drop", or "none":
	// no service or hostPort rule matched and the packet passes without
	// DNAT.
	Verdict string
	// Service is the matched service port as nft lists its element's key,
	// "VIP . proto . port" or "proto . nodePort"; "" if none.
	Service string
	// HostPort is the matched hostPort mapping as nft lists its element's
	// key, "hostIP . proto . port" or "proto . port" (any local address);
	// "" if none. Only a packet no service takes meets the hostPorts.
	HostPort string
	// Chains are the table's chains the packet goes through in the
	// destination NAT hook, in order, named as in the table (and so as an
	// nftrace event names them): prerouting or output, services, then the
	// endpoint-count chain or no-endpoints, or if no service took the
	// packet, hostports. The source NAT chain, postrouting,
	// is described by Masquerade and the last step.
	Chains []string
	// Backends are the endpoints the DNAT may choose; with session affinity
	// and an affinity element for the client, only the endpoint it is pinned
	// to; for a hostPort, its pod.
	Backends []netip.AddrPort
	// Masquerade says postrouting masquerades the connection, to at least
	// one of Backends (MasqReason then names them if not to all), or to Dst
	// for Verdict "none". Always false for "reject" and "drop".
	Masquerade bool
	// MasqReason says why or why not, in plain sentences; "" for "reject" and
	// "drop".
	MasqReason string
}

// ExplainStep is one rule the packet matched.
type ExplainStep struct {
	// Chain is the chain holding Rule.
	Chain string
	// Rule is the rule as `nft list` prints it; "" when no rule of Chain
	// matched and the chain's policy or its end decided.
	Rule string
	// Element is what the rule's lookups found, as `nft list` prints
	// elements (several joined by ", "); "" if none.
	Element string
	// What says in one plain sentence what the rule did.
	What string
}

// The verdicts of an Explanation.
const (
	VerdictDNAT   = "dnat"
	VerdictReject = "reject"
	VerdictDrop   = "drop"
	VerdictNone   = "none"
)

// Explainer explains what the table does with a packet, from the table's
// current content.
type Explainer interface {
	// Explain walks p through the table's rules. It fails if the table does
	// not exist (ErrNoTable), if p is invalid, or if the table cannot be
	// read.
	Explain(p Packet) (*Explanation, error)
}

var (
	_ Explainer = (*Table)(nil)
	_ Explainer = (*Fake)(nil)
)

// ErrLayout is matched by errors.Is when the kernel table's rules are not the
// ones this version writes (another podnet version, or edited by hand): the
// walk would not be the kernel's.
var ErrLayout = errors.New("nft: table inet " + TableName + " does not have this version's rules")

// Explain walks p through the kernel's table inet podnet: every set and map
// lookup is one single-element netlink read (NFT_MSG_GETSETELEM, as `nft get
// element`), so the answer reflects the elements the kernel holds now,
// whatever podnetd last wrote, with the affinity set's live entries. A
// destination or source counts as a local address (the rules' `fib … type
// local`) if the namespace's routing answers RTN_LOCAL for it. Explain
// checks first that the services and postrouting chains carry this version's
// rule tags (ErrLayout if not). It takes no lock: a Sync running at the same
// time may show half its changes.
func (t *Table) Explain(p Packet) (*Explanation, error) {
	if err := p.validate(); err != nil {
		return nil, err
	}
	src, err := newKernelSource(t.netnsFd)
	if err != nil {
		return nil, err
	}
	defer src.Close()
	ok, err := src.nft.tableExists()
	if err != nil {
		return nil, err
	}
	if !ok {
		return nil, ErrNoTable
	}
	if err := t.checkRules(); err != nil {
		return nil, err
	}
	return explain(src, p)
}

// checkRules fails with ErrLayout unless the services and postrouting chains
// hold the rules the walk follows.
func (t *Table) checkRules() error {
	conn, err := t.newConn()
	if err != nil {
		return err
	}
	for _, def := range chainDefs {
		if def.chain.Name != chainServices && def.chain.Name != chainPostrouting {
			continue
		}
		rules, err := conn.GetRules(podnetTable(), &nftables.Chain{Name: def.chain.Name, Table: podnetTable()})
		if err != nil {
			return fmt.Errorf("nft: list rules of %s: %w", def.chain.Name, err)
		}
		want := def.rules()
		if len(rules) != len(want) {
			return fmt.Errorf("%w: chain %s has %d rules, want %d", ErrLayout, def.chain.Name, len(rules), len(want))
		}
		for i, r := range want {
			if !slices.Equal(rules[i].UserData, ruleTag(r.role)) {
				return fmt.Errorf("%w: rule %d of chain %s is not %q", ErrLayout, i, def.chain.Name, r.role)
			}
		}
	}
	return nil
}

// Explain walks p through the table the last synced State describes, as
// Table.Explain does through the kernel's (Render's text). Local addresses
// are the State's LocalIPs and loopback addresses; the affinity sets are
// empty, as no packet fills them. It fails with ErrNoTable if there is no
// table (never synced, or cleaned up).
func (f *Fake) Explain(p Packet) (*Explanation, error) {
	if err := p.validate(); err != nil {
		return nil, err
	}
	s, ok := f.LastState()
	if !ok {
		return nil, ErrNoTable
	}
	return explain(newMemSource(s), p)
}

func (p Packet) validate() error {
	switch {
	case !p.Src.IsValid() || !p.Dst.IsValid():
		return fmt.Errorf("nft: explain: packet needs a source and a destination address, got %s → %s", p.Src, p.Dst)
	case p.Src.Is4() != p.Dst.Is4():
		return fmt.Errorf("nft: explain: source %s and destination %s are of different families", p.Src, p.Dst)
	}
	return nil
}

// String prints e for people: the verdict, service, chains, backends and
// masquerade decision, then each step as "[chain] rule" with the element and
// the sentence indented below it.
func (e *Explanation) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "verdict %s\n", e.Verdict)
	if e.Service != "" {
		fmt.Fprintf(&b, "service %s\n", e.Service)
	}
	if e.HostPort != "" {
		fmt.Fprintf(&b, "hostport %s\n", e.HostPort)
	}
	fmt.Fprintf(&b, "chains %s\n", strings.Join(e.Chains, " "))
	if len(e.Backends) > 0 {
		bs := make([]string, len(e.Backends))
		for i, be := range e.Backends {
			bs[i] = be.String()
		}
		fmt.Fprintf(&b, "backends %s\n", strings.Join(bs, " "))
	}
	if e.MasqReason != "" {
		yes := map[bool]string{true: "yes", false: "no"}[e.Masquerade]
		fmt.Fprintf(&b, "masquerade %s: %s\n", yes, e.MasqReason)
	}
	for _, s := range e.Steps {
		rule := s.Rule
		if rule == "" {
			rule = "(no rule)"
		}
		fmt.Fprintf(&b, "[%s] %s\n", s.Chain, rule)
		if s.Element != "" {
			fmt.Fprintf(&b, "    element %s\n", s.Element)
		}
		fmt.Fprintf(&b, "    %s\n", s.What)
	}
	return b.String()
}
