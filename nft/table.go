package nft

import (
	"encoding/binary"
	"errors"
	"fmt"
	"maps"
	"slices"
	"sync"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"
)

// Interface is what the daemon uses to program the table.
type Interface interface {
	// Sync makes table inet podnet equal s in one atomic transaction. It
	// (re)creates the table, sets, chain and rules when they are missing or
	// differ from what this version writes; otherwise it only changes set
	// elements. Invalid values of s are skipped: the rest is applied and the
	// returned error, matching ErrInvalid, lists them.
	Sync(s State) error
	// Cleanup deletes the table. A missing table is not an error.
	Cleanup() error
}

var (
	_ Interface = (*Table)(nil)
	_ Interface = (*Fake)(nil)
)

// Option configures New.
type Option func(*options)

type options struct {
	netnsFd int // 0: the process's own namespace
}

// WithNetNSFd makes the Table program the network namespace open as fd (for
// example /run/netns/NAME) instead of the process's own; fd 0 keeps the process's
// own. The fd must stay open while the Table is used; New fails if fd is negative
// or not a network namespace.
func WithNetNSFd(fd int) Option {
	return func(o *options) { o.netnsFd = fd }
}

// Table is the kernel implementation of Interface: it talks netlink to nftables,
// without running the nft binary. Every Sync and Cleanup is one netlink batch that
// the kernel applies entirely or not at all. Methods are safe for concurrent use:
// Sync and Cleanup are serialised; List and Explain read the kernel without
// waiting for them (List reads again if the ruleset changed meanwhile; the
// lookups of one Explain may straddle a Sync).
type Table struct {
	mu      sync.Mutex
	copts   []nftables.ConnOption
	netnsFd int // 0: the process's own namespace

	// idx is the service part of the last State, computed incrementally.
	idx *svcIndex
	// synced says that the kernel table held, at ruleset generation gen, what
	// the last Sync asked for: base and the union of idx. The next Sync then
	// sends only the difference without reading the table back, unless the
	// generation moved (another batch was committed since, by anyone).
	synced bool
	gen    uint32
	base   desired
}

// sendBuffer is the socket send buffer Table asks for: a batch must fit in it
// whole, and the default (net.core.wmem_default, about 208 KiB) holds only a few
// thousand elements. Like nft, Table forces it with SO_SNDBUFFORCE (see
// forceSendBuffer).
const sendBuffer = 16 << 20

// New returns a Table for the process's network namespace, or the one given with
// WithNetNSFd. It fails if nftables cannot be reached there (no CAP_NET_ADMIN, no
// nf_tables in the kernel, or fd not a network namespace).
func New(opts ...Option) (*Table, error) {
	var o options
	for _, opt := range opts {
		opt(&o)
	}
	copts := []nftables.ConnOption{nftables.WithSockOptions(forceSendBuffer)}
	if o.netnsFd < 0 {
		return nil, fmt.Errorf("nft: invalid network namespace fd %d", o.netnsFd)
	}
	if o.netnsFd > 0 {
		copts = append(copts, nftables.WithNetNSFd(o.netnsFd))
	}
	t := &Table{copts: copts, netnsFd: o.netnsFd, idx: newSvcIndex()}
	conn, err := t.newConn()
	if err != nil {
		return nil, err
	}
	if _, err := conn.ListTablesOfFamily(nftables.TableFamilyINet); err != nil {
		return nil, fmt.Errorf("nft: reach nftables: %w", err)
	}
	return t, nil
}

// newConn returns a connection whose batch queue is empty. Each Sync and Cleanup
// builds its batch on its own connection, so a batch abandoned half-built is never
// sent. The connection dials a netlink socket per request and holds none open.
func (t *Table) newConn() (*nftables.Conn, error) {
	conn, err := nftables.New(t.copts...)
	if err != nil {
		return nil, fmt.Errorf("nft: open netlink: %w", err)
	}
	return conn, nil
}

