package daemon

import (
	"bytes"
	"encoding/json"
	"hash/maphash"
	"maps"
	"slices"
	"sort"
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
	nodes   string                    // the node names the cached entries were checked against
	entries map[entryKey]*parsedEntry // by a 128-bit hash of the entry's text
	seeds   [2]maphash.Seed
	// portMaps are the endpoint port maps in use, by their content.
	portMaps map[string]map[string]uint16
	seq      uint64        // the last Revision handed out
	epoch    uint64        // counts parses: entries not seen in the last one are dropped
	claims   serviceClaims // reused by each parse

	// The last file: its entries' text (slices of the caller's data, which
	// must not change), their outcomes, and the cluster parse returned.
	last struct {
		rest   []byte
		items  [][]byte
		parsed []*parsedEntry
		c      *Cluster
		data   []byte
		split  split
	}
}

// entryKey identifies an entry's text: two 64-bit hashes with random seeds
// (a collision, 2^-128 per pair, would reuse another entry's parse). Keeping
// hashes rather than the text saves the file's size in memory.
type entryKey [2]uint64

func (p *clusterParser) key(item []byte) entryKey {
	return entryKey{maphash.Bytes(p.seeds[0], item), maphash.Bytes(p.seeds[1], item)}
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
	sp, ok := split{}, false
	if p.last.c != nil {
		sp, ok = splitChange(p.last.data, p.last.split, data)
	}
	if !ok {
		sp, ok = splitFile(data)
	}
	if !ok {
		p.reset()
		return ParseCluster(data)
	}
	rest, items := sp.rest, sp.items
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
		p.nodes, p.entries = key, map[entryKey]*parsedEntry{} // endpoints were checked against other nodes
		p.seeds = [2]maphash.Seed{maphash.MakeSeed(), maphash.MakeSeed()}
	}
	p.epoch++
	parsed := make([]*parsedEntry, len(items))
	seen := 0
	for i, item := range items {
		var e *parsedEntry
		switch {
		case sp.changed && i < sp.prefix:
			e = p.last.parsed[i] // before the change
		case sp.changed && i >= sp.newSuffix:
			e = p.last.parsed[i-sp.newSuffix+sp.oldSuffix] // after it
		case !sp.changed && i < len(p.last.items) && bytes.Equal(item, p.last.items[i]):
			e = p.last.parsed[i] // same entry, same place
		default:
			k := p.key(item)
			if e = p.entries[k]; e == nil {
				var err error
				if e, err = p.parseEntry(item, names); err != nil {
					p.reset()
					return ParseCluster(data)
				}
				p.entries[k] = e
			}
		}
		if e.epoch != p.epoch {
			e.epoch = p.epoch
			seen++
		}
		parsed[i] = e
	}
	if seen != len(p.entries) { // drop the entries of earlier files
		maps.DeleteFunc(p.entries, func(_ entryKey, e *parsedEntry) bool { return e.epoch != p.epoch })
	}
	if !p.reuseAssembly(c, parsed) {
		p.assemble(c, parsed)
	}
	p.last.rest, p.last.items, p.last.parsed, p.last.c = rest, items, parsed, c
	p.last.data, p.last.split = data, sp
	return c, nil
}

// holds reports whether buf shares storage with the last file parse kept.
func (p *clusterParser) holds(buf []byte) bool {
	d := p.last.data
	return cap(buf) > 0 && cap(d) > 0 && &buf[:1][0] == &d[:1][0]
}

// internPorts returns a map equal to ports that the parser shares between the
// endpoints and services with the same ports: most of 50k services map one
// unnamed port to the same target port. The maps are never changed.
func (p *clusterParser) internPorts(ports map[string]uint16) map[string]uint16 {
	if len(ports) > 4 {
		return ports
	}
	var b []byte
	for _, name := range slices.Sorted(maps.Keys(ports)) {
		b = strconv.AppendUint(append(append(b, name...), 0), uint64(ports[name]), 10)
		b = append(b, 0)
	}
	if shared, ok := p.portMaps[string(b)]; ok {
		return shared
	}
	if p.portMaps == nil {
		p.portMaps = map[string]map[string]uint16{}
	}
	p.portMaps[string(b)] = ports
	return ports
}

