package nft

import (
	"fmt"
	"net/netip"
	"strings"
)

// hostPorts walks chain hostports (hostport.go); done says a mapping
// DNATed the packet.
func (w *walker) hostPorts() (done bool, err error) {
	p := w.p
	for _, r := range hostPortRules(w.f) {
		role := strings.TrimSuffix(r.role, "-"+w.f.suffix)
		var set string
		var key *keyBuilder
		switch role {
		case "hostports":
			set, key = setHostPorts, w.vipKey()
		case "hostports-any":
			set, key = setHostPortsAny, w.nodePortKey()
		default:
			return false, fmt.Errorf("nft: explain: no walk for rule %s of chain %s", r.role, chainHostPorts)
		}
		if p.Src.IsLoopback() { // ip saddr != 127.0.0.0/8
			continue
		}
		if local, err := w.src.local(p.Dst); err != nil {
			return false, err
		} else if !local { // fib daddr type local
			continue
		}
		e, ok, err := w.get(set, key)
		if err != nil {
			return false, err
		}
		if !ok {
			continue
		}
		pod := decodeBackend(e.val())
		w.ex.Verdict, w.ex.Backends = VerdictDNAT, []netip.AddrPort{pod}
		w.ex.HostPort, _, _ = strings.Cut(e.text(), " : ")
		what := fmt.Sprintf("%s is a local address and the hostPort %s maps it: DNAT to the pod %s", p.Dst, w.ex.HostPort, pod)
		if role == "hostports-any" {
			what = fmt.Sprintf("%s is a local address and the hostPort %s maps every local address: DNAT to the pod %s", p.Dst, w.ex.HostPort, pod)
		}
		w.step(chainHostPorts, r.text, e.text(), what)
		return true, nil
	}
	return false, nil
}
