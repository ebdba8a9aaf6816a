package nft

import (
	"encoding/binary"
	"errors"
	"fmt"
	"time"

	"github.com/google/nftables"
	"github.com/google/nftables/binaryutil"
	"github.com/google/nftables/expr"
	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"
)

// TraceTableName is the temporary table, in the inet family, that marks a
// probe's packets for tracing. It exists only during Tracer.Trace.
const TraceTableName = "podnet-trace"

// traceChainPriority puts the trace chains before conntrack (-200) and podnet's
// nat chains (-100), so that they see the probe's packets as they arrived.
const traceChainPriority = -350

// nftTableFlagOwner is NFT_TABLE_F_OWNER (include/uapi/linux/netfilter/
// nf_tables.h, Linux 5.12), which x/sys/unix lacks: the table belongs to the
// netlink socket that created it, only that socket may change it, and the
// kernel deletes it when the socket closes.
const nftTableFlagOwner = 0x2

// traceTableRef is table inet podnet-trace.
func traceTableRef() *nftables.Table {
	return &nftables.Table{Name: TraceTableName, Family: nftables.TableFamilyINet}
}

// traceTable is a live trace table and the socket that owns it.
type traceTable struct {
	conn *nftables.Conn // lasting: every request goes through sock
	sock *netlink.Conn
}

// createTraceTable creates the trace table for p, owned by a new netlink socket.
// google/nftables v0.3.0 always sends NFTA_TABLE_FLAGS 0, so the table is created
// in a batch of its own written here, on the socket google/nftables uses; the
// chains and rules follow in a second batch, so that tracing starts with all of
// them at once. If the second batch fails, closing the socket drops the table.
func createTraceTable(netnsFd int, p Probe) (*traceTable, error) {
	tt := &traceTable{}
	copts := []nftables.ConnOption{
		nftables.AsLasting(),
		nftables.WithSockOptions(func(c *netlink.Conn) error { tt.sock = c; return nil }),
	}
	if netnsFd > 0 {
		copts = append(copts, nftables.WithNetNSFd(netnsFd))
	}
	conn, err := nftables.New(copts...)
	if err != nil {
		return nil, fmt.Errorf("nft: open netlink: %w", err)
	}
	tt.conn = conn
	if err := tt.addOwnedTable(); err != nil {
		tt.closeSocket()
		return nil, err
	}
	table := traceTableRef()
	for _, hook := range []*nftables.ChainHook{nftables.ChainHookPrerouting, nftables.ChainHookOutput} {
		chain := conn.AddChain(&nftables.Chain{
			Name: hookName(unix.NFPROTO_INET, uint32(*hook)), Table: table, Type: nftables.ChainTypeFilter,
			Hooknum: hook, Priority: nftables.ChainPriorityRef(traceChainPriority), Policy: ptr(nftables.ChainPolicyAccept),
		})
		conn.AddRule(&nftables.Rule{Table: table, Chain: chain, Exprs: traceRuleExprs(p)})
	}
	if err := conn.Flush(); err != nil {
		tt.closeSocket()
		return nil, fmt.Errorf("nft: add trace chains to inet %s: %w", TraceTableName, err)
	}
	return tt, nil
}