// reset forgets the last file and the cached entries.
func (p *clusterParser) reset() {
	p.entries, p.portMaps = nil, nil
	p.last.rest, p.last.items, p.last.parsed, p.last.c = nil, nil, nil, nil
	p.last.data, p.last.split = nil, split{}
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
			c.Services, c.serviceIndex = append(c.Services, &e.svc), append(c.serviceIndex, i)
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
			c.Services[pos[k]] = &parsed[i].svc
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
	for i, ep := range e.svc.Endpoints {
		e.svc.Endpoints[i].Ports = p.internPorts(ep.Ports)
	}
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
	sp, ok := splitFile(data)
	return sp.rest, sp.items, ok
}

// split is a cluster file cut by splitFile.
type split struct {
	rest       []byte
	items      [][]byte
	starts     []int // the offset of each item in the file
	sectionEnd int   // the offset where the services section ends
	indent     int   // the column of the items' "-"
	// For a cut by splitChange: items[:prefix] are the last cut's first
	// items, and items[newSuffix:] its items from oldSuffix on, unchanged.
	changed                      bool
	prefix, oldSuffix, newSuffix int
}

func splitFile(data []byte) (sp split, ok bool) {
	var rest []byte
	var items [][]byte
	for _, c := range []byte("\t\r") {
		if bytes.IndexByte(data, c) >= 0 {
			return split{}, false
		}
	}
	// Find the services key: the only line starting with "services:".
	start, end := -1, len(data)
	for off := 0; off < len(data); {
		line, next := lineAt(data, off)
		switch {
		case bytes.HasPrefix(line, []byte("---")) || bytes.HasPrefix(line, []byte("...")) || bytes.HasPrefix(line, []byte("%")):
			return split{}, false // several documents or directives
		case bytes.HasPrefix(line, []byte("services:")):
			if start >= 0 {
				return split{}, false // a duplicate key: ParseCluster reports it
			}
			if after := bytes.TrimSpace(line[len("services:"):]); len(after) > 0 && after[0] != '#' {
				return split{}, false // services: [...] or an alias
			}
			start = off
		}
		off = next
	}
	if start < 0 {
		if bytes.Contains(data, []byte("services")) {
			return split{}, false // "services": in JSON style, or a key not at column 0
		}
		return split{rest: data}, true
	}
	_, off := lineAt(data, start)
	indent := -1 // the list's "-" column
	itemStart := -1
	var cut entryLines
	for off < len(data) {
		line, next := lineAt(data, off)
		text := bytes.TrimLeft(line, " ")
		n := len(line) - len(text)
		if len(text) == 0 || text[0] == '#' || text[0] == '\n' {
			off = next
			continue // blank or comment: part of the current item, if any
		}
		if n == 0 && text[0] == '-' && indent > 0 {
			return split{}, false // a list item at column 0 after an indented list
		}
		if n == 0 && text[0] != '-' || indent >= 0 && n < indent {
			if n != 0 {
				return split{}, false // an indentation that ends neither the item nor the section
			}
			end = off // the next top-level key
			break
		}
		item := text[0] == '-' && (len(text) == 1 || text[1] == ' ' || text[1] == '\n')
		if indent < 0 {
			if !item {
				return split{}, false
			}
			indent = n
		}
		switch {
		case n == indent && item:
			if itemStart >= 0 {
				items = append(items, data[itemStart:off])
			}
			itemStart = off
			sp.starts = append(sp.starts, off)
			cut.start(n, text)
		case n <= indent || !cut.continues(n):
			return split{}, false
		}
		off = next
	}
	if itemStart >= 0 {
		items = append(items, data[itemStart:end])
	}
	section := data[start:end]
	for _, c := range []byte("&*!|>") {
		if bytes.IndexByte(section, c) >= 0 {
			return split{}, false // anchors, aliases, tags, block scalars
		}
	}
	rest = slices.Concat(data[:start], data[end:])
	if bytes.Contains(rest, []byte("services")) {
		return split{}, false // another services key, in another style
	}
	sp.rest, sp.items, sp.sectionEnd, sp.indent = rest, items, end, indent
	return sp, true
}

// entryLines checks the indentation of an entry's lines: each must be at or
// right of the column where the entry's content starts. A line left of it but
// right of the "-" would end the entry's own YAML document silently, where the
// whole file is a YAML error.
type entryLines struct{ content int } // -1: the "-" was alone on its line

// start begins an entry at the line text, indented n.
func (c *entryLines) start(n int, text []byte) {
	rest := bytes.TrimRight(text[1:], " \n")
	if len(rest) == 0 {
		c.content = -1
		return
	}
	c.content = n + 1 + (len(text[1:]) - len(bytes.TrimLeft(text[1:], " ")))
}

// continues reports whether a line indented n may continue the entry.
func (c *entryLines) continues(n int) bool {
	if c.content < 0 {
		c.content = n
	}
	return n >= c.content
}

