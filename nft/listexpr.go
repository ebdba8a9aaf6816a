package nft

import (
	"bytes"
	"fmt"
	"net/netip"
	"slices"
	"strings"

	"github.com/google/nftables/expr"
	"golang.org/x/sys/unix"
)

// The rule decoder turns a rule's kernel expressions back into nft syntax, as
// nft's netlink_delinearize.c does: loads into registers become the operands
// of the comparisons, lookups and statements that read them, and a match that
// only states the protocol a later payload needs (meta nfproto ipv4 before ip
// daddr) is left out.

// unknownExpr stands for an expression the rule decoder cannot print: one
// the expression library does not decode, or a form it does not know.
type unknownExpr struct{ name string }

// setRef is what the rule decoder needs of a set that a rule names.
type setRef struct {
	keyLen, dataLen int
	dataTypes       []dtype
	// inline is an anonymous set's elements, "{ 1.2.3.4, 5.6.7.8 }": nft
	// prints them in place of its name.
	inline string
}

// operand is what a register holds while a rule is decoded.
type operand struct {
	text  string // the expression that loaded it
	typ   dtype  // the type of its values, for constants compared with it
	size  int    // bytes loaded
	konst []byte // an immediate value (text empty)
	// bits > 0: only the first bits of an address of field bytes are
	// compared (a partial load, or a prefix mask), so a constant prints as
	// a prefix.
	field, bits int
	binop       bool   // text ends in a binary operation: comparisons print their ==
	flags       []byte // a bitmask type ANDed with flags: != 0 prints as the flags
	base        string // text without the AND, for flags
	mapLen      int    // a map lookup's result: bytes of data from this register on
	nfproto     bool   // meta nfproto: an == match sets the family
	l4proto     bool   // meta l4proto, ip protocol, ip6 nexthdr
}

// span is how many 4-byte registers the operand takes.
func (o *operand) span() int { return (max(o.size, o.mapLen) + 3) / 4 }

// decoder holds the state of one rule's decoding.
type decoder struct {
	sets  map[string]setRef
	regs  map[uint32]*operand // by 4-byte register number (NFT_REG32_00 is 8)
	stmts []string
	drop  map[int]bool // statements left out: dependencies a later one implies
	// The family and transport protocol the rule matched, and the
	// statements that matched them (-1: none, or already implied).
	nfproto, l4proto byte
	famDep, l4Dep    int
	// gte is the last statement if it is a >= match, which a <= match of
	// the same operand turns into a range (nft writes a-b as the two).
	gte struct {
		stmt int
		o    *operand
		data []byte
	}
}

// ruleText renders a rule's expressions as `nft list` prints the rule. sets
// describes the sets its lookups name. It never fails: what it cannot decode
// prints as a "# unknown expression" placeholder, and any statement after it
// follows.
func ruleText(exprs []any, sets map[string]setRef) string {
	d := newDecoder(sets)
	for _, e := range exprs {
		d.expr(e)
	}
	var out []string
	for i, s := range d.stmts {
		if !d.drop[i] {
			out = append(out, s)
		}
	}
	return strings.Join(out, " ")
}

func newDecoder(sets map[string]setRef) *decoder {
	d := &decoder{sets: sets, regs: map[uint32]*operand{}, drop: map[int]bool{}, famDep: -1, l4Dep: -1}
	d.gte.stmt = -1
	return d
}

// reg32 maps a register number to 4-byte registers: the 16-byte NFT_REG_1 …
// NFT_REG_4 start at NFT_REG32_00, 04, 08, 12.
func reg32(r uint32) uint32 {
	if r >= 1 && r <= 4 {
		return 8 + (r-1)*4
	}
	return r
}

func (d *decoder) set(r uint32, o *operand) { d.regs[reg32(r)] = o }

// get returns the operand in register r and the byte offset of r in it (a
// map's data spans several registers); nil if nothing was loaded there.
func (d *decoder) get(r uint32) (*operand, int) {
	r = reg32(r)
	if o := d.regs[r]; o != nil {
		return o, 0
	}
	for h := r - 1; h >= 8 && h < r; h-- {
		if o := d.regs[h]; o != nil {
			if int(r-h) < o.span() {
				return o, int(r-h) * 4
			}
			break
		}
	}
	return nil, 0
}

// operandText is the text of register r, a placeholder if it holds nothing.
func (d *decoder) operandText(r uint32, t dtype) string {
	o, _ := d.get(r)
	switch {
	case o == nil:
		return fmt.Sprintf("# unknown register %d", r)
	case o.konst != nil:
		return formatValue(t, o.konst)
	}
	return o.text
}

