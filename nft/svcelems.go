package nft

import (
	"bytes"
	"cmp"
	"encoding/binary"
	"fmt"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"sync"

	"github.com/google/nftables"
	"github.com/google/nftables/binaryutil"
	"github.com/google/nftables/expr"
	"golang.org/x/sys/unix"
)

// element is one element of a named set or map, in the kernel's encoding. Its
// text as `nft list` prints it and its listing order are derived from the bytes
// when needed (Render), so that an index of 50k services holds only the bytes.
type element struct {
	b           []byte // the key, the key end (ranges), the value (maps)
	klen, kelen uint8
	verdict     *expr.Verdict
	keyFields   fieldKinds
	valFields   fieldKinds
}

// key returns the element's key.
func (e element) key() []byte { return e.b[:e.klen:e.klen] }

// keyEnd returns a range's last key, nil for other elements.
func (e element) keyEnd() []byte {
	if e.kelen == 0 {
		return nil
	}
	return e.b[e.klen : e.klen+e.kelen : e.klen+e.kelen]
}

// val returns a data map element's value, nil for other elements.
func (e element) val() []byte {
	if len(e.b) == int(e.klen)+int(e.kelen) {
		return nil
	}
	return e.b[e.klen+e.kelen:]
}

// newElement packs key, keyEnd and val into one slice.
func newElement(key, keyEnd, val []byte) element {
	b := make([]byte, 0, len(key)+len(keyEnd)+len(val))
	b = append(append(append(b, key...), keyEnd...), val...)
	return element{b: b, klen: uint8(len(key)), kelen: uint8(len(keyEnd))}
}

// fieldKind is the type of one field of a concatenated key or value.
type fieldKind uint8

const (
	fieldNone   fieldKind = iota
	fieldAddr             // an IPv4 or IPv6 address: 4 or 16 bytes, by the set's family
	fieldProto            // inet_proto: 1 byte padded to 4
	fieldPort             // inet_service: 2 bytes big-endian padded to 4
	fieldSlot             // mark: a numgen result, 4 bytes in host byte order
	fieldPrefix           // the last field of a range: an address in key, the range's last in keyEnd
)

// fieldKinds lists the fields of a key or value, fieldNone after the last.
type fieldKinds [6]fieldKind

func (e element) setElement() nftables.SetElement {
	return nftables.SetElement{Key: e.key(), KeyEnd: e.keyEnd(), Val: e.val(), VerdictData: e.verdict}
}

// elementID identifies an element with its data, so that a changed map value
// shows as a delete and an add. Within one set every key, key end and value has
// the same length (or none), so the concatenation is unambiguous.
func elementID(key, keyEnd, val []byte, v *expr.Verdict) string {
	b := make([]byte, 0, len(key)+len(keyEnd)+len(val)+3+16)
	b = append(append(append(append(append(b, key...), '/'), keyEnd...), '/'), val...)
	if v != nil {
		b = append(b, '/')
		b = binary.BigEndian.AppendUint32(b, uint32(v.Kind))
		b = append(b, v.Chain...)
	}
	return string(b)
}

// id identifies e with its data within its set.
func (e element) id() string { return elementID(e.key(), e.keyEnd(), e.val(), e.verdict) }

// walkFields calls f with each field of b described by kinds, in order; v4
// says the addresses are IPv4 addresses.
func walkFields(b []byte, kinds fieldKinds, v4 bool, f func(k fieldKind, field []byte)) {
	for _, k := range kinds {
		n := 4
		switch k {
		case fieldNone:
			return
		case fieldAddr, fieldPrefix:
			if !v4 {
				n = 16
			}
		}
		if len(b) < n {
			return
		}
		f(k, b[:n])
		b = b[n:]
	}
}

// v4 tells the family of e's addresses from the lengths of its key and value.
func (e element) v4() bool {
	if v4, ok := family4(e.key(), e.keyFields); ok {
		return v4
	}
	v4, _ := family4(e.val(), e.valFields)
	return v4
}

// family4 reports whether the addresses among fields in b are IPv4 addresses,
// and false for ok if there is none.
func family4(b []byte, fields fieldKinds) (v4, ok bool) {
	fixed, addrs := 0, 0
	for _, k := range fields {
		switch k {
		case fieldAddr, fieldPrefix:
			addrs++
		case fieldProto, fieldPort, fieldSlot:
			fixed += 4
		}
	}
	return len(b)-fixed == 4*addrs, addrs > 0
}

func fieldText(k fieldKind, b []byte) string {
	switch k {
	case fieldAddr, fieldPrefix:
		a, _ := netip.AddrFromSlice(b)
		return formatAddr(a)
	case fieldProto:
		return protoName(b[0])
	case fieldPort:
		return strconv.Itoa(int(binary.BigEndian.Uint16(b)))
	case fieldSlot:
		return fmt.Sprintf("0x%08x", binaryutil.NativeEndian.Uint32(b))
	}
	return ""
}

