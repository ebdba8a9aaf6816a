package ipam

import (
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"time"
)

// Sentinel errors. Errors returned by this package wrap one of these where
// it applies; test them with errors.Is.
var (
	// ErrExhausted means every range of an IP family has no free address.
	// The wrapping error names the ranges.
	ErrExhausted = errors.New("no free address")
	// ErrCorrupt means a state file could not be parsed. The wrapping error
	// names the file. The allocator refuses to start rather than forget the
	// address the file stands for.
	ErrCorrupt = errors.New("corrupt state file")
	// ErrNoRange means Allocate was called while no ranges are configured.
	ErrNoRange = errors.New("no address ranges configured")
	// ErrInvalidRange means a range given to New or SetRanges is not
	// usable: not canonical, too small, or overlapping another range.
	ErrInvalidRange = errors.New("invalid address range")
	// ErrInvalidAttachment means a containerID or ifName is not acceptable.
	ErrInvalidAttachment = errors.New("invalid attachment")
	// ErrLocked means another process (or another Allocator in this
	// process) holds the state directory's lock.
	ErrLocked = errors.New("state directory is locked by another allocator")
	// ErrClosed means the Allocator was used to change state after Close.
	ErrClosed = errors.New("allocator is closed")
)

// maxIfNameLen is the longest Linux interface name (IFNAMSIZ - 1).
const maxIfNameLen = 15

// Allocation is one address held by an attachment (containerID, ifName).
type Allocation struct {
	ContainerID string
	IfName      string
	// Addr is the address with the prefix length of its range, for example
	// 10.244.1.5/24.
	Addr netip.Prefix
	// Range is the range the address was allocated from. It may no longer be
	// configured if SetRanges changed the ranges since.
	Range netip.Prefix
	// Created is when the address was allocated, in UTC.
	Created time.Time
}

// RangeStats describes the occupancy of one configured range.
type RangeStats struct {
	Range netip.Prefix
	// Size is the number of addresses the range can hand out (network,
	// gateway and IPv4 broadcast excluded), capped at math.MaxUint64.
	Size uint64
	// Used is the number of those addresses currently allocated.
	Used int
}

// attachment identifies the holder of addresses, as in CNI.
type attachment struct {
	containerID string
	ifName      string
}

func (k attachment) String() string {
	return k.containerID + "/" + k.ifName
}

// validateAttachment checks the identifiers Allocate and Release accept.
func validateAttachment(containerID, ifName string) error {
	switch {
	case containerID == "":
		return fmt.Errorf("%w: empty container ID", ErrInvalidAttachment)
	case ifName == "":
		return fmt.Errorf("%w: empty interface name", ErrInvalidAttachment)
	case len(ifName) > maxIfNameLen:
		return fmt.Errorf("%w: interface name %q longer than %d bytes", ErrInvalidAttachment, ifName, maxIfNameLen)
	case strings.ContainsRune(ifName, '/'):
		return fmt.Errorf("%w: interface name %q contains '/'", ErrInvalidAttachment, ifName)
	}
	return nil
}
