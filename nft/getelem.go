package nft

import (
	"encoding/binary"
	"errors"
	"fmt"
	"time"

	"github.com/google/nftables/expr"
	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"
)

// Single-element reads of table inet podnet. google/nftables v0.3.0 can only
// dump a whole set; these send what `nft get element` sends, a
// NFT_MSG_GETSETELEM without NLM_F_DUMP, and the kernel answers with the one
// element the key selects, whatever the size of the set.

// nftaSetElemKeyEnd is NFTA_SET_ELEM_KEY_END (linux/netfilter/nf_tables.h,
// since 5.6), the last key of a range in a set with NFT_SET_CONCAT, missing
// from golang.org/x/sys/unix.
const nftaSetElemKeyEnd = 10

// kernelElem is one element as the kernel sent it.
type kernelElem struct {
	key, keyEnd, data []byte
	verdict           *expr.Verdict // a verdict map's data
	flags             uint32        // NFT_SET_ELEM_INTERVAL_END
	expires           time.Duration // time left before a timed-out element goes; 0: none
}

// requestTimeout bounds the wait for the kernel's answer to one request: the
// kernel does not answer every request (see kernelSource.intervalEnd).
const requestTimeout = 5 * time.Second

// nftConn is a netfilter netlink socket bound to one network namespace.
type nftConn struct{ c *netlink.Conn }

// dialNft opens a netfilter netlink socket in the namespace open as netnsFd
// (0: the process's own).
func dialNft(netnsFd int) (*nftConn, error) {
	c, err := netlink.Dial(unix.NETLINK_NETFILTER, &netlink.Config{NetNS: netnsFd})
	if err != nil {
		return nil, fmt.Errorf("nft: open netlink: %w", err)
	}
	return &nftConn{c: c}, nil
}

func (c *nftConn) Close() error { return c.c.Close() }

// request sends one nftables request about table inet podnet and returns the
// replies' attributes (after struct nfgenmsg). A missing object is an error
// matching unix.ENOENT.
func (c *nftConn) request(msgType uint16, flags netlink.HeaderFlags, attrs func(*netlink.AttributeEncoder)) ([][]byte, error) {
	ae := netlink.NewAttributeEncoder()
	ae.ByteOrder = binary.BigEndian
	attrs(ae)
	b, err := ae.Encode()
	if err != nil {
		return nil, err
	}
	if err := c.c.SetDeadline(time.Now().Add(requestTimeout)); err != nil {
		return nil, err
	}
	replies, err := c.c.Execute(netlink.Message{
		Header: netlink.Header{Type: netlink.HeaderType(unix.NFNL_SUBSYS_NFTABLES<<8 | msgType), Flags: netlink.Request | flags},
		// struct nfgenmsg: family, version, resource id.
		Data: append([]byte{unix.NFPROTO_INET, unix.NFNETLINK_V0, 0, 0}, b...),
	})
	if err != nil {
		return nil, err
	}
	out := make([][]byte, 0, len(replies))
	for _, r := range replies {
		if len(r.Data) >= 4 {
			out = append(out, r.Data[4:])
		}
	}
	return out, nil
}

// tableExists reports whether table inet podnet exists.
func (c *nftConn) tableExists() (bool, error) {
	_, err := c.request(unix.NFT_MSG_GETTABLE, 0, func(ae *netlink.AttributeEncoder) {
		ae.String(unix.NFTA_TABLE_NAME, TableName)
	})
	switch {
	case errors.Is(err, unix.ENOENT):
		return false, nil
	case err != nil:
		return false, fmt.Errorf("nft: get table inet %s: %w", TableName, err)
	}
	return true, nil
}