// text is e as `nft list` prints it.
func (e element) text() string {
	v4 := e.v4()
	var parts []string
	off := 0
	keyEnd := e.keyEnd()
	walkFields(e.key(), e.keyFields, v4, func(k fieldKind, b []byte) {
		t := fieldText(k, b)
		if k == fieldPrefix && len(keyEnd) >= off+len(b) {
			start, _ := netip.AddrFromSlice(b)
			last := keyEnd[off : off+len(b)]
			bits := len(b) * 8
			for i := len(b)*8 - 1; i >= 0 && b[i/8]&(0x80>>(i%8)) == 0 && last[i/8]&(0x80>>(i%8)) != 0; i-- {
				bits--
			}
			t = formatPrefix(netip.PrefixFrom(start, bits))
		}
		parts = append(parts, t)
		off += len(b)
	})
	out := strings.Join(parts, " . ")
	if e.verdict != nil {
		return out + " : " + verdictText(*e.verdict)
	}
	if val := e.val(); val != nil {
		parts = parts[:0]
		walkFields(val, e.valFields, v4, func(k fieldKind, b []byte) { parts = append(parts, fieldText(k, b)) })
		out += " : " + strings.Join(parts, " . ")
	}
	return out
}

// sortKey is the big-endian value of each key field: the order nft lists
// elements in.
func (e element) sortKey() []byte {
	var out []byte
	walkFields(e.key(), e.keyFields, e.v4(), func(k fieldKind, b []byte) {
		switch k {
		case fieldProto:
			out = append(out, b[0])
		case fieldPort:
			out = append(out, b[:2]...)
		case fieldSlot:
			out = binary.BigEndian.AppendUint32(out, binaryutil.NativeEndian.Uint32(b))
		default:
			out = append(out, b...)
		}
	})
	return out
}

// keyBuilder concatenates key fields as nftables registers hold them: each field
// padded to a multiple of 4 bytes.
type keyBuilder struct {
	buf    [48]byte // key's first storage
	key    []byte
	fields fieldKinds
	n      int
}

func (k *keyBuilder) field(f fieldKind, b ...byte) *keyBuilder {
	k.key = append(k.key, b...)
	k.fields[k.n] = f
	k.n++
	return k
}

func (k *keyBuilder) addr(a netip.Addr) *keyBuilder {
	if a.Is4() {
		b := a.As4()
		return k.field(fieldAddr, b[:]...)
	}
	b := a.As16()
	return k.field(fieldAddr, b[:]...)
}

func (k *keyBuilder) proto(p uint8) *keyBuilder { return k.field(fieldProto, p, 0, 0, 0) }

func (k *keyBuilder) port(p uint16) *keyBuilder { return k.field(fieldPort, byte(p>>8), byte(p), 0, 0) }

// slot is a numgen result: a 32-bit value in host byte order (type mark).
func (k *keyBuilder) slot(n uint32) *keyBuilder {
	return k.field(fieldSlot, binaryutil.NativeEndian.PutUint32(n)...)
}

func newKey() *keyBuilder {
	k := &keyBuilder{}
	k.key = k.buf[:0]
	return k
}

// setElem is an element of a set (no data).
func setElem(k *keyBuilder) element {
	e := newElement(k.key, nil, nil)
	e.keyFields = k.fields
	return e
}

// mapElem is an element of a data map.
func mapElem(k, v *keyBuilder) element {
	e := newElement(k.key, nil, v.key)
	e.keyFields, e.valFields = k.fields, v.fields
	return e
}

// vmapElem is an element of a verdict map. Verdicts are shared: their chain
// names come from a small set.
func vmapElem(k *keyBuilder, v expr.Verdict) element {
	e := newElement(k.key, nil, nil)
	e.verdict, e.keyFields = internVerdict(v), k.fields
	return e
}

var verdicts sync.Map // expr.Verdict → *expr.Verdict

func internVerdict(v expr.Verdict) *expr.Verdict {
	if p, ok := verdicts.Load(v); ok {
		return p.(*expr.Verdict)
	}
	p, _ := verdicts.LoadOrStore(v, &v)
	return p.(*expr.Verdict)
}

// rangeElem is an element of a concatenated interval set whose last field is the
// prefix p.
func rangeElem(k *keyBuilder, p netip.Prefix) element {
	start := append(slices.Clone(k.key), p.Addr().AsSlice()...)
	end := append(slices.Clone(k.key), lastAddr(p).AsSlice()...)
	e := newElement(start, end, nil)
	e.keyFields = k.fields
	e.keyFields[k.n] = fieldPrefix
	return e
}

func verdictText(v expr.Verdict) string {
	switch v.Kind {
	case expr.VerdictGoto:
		return "goto " + v.Chain
	case expr.VerdictJump:
		return "jump " + v.Chain
	case expr.VerdictDrop:
		return "drop"
	case expr.VerdictAccept:
		return "accept"
	}
	return fmt.Sprintf("verdict %d", v.Kind)
}

func protoName(p uint8) string {
	switch p {
	case unix.IPPROTO_TCP:
		return "tcp"
	case unix.IPPROTO_UDP:
		return "udp"
	case unix.IPPROTO_SCTP:
		return "sctp"
	}
	return strconv.Itoa(int(p))
}

// sortElements orders elements as nft lists them: by key value, field by field.
func sortElements(es []element) {
	type keyed struct {
		sort []byte
		e    element
	}
	ks := make([]keyed, len(es))
	for i, e := range es {
		ks[i] = keyed{e.sortKey(), e}
	}
	slices.SortFunc(ks, func(a, b keyed) int {
		return cmp.Or(bytes.Compare(a.sort, b.sort), bytes.Compare(a.e.keyEnd(), b.e.keyEnd()))
	})
	for i, k := range ks {
		es[i] = k.e
	}
}