// forceSendBuffer raises the socket's send buffer to sendBuffer. Without
// CAP_NET_ADMIN it asks within net.core.wmem_max instead, which the kernel caps
// silently; only batches larger than that then fail ("message too long").
func forceSendBuffer(c *netlink.Conn) error {
	rc, err := c.SyscallConn()
	if err != nil {
		return fmt.Errorf("nft: socket: %w", err)
	}
	var serr error
	err = rc.Control(func(fd uintptr) {
		if unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_SNDBUFFORCE, sendBuffer) != nil {
			serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_SNDBUF, sendBuffer)
		}
		// The kernel acknowledges each message of a batch; hundreds of
		// acknowledgements overflow the default receive buffer (ENOBUFS).
		if unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, sendBuffer) != nil {
			serr = errors.Join(serr, unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_RCVBUF, sendBuffer))
		}
	})
	if err = errors.Join(err, serr); err != nil {
		return fmt.Errorf("nft: socket send buffer: %w", err)
	}
	return nil
}

// podnetTable is table inet podnet.
func podnetTable() *nftables.Table {
	return &nftables.Table{Name: TableName, Family: nftables.TableFamilyINet}
}

// Sync makes the kernel table equal s; see Interface. The services of s are
// compared with those of the last Sync and only changed ones are recomputed. If
// the last Sync succeeded and no batch was committed in the namespace since (the
// ruleset generation did not move), the batch holds just the difference between
// the two States. Otherwise Sync reads the table: if its sets, chains and rule
// tags are what this version writes, the batch only adds and deletes elements
// (and flushes and refills an interval set whose content changed); if not, the
// batch deletes the table (if any) and creates it whole. A batch with nothing to
// change is not sent. On a kernel error nothing changed and the error is
// returned, joined with the *SkippedError if values were skipped.
func (t *Table) Sync(s State) error {
	base, problems := normalizeBase(s)
	t.mu.Lock()
	defer t.mu.Unlock()
	delta, svcProblems := t.idx.update(s)
	return errors.Join(t.sync(base, delta), skippedError(append(problems, svcProblems...)))
}

func (t *Table) sync(base desired, delta svcDelta) error {
	gen0, genErr := t.generation()
	fast := genErr == nil && t.synced && gen0 == t.gen
	t.synced = false // until this batch is known to be in: the index moved on
	conn, err := t.newConn()
	if err != nil {
		return err
	}
	var changed bool
	if fast {
		changed, err = queueDelta(conn, t.base, base, delta)
	} else {
		d := base
		d.svc = t.idx.union()
		var cur kernelState
		if cur, err = read(conn); err != nil {
			return err
		}
		if cur.current {
			changed, err = queueUpdate(conn, cur, d)
		} else {
			changed, err = true, queueCreate(conn, cur.exists, d)
		}
	}
	if err != nil {
		return err // the half-built batch is dropped with conn
	}
	if err := conn.Flush(); err != nil {
		return fmt.Errorf("nft: sync table inet %s: %w", TableName, err)
	}
	if genErr != nil {
		return nil
	}
	// The batch is ours if the generation moved by exactly one (or not at
	// all for an empty batch); if another batch slipped in, read next time.
	if gen1, err := t.generation(); err == nil && (changed && gen1 == gen0+1 || !changed && gen1 == gen0) {
		t.synced, t.gen, t.base = true, gen1, base
	}
	return nil
}

