package daemon

import (
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

	"github.com/podnet/podnet/nft"
)

// sameAsParseCluster checks that p.parse(data) gives what ParseCluster gives:
// the same cluster (less the Revisions) or the same error.
func sameAsParseCluster(t *testing.T, p *clusterParser, name, data string) *Cluster {
	t.Helper()
	want, wantErr := ParseCluster([]byte(data))
	got, err := p.parse([]byte(data))
	if fmt.Sprint(err) != fmt.Sprint(wantErr) {
		t.Fatalf("%s: error %v, want %v", name, err, wantErr)
	}
	opts := cmp.Options{netipComparers, cmp.AllowUnexported(Cluster{}, ServiceError{}), cmpopts.IgnoreFields(nft.Service{}, "Revision"), cmpopts.EquateEmpty()}
	if diff := cmp.Diff(want, got, opts); diff != "" {
		t.Errorf("%s: parse differs from ParseCluster (-want +got):\n%s", name, diff)
	}
	return got
}

const parseNodes = `nodes:
- name: node-a
  addresses: [192.168.1.10]
  podCIDRs: [10.244.0.0/24]
- name: node-b
  addresses: [192.168.1.11]
  podCIDRs: [10.244.1.0/24]
`

func TestClusterParserMatchesParseCluster(t *testing.T) {
	entry := func(name, ip string) string {
		return fmt.Sprintf("- name: %s\n  clusterIPs: [%s]\n  ports: [{port: 80, targetPort: 8080}]\n  endpoints: [{addresses: [10.244.0.5], node: node-a}]\n", name, ip)
	}
	indent := func(s string) string {
		return "  " + strings.ReplaceAll(strings.TrimSuffix(s, "\n"), "\n", "\n  ") + "\n"
	}
	files := map[string]string{
		"services of the view test":               servicesCluster,
		"no services":                             validClusterYAML,
		"services first":                          "services:\n" + entry("a", "10.96.0.1") + parseNodes,
		"indented list and comments":              parseNodes + "services:   # the services\n" + indent(entry("a", "10.96.0.1")) + "  # between\n\n" + indent(entry("b", "10.96.0.2")),
		"conflicts":                               parseNodes + "services:\n" + entry("a", "10.96.0.1") + entry("b", "10.96.0.1") + entry("a", "10.96.0.3"),
		"scalar and null entries":                 parseNodes + "services:\n- web\n-\n" + entry("a", "10.96.0.1"),
		"entry starting on its own line":          parseNodes + "services:\n-\n  name: a\n  clusterIPs: [10.96.0.1]\n  ports: [{port: 80}]\n",
		"more spaces after the dash":              parseNodes + "services:\n-   name: a\n    clusterIPs: [10.96.0.1]\n    ports: [{port: 80}]\n",
		"flow list (whole parse)":                 parseNodes + "services: [{name: a, clusterIPs: [10.96.0.1], ports: [{port: 80}]}]\n",
		"anchors (whole parse)":                   parseNodes + "services:\n- &x\n  name: a\n  clusterIPs: [10.96.0.1]\n  ports: [{port: 80}]\n",
		"block scalar (whole parse)":              parseNodes + "services:\n- name: >\n    a\n  clusterIPs: [10.96.0.1]\n  ports: [{port: 80}]\n",
		"YAML error in an entry":                  parseNodes + "services:\n" + entry("a", "10.96.0.1") + "- name: [b\n",
		"YAML error in the nodes":                 "nodes: [\n" + "services:\n" + entry("a", "10.96.0.1"),
		"duplicate services key":                  parseNodes + "services:\n" + entry("a", "10.96.0.1") + "services:\n" + entry("b", "10.96.0.2"),
		"unknown top-level key":                   parseNodes + "services:\n" + entry("a", "10.96.0.1") + "extra: 1\n",
		"bad indentation":                         parseNodes + "services:\n  - name: a\n clusterIPs: [10.96.0.1]\n",
		"tabs (whole parse)":                      parseNodes + "services:\n- name: a\n\tclusterIPs: [10.96.0.1]\n",
		"unknown endpoint node":                   parseNodes + "services:\n" + strings.ReplaceAll(entry("a", "10.96.0.1"), "node-a", "node-z"),
		"JSON file":                               `{"nodes": [{"name": "node-a", "addresses": ["192.168.1.10"], "podCIDRs": ["10.244.0.0/24"]}], "services": [{"name": "a", "clusterIPs": ["10.96.0.1"], "ports": [{"port": 80}]}]}`,
		"spaced services key":                     parseNodes + "services :\n" + entry("a", "10.96.0.1"),
		"second services key in JSON":             parseNodes + "services:\n" + entry("a", "10.96.0.1") + "\"services\": []\n",
		"line between the dash and the content":   parseNodes + "services:\n  - name: a\n    clusterIPs: [10.96.0.1]\n   ports: [{port: 80}]\n",
		"item at column 0 after an indented list": parseNodes + "services:\n  - name: a\n    clusterIPs: [10.96.0.1]\n    ports: [{port: 80}]\n- name: b\n",
	}
	for name, data := range files {
		sameAsParseCluster(t, &clusterParser{}, name, data)
		// And again with a parser that saw another file first.
		p := &clusterParser{}
		sameAsParseCluster(t, p, name+" (warm, first)", servicesCluster)
		sameAsParseCluster(t, p, name+" (warm)", data)
	}
}