// getElement returns the element of set that key selects: the element with
// that key, or in an interval set the interval holding key (for a set
// without NFT_SET_CONCAT, the interval's start element; with flags
// NFT_SET_ELEM_INTERVAL_END, its end element, but see
// kernelSource.intervalEnd). ok is false when there is none, or the set does
// not exist: callers check the table first.
func (c *nftConn) getElement(set string, key []byte, flags uint32) (e kernelElem, ok bool, err error) {
	replies, err := c.request(unix.NFT_MSG_GETSETELEM, 0, func(ae *netlink.AttributeEncoder) {
		ae.String(unix.NFTA_SET_ELEM_LIST_TABLE, TableName)
		ae.String(unix.NFTA_SET_ELEM_LIST_SET, set)
		ae.Nested(unix.NFTA_SET_ELEM_LIST_ELEMENTS, func(ae *netlink.AttributeEncoder) error {
			ae.Nested(unix.NFTA_LIST_ELEM, func(ae *netlink.AttributeEncoder) error {
				ae.Nested(unix.NFTA_SET_ELEM_KEY, func(ae *netlink.AttributeEncoder) error {
					ae.Bytes(unix.NFTA_DATA_VALUE, key)
					return nil
				})
				if flags != 0 {
					ae.Uint32(unix.NFTA_SET_ELEM_FLAGS, flags)
				}
				return nil
			})
			return nil
		})
	})
	if errors.Is(err, unix.ENOENT) {
		return kernelElem{}, false, nil
	}
	if err != nil {
		return kernelElem{}, false, fmt.Errorf("nft: get element of %s: %w", set, err)
	}
	for _, r := range replies {
		es, err := decodeElems(r)
		if err != nil {
			return kernelElem{}, false, fmt.Errorf("nft: get element of %s: %w", set, err)
		}
		if len(es) > 0 {
			return es[0], true, nil
		}
	}
	return kernelElem{}, false, nil
}

// dumpElements returns every element of set.
func (c *nftConn) dumpElements(set string) ([]kernelElem, error) {
	replies, err := c.request(unix.NFT_MSG_GETSETELEM, netlink.Dump, func(ae *netlink.AttributeEncoder) {
		ae.String(unix.NFTA_SET_ELEM_LIST_TABLE, TableName)
		ae.String(unix.NFTA_SET_ELEM_LIST_SET, set)
	})
	if err != nil {
		return nil, fmt.Errorf("nft: list elements of %s: %w", set, err)
	}
	var out []kernelElem
	for _, r := range replies {
		es, err := decodeElems(r)
		if err != nil {
			return nil, fmt.Errorf("nft: list elements of %s: %w", set, err)
		}
		out = append(out, es...)
	}
	return out, nil
}

// decodeElems reads the elements of a NFT_MSG_NEWSETELEM payload.
func decodeElems(b []byte) ([]kernelElem, error) {
	var out []kernelElem
	err := nested(b, func(ad *netlink.AttributeDecoder) error {
		if ad.Type() != unix.NFTA_SET_ELEM_LIST_ELEMENTS {
			return nil
		}
		return nested(ad.Bytes(), func(ad *netlink.AttributeDecoder) error {
			if ad.Type() != unix.NFTA_LIST_ELEM {
				return nil
			}
			e, err := decodeElem(ad.Bytes())
			out = append(out, e)
			return err
		})
	})
	return out, err
}

func decodeElem(b []byte) (kernelElem, error) {
	var e kernelElem
	err := nested(b, func(ad *netlink.AttributeDecoder) error {
		switch ad.Type() {
		case unix.NFTA_SET_ELEM_KEY:
			return dataValue(ad.Bytes(), &e.key, nil)
		case nftaSetElemKeyEnd:
			return dataValue(ad.Bytes(), &e.keyEnd, nil)
		case unix.NFTA_SET_ELEM_DATA:
			return dataValue(ad.Bytes(), &e.data, &e.verdict)
		case unix.NFTA_SET_ELEM_FLAGS:
			e.flags = ad.Uint32()
		case unix.NFTA_SET_ELEM_EXPIRATION:
			e.expires = time.Duration(ad.Uint64()) * time.Millisecond
		}
		return nil
	})
	return e, err
}

// dataValue reads a struct nft_data attribute: a value into *val, or a
// verdict into *v.
func dataValue(b []byte, val *[]byte, v **expr.Verdict) error {
	return nested(b, func(ad *netlink.AttributeDecoder) error {
		switch ad.Type() {
		case unix.NFTA_DATA_VALUE:
			*val = ad.Bytes()
		case unix.NFTA_DATA_VERDICT:
			if v == nil {
				return nil
			}
			*v = &expr.Verdict{}
			return nested(ad.Bytes(), func(ad *netlink.AttributeDecoder) error {
				switch ad.Type() {
				case unix.NFTA_VERDICT_CODE:
					(*v).Kind = expr.VerdictKind(int32(ad.Uint32()))
				case unix.NFTA_VERDICT_CHAIN:
					(*v).Chain = ad.String()
				}
				return nil
			})
		}
		return nil
	})
}

// nested calls fn for each attribute of b, in big-endian byte order, and
// stops at the first error.
func nested(b []byte, fn func(*netlink.AttributeDecoder) error) error {
	ad, err := netlink.NewAttributeDecoder(b)
	if err != nil {
		return err
	}
	ad.ByteOrder = binary.BigEndian
	for ad.Next() {
		if err := fn(ad); err != nil {
			return err
		}
	}
	return ad.Err()
}