// addOwnedTable sends the batch that creates the table with the owner flag, and
// fails with ErrTraceBusy if the table exists (owned by a live trace or not).
func (tt *traceTable) addOwnedTable() error {
	ae := netlink.NewAttributeEncoder()
	ae.ByteOrder = binary.BigEndian
	ae.String(unix.NFTA_TABLE_NAME, TraceTableName)
	ae.Uint32(unix.NFTA_TABLE_FLAGS, nftTableFlagOwner)
	attrs, err := ae.Encode()
	if err != nil {
		return fmt.Errorf("nft: encode table: %w", err)
	}
	// struct nfgenmsg: family, version, resource id (big-endian); a batch's
	// resource id is the subsystem.
	batchHdr := []byte{unix.AF_UNSPEC, unix.NFNETLINK_V0, 0, unix.NFNL_SUBSYS_NFTABLES}
	msgs := []netlink.Message{
		{Header: netlink.Header{Type: netlink.HeaderType(unix.NFNL_MSG_BATCH_BEGIN), Flags: netlink.Request}, Data: batchHdr},
		{
			Header: netlink.Header{
				Type:  netlink.HeaderType(unix.NFNL_SUBSYS_NFTABLES<<8 | unix.NFT_MSG_NEWTABLE),
				Flags: netlink.Request | netlink.Acknowledge | netlink.Create | netlink.Excl,
			},
			Data: append([]byte{unix.NFPROTO_INET, unix.NFNETLINK_V0, 0, 0}, attrs...),
		},
		{Header: netlink.Header{Type: netlink.HeaderType(unix.NFNL_MSG_BATCH_END), Flags: netlink.Request}, Data: batchHdr},
	}
	if err := tt.sock.SetReadDeadline(time.Now().Add(10 * time.Second)); err != nil {
		return fmt.Errorf("nft: create table inet %s: %w", TraceTableName, err)
	}
	defer tt.sock.SetReadDeadline(time.Time{})
	if _, err := tt.sock.SendMessages(msgs); err != nil {
		return fmt.Errorf("nft: create table inet %s: %w", TraceTableName, err)
	}
	// One acknowledgement (or error) for the one message that asked for it.
	// A table owned by another socket gives EPERM (checked before NLM_F_EXCL),
	// one nobody owns EEXIST. (Without CAP_NET_ADMIN, listenTrace failed.)
	if _, err := tt.sock.Receive(); err != nil {
		if errors.Is(err, unix.EEXIST) || errors.Is(err, unix.EPERM) {
			return fmt.Errorf("nft: create table inet %s: %w: %w", TraceTableName, ErrTraceBusy, err)
		}
		return fmt.Errorf("nft: create table inet %s: %w", TraceTableName, err)
	}
	return nil
}

// delete deletes the table and closes its socket.
func (tt *traceTable) delete() error {
	tt.conn.DelTable(traceTableRef())
	err := tt.conn.Flush()
	if err != nil && !errors.Is(err, unix.ENOENT) {
		err = fmt.Errorf("nft: delete table inet %s: %w", TraceTableName, err)
	} else {
		err = nil
	}
	return errors.Join(err, tt.closeSocket())
}

// closeSocket closes the owning socket, which makes the kernel drop the table if
// it is still there. Closing again is a no-op.
func (tt *traceTable) closeSocket() error {
	if err := tt.conn.CloseLasting(); err != nil {
		return fmt.Errorf("nft: close netlink: %w", err)
	}
	return nil
}

// traceRuleExprs returns the rule that marks p's packets for tracing.
func traceRuleExprs(p Probe) []expr.Any {
	nfproto, saddr, daddr, alen := byte(unix.NFPROTO_IPV4), uint32(12), uint32(16), uint32(4)
	if p.Dst.Is6() {
		nfproto, saddr, daddr, alen = unix.NFPROTO_IPV6, 8, 24, 16
	}
	// meta nfproto ipv4 ip saddr 10.244.1.2 ip daddr 10.96.0.10 meta l4proto tcp
	e := []expr.Any{
		&expr.Meta{Key: expr.MetaKeyNFPROTO, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{nfproto}},
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: saddr, Len: alen},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: p.Src.AsSlice()},
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: daddr, Len: alen},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: p.Dst.AsSlice()},
		&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{p.Proto}},
	}
	if p.DstPort != 0 {
		// th dport 80
		e = append(e,
			&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseTransportHeader, Offset: 2, Len: 2},
			&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: binaryutil.BigEndian.PutUint16(p.DstPort)},
		)
	}
	// meta nftrace set 1
	return append(e,
		&expr.Immediate{Register: 1, Data: []byte{1}},
		&expr.Meta{Key: expr.MetaKeyNFTRACE, SourceRegister: true, Register: 1},
	)
}