// A file the parser cannot cut is parsed whole every time, and a change of
// its services is seen (it once kept the first file's services).
func TestClusterParserWholeFileChanges(t *testing.T) {
	p := &clusterParser{}
	js := `{"nodes": [{"name": "node-a", "addresses": ["192.168.1.10"], "podCIDRs": ["10.244.0.0/24"]}], "services": [{"name": "a", "clusterIPs": ["10.96.0.1"], "ports": [{"port": 80}], "endpoints": [{"addresses": ["10.244.0.5"]}]}]}`
	sameAsParseCluster(t, p, "JSON", js)
	c := sameAsParseCluster(t, p, "JSON, endpoint changed", strings.Replace(js, "10.244.0.5", "10.244.0.6", 1))
	if got := c.Services[0].Endpoints[0].Address.String(); got != "10.244.0.6" {
		t.Errorf("endpoint %s after the change, want 10.244.0.6", got)
	}
}

// A second file reuses the entries that did not change, with their Revision;
// a changed entry gets a new one; a change of the node names parses all again.
func TestClusterParserReuses(t *testing.T) {
	var b strings.Builder
	b.WriteString(parseNodes + "services:\n")
	for i := range 50 {
		fmt.Fprintf(&b, "- name: s%d\n  clusterIPs: [10.96.0.%d]\n  ports: [{port: 80}]\n  endpoints: [{addresses: [10.244.0.%d], node: node-a}]\n", i, i+1, i+2)
	}
	first := b.String()
	p := &clusterParser{}
	c1 := sameAsParseCluster(t, p, "first", first)
	changed := strings.Replace(first, "addresses: [10.244.0.12]", "addresses: [10.244.1.12]", 1)
	c2 := sameAsParseCluster(t, p, "one endpoint changed", changed)
	for i := range c1.Services {
		same := c1.Services[i].Revision == c2.Services[i].Revision
		if c1.Services[i].Revision == "" || same == (i == 10) {
			t.Errorf("services[%d]: revisions %q then %q; want a new one only for s10", i, c1.Services[i].Revision, c2.Services[i].Revision)
		}
	}
	// s11 loses its VIP to s3: rejected; then its endpoint changes, and it
	// must stay rejected.
	conflict := strings.Replace(changed, "clusterIPs: [10.96.0.12]", "clusterIPs: [10.96.0.4]", 1)
	sameAsParseCluster(t, p, "conflict", conflict)
	sameAsParseCluster(t, p, "endpoint of the rejected service changed", strings.Replace(conflict, "addresses: [10.244.0.13]", "addresses: [10.244.1.13]", 1))
	sameAsParseCluster(t, p, "back to one endpoint changed", changed)
	renamed := strings.Replace(changed, "name: node-b", "name: node-c", 1)
	c3 := sameAsParseCluster(t, p, "node renamed", renamed)
	if c3.Services[0].Revision == c2.Services[0].Revision {
		t.Errorf("after the node names changed, services[0] kept revision %q", c3.Services[0].Revision)
	}
	if n := len(p.entries); n != 50 {
		t.Errorf("parser keeps %d entries, want the 50 of the last file", n)
	}
}

func TestSplitServices(t *testing.T) {
	for _, c := range []struct {
		data  string
		items int
		ok    bool
	}{
		{servicesCluster, 4, true},
		{parseNodes, 0, true},
		{parseNodes + "services:\n  - name: a\n    ports: [{port: 80}]\n  # c\n  - name: b\n", 2, true},
		{parseNodes + "services: []\n", 0, false},
		{parseNodes + "services:\n- &x\n  name: a\n", 0, false},
		{"---\n" + parseNodes, 0, false},
		{parseNodes + "services:\n  - name: a\n clusterIPs: []\n", 0, false},
	} {
		_, items, ok := splitServices([]byte(c.data))
		if ok != c.ok || len(items) != c.items {
			t.Errorf("splitServices(%q) = %d items, %t; want %d, %t", c.data, len(items), ok, c.items, c.ok)
		}
	}
}