// queueDelta queues the changes from the state last applied, base old and the
// services before delta, to base and the services after delta. It reports
// whether it queued anything.
func queueDelta(conn *nftables.Conn, old, base desired, delta svcDelta) (bool, error) {
	sets := map[string]*nftables.Set{}
	for _, spec := range setSpecs {
		sets[spec.name] = spec.newSet(podnetTable())
	}
	for _, c := range delta.addChains {
		addCountChain(conn, sets, c)
	}
	have := map[string][]nftables.SetElement{}
	for _, spec := range setSpecs {
		if !spec.svc {
			have[spec.name] = spec.elements(old)
		}
	}
	changes := elementChanges(have, base)
	if err := queueElementChanges(conn, changes); err != nil {
		return false, err
	}
	for _, spec := range setSpecs {
		del, add := delta.del[spec.name], delta.add[spec.name]
		if len(del)+len(add) == 0 {
			continue
		}
		dels := make([]nftables.SetElement, len(del))
		for i, e := range del {
			dels[i] = nftables.SetElement{Key: e.key(), KeyEnd: e.keyEnd()}
		}
		adds := make([]nftables.SetElement, len(add))
		for i, e := range add {
			adds[i] = e.setElement()
		}
		if err := deleteElements(conn, sets[spec.name], dels); err != nil {
			return false, err
		}
		if err := addElements(conn, sets[spec.name], adds); err != nil {
			return false, err
		}
	}
	for _, c := range delta.delChains {
		chain := &nftables.Chain{Table: podnetTable(), Name: c.name()}
		conn.FlushChain(chain)
		conn.DelChain(chain)
	}
	return len(changes) > 0 || !delta.empty(), nil
}

// queueCreate queues the whole table with d's elements, after deleting the old
// table if it exists, so that the kernel swaps them in one transaction.
func queueCreate(conn *nftables.Conn, exists bool, d desired) error {
	table := podnetTable()
	if exists {
		conn.DelTable(table)
	}
	conn.AddTable(table)
	sets := make(map[string]*nftables.Set, len(setSpecs))
	for _, spec := range setSpecs {
		set := spec.newSet(table)
		if err := conn.AddSet(set, nil); err != nil {
			return fmt.Errorf("nft: add set %s: %w", spec.name, err)
		}
		sets[spec.name] = set
	}
	// Every chain exists before a rule or a verdict map element jumps to it.
	chains := make([]*nftables.Chain, len(chainDefs))
	for i, def := range chainDefs {
		chain := def.chain
		chain.Table = table
		chains[i] = conn.AddChain(&chain)
	}
	for i, def := range chainDefs {
		for _, r := range def.rules() {
			conn.AddRule(&nftables.Rule{Table: table, Chain: chains[i], Exprs: r.exprs(sets), UserData: ruleTag(r.role)})
		}
	}
	for _, name := range slices.Sorted(maps.Keys(d.svc.chains)) {
		addCountChain(conn, sets, d.svc.chains[name])
	}
	for _, spec := range setSpecs {
		if err := addElements(conn, sets[spec.name], spec.elements(d)); err != nil {
			return err
		}
	}
	return nil
}

// addCountChain queues an endpoint-count chain with its rule.
func addCountChain(conn *nftables.Conn, sets map[string]*nftables.Set, c countChain) {
	chain := &nftables.Chain{Table: podnetTable(), Name: c.name()}
	conn.AddChain(chain)
	for _, r := range countChainRules(c) {
		conn.AddRule(&nftables.Rule{Table: chain.Table, Chain: chain, Exprs: r.exprs(sets), UserData: ruleTag(r.role)})
	}
}

// queueUpdate queues the changes that turn the current table cur into d: new
// endpoint-count chains first, so that new elements can jump to them, then the
// element changes, then the chains no element jumps to any more.
func queueUpdate(conn *nftables.Conn, cur kernelState, d desired) (bool, error) {
	changed := false
	sets := map[string]*nftables.Set{}
	for _, spec := range setSpecs {
		sets[spec.name] = spec.newSet(podnetTable())
	}
	for name, c := range d.svc.chains {
		if !cur.countChains[name] {
			addCountChain(conn, sets, c)
			changed = true
		}
	}
	changes := elementChanges(cur.elements, d)
	if err := queueElementChanges(conn, changes); err != nil {
		return false, err
	}
	for name := range cur.countChains {
		if _, ok := d.svc.chains[name]; !ok {
			chain := &nftables.Chain{Table: podnetTable(), Name: name}
			conn.FlushChain(chain)
			conn.DelChain(chain)
			changed = true
		}
	}
	return changed || len(changes) > 0, nil
}

