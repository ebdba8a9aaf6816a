package nft

import (
	"bytes"
	"cmp"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"time"

	"github.com/google/nftables"
	"golang.org/x/sys/unix"
)

// setDesc is a set or map as the kernel reports it (NFT_MSG_NEWSET).
type setDesc struct {
	name              string
	flags             uint32
	keyType, dataType uint32 // nft's type numbers, see dtype
	keyLen, dataLen   uint32
	policy            uint32
	size              uint32
	timeout, gc       time.Duration
}

func (s setDesc) anonymous() bool { return s.flags&unix.NFT_SET_ANONYMOUS != 0 }
func (s setDesc) isMap() bool     { return s.flags&unix.NFT_SET_MAP != 0 }
func (s setDesc) interval() bool  { return s.flags&unix.NFT_SET_INTERVAL != 0 }
func (s setDesc) keyTypes() []dtype {
	return splitType(s.keyType)
}

func (s setDesc) dataTypes() []dtype {
	if !s.isMap() {
		return nil
	}
	return splitType(s.dataType)
}

// listedElement is one element as nft lists it: an interval of an interval
// set is one element.
type listedElement struct {
	key, last []byte // last: the interval's last key; nil for a single key
	elem      nftables.SetElement
}

// elementTexts returns the elements of s as `nft list` prints them, in its
// order. It decodes verdicts in place.
func elementTexts(s setDesc, elems []nftables.SetElement) ([]string, error) {
	if s.isMap() && s.dataType == verdictMagic {
		if err := decodeVerdicts(elems); err != nil {
			return nil, err
		}
	}
	kts := s.keyTypes()
	var les []listedElement
	switch {
	case s.interval() && !slices.ContainsFunc(elems, func(e nftables.SetElement) bool { return e.KeyEnd != nil }):
		les = intervals(elems, int(s.keyLen))
	default:
		les = make([]listedElement, len(elems))
		for i, e := range elems {
			les[i] = listedElement{key: e.Key, last: e.KeyEnd, elem: e}
		}
	}
	order := make([]int, len(les))
	for i := range order {
		order[i] = i
	}
	if !s.interval() {
		// nft 1.0.6 sorts by the value of the key, a concatenation read as
		// one integer in host byte order (nftables src/mergesort.c); it
		// lists a concatenation of intervals in the kernel's order.
		keys := make([][]byte, len(les))
		for i, le := range les {
			keys[i] = sortValue(kts, le.key)
		}
		slices.SortFunc(order, func(a, b int) int { return cmp.Or(bytes.Compare(keys[a], keys[b]), a-b) })
	}
	texts := make([]string, len(les))
	for i, j := range order {
		texts[i] = elementText(s, kts, les[j])
	}
	return texts, nil
}

// intervals pairs the start and end elements of a plain interval set (the
// kernel stores the first key after an interval, flagged, as its end) and
// returns the intervals sorted. An interval without end reaches the top of
// the key space.
func intervals(elems []nftables.SetElement, keyLen int) []listedElement {
	elems = slices.Clone(elems)
	slices.SortStableFunc(elems, func(a, b nftables.SetElement) int {
		if c := bytes.Compare(a.Key, b.Key); c != 0 {
			return c
		}
		switch { // an end before a start at the same key
		case a.IntervalEnd && !b.IntervalEnd:
			return -1
		case !a.IntervalEnd && b.IntervalEnd:
			return 1
		}
		return 0
	})
	var out []listedElement
	for i := 0; i < len(elems); i++ {
		e := elems[i]
		if e.IntervalEnd {
			continue // an end without start: the open bottom of another range, or stale
		}
		last := bytes.Repeat([]byte{0xff}, max(keyLen, len(e.Key)))
		if i+1 < len(elems) && elems[i+1].IntervalEnd {
			last = decrement(elems[i+1].Key)
			i++
		}
		out = append(out, listedElement{key: e.Key, last: last, elem: e})
	}
	return out
}

