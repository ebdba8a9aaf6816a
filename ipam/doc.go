// Package ipam hands out pod IP addresses from a node's pod ranges
// (podCIDRs) and persists every allocation so that a crash and restart of
// the daemon never hands one address to two attachments and never forgets
// an address that was handed out.
//
// An attachment is the pair (containerID, ifName), as in CNI. Allocate gives
// an attachment one address per IP family present in the configured ranges.
// Within a range, addresses are handed out round-robin from a per-range
// cursor placed after the last reserved address, like the host-local CNI
// plugin's last_reserved_ip, so that an address just released is not reused
// at once. Finding a free address costs O(used+1), so IPv6 /64 ranges work.
// The network address, the gateway (network+1) and, for IPv4, the broadcast
// address are never handed out.
//
// The package is a library: it never logs; it returns errors wrapped with
// context that can be tested with errors.Is against ErrExhausted,
// ErrCorrupt, ErrNoRange, ErrInvalidRange, ErrInvalidAttachment, ErrLocked
// and ErrClosed.
//
// # On-disk format
//
// The state directory is created with mode 0700 if missing. Each allocated
// address is one file, mode 0600, named by the address in canonical text
// form (for example "10.244.1.5" or "fd00:10:244:1::5"), holding a JSON
// object:
//
//	{"containerID":"3f2a…","ifName":"eth0","range":"10.244.1.0/24","created":"2024-05-01T12:00:00.123456789Z"}
//
// "range" is the range the address came from; the address's prefix length
// is the range's. Unknown fields are ignored. Any file whose name parses as
// an IP address must be such a file: if it cannot be read as one, New fails
// with an error wrapping ErrCorrupt that names the file, rather than
// silently forgetting the address. Files whose names are not IP addresses
// are ignored. The other files are:
//
//   - .lock: an empty file on which New takes an exclusive, non-blocking
//     flock(2), held until Close, so two daemons never share a directory.
//   - .cursors: a JSON object mapping each range to the last address
//     reserved in it, for example {"10.244.1.0/24":"10.244.1.5"}. It is
//     written without fsync and is only a hint for where to start searching;
//     a missing, stale or unreadable cursor file is ignored.
//   - .tmp-*: temporary files, removed by New.
//
// An address file is written crash-safely: as a temporary file in the same
// directory, fsynced, renamed to its final name, then the directory is
// fsynced, all before Allocate returns. A crash therefore leaves either the
// complete file or at worst a temporary file. Release removes the address
// file and fsyncs the directory before returning.
package ipam
