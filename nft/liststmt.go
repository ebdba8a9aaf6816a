package nft

import (
	"fmt"
	"strings"

	"github.com/google/nftables/expr"
	"golang.org/x/sys/unix"
)

// The statements of the rule decoder that load values other than packet
// fields, and those that act on the packet.

// ctKeys are the conntrack keys nft names: text, type, size; dir marks the
// keys nft prints with their direction (ct original saddr).
var ctKeys = map[expr.CtKey]struct {
	operand
	dir bool
}{
	expr.CtKeySTATE:      {operand: operand{text: "state", typ: typeCtState, size: 4}},
	expr.CtKeyDIRECTION:  {operand: operand{text: "direction", typ: typeCtDir, size: 1}},
	expr.CtKeySTATUS:     {operand: operand{text: "status", typ: typeCtStatus, size: 4}},
	expr.CtKeyMARK:       {operand: operand{text: "mark", typ: typeMark, size: 4}},
	expr.CtKeyEXPIRATION: {operand: operand{text: "expiration", typ: typeInteger, size: 4}},
	expr.CtKeyL3PROTOCOL: {operand: operand{text: "l3proto", typ: typeNFProto, size: 1}},
	expr.CtKeyPROTOCOL:   {operand: operand{text: "protocol", typ: typeInetProto, size: 1}, dir: true},
	expr.CtKeyPROTOSRC:   {operand: operand{text: "proto-src", typ: typeInetService, size: 2}, dir: true},
	expr.CtKeyPROTODST:   {operand: operand{text: "proto-dst", typ: typeInetService, size: 2}, dir: true},
	expr.CtKeyZONE:       {operand: operand{text: "zone", typ: typeInteger, size: 2}},
	unix.NFT_CT_SRC_IP:   {operand: operand{text: "ip saddr", typ: typeIPAddr, size: 4}, dir: true},
	unix.NFT_CT_DST_IP:   {operand: operand{text: "ip daddr", typ: typeIPAddr, size: 4}, dir: true},
	unix.NFT_CT_SRC_IP6:  {operand: operand{text: "ip6 saddr", typ: typeIP6Addr, size: 16}, dir: true},
	unix.NFT_CT_DST_IP6:  {operand: operand{text: "ip6 daddr", typ: typeIP6Addr, size: 16}, dir: true},
}

func (d *decoder) ct(e *expr.Ct) {
	k, ok := ctKeys[e.Key]
	if !ok {
		d.unknown("ct")
		return
	}
	o := k.operand
	o.text = "ct " + o.text
	if k.dir {
		o.text = "ct " + [...]string{"original", "reply"}[e.Direction&1] + strings.TrimPrefix(o.text, "ct")
	}
	if e.SourceRegister {
		d.emit(o.text + " set " + d.operandText(e.Register, o.typ))
		return
	}
	d.set(e.Register, &o)
}

func (d *decoder) numgen(e *expr.Numgen) {
	kind := "inc"
	if e.Type == unix.NFT_NG_RANDOM {
		kind = "random"
	}
	text := fmt.Sprintf("numgen %s mod %d", kind, e.Modulus)
	if e.Offset != 0 {
		text += fmt.Sprintf(" offset %d", e.Offset)
	}
	d.set(e.Register, &operand{text: text, typ: typeInteger, size: 4})
}

func (d *decoder) fib(e *expr.Fib) {
	var flags []string
	for _, f := range []struct {
		set  bool
		name string
	}{{e.FlagSADDR, "saddr"}, {e.FlagDADDR, "daddr"}, {e.FlagMARK, "mark"}, {e.FlagIIF, "iif"}, {e.FlagOIF, "oif"}} {
		if f.set {
			flags = append(flags, f.name)
		}
	}
	o := &operand{size: 4}
	switch {
	case e.ResultADDRTYPE:
		o.text, o.typ = "type", typeFibAddr
	case e.ResultOIFNAME:
		o.text, o.typ, o.size = "oifname", typeIfname, 16
	default:
		o.text, o.typ = "oif", typeIfindex
	}
	o.text = "fib " + strings.Join(flags, " . ") + " " + o.text
	if e.FlagPRESENT {
		o.text += " exists"
	}
	d.set(e.Register, o)
}

