// Package nft programs podnet's own nftables table, inet podnet. podnet never
// edits any other table.
//
// The table has fixed rules and keeps everything that changes in named sets:
// today the masquerade of pod traffic that leaves the cluster, later service
// load-balancing sets and verdict maps. Every change is one atomic netlink batch
// built with github.com/google/nftables; no nft or iptables process is run.
//
// Table is the kernel implementation of Interface and Fake the in-memory one.
// Render gives the ruleset text both stand for, as `nft list table inet podnet`
// prints it; List (see Lister) reads the table back from the kernel and prints it
// the same way.
package nft
