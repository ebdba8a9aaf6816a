package benchkp

import (
	"crypto/sha256"
	"encoding/base32"
	"fmt"
)

// Names in kube-proxy's nftables tables (k8s.io/kubernetes
// pkg/proxy/nftables/proxier.go, v1.37.2). Both families' tables are named
// kube-proxy; the services here are IPv4 only.
const (
	kubeProxyTableName = "kube-proxy"
	// kpServiceIPs maps `ipv4_addr . inet_proto . inet_service` of each
	// service port that has endpoints to `goto service-…`: the cheapest
	// sign that a service is programmed.
	kpServiceIPs = "service-ips"
	// kpChainNameMax is knftables.NameLengthMax; chain name bases are cut to
	// it minus the longest prefix (16).
	kpChainNameMax = 256
)

// kpServiceChain is the name of kube-proxy's cluster-policy chain of a
// service port: "service-" + servicePortChainNameBase, which is
// "HASH-namespace/name/protocol/portName" with HASH the first 8 base32
// characters of the SHA-256 of the rest. With no session affinity and two or
// more endpoints, the chain holds one rule, `meta l4proto tcp dnat ip addr .
// port to numgen random mod N map { 0 : addr . port, … }`, rewritten (the
// chain flushed, a new anonymous map) whenever the endpoints change.
func kpServiceChain(namespace, name, protocol, portName string) string {
	base := fmt.Sprintf("%s/%s/%s/%s", namespace, name, protocol, portName)
	sum := sha256.Sum256([]byte(base))
	base = base32.StdEncoding.EncodeToString(sum[:])[:8] + "-" + base
	if max := kpChainNameMax - 16; len(base) > max {
		base = base[:max-3] + "..."
	}
	return "service-" + base
}