func (d *decoder) rangeExpr(e *expr.Range) {
	o, off := d.get(e.Register)
	if o == nil || off != 0 {
		d.unknown("range")
		return
	}
	op := ""
	if e.Op == expr.CmpOpNeq {
		op = "!= "
	}
	d.emit(fmt.Sprintf("%s %s%s-%s", o.text, op, formatValue(o.typ, e.FromData), formatValue(o.typ, e.ToData)))
}

// natFlags prints the NAT flags as nft does: " random,persistent".
func natFlags(random, fully, persistent bool) string {
	var fs []string
	for _, f := range []struct {
		set  bool
		name string
	}{{random, "random"}, {fully, "fully-random"}, {persistent, "persistent"}} {
		if f.set {
			fs = append(fs, f.name)
		}
	}
	if len(fs) == 0 {
		return ""
	}
	return " " + strings.Join(fs, ",")
}

// portsText prints " to :min[-max]" for ports in registers.
func (d *decoder) portsText(lo, hi uint32) string {
	if lo == 0 {
		return ""
	}
	s := " to :" + d.operandText(lo, typeInetService)
	if hi != 0 && hi != lo {
		s += "-" + d.operandText(hi, typeInetService)
	}
	return s
}

func (d *decoder) nat(e *expr.NAT) {
	var b strings.Builder
	b.WriteString(map[expr.NATType]string{expr.NATTypeSourceNAT: "snat", expr.NATTypeDestNAT: "dnat"}[e.Type])
	addrType := typeIPAddr
	switch e.Family {
	case unix.NFPROTO_IPV4:
		b.WriteString(" ip")
	case unix.NFPROTO_IPV6:
		b.WriteString(" ip6")
		addrType = typeIP6Addr
	}
	addr, _ := d.get(e.RegAddrMin)
	switch {
	case e.RegAddrMin != 0 && addr != nil && addr.mapLen > 0 && e.RegProtoMin != 0:
		// One map gives the address and the port: dnat ip to <key> map @m.
		b.WriteString(" to " + addr.text)
	case e.RegAddrMin != 0:
		a := d.operandText(e.RegAddrMin, addrType)
		if e.RegAddrMax != 0 && e.RegAddrMax != e.RegAddrMin {
			a += "-" + d.operandText(e.RegAddrMax, addrType)
		}
		if e.RegProtoMin != 0 {
			if addrType == typeIP6Addr {
				a = "[" + a + "]"
			}
			a += strings.TrimPrefix(d.portsText(e.RegProtoMin, e.RegProtoMax), " to ")
		}
		b.WriteString(" to " + a)
	default:
		b.WriteString(d.portsText(e.RegProtoMin, e.RegProtoMax))
	}
	b.WriteString(natFlags(e.Random, e.FullyRandom, e.Persistent))
	d.emit(b.String())
}

func (d *decoder) masq(e *expr.Masq) {
	d.emit("masquerade" + d.portsText(e.RegProtoMin, e.RegProtoMax) + natFlags(e.Random, e.FullyRandom, e.Persistent))
}

func (d *decoder) redir(e *expr.Redir) {
	d.emit("redirect" + d.portsText(e.RegisterProtoMin, e.RegisterProtoMax) +
		natFlags(e.Flags&unix.NF_NAT_RANGE_PROTO_RANDOM != 0, e.Flags&unix.NF_NAT_RANGE_PROTO_RANDOM_FULLY != 0,
			e.Flags&unix.NF_NAT_RANGE_PERSISTENT != 0))
}

var (
	icmpCodes  = map[uint8]string{0: "net-unreachable", 1: "host-unreachable", 2: "prot-unreachable", 3: "port-unreachable", 9: "net-prohibited", 10: "host-prohibited", 13: "admin-prohibited"}
	icmp6Codes = map[uint8]string{0: "no-route", 1: "admin-prohibited", 3: "addr-unreachable", 4: "port-unreachable", 5: "policy-fail", 6: "reject-route"}
	icmpxCodes = map[uint8]string{0: "no-route", 1: "port-unreachable", 2: "host-unreachable", 3: "admin-prohibited"}
)

