package nft

import (
	"encoding/binary"
	"fmt"
	"math/big"
	"net/netip"
	"strconv"
	"strings"
	"time"

	"github.com/google/nftables/binaryutil"
	"golang.org/x/sys/unix"
)

// dtype is an nftables data type, numbered as nft numbers them in a set's key
// and data type (nftables include/datatype.h, enum datatypes). List uses it to
// print set types, set elements and the constants of rules.
type dtype uint32

const (
	typeVerdict     dtype = 1
	typeNFProto     dtype = 2
	typeInteger     dtype = 4 // in host byte order
	typeString      dtype = 5
	typeIPAddr      dtype = 7
	typeIP6Addr     dtype = 8
	typeEtherAddr   dtype = 9
	typeEtherType   dtype = 10
	typeInetProto   dtype = 12
	typeInetService dtype = 13
	typeMark        dtype = 19
	typeIfindex     dtype = 20
	typeCtState     dtype = 26
	typeCtDir       dtype = 27
	typeCtStatus    dtype = 28
	typeFibAddr     dtype = 38
	typeIfname      dtype = 41

	// typeIntegerBE is not an nft type: an integer in network byte order, as
	// loaded from a packet field nft has no name for.
	typeIntegerBE dtype = 1 << 16

	// verdictMagic is the data type the kernel reports for a verdict map.
	verdictMagic = 0xffffff00
	// concatBits is the width of one field in the type of a concatenation.
	concatBits = 6
)

// dtypeInfo is a type's name and the size of its values in bytes (0: the
// length of the key tells).
var dtypeInfo = map[dtype]struct {
	name string
	size int
}{
	typeVerdict: {"verdict", 4}, typeNFProto: {"nf_proto", 1}, 3: {"bitmask", 0}, typeInteger: {"integer", 0},
	typeString: {"string", 0}, 6: {"ll_addr", 0}, typeIPAddr: {"ipv4_addr", 4}, typeIP6Addr: {"ipv6_addr", 16},
	typeEtherAddr: {"ether_addr", 6}, typeEtherType: {"ether_type", 2}, 11: {"arp_op", 2},
	typeInetProto: {"inet_proto", 1}, typeInetService: {"inet_service", 2}, 14: {"icmp_type", 1},
	15: {"tcp_flag", 1}, 18: {"time", 8}, typeMark: {"mark", 4}, typeIfindex: {"iface_index", 4},
	21: {"iface_type", 2}, 22: {"realm", 4}, 23: {"classid", 4}, 24: {"uid", 4}, 25: {"gid", 4},
	typeCtState: {"ct_state", 4}, typeCtDir: {"ct_dir", 1}, typeCtStatus: {"ct_status", 4},
	29: {"icmpv6_type", 1}, 30: {"ct_label", 16}, 31: {"pkt_type", 1}, 35: {"devgroup", 4},
	36: {"dscp", 1}, 37: {"ecn", 1}, typeFibAddr: {"fib_addrtype", 4}, 39: {"boolean", 1},
	typeIfname: {"ifname", 16},
}

// splitType returns the fields of a set's key or data type: one for a plain
// type, several for a concatenation (the first field in the highest bits).
func splitType(magic uint32) []dtype {
	if magic == verdictMagic {
		return []dtype{typeVerdict}
	}
	var out []dtype
	for ; magic != 0; magic >>= concatBits {
		out = append([]dtype{dtype(magic & (1<<concatBits - 1))}, out...)
	}
	return out
}

// typeName is the type as a set declaration prints it: "ipv4_addr . inet_service".
func typeName(ts []dtype) string {
	names := make([]string, len(ts))
	for i, t := range ts {
		if info, ok := dtypeInfo[t]; ok {
			names[i] = info.name
		} else {
			names[i] = fmt.Sprintf("type %d", t)
		}
	}
	return strings.Join(names, " . ")
}

// splitFields cuts b, a value of types ts, into its fields. A concatenation
// pads each field to 4 bytes; a plain value is b itself. It returns nil if the
// sizes do not add up (a type of unknown size in a concatenation).
func splitFields(ts []dtype, b []byte) [][]byte {
	if len(ts) == 1 {
		return [][]byte{b}
	}
	out := make([][]byte, 0, len(ts))
	for _, t := range ts {
		n := dtypeInfo[t].size
		if n == 0 || len(b) < (n+3)/4*4 {
			return nil
		}
		out = append(out, b[:n])
		b = b[(n+3)/4*4:]
	}
	if len(b) != 0 {
		return nil
	}
	return out
}