// splitChange cuts data, a new version of the file last cut as last (from
// lastData), by re-cutting only the entries around the bytes that changed: a
// file of 50k entries has one changed entry, and the others keep their text.
// ok is false unless the change lies within the services list and the entries
// around it cut cleanly; splitFile then cuts the whole file.
func splitChange(lastData []byte, last split, data []byte) (sp split, ok bool) {
	if len(last.starts) == 0 {
		return split{}, false
	}
	lo := commonPrefix(lastData, data)
	hi := commonSuffix(lastData, data, min(len(lastData), len(data))-lo)
	oldEnd := len(lastData) - hi // the change is lastData[lo:oldEnd]
	if lo < last.starts[0] || oldEnd > last.sectionEnd {
		return split{}, false
	}
	// k1: the first entry to cut again, the one before the change's start
	// (the change may be a line added to it); k2: the first entry wholly in
	// the unchanged end.
	k1 := max(sort.SearchInts(last.starts, lo)-1, 0)
	k2 := sort.SearchInts(last.starts, oldEnd)
	if k2 <= k1 {
		k2 = k1 + 1
	}
	shift := len(data) - len(lastData)
	midEnd := last.sectionEnd + shift
	if k2 < len(last.starts) {
		midEnd = last.starts[k2] + shift
	}
	midStart := last.starts[k1]
	if midEnd < midStart || midEnd > len(data) || midEnd > 0 && data[midEnd-1] != '\n' {
		return split{}, false
	}
	mid := data[midStart:midEnd]
	for _, c := range []byte("\t\r&*!|>") {
		if bytes.IndexByte(mid, c) >= 0 {
			return split{}, false
		}
	}
	sp = split{rest: last.rest, sectionEnd: last.sectionEnd + shift, indent: last.indent}
	sp.starts = make([]int, 0, len(last.starts)+1)
	sp.items = make([][]byte, 0, len(last.starts)+1)
	end := func(i int, starts []int, sectionEnd int) int {
		if i+1 < len(starts) {
			return starts[i+1]
		}
		return sectionEnd
	}
	for i := range k1 {
		sp.starts = append(sp.starts, last.starts[i])
		sp.items = append(sp.items, data[last.starts[i]:last.starts[i+1]])
	}
	// The re-cut part: items at the list's column, their lines deeper.
	itemStart := -1
	var cut entryLines
	for off := midStart; off < midEnd; {
		line, next := lineAt(data, off)
		text := bytes.TrimLeft(line, " ")
		n := len(line) - len(text)
		if len(text) == 0 || text[0] == '#' || text[0] == '\n' {
			off = next
			continue
		}
		item := text[0] == '-' && (len(text) == 1 || text[1] == ' ' || text[1] == '\n')
		switch {
		case n == last.indent && item:
			if itemStart >= 0 {
				sp.items = append(sp.items, data[itemStart:off])
			}
			itemStart = off
			sp.starts = append(sp.starts, off)
			cut.start(n, text)
		case n > last.indent && itemStart >= 0 && cut.continues(n):
		default:
			return split{}, false
		}
		off = next
	}
	if itemStart >= 0 {
		sp.items = append(sp.items, data[itemStart:midEnd])
	}
	sp.changed, sp.prefix, sp.oldSuffix, sp.newSuffix = true, k1, k2, len(sp.items)
	for i := k2; i < len(last.starts); i++ {
		start := last.starts[i] + shift
		sp.starts = append(sp.starts, start)
		sp.items = append(sp.items, data[start:end(i, last.starts, last.sectionEnd)+shift])
	}
	return sp, true
}

// commonPrefix returns the length of the longest common prefix of a and b.
func commonPrefix(a, b []byte) int {
	n := min(len(a), len(b))
	const chunk = 4096
	i := 0
	for i+chunk <= n && bytes.Equal(a[i:i+chunk], b[i:i+chunk]) {
		i += chunk
	}
	for i < n && a[i] == b[i] {
		i++
	}
	return i
}

// commonSuffix returns the length, at most limit, of the longest common suffix
// of a and b.
func commonSuffix(a, b []byte, limit int) int {
	const chunk = 4096
	i := 0
	for i+chunk <= limit && bytes.Equal(a[len(a)-i-chunk:len(a)-i], b[len(b)-i-chunk:len(b)-i]) {
		i += chunk
	}
	for i < limit && a[len(a)-i-1] == b[len(b)-i-1] {
		i++
	}
	return i
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
