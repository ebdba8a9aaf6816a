package daemon

import (
	"bytes"
	"encoding/json"
	"maps"
	"slices"
	"strconv"
	"strings"

	"sigs.k8s.io/yaml"

	"github.com/podnet/podnet/nft"
)

// clusterParser parses successive versions of one cluster file. At scale the
// file is almost all its services list, and a change touches one entry of it,
// so the parser keeps the outcome of every service entry by the entry's text
// and parses only entries it has not seen; the rest of the file (the nodes) is
// parsed each time. The result is the one ParseCluster gives for the same
// bytes. A file it cannot cut into entries safely (flow style, anchors, block
// scalars, several documents, tabs), or one with a YAML error, is parsed whole
// by ParseCluster.
//
// Each entry parsed anew gets a fresh nft.Service.Revision, so that the nft
// table skips comparing the services whose entry did not change.
type clusterParser struct {
	nodes   string                  // the node names the cached entries were checked against
	entries map[string]*parsedEntry // by the entry's text
	seq     uint64                  // the last Revision handed out
	epoch   uint64                  // counts parses: entries not seen in the last one are dropped
	claims  serviceClaims           // reused by each parse

	// The last file: its entries' text (slices of the caller's data, which
	// must not change), their outcomes, and the cluster parse returned.
	last struct {
		rest   []byte
		items  [][]byte
		parsed []*parsedEntry
		c      *Cluster
	}
}

// parsedEntry is the outcome of parsing one service entry.
type parsedEntry struct {
	epoch  uint64 // the last parse whose file had the entry
	id     serviceID
	svc    nft.Service
	why    string      // not empty: the service is ignored, for this reason
	ferr   *fieldError // the entry is invalid
	claims []claim     // what the valid service takes
}

// parse returns the cluster of data, reusing the entries of earlier files.
func (p *clusterParser) parse(data []byte) (*Cluster, error) {
	rest, items, ok := splitServices(data)
	if !ok {
		p.reset()
		return ParseCluster(data)
	}
	var c *Cluster
	if p.last.c != nil && bytes.Equal(rest, p.last.rest) {
		c = &Cluster{Nodes: p.last.c.Nodes} // the nodes did not change
	} else {
		var err error
		if c, err = ParseCluster(rest); err != nil {
			p.reset()
			return ParseCluster(data) // its error names lines of the whole file
		}
	}
	names := map[string]bool{}
	for _, n := range c.Nodes {
		names[n.Name] = true
	}
	if key := strings.Join(slices.Sorted(maps.Keys(names)), "\x00"); key != p.nodes || p.entries == nil {
		p.reset()
		p.nodes, p.entries = key, map[string]*parsedEntry{} // endpoints were checked against other nodes
	}
	p.epoch++
	parsed := make([]*parsedEntry, len(items))
	seen := 0
	for i, item := range items {
		var e *parsedEntry
		if i < len(p.last.items) && bytes.Equal(item, p.last.items[i]) {
			e = p.last.parsed[i] // the usual case: same entry, same place
		} else if e = p.entries[string(item)]; e == nil {
			var err error
			if e, err = p.parseEntry(item, names); err != nil {
				p.reset()
				return ParseCluster(data)
			}
			p.entries[string(item)] = e
		}
		if e.epoch != p.epoch {
			e.epoch = p.epoch
			seen++
		}
		parsed[i] = e
	}
	if seen != len(p.entries) { // drop the entries of earlier files
		maps.DeleteFunc(p.entries, func(_ string, e *parsedEntry) bool { return e.epoch != p.epoch })
	}
	if !p.reuseAssembly(c, parsed) {
		p.assemble(c, parsed)
	}
	p.last.rest, p.last.items, p.last.parsed, p.last.c = rest, items, parsed, c
	return c, nil
}

// reset forgets the last file and the cached entries.
func (p *clusterParser) reset() {
	p.entries = nil
	p.last.rest, p.last.items, p.last.parsed, p.last.c = nil, nil, nil, nil
}

// assemble sorts the entries into c's services, rejected and ignored ones, as
// parseServices does.
func (p *clusterParser) assemble(c *Cluster, parsed []*parsedEntry) {
	if p.claims == nil {
		p.claims = make(serviceClaims, 2*len(parsed))
	}
	claims := p.claims
	clear(claims) // keeps its buckets
	for i, e := range parsed {
		ferr := e.ferr
		if ferr == nil && e.why == "" {
			ferr = claims.checkClaims(e.claims)
		}
		switch {
		case ferr != nil:
			c.RejectedServices = append(c.RejectedServices, &ServiceError{Index: i, Namespace: e.id.Namespace, Name: e.id.Name,
				Field: ferr.field, Value: ferr.value, Reason: ferr.reason})
		case e.why != "":
			c.IgnoredServices = append(c.IgnoredServices, IgnoredService{Index: i, Namespace: e.id.Namespace, Name: e.id.Name, Reason: e.why})
		default:
			claims.addClaims(e.claims, i, e.svc)
			c.Services, c.serviceIndex = append(c.Services, e.svc), append(c.serviceIndex, i)
		}
	}
}