// queueElementChanges queues changes to the sets of the existing table.
func queueElementChanges(conn *nftables.Conn, changes []setChange) error {
	for _, c := range changes {
		set := c.spec.newSet(podnetTable())
		if c.flush {
			conn.FlushSet(set)
		}
		if err := deleteElements(conn, set, c.del); err != nil {
			return err
		}
		if err := addElements(conn, set, c.add); err != nil {
			return err
		}
	}
	return nil
}

// maxElementsPerMessage bounds the elements of one netlink message. The kernel
// reads a message's element list as one attribute, whose 16-bit length silently
// wraps past 64 KiB and drops the elements after it; at most 36 bytes per element
// (an IPv6 key with flags) keep 1024 well below. A batch holds as many messages as
// needed: it stays one transaction.
const maxElementsPerMessage = 1024

// addElements queues elems for adding to set, in messages of bounded size.
func addElements(conn *nftables.Conn, set *nftables.Set, elems []nftables.SetElement) error {
	for chunk := range slices.Chunk(elems, maxElementsPerMessage) {
		if err := conn.SetAddElements(set, chunk); err != nil {
			return fmt.Errorf("nft: add elements to %s: %w", set.Name, err)
		}
	}
	return nil
}

// deleteElements queues elems for deleting from set, in messages of bounded size.
func deleteElements(conn *nftables.Conn, set *nftables.Set, elems []nftables.SetElement) error {
	for chunk := range slices.Chunk(elems, maxElementsPerMessage) {
		if err := conn.SetDeleteElements(set, chunk); err != nil {
			return fmt.Errorf("nft: delete elements from %s: %w", set.Name, err)
		}
	}
	return nil
}

// kernelState is what read found in the kernel.
type kernelState struct {
	exists   bool                             // the table exists
	current  bool                             // its sets, chain and rules are this version's
	elements map[string][]nftables.SetElement // by set name, when current
	// countChains are the endpoint-count chains present, when current.
	countChains map[string]bool
}

// read reports whether the table exists and is current, and if so the elements
// of its sets.
func read(conn *nftables.Conn) (kernelState, error) {
	tables, err := conn.ListTablesOfFamily(nftables.TableFamilyINet)
	if err != nil {
		return kernelState{}, fmt.Errorf("nft: list tables: %w", err)
	}
	i := slices.IndexFunc(tables, func(tb *nftables.Table) bool { return tb.Name == TableName })
	if i < 0 {
		return kernelState{}, nil
	}
	if tables[i].Flags != 0 { // dormant, or owned by another process: not as created
		return kernelState{exists: true}, nil
	}
	sets, countChains, err := currentLayout(conn)
	if err != nil || sets == nil {
		return kernelState{exists: true}, err
	}
	cur := kernelState{exists: true, current: true, elements: map[string][]nftables.SetElement{}, countChains: countChains}
	for _, set := range sets {
		if set.Dynamic {
			continue // packets fill it
		}
		elems, err := conn.GetSetElements(set)
		if err != nil {
			return kernelState{}, fmt.Errorf("nft: list elements of %s: %w", set.Name, err)
		}
		if set.IsMap && set.KeyType.GetNFTMagic() == nftables.TypeVerdict.GetNFTMagic() {
			if err := decodeVerdicts(elems); err != nil {
				return kernelState{}, fmt.Errorf("nft: list elements of %s: %w", set.Name, err)
			}
		}
		cur.elements[set.Name] = elems
	}
	return cur, nil
}