// key is the text of a lookup key of n bytes from register r on: a
// concatenation of the operands it spans, each padded to 4 bytes.
func (d *decoder) key(r uint32, n int) string {
	o, _ := d.get(r)
	if o == nil || n <= 0 || o.size >= n {
		return d.operandText(r, o.typOr(typeIntegerBE))
	}
	var parts []string
	for r = reg32(r); n > 0; {
		o, off := d.get(r)
		if o == nil || off != 0 {
			parts = append(parts, fmt.Sprintf("# unknown register %d", r))
			break
		}
		parts = append(parts, d.operandText(r, o.typ))
		r += uint32(o.span())
		n -= o.span() * 4
	}
	return strings.Join(parts, " . ")
}

func (o *operand) typOr(t dtype) dtype {
	if o == nil || o.typ == 0 {
		return t
	}
	return o.typ
}

func (d *decoder) emit(s string) int {
	d.stmts = append(d.stmts, s)
	return len(d.stmts) - 1
}

// useFamily drops the statement that matched the family, now implied.
func (d *decoder) useFamily() {
	if d.famDep >= 0 {
		d.drop[d.famDep], d.famDep = true, -1
	}
}

func (d *decoder) useL4() {
	if d.l4Dep >= 0 {
		d.drop[d.l4Dep], d.l4Dep = true, -1
	}
}

func (d *decoder) expr(e any) {
	switch e := e.(type) {
	case *expr.Meta:
		d.meta(e)
	case *expr.Payload:
		d.payload(e)
	case *expr.Cmp:
		d.cmp(e)
	case *expr.Bitwise:
		d.bitwise(e)
	case *expr.Byteorder:
		if o, _ := d.get(e.SourceRegister); o != nil {
			d.set(e.DestRegister, o) // nft shows the value it converts
		}
	case *expr.Lookup:
		d.lookup(e)
	case *expr.Immediate:
		d.set(e.Register, &operand{konst: e.Data, size: len(e.Data)})
	case *expr.Verdict:
		d.emit(ruleVerdictText(*e))
	case *expr.Counter:
		d.emit(fmt.Sprintf("counter packets %d bytes %d", e.Packets, e.Bytes))
	case *expr.Ct:
		d.ct(e)
	case *expr.Numgen:
		d.numgen(e)
	case *expr.Fib:
		d.fib(e)
	case *expr.Range:
		d.rangeExpr(e)
	case *expr.NAT:
		d.nat(e)
	case *expr.Masq:
		d.masq(e)
	case *expr.Redir:
		d.redir(e)
	case *expr.Reject:
		d.reject(e)
	case *expr.Dynset:
		d.dynset(e)
	case *expr.Log:
		d.emit(logText(e))
	case *expr.Limit:
		d.emit(limitText(e))
	case *expr.Notrack:
		d.emit("notrack")
	case unknownExpr:
		d.unknown(e.name)
	default:
		d.unknown(strings.ToLower(strings.TrimPrefix(fmt.Sprintf("%T", e), "*expr.")))
	}
}

func (d *decoder) unknown(name string) { d.emit("# unknown expression " + name) }

// metaKeys are the meta keys nft names: text, type, size.
var metaKeys = map[expr.MetaKey]operand{
	expr.MetaKeyLEN:      {text: "meta length", typ: typeInteger, size: 4},
	expr.MetaKeyPROTOCOL: {text: "meta protocol", typ: typeEtherType, size: 2},
	expr.MetaKeyPRIORITY: {text: "meta priority", typ: 23, size: 4},
	expr.MetaKeyMARK:     {text: "meta mark", typ: typeMark, size: 4},
	expr.MetaKeyIIF:      {text: "iif", typ: typeIfindex, size: 4},
	expr.MetaKeyOIF:      {text: "oif", typ: typeIfindex, size: 4},
	expr.MetaKeyIIFNAME:  {text: "iifname", typ: typeIfname, size: 16},
	expr.MetaKeyOIFNAME:  {text: "oifname", typ: typeIfname, size: 16},
	expr.MetaKeySKUID:    {text: "meta skuid", typ: 24, size: 4},
	expr.MetaKeySKGID:    {text: "meta skgid", typ: 25, size: 4},
	expr.MetaKeyNFTRACE:  {text: "meta nftrace", typ: typeInteger, size: 1},
	expr.MetaKeyNFPROTO:  {text: "meta nfproto", typ: typeNFProto, size: 1, nfproto: true},
	expr.MetaKeyL4PROTO:  {text: "meta l4proto", typ: typeInetProto, size: 1, l4proto: true},
	expr.MetaKeyPKTTYPE:  {text: "meta pkttype", typ: 31, size: 1},
	expr.MetaKeyCPU:      {text: "meta cpu", typ: typeInteger, size: 4},
	expr.MetaKeyPRANDOM:  {text: "meta random", typ: typeInteger, size: 4},
}