// reuseAssembly fills c from the last cluster when the file has the same
// entries in the same places except entries that were valid and stay valid
// with the same claims (an endpoint changed, say): then no rejection or claim
// can have changed, and only those services are replaced. It reports whether
// it could.
func (p *clusterParser) reuseAssembly(c *Cluster, parsed []*parsedEntry) bool {
	prev := p.last.c
	if prev == nil || len(parsed) != len(p.last.parsed) {
		return false
	}
	var changed []int
	for i, e := range parsed {
		old := p.last.parsed[i]
		if e == old {
			continue
		}
		if e.ferr != nil || e.why != "" || old.ferr != nil || old.why != "" || !slices.Equal(e.claims, old.claims) {
			return false
		}
		changed = append(changed, i)
	}
	pos := make([]int, len(changed))
	for k, i := range changed {
		// serviceIndex is sorted: find where services[i] is programmed.
		var found bool
		if pos[k], found = slices.BinarySearch(prev.serviceIndex, i); !found {
			return false // rejected: an earlier service took its claims
		}
	}
	c.RejectedServices, c.IgnoredServices, c.serviceIndex = prev.RejectedServices, prev.IgnoredServices, prev.serviceIndex
	c.Services = prev.Services
	if len(changed) > 0 {
		c.Services = slices.Clone(prev.Services)
		for k, i := range changed {
			c.Services[pos[k]] = parsed[i].svc
		}
	}
	return true
}

// parseEntry parses one entry's YAML as ParseCluster parses an element of the
// services list; only a YAML error is returned as an error.
func (p *clusterParser) parseEntry(item []byte, nodes map[string]bool) (*parsedEntry, error) {
	js, err := yaml.YAMLToJSON(entryDoc(item))
	if err != nil {
		return nil, err
	}
	raw := json.RawMessage(js)
	e := &parsedEntry{id: peekID(raw)}
	e.svc, e.why, e.ferr = parseService(raw, nodes)
	if e.ferr == nil && e.why == "" {
		p.seq++
		e.svc.Revision = "file/" + strconv.FormatUint(p.seq, 10)
		e.claims = claimsOf(e.svc)
	}
	return e, nil
}

// splitServices cuts a cluster file in block style into the file without its
// services section (rest) and the text of each entry of that list (items,
// slices of data). ok is false if the file is not in the plain block style
// this can cut safely; a file without services gives no items. entryDoc turns
// an item into a YAML document of its own.
func splitServices(data []byte) (rest []byte, items [][]byte, ok bool) {
	for _, c := range []byte("\t\r") {
		if bytes.IndexByte(data, c) >= 0 {
			return nil, nil, false
		}
	}
	// Find the services key: the only line starting with "services:".
	start, end := -1, len(data)
	for off := 0; off < len(data); {
		line, next := lineAt(data, off)
		switch {
		case bytes.HasPrefix(line, []byte("---")) || bytes.HasPrefix(line, []byte("...")) || bytes.HasPrefix(line, []byte("%")):
			return nil, nil, false // several documents or directives
		case bytes.HasPrefix(line, []byte("services:")):
			if start >= 0 {
				return nil, nil, false // a duplicate key: ParseCluster reports it
			}
			if after := bytes.TrimSpace(line[len("services:"):]); len(after) > 0 && after[0] != '#' {
				return nil, nil, false // services: [...] or an alias
			}
			start = off
		}
		off = next
	}
	if start < 0 {
		return data, nil, true
	}
	_, off := lineAt(data, start)
	indent := -1 // the list's "-" column
	itemStart := -1
	for off < len(data) {
		line, next := lineAt(data, off)
		text := bytes.TrimLeft(line, " ")
		n := len(line) - len(text)
		if len(text) == 0 || text[0] == '#' || text[0] == '\n' {
			off = next
			continue // blank or comment: part of the current item, if any
		}
		if n == 0 && text[0] != '-' || indent >= 0 && n < indent {
			if n != 0 {
				return nil, nil, false // an indentation that ends neither the item nor the section
			}
			end = off // the next top-level key
			break
		}
		item := text[0] == '-' && (len(text) == 1 || text[1] == ' ' || text[1] == '\n')
		if indent < 0 {
			if !item {
				return nil, nil, false
			}
			indent = n
		}
		switch {
		case n == indent && item:
			if itemStart >= 0 {
				items = append(items, data[itemStart:off])
			}
			itemStart = off
		case n <= indent:
			return nil, nil, false
		}
		off = next
	}
	if itemStart >= 0 {
		items = append(items, data[itemStart:end])
	}
	section := data[start:end]
	for _, c := range []byte("&*!|>") {
		if bytes.IndexByte(section, c) >= 0 {
			return nil, nil, false // anchors, aliases, tags, block scalars
		}
	}
	rest = slices.Concat(data[:start], data[end:])
	return rest, items, true
}

// lineAt returns the line starting at off, with its newline, and the offset of
// the next line.
func lineAt(data []byte, off int) ([]byte, int) {
	i := bytes.IndexByte(data[off:], '\n')
	if i < 0 {
		return data[off:], len(data)
	}
	return data[off : off+i+1], off + i + 1
}

// entryDoc returns the entry text item as a YAML document: its "-" blanked,
// so that the entry's mapping keeps its indentation.
func entryDoc(item []byte) []byte {
	doc := slices.Clone(item)
	if i := bytes.IndexByte(doc, '-'); i >= 0 {
		doc[i] = ' '
	}
	return doc
}
