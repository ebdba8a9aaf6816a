package integration

import (
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/google/nftables"
	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"

	"github.com/podnet/podnet/integration/sandbox"
	"github.com/podnet/podnet/nft"
)

// tableState is what a node's inet podnet table holds, read in a form that
// tells a table left alone from one recreated or flushed: the kernel gives a
// new table a new handle (one counter per namespace), and its elements and
// rules are listed in full.
type tableState struct {
	Handle   uint64
	Rules    map[string][]uint64 // chain → rule handles, in order
	Elements map[string][]string // set or map → its elements, sorted
}

// readTable reads the inet podnet table of ns.
func readTable(t *testing.T, ns *sandbox.NetNS) tableState {
	t.Helper()
	h, err := tableHandle(ns)
	if err != nil {
		t.Fatal(err)
	}
	st := tableState{Handle: h, Rules: map[string][]uint64{}, Elements: map[string][]string{}}
	conn, err := nftables.New(nftables.WithNetNSFd(ns.Fd()))
	if err != nil {
		t.Fatal(err)
	}
	table, err := conn.ListTableOfFamily(nft.TableName, nftables.TableFamilyINet)
	if err != nil {
		t.Fatalf("list table inet %s: %v", nft.TableName, err)
	}
	chains, err := conn.ListChainsOfTableFamily(nftables.TableFamilyINet)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range chains {
		if c.Table.Name != nft.TableName {
			continue
		}
		rules, err := conn.GetRules(table, c)
		if err != nil {
			t.Fatalf("rules of chain %s: %v", c.Name, err)
		}
		for _, r := range rules {
			st.Rules[c.Name] = append(st.Rules[c.Name], r.Handle)
		}
	}
	sets, err := conn.GetSets(table)
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range sets {
		elems, err := conn.GetSetElements(s)
		if err != nil {
			t.Fatalf("elements of %s: %v", s.Name, err)
		}
		out := []string{}
		for _, e := range elems {
			v := hex.EncodeToString(e.Val)
			if e.VerdictData != nil {
				v = fmt.Sprintf("verdict %d %s", e.VerdictData.Kind, e.VerdictData.Chain)
			}
			out = append(out, fmt.Sprintf("%x-%x→%s end=%t", e.Key, e.KeyEnd, v, e.IntervalEnd))
		}
		slices.Sort(out)
		st.Elements[s.Name] = out
	}
	return st
}

// nftaTableHandle is NFTA_TABLE_HANDLE (linux/netfilter/nf_tables.h), which
// golang.org/x/sys/unix does not define.
const nftaTableHandle = 4

// tableHandle asks the kernel for table inet podnet's handle in ns with a
// raw NFT_MSG_GETTABLE: google/nftables v0.3.0 does not decode the handle.
func tableHandle(ns *sandbox.NetNS) (uint64, error) {
	c, err := netlink.Dial(unix.NETLINK_NETFILTER, &netlink.Config{NetNS: ns.Fd()})
	if err != nil {
		return 0, err
	}
	defer c.Close()
	ae := netlink.NewAttributeEncoder()
	ae.String(unix.NFTA_TABLE_NAME, nft.TableName)
	attrs, err := ae.Encode()
	if err != nil {
		return 0, err
	}
	// nfgenmsg: family, version, resource id (big endian)
	data := append([]byte{unix.NFPROTO_INET, unix.NFNETLINK_V0, 0, 0}, attrs...)
	msgs, err := c.Execute(netlink.Message{
		Header: netlink.Header{Type: netlink.HeaderType(unix.NFNL_SUBSYS_NFTABLES<<8 | unix.NFT_MSG_GETTABLE), Flags: netlink.Request},
		Data:   data,
	})
	if err != nil {
		return 0, fmt.Errorf("get table inet %s: %w", nft.TableName, err)
	}
	for _, m := range msgs {
		if len(m.Data) < 4 {
			continue
		}
		ad, err := netlink.NewAttributeDecoder(m.Data[4:])
		if err != nil {
			return 0, err
		}
		ad.ByteOrder = binary.BigEndian
		for ad.Next() {
			if ad.Type() == nftaTableHandle {
				return ad.Uint64(), nil
			}
		}
		if err := ad.Err(); err != nil {
			return 0, err
		}
	}
	return 0, fmt.Errorf("get table inet %s: no handle in the reply", nft.TableName)
}