func (d *decoder) meta(e *expr.Meta) {
	o, ok := metaKeys[e.Key]
	if !ok {
		o = operand{text: fmt.Sprintf("meta %d", e.Key), typ: typeInteger, size: 4}
	}
	if e.SourceRegister {
		d.emit(o.text + " set " + d.operandText(e.Register, o.typ))
		return
	}
	d.set(e.Register, &o)
}

// headerField is a named field of a protocol header.
type headerField struct {
	off, len uint32
	name     string
	typ      dtype
}

var (
	ipFields = []headerField{{2, 2, "length", typeIntegerBE}, {4, 2, "id", typeIntegerBE}, {8, 1, "ttl", typeIntegerBE},
		{9, 1, "protocol", typeInetProto}, {12, 4, "saddr", typeIPAddr}, {16, 4, "daddr", typeIPAddr}}
	ip6Fields = []headerField{{4, 2, "length", typeIntegerBE}, {6, 1, "nexthdr", typeInetProto},
		{7, 1, "hoplimit", typeIntegerBE}, {8, 16, "saddr", typeIP6Addr}, {24, 16, "daddr", typeIP6Addr}}
	portFields = []headerField{{0, 2, "sport", typeInetService}, {2, 2, "dport", typeInetService}}
)

func (d *decoder) payload(e *expr.Payload) {
	if e.OperationType == expr.PayloadWrite {
		d.unknown("payload")
		return
	}
	raw := &operand{text: fmt.Sprintf("@%s,%d,%d", [...]string{"ll", "nh", "th", "ih"}[min(e.Base, 3)], e.Offset*8, e.Len*8),
		typ: typeIntegerBE, size: int(e.Len)}
	o := raw
	switch e.Base {
	case expr.PayloadBaseNetworkHeader:
		proto, fields := "ip", ipFields
		switch d.nfproto {
		case unix.NFPROTO_IPV4:
		case unix.NFPROTO_IPV6:
			proto, fields = "ip6", ip6Fields
		default:
			fields = nil // no family matched: nft prints the raw load too
		}
		for _, f := range fields {
			if f.off != e.Offset || e.Len > f.len || e.Len < f.len && f.typ != typeIPAddr && f.typ != typeIP6Addr {
				continue
			}
			o = &operand{text: proto + " " + f.name, typ: f.typ, size: int(e.Len), l4proto: f.typ == typeInetProto}
			if e.Len < f.len {
				o.field, o.bits = int(f.len), int(e.Len)*8
			}
			d.useFamily()
			break
		}
	case expr.PayloadBaseTransportHeader:
		proto := map[byte]string{unix.IPPROTO_TCP: "tcp", unix.IPPROTO_UDP: "udp", unix.IPPROTO_SCTP: "sctp",
			unix.IPPROTO_UDPLITE: "udplite", unix.IPPROTO_DCCP: "dccp"}[d.l4proto]
		for _, f := range portFields {
			if f.off != e.Offset || f.len != e.Len {
				continue
			}
			if proto == "" {
				o = &operand{text: "th " + f.name, typ: f.typ, size: 2}
			} else {
				o = &operand{text: proto + " " + f.name, typ: f.typ, size: 2}
				d.useL4()
			}
			break
		}
	}
	d.set(e.DestRegister, o)
}

var cmpOps = map[expr.CmpOp]string{expr.CmpOpEq: "==", expr.CmpOpNeq: "!=", expr.CmpOpLt: "<",
	expr.CmpOpLte: "<=", expr.CmpOpGt: ">", expr.CmpOpGte: ">="}

