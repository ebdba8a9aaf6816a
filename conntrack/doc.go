// Package conntrack deletes stale entries from the kernel's connection tracking
// table, as a service proxy must when UDP service endpoints change.
//
// NAT decisions are made on a connection's first packet and stored in its
// conntrack entry. UDP has no connection end, so as long as a client keeps
// sending, its entry lives on and keeps DNATing it to the endpoint chosen first,
// even after that endpoint is gone or the service was rewritten; likewise an
// entry made while a service had no endpoints keeps the client from being
// DNATed once it has some. kube-proxy deletes such entries for the same reason
// (kubernetes/kubernetes pkg/proxy/conntrack).
//
// A Filter names the entries to delete: a protocol plus the original
// destination address and port and the address the entry was DNATed to (the
// reply's source). Table is the kernel implementation of Interface, over
// ctnetlink (github.com/ti-mo/conntrack); Fake is the in-memory one.
//
// Order matters: program the new rules first, then delete the entries. A packet
// that arrives between the two creates a new entry through the new rules.
package conntrack
