package nft

import (
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"

	"github.com/google/nftables"
	"golang.org/x/sys/unix"
)

// Lister reads back the ruleset of table inet podnet.
type Lister interface {
	// List returns the table as `nft list table inet podnet` prints it, with
	// its rules and set sizes. It fails with ErrNoTable if there is none.
	List() (*Listing, error)
}

var (
	_ Lister = (*Table)(nil)
	_ Lister = (*Fake)(nil)
)

// ErrNoTable is matched by errors.Is when List finds no table inet podnet.
var ErrNoTable = errors.New("nft: no table inet " + TableName)

// Listing is the table as the kernel reports it.
type Listing struct {
	// Text is what `nft list table inet podnet` (nftables 1.0.6) prints,
	// ending with a newline.
	Text string
	// Rules are the table's rules in the order the kernel evaluates them
	// within each chain, chains in listing order.
	Rules []ListedRule
	// Sets are the named sets and maps in listing order.
	Sets []ListedSet
}

// ListedRule is one rule of a Listing.
type ListedRule struct {
	Chain  string
	Handle uint64 // the kernel's handle, as `nft -a list` shows; 0 from Fake
	Text   string // as in Listing.Text, without indentation
}

// ListedSet is the size of one set or map of a Listing.
type ListedSet struct {
	Name string
	// Elements counts the elements as listed: an interval counts once, as do
	// the elements packets added to a dynamic set.
	Elements int
}

// listTries bounds the reads of a List that another batch keeps changing.
const listTries = 5

// List reads table inet podnet from the kernel (in the Table's network
// namespace) over netlink and renders it: sets with their elements, chains
// and rules decoded from their expressions. An expression the decoder does not
// know prints as "# unknown expression <name>". The table is read with several
// requests; if the ruleset generation moved meanwhile (a batch was committed,
// by anyone), List reads again, and fails after listTries reads. List does not
// wait for a Sync in progress on this Table. It fails with ErrNoTable if the
// table does not exist, and with the kernel's error if it cannot be read.
func (t *Table) List() (*Listing, error) {
	for try := 1; ; try++ {
		gen0, genErr := t.generation()
		l, err := t.list()
		if genErr != nil {
			return l, err // no generation to check against
		}
		if gen1, gerr := t.generation(); gerr == nil && gen1 == gen0 {
			return l, err
		}
		if try == listTries {
			return nil, errors.Join(fmt.Errorf("nft: list table inet %s: the ruleset changed during each of %d reads", TableName, listTries), err)
		}
	}
}

// list reads the table once.
func (t *Table) list() (*Listing, error) {
	conn, err := t.newConn()
	if err != nil {
		return nil, err
	}
	tables, err := conn.ListTablesOfFamily(nftables.TableFamilyINet)
	if err != nil {
		return nil, fmt.Errorf("nft: list tables: %w", err)
	}
	i := slices.IndexFunc(tables, func(tb *nftables.Table) bool { return tb.Name == TableName })
	if i < 0 {
		return nil, ErrNoTable
	}
	sets, err := t.listSets()
	if err != nil {
		return nil, err
	}
	elems := make(map[string][]string, len(sets))
	for _, s := range sets {
		kelems, err := conn.GetSetElements(&nftables.Set{Table: podnetTable(), Name: s.name})
		if err != nil {
			return nil, fmt.Errorf("nft: list elements of %s: %w", s.name, err)
		}
		if elems[s.name], err = elementTexts(s, kelems); err != nil {
			return nil, fmt.Errorf("nft: list elements of %s: %w", s.name, err)
		}
	}
	chains, err := conn.ListChainsOfTableFamily(nftables.TableFamilyINet)
	if err != nil {
		return nil, fmt.Errorf("nft: list chains: %w", err)
	}
	chains = slices.DeleteFunc(chains, func(c *nftables.Chain) bool { return c.Table == nil || c.Table.Name != TableName })
	rules, err := t.listRules()
	if err != nil {
		return nil, err
	}
	return renderListing(tables[i].Flags, sets, elems, chains, rules), nil
}