func (d *decoder) cmp(e *expr.Cmp) {
	o, off := d.get(e.Register)
	if o == nil || off != 0 {
		d.unknown("cmp")
		return
	}
	if o.flags != nil && e.Op == expr.CmpOpNeq && !nonZero(e.Data) {
		d.emit(o.base + " " + formatValue(o.typ, o.flags)) // ct status dnat
		return
	}
	if e.Op == expr.CmpOpLte && d.gte.o == o && d.gte.stmt == len(d.stmts)-1 {
		d.stmts[d.gte.stmt] = o.text + " " + d.constText(o, d.gte.data) + "-" + d.constText(o, e.Data)
		return
	}
	op := cmpOps[e.Op]
	if e.Op == expr.CmpOpEq && !o.binop {
		op = "" // nft leaves out the == of a plain match
	}
	text := strings.TrimSpace(strings.Join([]string{o.text, op}, " ")) + " " + d.constText(o, e.Data)
	i := d.emit(text)
	if e.Op == expr.CmpOpGte {
		d.gte.stmt, d.gte.o, d.gte.data = i, o, e.Data
	}
	if e.Op == expr.CmpOpEq && len(e.Data) == 1 && !o.binop {
		switch {
		case o.nfproto:
			d.nfproto, d.famDep = e.Data[0], i
		case o.l4proto:
			d.l4proto, d.l4Dep = e.Data[0], i
		}
	}
}

// nonZero reports whether b has a byte that is not zero.
func nonZero(b []byte) bool { return slices.ContainsFunc(b, func(c byte) bool { return c != 0 }) }

// constText prints a constant compared with o: a prefix if o is one.
func (d *decoder) constText(o *operand, data []byte) string {
	if o.bits > 0 && (o.typ == typeIPAddr || o.typ == typeIP6Addr) {
		full := make([]byte, max(o.field, len(data)))
		copy(full, data)
		if a, ok := netip.AddrFromSlice(full); ok {
			return formatPrefix(netip.PrefixFrom(a, o.bits))
		}
	}
	return formatValue(o.typ, data)
}

func (d *decoder) bitwise(e *expr.Bitwise) {
	src, off := d.get(e.SourceRegister)
	if src == nil || off != 0 || len(e.Mask) == 0 || len(e.Mask) != len(e.Xor) {
		d.unknown("bitwise") // a shift, or a value from nowhere
		return
	}
	o := *src
	o.flags, o.base, o.konst = nil, "", nil
	zero, ones := !nonZero(e.Xor), !nonZero(inverted(e.Mask))
	switch {
	case zero && (o.typ == typeIPAddr || o.typ == typeIP6Addr) && prefixLen(e.Mask) >= 0:
		o.bits = prefixLen(e.Mask) // ip saddr 10.0.0.0/12
		if o.field == 0 {
			o.field = o.size
		}
	case zero:
		o.text = src.text + " & " + formatValue(src.typ, e.Mask)
		o.binop = true
		if src.typ == typeCtState || src.typ == typeCtStatus {
			o.flags, o.base = e.Mask, src.text
		}
	case bytes.Equal(e.Mask, inverted(e.Xor)):
		o.text, o.binop = src.text+" | "+formatValue(src.typ, e.Xor), true
	case ones:
		o.text, o.binop = src.text+" ^ "+formatValue(src.typ, e.Xor), true
	default:
		o.text, o.binop = src.text+" & "+formatValue(src.typ, e.Mask)+" ^ "+formatValue(src.typ, e.Xor), true
	}
	d.set(e.DestRegister, &o)
}

func inverted(b []byte) []byte {
	out := make([]byte, len(b))
	for i := range b {
		out[i] = ^b[i]
	}
	return out
}

// prefixLen returns the number of leading one bits of mask if only those are
// set, else -1.
func prefixLen(mask []byte) int {
	n := 0
	for n < len(mask)*8 && mask[n/8]&(0x80>>(n%8)) != 0 {
		n++
	}
	for i := n; i < len(mask)*8; i++ {
		if mask[i/8]&(0x80>>(i%8)) != 0 {
			return -1
		}
	}
	return n
}

func (d *decoder) lookup(e *expr.Lookup) {
	s, ok := d.sets[e.SetName]
	ref := "@" + e.SetName
	if ok && s.inline != "" {
		ref = s.inline
	}
	key := d.key(e.SourceRegister, s.keyLen)
	switch {
	case e.IsDestRegSet && e.DestRegister == unix.NFT_REG_VERDICT:
		d.emit(key + " vmap " + ref)
	case e.IsDestRegSet:
		o := &operand{text: key + " map " + ref, size: s.dataLen, mapLen: s.dataLen}
		if len(s.dataTypes) == 1 {
			o.typ = s.dataTypes[0]
		}
		d.set(e.DestRegister, o)
	case e.Invert:
		d.emit(key + " != " + ref)
	default:
		d.emit(key + " " + ref)
	}
}

// ruleVerdictText prints a verdict statement.
func ruleVerdictText(v expr.Verdict) string {
	switch v.Kind {
	case expr.VerdictReturn:
		return "return"
	case expr.VerdictContinue:
		return "continue"
	case expr.VerdictQueue:
		return "queue"
	}
	return verdictText(v)
}
