package nft

import (
	"bytes"
	"cmp"
	"encoding/binary"
	"fmt"
	"net/netip"
	"slices"
	"strconv"

	"github.com/google/nftables"
	"github.com/google/nftables/binaryutil"
	"github.com/google/nftables/expr"
	"golang.org/x/sys/unix"
)

// element is one element of a named set or map, in the kernel's encoding and as
// `nft list` prints it.
type element struct {
	key, keyEnd, val []byte
	verdict          *expr.Verdict
	sort             []byte // big-endian value of each key field: nft's listing order
	text             string
}

func (e element) setElement() nftables.SetElement {
	return nftables.SetElement{Key: e.key, KeyEnd: e.keyEnd, Val: e.val, VerdictData: e.verdict}
}

// elementID identifies an element with its data, so that a changed map value
// shows as a delete and an add.
// Within one set every key, key end and value has the same length (or none),
// so the concatenation is unambiguous.
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
func (e element) id() string { return elementID(e.key, e.keyEnd, e.val, e.verdict) }

// keyBuilder concatenates key fields as nftables registers hold them: each field
// padded to a multiple of 4 bytes.
type keyBuilder struct {
	key, sort []byte
	text      []string
}

func (k *keyBuilder) addr(a netip.Addr) *keyBuilder {
	b := a.AsSlice()
	k.key = append(k.key, b...)
	k.sort = append(k.sort, b...)
	k.text = append(k.text, formatAddr(a))
	return k
}

func (k *keyBuilder) proto(p uint8) *keyBuilder {
	k.key = append(k.key, p, 0, 0, 0)
	k.sort = append(k.sort, p)
	k.text = append(k.text, protoName(p))
	return k
}

func (k *keyBuilder) port(p uint16) *keyBuilder {
	k.key = append(k.key, byte(p>>8), byte(p), 0, 0)
	k.sort = binary.BigEndian.AppendUint16(k.sort, p)
	k.text = append(k.text, strconv.Itoa(int(p)))
	return k
}

// slot is a numgen result: a 32-bit value in host byte order (type mark).
func (k *keyBuilder) slot(n uint32) *keyBuilder {
	k.key = append(k.key, binaryutil.NativeEndian.PutUint32(n)...)
	k.sort = binary.BigEndian.AppendUint32(k.sort, n)
	k.text = append(k.text, fmt.Sprintf("0x%08x", n))
	return k
}

func (k *keyBuilder) String() string {
	var b bytes.Buffer
	for i, t := range k.text {
		if i > 0 {
			b.WriteString(" . ")
		}
		b.WriteString(t)
	}
	return b.String()
}

func newKey() *keyBuilder { return &keyBuilder{} }

// setElem is an element of a set (no data).
func setElem(k *keyBuilder) element {
	return element{key: k.key, sort: k.sort, text: k.String()}
}

// mapElem is an element of a data map.
func mapElem(k, v *keyBuilder) element {
	return element{key: k.key, val: v.key, sort: k.sort, text: k.String() + " : " + v.String()}
}

// vmapElem is an element of a verdict map.
func vmapElem(k *keyBuilder, v expr.Verdict) element {
	return element{key: k.key, verdict: &v, sort: k.sort, text: k.String() + " : " + verdictText(v)}
}

// rangeElem is an element of a concatenated interval set whose last field is the
// prefix p.
func rangeElem(k *keyBuilder, p netip.Prefix) element {
	start := slices.Clone(k.key)
	start = append(start, p.Addr().AsSlice()...)
	end := slices.Clone(k.key)
	end = append(end, lastAddr(p).AsSlice()...)
	sort := append(slices.Clone(k.sort), p.Addr().AsSlice()...)
	return element{key: start, keyEnd: end, sort: sort, text: k.String() + " . " + formatPrefix(p)}
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
	slices.SortFunc(es, func(a, b element) int {
		return cmp.Or(bytes.Compare(a.sort, b.sort), bytes.Compare(a.keyEnd, b.keyEnd))
	})
}