// currentLayout returns the table's sets and its endpoint-count chains if it
// holds exactly this version's sets, fixed chains and rules (by their tags), and
// nil otherwise.
func currentLayout(conn *nftables.Conn) ([]*nftables.Set, map[string]bool, error) {
	table := podnetTable()
	sets, err := conn.GetSets(table)
	if err != nil {
		return nil, nil, fmt.Errorf("nft: list sets: %w", err)
	}
	if len(sets) != len(setSpecs) {
		return nil, nil, nil
	}
	for _, spec := range setSpecs {
		i := slices.IndexFunc(sets, func(s *nftables.Set) bool { return s.Name == spec.name })
		if i < 0 || !spec.matches(sets[i]) {
			return nil, nil, nil
		}
	}
	chains, err := conn.ListChainsOfTableFamily(nftables.TableFamilyINet)
	if err != nil {
		return nil, nil, fmt.Errorf("nft: list chains: %w", err)
	}
	chains = slices.DeleteFunc(chains, func(c *nftables.Chain) bool { return c.Table == nil || c.Table.Name != TableName })
	countChains := map[string]bool{}
	for _, c := range chains {
		var want []string // the tags of the chain's rules
		if i := slices.IndexFunc(chainDefs, func(def chainDef) bool { return def.chain.Name == c.Name }); i >= 0 {
			if !sameChain(c, &chainDefs[i].chain) {
				return nil, nil, nil
			}
			for _, r := range chainDefs[i].rules() {
				want = append(want, r.role)
			}
		} else if cc, ok := parseCountChain(c.Name); !ok || c.Hooknum != nil {
			return nil, nil, nil
		} else {
			countChains[c.Name] = true
			for _, r := range countChainRules(cc) {
				want = append(want, r.role)
			}
		}
		rules, err := conn.GetRules(table, c)
		if err != nil {
			return nil, nil, fmt.Errorf("nft: list rules of %s: %w", c.Name, err)
		}
		if len(rules) != len(want) {
			return nil, nil, nil
		}
		for i, role := range want {
			if !slices.Equal(rules[i].UserData, ruleTag(role)) {
				return nil, nil, nil
			}
		}
	}
	if len(chains) != len(chainDefs)+len(countChains) {
		return nil, nil, nil
	}
	return sets, countChains, nil
}

func sameChain(c, want *nftables.Chain) bool {
	if want.Hooknum == nil {
		return c.Hooknum == nil
	}
	return c.Name == want.Name && c.Type == want.Type &&
		c.Hooknum != nil && *c.Hooknum == *want.Hooknum &&
		c.Priority != nil && *c.Priority == *want.Priority &&
		c.Policy != nil && *c.Policy == *want.Policy
}

// Cleanup deletes the table with everything in it, in one batch. A missing table
// is not an error; any other kernel error is returned.
func (t *Table) Cleanup() error {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.synced = false
	conn, err := t.newConn()
	if err != nil {
		return err
	}
	conn.DelTable(podnetTable())
	if err := conn.Flush(); err != nil && !errors.Is(err, unix.ENOENT) {
		return fmt.Errorf("nft: delete table inet %s: %w", TableName, err)
	}
	return nil
}

// decodeVerdicts moves the verdicts of a verdict map's elements, which
// google/nftables v0.3.0 leaves encoded in Val, to VerdictData.
func decodeVerdicts(elems []nftables.SetElement) error {
	for i := range elems {
		if elems[i].VerdictData != nil || len(elems[i].Val) == 0 {
			continue
		}
		ad, err := netlink.NewAttributeDecoder(elems[i].Val)
		if err != nil {
			return fmt.Errorf("decode verdict: %w", err)
		}
		ad.ByteOrder = binary.BigEndian
		v := &expr.Verdict{}
		for ad.Next() {
			switch ad.Type() {
			case unix.NFTA_VERDICT_CODE:
				v.Kind = expr.VerdictKind(int32(ad.Uint32()))
			case unix.NFTA_VERDICT_CHAIN:
				v.Chain = ad.String()
			}
		}
		if err := ad.Err(); err != nil {
			return fmt.Errorf("decode verdict: %w", err)
		}
		elems[i].Val, elems[i].VerdictData = nil, v
	}
	return nil
}