// nftWatch records every nftables change the kernel announces in a
// namespace, as `nft monitor` does.
type nftWatch struct {
	mon  *nftables.Monitor
	done chan struct{}
	mu   sync.Mutex
	seen map[nftables.MonitorEventType]int
	gens int // batches committed (NEWGEN)
	errs []error
}

// watchNFT starts recording the nftables changes of ns; stop ends it.
func watchNFT(t *testing.T, ns *sandbox.NetNS) *nftWatch {
	t.Helper()
	conn, err := nftables.New(nftables.WithNetNSFd(ns.Fd()))
	if err != nil {
		t.Fatal(err)
	}
	w := &nftWatch{mon: nftables.NewMonitor(nftables.WithMonitorEventBuffer(4096)), done: make(chan struct{}), seen: map[nftables.MonitorEventType]int{}}
	batches, err := conn.AddGenerationalMonitor(w.mon)
	if err != nil {
		t.Fatalf("nft monitor: %v", err)
	}
	go func() {
		defer close(w.done)
		for b := range batches {
			w.mu.Lock()
			if b.GeneratedBy.Type == nftables.MonitorEventTypeOOB {
				w.errs = append(w.errs, b.GeneratedBy.Error)
			} else {
				w.gens++
			}
			for _, e := range b.Changes {
				if e.Type != nftables.MonitorEventTypeOOB {
					w.seen[e.Type]++
				}
			}
			w.mu.Unlock()
		}
	}()
	t.Cleanup(func() { w.stop() })
	w.selfTest(t, conn)
	return w
}

// selfTest adds and deletes a table of its own and waits until the watch saw
// both, so that a watch that hears nothing (wrong namespace, not subscribed)
// cannot pass for a quiet table; then it forgets them.
func (w *nftWatch) selfTest(t *testing.T, conn *nftables.Conn) {
	t.Helper()
	canary := &nftables.Table{Name: "podnet-test-watch", Family: nftables.TableFamilyINet}
	conn.AddTable(canary)
	if err := conn.Flush(); err != nil {
		t.Fatalf("nft monitor self-test: add table: %v", err)
	}
	conn.DelTable(canary)
	if err := conn.Flush(); err != nil {
		t.Fatalf("nft monitor self-test: delete table: %v", err)
	}
	for deadline := time.Now().Add(2 * time.Second); ; time.Sleep(5 * time.Millisecond) {
		w.mu.Lock()
		heard := w.seen[nftables.MonitorEventTypeNewTable] > 0 && w.seen[nftables.MonitorEventTypeDelTable] > 0
		if heard {
			clear(w.seen)
			w.gens = 0
		}
		w.mu.Unlock()
		if heard {
			return
		}
		if time.Now().After(deadline) {
			t.Fatal("nft monitor self-test: adding and deleting a table went unseen for 2s")
		}
	}
}

// stop ends the recording and returns how many events of each kind it saw,
// named as in nft monitor (e.g. "delete element"), with the number of batches
// the kernel committed under "batch".
func (w *nftWatch) stop() (map[string]int, []error) {
	w.mon.Close()
	<-w.done
	w.mu.Lock()
	defer w.mu.Unlock()
	out := map[string]int{}
	for typ, n := range w.seen {
		out[monitorEventName(typ)] += n
	}
	if w.gens > 0 {
		out["batch"] = w.gens
	}
	return out, w.errs
}

func monitorEventName(t nftables.MonitorEventType) string {
	switch t {
	case nftables.MonitorEventTypeNewTable:
		return "add table"
	case nftables.MonitorEventTypeDelTable:
		return "delete table"
	case nftables.MonitorEventTypeNewChain:
		return "add chain"
	case nftables.MonitorEventTypeDelChain:
		return "delete chain"
	case nftables.MonitorEventTypeNewRule:
		return "add rule"
	case nftables.MonitorEventTypeDelRule:
		return "delete rule"
	case nftables.MonitorEventTypeNewSet:
		return "add set"
	case nftables.MonitorEventTypeDelSet:
		return "delete set"
	case nftables.MonitorEventTypeNewSetElem:
		return "add element"
	case nftables.MonitorEventTypeDelSetElem:
		return "delete element"
	}
	return fmt.Sprintf("event %d", t)
}