// renderListing assembles the listing as nft 1.0.6 prints a table (nftables
// src/rule.c, table_print): named sets, then chains, in the kernel's order,
// separated by empty lines.
func renderListing(flags uint32, sets []setDesc, elems map[string][]string, chains []*nftables.Chain, rules []kernelRule) *Listing {
	l := &Listing{}
	refs := make(map[string]setRef, len(sets))
	for _, s := range sets {
		ref := setRef{keyLen: int(s.keyLen), dataLen: int(s.dataLen), dataTypes: s.dataTypes()}
		if s.anonymous() {
			ref.inline = "{ " + strings.Join(elems[s.name], ", ") + " }"
		}
		refs[s.name] = ref
	}
	var b strings.Builder
	b.WriteString("table inet " + TableName + " {\n")
	if flags&unix.NFT_TABLE_F_DORMANT != 0 {
		b.WriteString("\tflags dormant\n")
	}
	delim := ""
	for _, s := range sets {
		if s.anonymous() {
			continue
		}
		b.WriteString(delim + setText(s, elems[s.name]))
		delim = "\n"
		l.Sets = append(l.Sets, ListedSet{Name: s.name, Elements: len(elems[s.name])})
	}
	for _, c := range chains {
		b.WriteString(delim + "\tchain " + c.Name + " {\n")
		delim = "\n"
		if h := chainHeader(c); h != "" {
			b.WriteString("\t\t" + h + "\n")
		}
		for _, r := range rules {
			if r.chain != c.Name {
				continue
			}
			text := ruleText(r.exprs, refs)
			if r.comment != "" {
				text += " comment " + strconv.Quote(r.comment)
			}
			b.WriteString("\t\t" + text + "\n")
			l.Rules = append(l.Rules, ListedRule{Chain: c.Name, Handle: r.handle, Text: text})
		}
		b.WriteString("\t}\n")
	}
	b.WriteString("}\n")
	l.Text = b.String()
	return l
}

// setText prints a set declaration as nft 1.0.6 does (nftables src/rule.c,
// set_print_declaration).
func setText(s setDesc, elems []string) string {
	var b strings.Builder
	kind := "set"
	if s.isMap() {
		kind = "map"
	}
	b.WriteString("\t" + kind + " " + s.name + " {\n")
	b.WriteString("\t\ttype " + typeName(s.keyTypes()))
	if s.isMap() {
		b.WriteString(" : " + typeName(s.dataTypes()))
	}
	b.WriteString("\n")
	if s.policy == unix.NFT_SET_POL_MEMORY {
		b.WriteString("\t\tpolicy memory\n")
	}
	if s.size > 0 {
		fmt.Fprintf(&b, "\t\tsize %d\n", s.size)
	}
	var flags []string
	for _, f := range []struct {
		bit  uint32
		name string
	}{{unix.NFT_SET_CONSTANT, "constant"}, {unix.NFT_SET_EVAL, "dynamic"}, {unix.NFT_SET_INTERVAL, "interval"}, {unix.NFT_SET_TIMEOUT, "timeout"}} {
		if s.flags&f.bit != 0 {
			flags = append(flags, f.name)
		}
	}
	if len(flags) > 0 {
		b.WriteString("\t\tflags " + strings.Join(flags, ",") + "\n")
	}
	if s.timeout > 0 {
		b.WriteString("\t\ttimeout " + durationText(s.timeout) + "\n")
	}
	if s.gc > 0 {
		b.WriteString("\t\tgc-interval " + durationText(s.gc) + "\n")
	}
	if len(elems) > 0 {
		b.WriteString("\t\telements = " + elementsText(elems, perLine(s.keyTypes())) + "\n")
	}
	b.WriteString("\t}\n")
	return b.String()
}

// hookNames are the hooks of the inet family by number (NF_INET_*).
var hookNames = []string{"prerouting", "input", "forward", "output", "postrouting", "ingress"}

// chainHeader is a base chain's "type … hook … priority …; policy …;" line, ""
// for a regular chain.
func chainHeader(c *nftables.Chain) string {
	if c.Hooknum == nil {
		return ""
	}
	hook := strconv.Itoa(int(*c.Hooknum))
	if int(*c.Hooknum) < len(hookNames) {
		hook = hookNames[*c.Hooknum]
	}
	prio := 0
	if c.Priority != nil {
		prio = int(*c.Priority)
	}
	s := fmt.Sprintf("type %s hook %s priority %s;", c.Type, hook, priorityText(prio, *c.Hooknum))
	if c.Policy != nil {
		s += map[nftables.ChainPolicy]string{nftables.ChainPolicyAccept: " policy accept;", nftables.ChainPolicyDrop: " policy drop;"}[*c.Policy]
	}
	return s
}

// priorityText names a chain priority as nft does for the inet family: a
// standard priority within 10 of it (filter + 5), if the hook allows it
// (nftables src/rule.c, prio2str); else the number.
func priorityText(prio int, hook nftables.ChainHook) string {
	for _, p := range []struct {
		val  int
		name string
	}{{-300, "raw"}, {-150, "mangle"}, {-100, "dstnat"}, {0, "filter"}, {50, "security"}, {100, "srcnat"}} {
		if prio < p.val-10 || prio > p.val+10 {
			continue
		}
		if p.name == "dstnat" && hook != *nftables.ChainHookPrerouting || p.name == "srcnat" && hook != *nftables.ChainHookPostrouting {
			break
		}
		switch off := prio - p.val; {
		case off > 0:
			return fmt.Sprintf("%s + %d", p.name, off)
		case off < 0:
			return fmt.Sprintf("%s - %d", p.name, -off)
		}
		return p.name
	}
	return strconv.Itoa(prio)
}
