package lab

import (
	"context"
	"fmt"
	"strings"
)

// Source names where the lab's podnetds read the cluster state from.
type Source string

// The lab's sources of cluster state.
const (
	// SourceFile is the cluster file every podnetd polls (--cluster-file):
	// the default, quick to start.
	SourceFile Source = "file"
	// SourceKube is a real etcd and kube-apiserver inside the lab's sandbox
	// (integration/kube), with Nodes, Services and EndpointSlices made with
	// client-go, and every podnetd run with --kubeconfig as podnet's service
	// account. kube-apiserver is built on first use (~5 minutes, once per
	// machine; kube.Prepare before the sandbox).
	SourceKube Source = "kube"
)

// ParseSource returns the Source named s ("" is SourceFile).
func ParseSource(s string) (Source, error) {
	switch Source(s) {
	case "", SourceFile:
		return SourceFile, nil
	case SourceKube:
		return SourceKube, nil
	}
	return "", fmt.Errorf("source %q: want %s or %s", s, SourceFile, SourceKube)
}

// source hands the lab's cluster state to its podnetds.
type source interface {
	// daemonArgs are the podnetd flags that select the source.
	daemonArgs() []string
	// publish makes nodes and services the cluster state the daemons see.
	publish(ctx context.Context, nodes []*Node, svcs []Service) error
	// describe says, for the log, where the daemons read the state.
	describe() string
	// published says, for the log, where publish put service s.
	published(s Service) string
	// close stops what the source runs; calling it again is a no-op.
	close() error
}

var (
	_ source = fileSource{}
	_ source = (*kubeSource)(nil)
)

// fileSource is the cluster file at path.
type fileSource struct{ path string }

func (f fileSource) daemonArgs() []string {
	return []string{"--cluster-file", f.path, "--poll-interval", "100ms"}
}

// publish replaces the cluster file atomically: the daemons poll it and never
// see half a file.
func (f fileSource) publish(_ context.Context, nodes []*Node, svcs []Service) error {
	var b strings.Builder
	b.WriteString("nodes:\n")
	for _, n := range nodes {
		fmt.Fprintf(&b, "  - name: %s\n    addresses: [%s]\n    podCIDRs: [%s]\n", n.Name, n.Addr, n.PodCIDR)
	}
	renderServices(&b, svcs)
	return writeFileAtomic(f.path, []byte(b.String()))
}

func (f fileSource) describe() string { return "reading the cluster file" }

func (f fileSource) published(Service) string { return "written to the cluster file" }

func (f fileSource) close() error { return nil }