// decrement returns b - 1, b a big-endian number.
func decrement(b []byte) []byte {
	out := slices.Clone(b)
	for i := len(out) - 1; i >= 0; i-- {
		out[i]--
		if out[i] != 0xff {
			break
		}
	}
	return out
}

// bigEndianTypes hold values in network byte order; nft sorts them as they are.
var bigEndianTypes = map[dtype]bool{
	typeNFProto: true, typeIPAddr: true, typeIP6Addr: true, typeEtherAddr: true, typeEtherType: true,
	typeInetProto: true, typeInetService: true, typeIntegerBE: true, 14: true, 29: true, 36: true, 37: true,
}

// sortValue is the byte string whose order is the order nft lists keys in:
// nft reads a concatenation, its fields unpadded, as one host-endian integer.
func sortValue(ts []dtype, key []byte) []byte {
	if len(ts) == 1 {
		if bigEndianTypes[ts[0]] {
			return key
		}
		return reversed(key)
	}
	fields := splitFields(ts, key)
	if fields == nil {
		return key
	}
	return reversed(slices.Concat(fields...))
}

func reversed(b []byte) []byte {
	out := slices.Clone(b)
	slices.Reverse(out)
	return out
}

// elementText prints one element with its options and, in a map, its data.
func elementText(s setDesc, kts []dtype, le listedElement) string {
	var b strings.Builder
	b.WriteString(keyText(kts, le.key, le.last))
	e := le.elem
	if e.Counter != nil {
		fmt.Fprintf(&b, " counter packets %d bytes %d", e.Counter.Packets, e.Counter.Bytes)
	}
	if e.Timeout != 0 && e.Timeout != s.timeout {
		b.WriteString(" timeout " + durationText(e.Timeout))
	}
	if e.Expires != 0 {
		b.WriteString(" expires " + durationText(e.Expires))
	}
	if e.Comment != "" {
		fmt.Fprintf(&b, " comment %q", e.Comment)
	}
	switch {
	case e.VerdictData != nil:
		b.WriteString(" : " + verdictText(*e.VerdictData))
	case s.isMap():
		b.WriteString(" : " + keyText(s.dataTypes(), e.Val, nil))
	}
	return b.String()
}

// keyText prints a key of types ts, or with last the interval from key to
// last: field by field, a prefix where the interval is one, else a range.
func keyText(ts []dtype, key, last []byte) string {
	fields := splitFields(ts, key)
	lasts := splitFields(ts, last)
	if fields == nil || last != nil && lasts == nil {
		return fmt.Sprintf("0x%x", key) // types nft names but this decoder cannot split
	}
	parts := make([]string, len(fields))
	for i, f := range fields {
		if last == nil || bytes.Equal(f, lasts[i]) {
			parts[i] = formatValue(ts[i], f)
			continue
		}
		if p, ok := prefixOf(ts[i], f, lasts[i]); ok {
			parts[i] = formatPrefix(p)
			continue
		}
		parts[i] = formatValue(ts[i], f) + "-" + formatValue(ts[i], lasts[i])
	}
	return strings.Join(parts, " . ")
}

// prefixOf returns the prefix that is the interval from first to last, if the
// type is an address and the interval is one.
func prefixOf(t dtype, first, last []byte) (netip.Prefix, bool) {
	if t != typeIPAddr && t != typeIP6Addr {
		return netip.Prefix{}, false
	}
	a, ok := netip.AddrFromSlice(first)
	if !ok || len(last) != len(first) {
		return netip.Prefix{}, false
	}
	bits := len(first) * 8
	for bits > 0 && first[(bits-1)/8]&(0x80>>((bits-1)%8)) == 0 && last[(bits-1)/8]&(0x80>>((bits-1)%8)) != 0 {
		bits--
	}
	p := netip.PrefixFrom(a, bits)
	if p.Masked() != p || !bytes.Equal(lastAddr(p).AsSlice(), last) {
		return netip.Prefix{}, false
	}
	return p, true
}
