package nft

import (
	"fmt"
	"maps"
	"net/netip"
	"slices"
	"strconv"
	"strings"
)

// Render returns the text `nft list table inet podnet` prints (nftables 1.0.6) once
// Sync has applied s, ending with a newline. Invalid values are left out, as Sync
// leaves them out; elements are sorted by address, duplicates and prefixes inside
// other prefixes dropped. Fake.Dump returns it, and the kernel tests compare it with
// what nft really prints.
func Render(s State) string {
	d, _ := normalize(s) // skipped values are reported by Sync, not here
	return d.render()
}

func (d desired) render() string {
	var b strings.Builder
	b.WriteString("table inet " + TableName + " {\n")
	for _, spec := range setSpecs {
		kind, typ := "set", spec.keyType.Name
		if spec.typed() {
			typ = spec.typeText
			if spec.dataType != nil {
				kind = "map"
			}
		}
		b.WriteString("\t" + kind + " " + spec.name + " {\n")
		b.WriteString("\t\ttype " + typ + "\n")
		if spec.interval {
			b.WriteString("\t\tflags interval\n")
		}
		if spec.size > 0 {
			b.WriteString(fmt.Sprintf("\t\tsize %d\n", spec.size))
		}
		if spec.dynamic {
			b.WriteString("\t\tflags dynamic,timeout\n")
		}
		var elems []string
		switch {
		case spec.svc:
			for _, e := range d.svc.elems[spec.name] {
				elems = append(elems, e.text())
			}
		case spec.hostPort:
			for _, e := range d.hostPorts[spec.name] {
				elems = append(elems, e.text())
			}
		case spec.interval:
			for _, p := range d.prefixes[spec.name] {
				elems = append(elems, formatPrefix(p))
			}
		default:
			for _, a := range d.addrs[spec.name] {
				elems = append(elems, formatAddr(a))
			}
		}
		if len(elems) > 0 {
			// Only plain IPv4 address sets print two elements per line.
			b.WriteString("\t\telements = " + formatElements(elems, spec.keyType.Name == "ipv4_addr") + "\n")
		}
		b.WriteString("\t}\n\n")
	}
	var chains []string
	for _, def := range chainDefs {
		var c strings.Builder
		c.WriteString("\tchain " + def.chain.Name + " {\n")
		if def.header != "" {
			c.WriteString("\t\t" + def.header + "\n")
		}
		for _, r := range def.rules() {
			c.WriteString("\t\t" + r.text + "\n")
		}
		c.WriteString("\t}\n")
		chains = append(chains, c.String())
	}
	names := slices.Sorted(maps.Keys(d.svc.chains))
	for _, name := range names {
		var c strings.Builder
		c.WriteString("\tchain " + name + " {\n")
		for _, r := range countChainRules(d.svc.chains[name]) {
			c.WriteString("\t\t" + r.text + "\n")
		}
		c.WriteString("\t}\n")
		chains = append(chains, c.String())
	}
	b.WriteString(strings.Join(chains, "\n"))
	b.WriteString("}\n")
	return b.String()
}

// formatElements prints a named set's elements as nft 1.0.6 does: two IPv4
// addresses per line, one IPv6 address per line, continuation lines indented by
// three tabs and five spaces (nftables src/expression.c, calculate_delim).
func formatElements(elems []string, ipv4 bool) string {
	const newline = ",\n\t\t\t     "
	var b strings.Builder
	b.WriteString("{ ")
	for i, e := range elems {
		if i > 0 {
			if ipv4 && i%2 == 1 {
				b.WriteString(", ")
			} else {
				b.WriteString(newline)
			}
		}
		b.WriteString(e)
	}
	b.WriteString(" }")
	return b.String()
}

// formatPrefix prints p as nft does: a single address (/32, /128) without its length.
func formatPrefix(p netip.Prefix) string {
	if p.Bits() == p.Addr().BitLen() {
		return formatAddr(p.Addr())
	}
	return formatAddr(p.Addr()) + "/" + strconv.Itoa(p.Bits())
}

// formatAddr prints a as glibc's inet_ntop(3) does, which nft uses. It differs from
// netip.Addr.String for IPv4-compatible IPv6 addresses: glibc prints ::10.0.0.1
// where Go prints ::a00:1.
func formatAddr(a netip.Addr) string {
	if a.Is4() {
		return a.String()
	}
	b := a.As16()
	var w [8]int
	for i := range w {
		w[i] = int(b[2*i])<<8 | int(b[2*i+1])
	}
	// The first longest run of at least two zero words is written as "::".
	base, n := -1, 0
	for i := 0; i < 8; {
		j := i
		for j < 8 && w[j] == 0 {
			j++
		}
		if j-i > n && j-i >= 2 {
			base, n = i, j-i
		}
		i = j + 1
	}
	var s strings.Builder
	for i := 0; i < 8; i++ {
		if base >= 0 && i >= base && i < base+n {
			if i == base {
				s.WriteByte(':')
			}
			continue
		}
		if i > 0 {
			s.WriteByte(':')
		}
		if i == 6 && base == 0 && (n == 6 || n == 5 && w[5] == 0xffff) {
			s.WriteString(netip.AddrFrom4([4]byte(b[12:])).String())
			return s.String()
		}
		s.WriteString(strconv.FormatInt(int64(w[i]), 16))
	}
	if base >= 0 && base+n == 8 {
		s.WriteByte(':')
	}
	return s.String()
}