// splitChange gives what splitFile gives, whatever the edit, or declines.
func TestSplitChangeMatchesSplitFile(t *testing.T) {
	var b strings.Builder
	b.WriteString(parseNodes + "services:   # list\n")
	for i := range 30 {
		if i%7 == 3 {
			b.WriteString("    # a comment\n\n")
		}
		fmt.Fprintf(&b, "  - name: s%d\n    clusterIPs: [10.96.0.%d]\n    ports: [{port: 80}]\n    endpoints:\n      - {addresses: [10.244.0.%d], node: node-a}\n", i, i+1, i+2)
	}
	b.WriteString("# trailing comment\n")
	base := b.String()
	edits := []struct {
		name string
		edit func(s string, r *rand.Rand) string
	}{
		{"change a byte in an entry", func(s string, r *rand.Rand) string {
			i := strings.Index(s, fmt.Sprintf("name: s%d\n", r.IntN(30)))
			return s[:i+7] + "x" + s[i+7:]
		}},
		{"change an endpoint", func(s string, r *rand.Rand) string {
			return strings.Replace(s, fmt.Sprintf("10.244.0.%d]", r.IntN(30)+2), "10.244.1.1]", 1)
		}},
		{"add a line to an entry", func(s string, r *rand.Rand) string {
			i := strings.Index(s, fmt.Sprintf("name: s%d\n", r.IntN(30)))
			j := i + strings.Index(s[i:], "\n") + 1
			return s[:j] + "    namespace: x\n" + s[j:]
		}},
		{"insert an entry", func(s string, r *rand.Rand) string {
			i := strings.Index(s, fmt.Sprintf("  - name: s%d\n", r.IntN(30)))
			return s[:i] + "  - name: new\n    clusterIPs: [10.96.1.1]\n    ports: [{port: 80}]\n" + s[i:]
		}},
		{"remove an entry", func(s string, r *rand.Rand) string {
			k := r.IntN(29)
			i := strings.Index(s, fmt.Sprintf("  - name: s%d\n", k))
			j := strings.Index(s, fmt.Sprintf("  - name: s%d\n", k+1))
			return s[:i] + s[j:]
		}},
		{"remove the last entry", func(s string, r *rand.Rand) string {
			i := strings.Index(s, "  - name: s29\n")
			return s[:i] + "# trailing comment\n"
		}},
		{"append an entry", func(s string, r *rand.Rand) string {
			return strings.Replace(s, "# trailing comment\n", "  - name: last\n    ports: [{port: 80}]\n# trailing comment\n", 1)
		}},
		{"change the nodes", func(s string, r *rand.Rand) string { return strings.Replace(s, "192.168.1.10", "192.168.1.20", 1) }},
		{"bad indentation", func(s string, r *rand.Rand) string {
			return strings.Replace(s, fmt.Sprintf("    clusterIPs: [10.96.0.%d]", r.IntN(30)+1), " clusterIPs: [10.96.0.99]", 1)
		}},
		{"new top-level key", func(s string, r *rand.Rand) string {
			return strings.Replace(s, fmt.Sprintf("  - name: s%d\n", r.IntN(30)), "other: 1\n", 1)
		}},
		{"line between the dash and the content", func(s string, r *rand.Rand) string {
			return strings.Replace(s, fmt.Sprintf("    clusterIPs: [10.96.0.%d]", r.IntN(30)+1), "   clusterIPs: [10.96.0.99]", 1)
		}},
		{"anchor", func(s string, r *rand.Rand) string {
			return strings.Replace(s, fmt.Sprintf("name: s%d\n", r.IntN(30)), "name: &a s\n", 1)
		}},
		{"no change", func(s string, r *rand.Rand) string { return s }},
	}
	r := rand.New(rand.NewPCG(1, 2))
	cut := map[string]int{}
	for range 400 {
		e := edits[r.IntN(len(edits))]
		r1 := rand.New(rand.NewPCG(r.Uint64(), 0))
		old := base
		if r.IntN(2) == 0 { // sometimes from an already edited file
			old = edits[1].edit(base, r1)
		}
		lastSplit, ok := splitFile([]byte(old))
		if !ok {
			t.Fatalf("base file does not split")
		}
		data := e.edit(old, r1)
		got, ok := splitChange([]byte(old), lastSplit, []byte(data))
		if !ok {
			continue
		}
		cut[e.name]++
		want, wantOK := splitFile([]byte(data))
		if !wantOK {
			t.Fatalf("%s: splitChange cut a file splitFile refuses:\n%s", e.name, data)
		}
		if !slicesEqualBytes(got.items, want.items) || string(got.rest) != string(want.rest) ||
			fmt.Sprint(got.starts) != fmt.Sprint(want.starts) || got.sectionEnd != want.sectionEnd || got.indent != want.indent {
			t.Fatalf("%s: splitChange differs from splitFile:\n got starts %v end %d\nwant starts %v end %d", e.name, got.starts, got.sectionEnd, want.starts, want.sectionEnd)
		}
	}
	for _, e := range edits[:7] {
		if cut[e.name] == 0 {
			t.Errorf("%s: splitChange never cut the file; it should (cut: %v)", e.name, cut)
		}
	}
	for _, name := range []string{"change the nodes", "bad indentation", "new top-level key", "anchor", "line between the dash and the content"} {
		if cut[name] > 0 {
			t.Errorf("%s: splitChange cut the file %d times; it must decline", name, cut[name])
		}
	}
}

func slicesEqualBytes(a, b [][]byte) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if string(a[i]) != string(b[i]) {
			return false
		}
	}
	return true
}