// codeName is the name of an ICMP code, its number if it has none.
func codeName(names map[uint8]string, c uint8) string {
	if n, ok := names[c]; ok {
		return n
	}
	return fmt.Sprint(c)
}

// reject prints a reject as nft does in an inet table: the ICMP type follows
// the family the rule matched, and the default ICMPX code is left out.
func (d *decoder) reject(e *expr.Reject) {
	switch e.Type {
	case unix.NFT_REJECT_TCP_RST:
		d.useL4()
		d.emit("reject with tcp reset")
	case unix.NFT_REJECT_ICMPX_UNREACH:
		if e.Code == unix.NFT_REJECT_ICMPX_PORT_UNREACH {
			d.emit("reject")
			return
		}
		d.emit("reject with icmpx " + codeName(icmpxCodes, e.Code))
	case unix.NFT_REJECT_ICMP_UNREACH:
		d.useFamily()
		if d.nfproto == unix.NFPROTO_IPV6 {
			d.emit("reject with icmpv6 " + codeName(icmp6Codes, e.Code))
			return
		}
		d.emit("reject with icmp " + codeName(icmpCodes, e.Code))
	default:
		d.unknown("reject")
	}
}

func (d *decoder) dynset(e *expr.Dynset) {
	// NFT_DYNSET_OP_DELETE (2) is missing from x/sys/unix.
	op, ok := map[uint32]string{unix.NFT_DYNSET_OP_ADD: "add", unix.NFT_DYNSET_OP_UPDATE: "update", 2: "delete"}[e.Operation]
	if !ok {
		d.unknown("dynset")
		return
	}
	s := d.sets[e.SetName]
	var b strings.Builder
	b.WriteString(op + " @" + e.SetName + " { " + d.key(e.SrcRegKey, s.keyLen))
	if e.Timeout != 0 {
		b.WriteString(" timeout " + durationText(e.Timeout))
	}
	for _, x := range e.Exprs {
		sub := newDecoder(d.sets)
		sub.expr(x)
		b.WriteString(" " + strings.Join(sub.stmts, " "))
	}
	if e.SrcRegData != 0 {
		t := typeIntegerBE
		if len(s.dataTypes) == 1 {
			t = s.dataTypes[0]
		}
		b.WriteString(" : " + d.operandText(e.SrcRegData, t))
	}
	b.WriteString(" }")
	d.emit(b.String())
}

var logLevels = []string{"emerg", "alert", "crit", "err", "warn", "notice", "info", "debug", "audit"}

func logText(e *expr.Log) string {
	var b strings.Builder
	b.WriteString("log")
	if e.Key&(1<<unix.NFTA_LOG_PREFIX) != 0 {
		fmt.Fprintf(&b, " prefix %q", string(e.Data))
	}
	if e.Key&(1<<unix.NFTA_LOG_GROUP) != 0 {
		fmt.Fprintf(&b, " group %d", e.Group)
	}
	if e.Key&(1<<unix.NFTA_LOG_LEVEL) != 0 && e.Level != expr.LogLevelWarning && int(e.Level) < len(logLevels) {
		b.WriteString(" level " + logLevels[e.Level])
	}
	return b.String()
}

func limitText(e *expr.Limit) string {
	unit := map[expr.LimitTime]string{expr.LimitTimeSecond: "second", expr.LimitTimeMinute: "minute",
		expr.LimitTimeHour: "hour", expr.LimitTimeDay: "day", expr.LimitTimeWeek: "week"}[e.Unit]
	over := ""
	if e.Over {
		over = "over "
	}
	if e.Type == expr.LimitTypePktBytes {
		return fmt.Sprintf("limit rate %s%d bytes/%s", over, e.Rate, unit)
	}
	s := fmt.Sprintf("limit rate %s%d/%s", over, e.Rate, unit)
	if e.Burst != 0 && e.Burst != 5 {
		s += fmt.Sprintf(" burst %d packets", e.Burst)
	}
	return s
}