// formatValue prints b, a value of type t, as nft does.
func formatValue(t dtype, b []byte) string {
	switch t {
	case typeIPAddr, typeIP6Addr:
		if a, ok := netip.AddrFromSlice(b); ok {
			return formatAddr(a)
		}
	case typeInetProto:
		if len(b) == 1 {
			if name, ok := protoNames[b[0]]; ok {
				return name
			}
			return protoName(b[0])
		}
	case typeInetService, typeEtherType:
		if len(b) == 2 {
			return strconv.Itoa(int(binary.BigEndian.Uint16(b)))
		}
	case typeNFProto:
		if len(b) == 1 {
			switch b[0] {
			case unix.NFPROTO_IPV4:
				return "ipv4"
			case unix.NFPROTO_IPV6:
				return "ipv6"
			}
			return strconv.Itoa(int(b[0]))
		}
	case typeMark:
		if len(b) == 4 {
			return fmt.Sprintf("0x%08x", binaryutil.NativeEndian.Uint32(b))
		}
	case typeCtState, typeCtStatus:
		if len(b) == 4 {
			return flagNames(binaryutil.NativeEndian.Uint32(b), ctFlagNames[t])
		}
	case typeFibAddr:
		if len(b) == 4 {
			n := binaryutil.NativeEndian.Uint32(b)
			if int(n) < len(fibAddrTypes) {
				return fibAddrTypes[n]
			}
			return strconv.Itoa(int(n))
		}
	case typeIfname, typeString:
		return strconv.Quote(strings.TrimRight(string(b), "\x00"))
	case typeEtherAddr:
		if len(b) == 6 {
			return fmt.Sprintf("%02x:%02x:%02x:%02x:%02x:%02x", b[0], b[1], b[2], b[3], b[4], b[5])
		}
	case typeInteger, typeIfindex:
		if n, ok := hostUint(b); ok {
			return strconv.FormatUint(n, 10)
		}
	case typeIntegerBE:
		return new(big.Int).SetBytes(b).String()
	}
	return fmt.Sprintf("0x%x", b)
}

// hostUint reads b as an unsigned integer in host byte order.
func hostUint(b []byte) (uint64, bool) {
	switch len(b) {
	case 1:
		return uint64(b[0]), true
	case 2:
		return uint64(binaryutil.NativeEndian.Uint16(b)), true
	case 4:
		return uint64(binaryutil.NativeEndian.Uint32(b)), true
	case 8:
		return binaryutil.NativeEndian.Uint64(b), true
	}
	return 0, false
}

// protoNames name the transport protocols besides those of services, as
// /etc/protocols does, which nft reads.
var protoNames = map[uint8]string{1: "icmp", 2: "igmp", 33: "dccp", 41: "ipv6", 47: "gre", 50: "esp", 51: "ah",
	58: "ipv6-icmp", 136: "udplite"}

// ctFlagNames are the bits of ct state and ct status, as nft names them.
var ctFlagNames = map[dtype][]string{
	typeCtState: {0: "invalid", 1: "established", 2: "related", 3: "new", 6: "untracked"},
	typeCtStatus: {0: "expected", 1: "seen-reply", 2: "assured", 3: "confirmed", 4: "snat", 5: "dnat",
		9: "dying"},
}

// flagNames prints the bits of v with their names, comma-separated.
func flagNames(v uint32, names []string) string {
	var parts []string
	for i := range 32 {
		if v&(1<<i) == 0 {
			continue
		}
		if i < len(names) && names[i] != "" {
			parts = append(parts, names[i])
		} else {
			parts = append(parts, fmt.Sprintf("0x%x", uint32(1)<<i))
		}
	}
	if len(parts) == 0 {
		return "0x0"
	}
	return strings.Join(parts, ",")
}

// fibAddrTypes are the route types (RTN_*) fib … type prints.
var fibAddrTypes = []string{"unspec", "unicast", "local", "broadcast", "anycast", "multicast",
	"blackhole", "unreachable", "prohibit", "throw", "nat", "xresolve"}

// perLine is how many elements of a set with key types ts nft prints on one
// line (nftables src/expression.c, calculate_delim).
func perLine(ts []dtype) int {
	if len(ts) != 1 {
		return 1
	}
	switch ts[0] {
	case typeIPAddr, typeCtState, typeCtStatus, 31:
		return 2
	case typeNFProto, typeInteger, 11, typeInetProto, typeInetService, 15, 16, typeMark, typeIfindex,
		23, 24, 25, typeCtDir:
		return 5
	}
	return 1
}

// elementsText prints the elements of a named set, n per line, continuation
// lines indented by three tabs and five spaces, as formatElements does for the
// sets Render knows.
func elementsText(elems []string, n int) string {
	const newline = ",\n\t\t\t     "
	var b strings.Builder
	b.WriteString("{ ")
	for i, e := range elems {
		if i > 0 {
			if i%n != 0 {
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

// durationText prints d as nft prints times: 1d2h3m4s5ms, leaving out zero
// units (nftables src/datatype.c, time_print).
func durationText(d time.Duration) string {
	ms := d.Milliseconds()
	var b strings.Builder
	for _, u := range []struct {
		n    int64
		unit string
	}{{86400000, "d"}, {3600000, "h"}, {60000, "m"}, {1000, "s"}, {1, "ms"}} {
		if ms >= u.n {
			fmt.Fprintf(&b, "%d%s", ms/u.n, u.unit)
			ms %= u.n
		}
	}
	if b.Len() == 0 {
		return "0s"
	}
	return b.String()
}
