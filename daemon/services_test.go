package daemon

import (
	"net/netip"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/podnet/podnet/nft"
)

// servicesFile is a cluster file with two nodes and the given services entries
// (YAML list items, indented as at the top level).
func servicesFile(entries ...string) []byte {
	return []byte(`nodes:
- name: node1
  addresses: [192.168.1.10]
  podCIDRs: [10.244.1.0/24]
- name: node2
  addresses: [192.168.1.11]
  podCIDRs: [10.244.2.0/24]
services:
` + strings.Join(entries, ""))
}

// ep is an endpoint with the given conditions.
func ep(a, node string, ports map[string]uint16, ready, serving, terminating bool) nft.Endpoint {
	return nft.Endpoint{Address: addr(a), NodeName: node, Ports: ports, Ready: ready, Serving: serving, Terminating: terminating}
}

func TestParseServices(t *testing.T) {
	tests := []struct {
		name string
		yaml string
		want nft.Service
	}{
		{
			name: "defaults",
			yaml: `
- name: web
  clusterIPs: [10.96.0.10]
  ports: [{port: 80}]
  endpoints:
  - addresses: [10.244.1.5]
    node: node1
`,
			want: nft.Service{
				Namespace: "default", Name: "web",
				ClusterIPs:            []netip.Addr{addr("10.96.0.10")},
				Ports:                 []nft.ServicePort{{Protocol: nft.TCP, Port: 80}},
				InternalTrafficPolicy: nft.PolicyCluster, ExternalTrafficPolicy: nft.PolicyCluster,
				Endpoints: []nft.Endpoint{ep("10.244.1.5", "node1", map[string]uint16{"": 80}, true, true, false)},
			},
		},
		{
			name: "every field",
			yaml: `
- name: web
  namespace: shop
  labels: {app: web}
  type: LoadBalancer
  clusterIPs: [10.96.0.10, "fd00:96::10"]
  externalIPs: [203.0.113.7]
  loadBalancerIPs: [198.51.100.7, "2001:db8::7"]
  loadBalancerSourceRanges: [192.0.2.0/24, "2001:db8:1::/48"]
  internalTrafficPolicy: Local
  externalTrafficPolicy: Local
  sessionAffinity: ClientIP
  sessionAffinityTimeoutSeconds: 600
  ports:
  - {name: http, port: 80, targetPort: 8080, nodePort: 30080}
  - {name: dns, protocol: UDP, port: 53, nodePort: 30053}
  - {name: sig, protocol: SCTP, port: 9000, targetPort: 9001, nodePort: 30900}
  endpoints:
  - addresses: [10.244.1.5, "fd00:10:244:1::5"]
    node: node1
    ports: {http: 8081}
  - addresses: [10.244.2.5]
    node: node2
    ready: false
  - addresses: [10.244.2.6]
    ready: false
    serving: true
    terminating: true
`,
			want: nft.Service{
				Namespace: "shop", Name: "web",
				ClusterIPs:               []netip.Addr{addr("10.96.0.10"), addr("fd00:96::10")},
				ExternalIPs:              []netip.Addr{addr("203.0.113.7")},
				LoadBalancerIPs:          []netip.Addr{addr("198.51.100.7"), addr("2001:db8::7")},
				LoadBalancerSourceRanges: []netip.Prefix{prefix("192.0.2.0/24"), prefix("2001:db8:1::/48")},
				InternalTrafficPolicy:    nft.PolicyLocal, ExternalTrafficPolicy: nft.PolicyLocal,
				AffinityTimeout: 600 * time.Second,
				Ports: []nft.ServicePort{
					{Name: "http", Protocol: nft.TCP, Port: 80, NodePort: 30080},
					{Name: "dns", Protocol: nft.UDP, Port: 53, NodePort: 30053},
					{Name: "sig", Protocol: nft.SCTP, Port: 9000, NodePort: 30900},
				},
				Endpoints: []nft.Endpoint{
					ep("10.244.1.5", "node1", map[string]uint16{"http": 8081, "dns": 53, "sig": 9001}, true, true, false),
					ep("fd00:10:244:1::5", "node1", map[string]uint16{"http": 8081, "dns": 53, "sig": 9001}, true, true, false),
					ep("10.244.2.5", "node2", map[string]uint16{"http": 8080, "dns": 53, "sig": 9001}, false, false, false),
					ep("10.244.2.6", "", map[string]uint16{"http": 8080, "dns": 53, "sig": 9001}, false, true, true),
				},
			},
		},
		{
			name: "ClientIP affinity defaults to 10800 s",
			yaml: `
- name: web
  clusterIPs: [10.96.0.10]
  sessionAffinity: ClientIP
  ports: [{port: 80}]
`,
			want: nft.Service{
				Namespace: "default", Name: "web", ClusterIPs: []netip.Addr{addr("10.96.0.10")},
				Ports:                 []nft.ServicePort{{Protocol: nft.TCP, Port: 80}},
				InternalTrafficPolicy: nft.PolicyCluster, ExternalTrafficPolicy: nft.PolicyCluster,
				AffinityTimeout: 10800 * time.Second,
			},
		},
		{
			name: "LoadBalancer without node ports",
			yaml: `
- name: lb
  type: LoadBalancer
  allocateLoadBalancerNodePorts: false
  clusterIPs: ["fd00:96::10"]
  loadBalancerIPs: ["2001:db8::7"]
  ports: [{port: 443}]
`,
			want: nft.Service{
				Namespace: "default", Name: "lb", ClusterIPs: []netip.Addr{addr("fd00:96::10")},
				LoadBalancerIPs:       []netip.Addr{addr("2001:db8::7")},
				Ports:                 []nft.ServicePort{{Protocol: nft.TCP, Port: 443}},
				InternalTrafficPolicy: nft.PolicyCluster, ExternalTrafficPolicy: nft.PolicyCluster,
			},
		},
		{
			name: "ClusterIP with externalIPs may use externalTrafficPolicy Local",
			yaml: `
- name: ext
  clusterIPs: [10.96.0.11]
  externalIPs: [203.0.113.8]
  externalTrafficPolicy: Local
  ports: [{port: 80, nodePort: null}]
`,
			want: nft.Service{
				Namespace: "default", Name: "ext", ClusterIPs: []netip.Addr{addr("10.96.0.11")},
				ExternalIPs:           []netip.Addr{addr("203.0.113.8")},
				Ports:                 []nft.ServicePort{{Protocol: nft.TCP, Port: 80}},
				InternalTrafficPolicy: nft.PolicyCluster, ExternalTrafficPolicy: nft.PolicyLocal,
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := ParseCluster(servicesFile(tt.yaml))
			if err != nil {
				t.Fatalf("ParseCluster: %v", err)
			}
			if len(c.RejectedServices)+len(c.IgnoredServices) != 0 {
				t.Fatalf("rejected %v, ignored %v", c.RejectedServices, c.IgnoredServices)
			}
			if diff := cmp.Diff([]*nft.Service{&tt.want}, c.Services, netipComparers); diff != "" {
				t.Errorf("services (-want +got):\n%s", diff)
			}
		})
	}
}

func TestParseServicesIgnored(t *testing.T) {
	c, err := ParseCluster(servicesFile(`
- name: headless
  ports: [{port: 80}]
- name: none
  namespace: kube-system
  clusterIPs: [None]
  ports: [{port: 53, protocol: UDP}]
- name: other
  labels: {service.kubernetes.io/service-proxy-name: cilium}
  clusterIPs: [10.96.0.12]
  ports: [{port: 80}]
- name: web
  clusterIPs: [10.96.0.10]
  ports: [{port: 80}]
`))
	if err != nil {
		t.Fatal(err)
	}
	want := []IgnoredService{
		{Index: 0, Namespace: "default", Name: "headless", Reason: "headless: no cluster IP"},
		{Index: 1, Namespace: "kube-system", Name: "none", Reason: "headless: no cluster IP"},
		{Index: 2, Namespace: "default", Name: "other", Reason: "labelled service.kubernetes.io/service-proxy-name=cilium: another proxy serves it"},
	}
	if diff := cmp.Diff(want, c.IgnoredServices); diff != "" {
		t.Errorf("ignored (-want +got):\n%s", diff)
	}
	if len(c.Services) != 1 || c.Services[0].Name != "web" || len(c.RejectedServices) != 0 {
		t.Errorf("services %+v, rejected %v; want only web", c.Services, c.RejectedServices)
	}
}

// TestParseServicesRejected checks every rejection: each bad entry sits between
// two valid services, and only it is left out.
func TestParseServicesRejected(t *testing.T) {
	const (
		ip   = "  clusterIPs: [10.96.0.50]\n"
		port = "  ports: [{port: 80}]\n"
	)
	tests := []struct {
		name string
		yaml string // one services entry
		want string // the whole error; the entry is services[1]
	}{
		{"unknown field", "- name: x\n  clusterIP: 10.96.0.50\n" + port, `services[1] default/x: unknown field "clusterIP"`},
		{"not a mapping", "- web\n", "services[1]: want a mapping, got string"},
		{"wrong type", "- name: x\n" + ip + "  ports: [{port: http}]\n", "services[1] default/x: ports.port: want a whole number, got string"},
		{"no name", "- namespace: a\n" + ip + port, "services[1]: name: required"},
		{"bad name", "- name: Web\n" + ip + port, `services[1] default/Web: name "Web": want a DNS-1035 label (a-z, 0-9 and '-', starting with a letter, at most 63)`},
		{"bad namespace", "- name: x\n  namespace: a_b\n" + ip + port, `services[1] a_b/x: namespace "a_b": want a DNS-1123 label (a-z, 0-9 and '-', at most 63)`},
		{"bad type", "- name: x\n  type: ExternalName\n" + ip + port, `services[1] default/x: type "ExternalName": want ClusterIP, NodePort or LoadBalancer`},
		{"headless NodePort", "- name: x\n  type: NodePort\n  ports: [{port: 80, nodePort: 30080}]\n", "services[1] default/x: clusterIPs: required for type NodePort (only a ClusterIP service can be headless)"},
		{"None with an IP", "- name: x\n  clusterIPs: [10.96.0.50, None]\n" + port, `services[1] default/x: clusterIPs[1] "None": None (headless) must be the only cluster IP`},
		{"bad IP", "- name: x\n  clusterIPs: [10.96.0.500]\n" + port, `services[1] default/x: clusterIPs[0] "10.96.0.500": not an IP address`},
		{"two IPv4 cluster IPs", "- name: x\n  clusterIPs: [10.96.0.50, 10.96.0.51]\n" + port, `services[1] default/x: clusterIPs[1] "10.96.0.51": a second cluster IP of its family (at most one IPv4 and one IPv6)`},
		{"three cluster IPs", "- name: x\n  clusterIPs: [10.96.0.50, \"fd00::50\", \"fd00::51\"]\n" + port, `services[1] default/x: clusterIPs[1] "fd00::50": a second cluster IP of its family (at most one IPv4 and one IPv6)`},
		{"loopback", "- name: x\n  clusterIPs: [127.0.0.1]\n" + port, `services[1] default/x: clusterIPs[0] "127.0.0.1": not usable: loopback address`},
		{"unspecified external IP", "- name: x\n" + ip + "  externalIPs: [0.0.0.0]\n" + port, `services[1] default/x: externalIPs[0] "0.0.0.0": not usable: unspecified address`},
		{"multicast", "- name: x\n" + ip + "  externalIPs: [224.0.0.1]\n" + port, `services[1] default/x: externalIPs[0] "224.0.0.1": not usable: multicast address`},
		{"link-local", "- name: x\n" + ip + "  externalIPs: [\"fe80::1\"]\n" + port, `services[1] default/x: externalIPs[0] "fe80::1": not usable: link-local address`},
		{"zone", "- name: x\n" + ip + "  externalIPs: [\"fd00::1%eth0\"]\n" + port, `services[1] default/x: externalIPs[0] "fd00::1%eth0": has a zone`},
		{"IPv4-mapped", "- name: x\n" + ip + "  externalIPs: [\"::ffff:203.0.113.1\"]\n" + port, `services[1] default/x: externalIPs[0] "::ffff:203.0.113.1": IPv4-mapped; write 203.0.113.1`},
		{"VIP listed twice", "- name: x\n" + ip + "  externalIPs: [10.96.0.50]\n" + port, `services[1] default/x: externalIPs[0] "10.96.0.50": already listed as clusterIPs[0]`},
		{"loadBalancerIPs on ClusterIP", "- name: x\n" + ip + "  loadBalancerIPs: [198.51.100.1]\n" + port, "services[1] default/x: loadBalancerIPs: only for type LoadBalancer"},
		{"source ranges on NodePort", "- name: x\n  type: NodePort\n" + ip + "  loadBalancerSourceRanges: [0.0.0.0/0]\n  ports: [{port: 80, nodePort: 30080}]\n", "services[1] default/x: loadBalancerSourceRanges: only for type LoadBalancer"},
		{"allocateLoadBalancerNodePorts on ClusterIP", "- name: x\n" + ip + "  allocateLoadBalancerNodePorts: false\n" + port, "services[1] default/x: allocateLoadBalancerNodePorts: only for type LoadBalancer"},
		{"source range not a CIDR", "- name: x\n  type: LoadBalancer\n" + ip + "  loadBalancerSourceRanges: [192.0.2.1]\n  ports: [{port: 80, nodePort: 30080}]\n", `services[1] default/x: loadBalancerSourceRanges[0] "192.0.2.1": not a CIDR`},
		{"source range unmasked", "- name: x\n  type: LoadBalancer\n" + ip + "  loadBalancerSourceRanges: [192.0.2.1/24]\n  ports: [{port: 80, nodePort: 30080}]\n", `services[1] default/x: loadBalancerSourceRanges[0] "192.0.2.1/24": must be a network prefix (want 192.0.2.0/24)`},
		{"bad internal policy", "- name: x\n" + ip + "  internalTrafficPolicy: local\n" + port, `services[1] default/x: internalTrafficPolicy "local": want Cluster or Local`},
		{"bad external policy", "- name: x\n  type: NodePort\n" + ip + "  externalTrafficPolicy: Node\n  ports: [{port: 80, nodePort: 30080}]\n", `services[1] default/x: externalTrafficPolicy "Node": want Cluster or Local`},
		{"external Local on internal-only service", "- name: x\n" + ip + "  externalTrafficPolicy: Local\n" + port, `services[1] default/x: externalTrafficPolicy "Local": only for a service reachable from outside (type NodePort or LoadBalancer, or with externalIPs)`},
		{"bad affinity", "- name: x\n" + ip + "  sessionAffinity: Cookie\n" + port, `services[1] default/x: sessionAffinity "Cookie": want None or ClientIP`},
		{"timeout without ClientIP", "- name: x\n" + ip + "  sessionAffinityTimeoutSeconds: 60\n" + port, "services[1] default/x: sessionAffinityTimeoutSeconds 60: only with sessionAffinity ClientIP"},
		{"timeout zero", "- name: x\n" + ip + "  sessionAffinity: ClientIP\n  sessionAffinityTimeoutSeconds: 0\n" + port, "services[1] default/x: sessionAffinityTimeoutSeconds 0: want 1-86400"},
		{"timeout too long", "- name: x\n" + ip + "  sessionAffinity: ClientIP\n  sessionAffinityTimeoutSeconds: 86401\n" + port, "services[1] default/x: sessionAffinityTimeoutSeconds 86401: want 1-86400"},
		{"no ports", "- name: x\n" + ip, "services[1] default/x: ports: at least one port is required"},
		{"unnamed port among two", "- name: x\n" + ip + "  ports: [{name: a, port: 80}, {port: 81}]\n", "services[1] default/x: ports[1].name: required when the service has more than one port"},
		{"bad port name", "- name: x\n" + ip + "  ports: [{name: HTTP, port: 80}]\n", `services[1] default/x: ports[0].name "HTTP": want a DNS-1123 label (a-z, 0-9 and '-', at most 63)`},
		{"duplicate port name", "- name: x\n" + ip + "  ports: [{name: a, port: 80}, {name: a, port: 81}]\n", `services[1] default/x: ports[1].name "a": duplicate of ports[0]`},
		{"unknown protocol", "- name: x\n" + ip + "  ports: [{name: a, port: 80}, {name: b, protocol: FOO, port: 81}]\n", `services[1] default/x: ports[1].protocol "FOO": want TCP, UDP or SCTP`},
		{"lower-case protocol", "- name: x\n" + ip + "  ports: [{port: 80, protocol: tcp}]\n", `services[1] default/x: ports[0].protocol "tcp": want TCP, UDP or SCTP`},
		{"no port", "- name: x\n" + ip + "  ports: [{targetPort: 80}]\n", "services[1] default/x: ports[0].port: required"},
		{"port too large", "- name: x\n" + ip + "  ports: [{port: 65536}]\n", "services[1] default/x: ports[0].port 65536: want 1-65535"},
		{"negative port", "- name: x\n" + ip + "  ports: [{port: -1}]\n", "services[1] default/x: ports[0].port -1: want 1-65535"},
		{"duplicate protocol and port", "- name: x\n" + ip + "  ports: [{name: a, port: 53, protocol: UDP}, {name: b, port: 53}, {name: c, port: 53, protocol: UDP}]\n", "services[1] default/x: ports[2].port 53: UDP 53 is already ports[0]"},
		{"named targetPort", "- name: x\n" + ip + "  ports: [{port: 80, targetPort: http}]\n", `services[1] default/x: ports[0].targetPort "http": named target ports are not supported in the cluster file (it lists no pods to resolve them); give the port number`},
		{"quoted targetPort", "- name: x\n" + ip + "  ports: [{port: 80, targetPort: \"8080\"}]\n", `services[1] default/x: ports[0].targetPort "8080": a string; write the port number without quotes`},
		{"targetPort zero", "- name: x\n" + ip + "  ports: [{port: 80, targetPort: 0}]\n", "services[1] default/x: ports[0].targetPort 0: want 1-65535"},
		{"targetPort a list", "- name: x\n" + ip + "  ports: [{port: 80, targetPort: [1]}]\n", "services[1] default/x: ports[0].targetPort: want a port number, got [1]"},
		{"nodePort on ClusterIP", "- name: x\n" + ip + "  ports: [{port: 80, nodePort: 30080}]\n", "services[1] default/x: ports[0].nodePort 30080: only for type NodePort or LoadBalancer"},
		{"NodePort without nodePort", "- name: x\n  type: NodePort\n" + ip + port, "services[1] default/x: ports[0].nodePort: required for type NodePort"},
		{"LoadBalancer without nodePort", "- name: x\n  type: LoadBalancer\n" + ip + port, "services[1] default/x: ports[0].nodePort: required for type LoadBalancer unless allocateLoadBalancerNodePorts is false"},
		{"nodePort out of range", "- name: x\n  type: NodePort\n" + ip + "  ports: [{port: 80, nodePort: 70000}]\n", "services[1] default/x: ports[0].nodePort 70000: want 1-65535 (any port: podnet does not enforce Kubernetes' 30000-32767)"},
		{"duplicate nodePort", "- name: x\n  type: NodePort\n" + ip + "  ports: [{name: a, port: 80, nodePort: 30080}, {name: b, port: 81, nodePort: 30080}]\n", "services[1] default/x: ports[1].nodePort 30080: TCP node port 30080 is already ports[0]"},
		{"endpoint without address", "- name: x\n" + ip + port + "  endpoints: [{node: node1}]\n", "services[1] default/x: endpoints[0].addresses: at least one address is required"},
		{"endpoint bad address", "- name: x\n" + ip + port + "  endpoints: [{addresses: [10.244.1.5]}, {addresses: [pod]}]\n", `services[1] default/x: endpoints[1].addresses[0] "pod": not an IP address`},
		{"endpoint address twice", "- name: x\n" + ip + port + "  endpoints: [{addresses: [10.244.1.5]}, {addresses: [10.244.1.5]}]\n", `services[1] default/x: endpoints[1].addresses[0] "10.244.1.5": already listed as endpoints[0].addresses[0]`},
		{"endpoint unknown node", "- name: x\n" + ip + port + "  endpoints: [{addresses: [10.244.1.5], node: node9}]\n", `services[1] default/x: endpoints[0].node "node9": not a node of the cluster file`},
		{"endpoint port of no service port", "- name: x\n" + ip + "  ports: [{name: http, port: 80}]\n  endpoints: [{addresses: [10.244.1.5], ports: {htp: 8080}}]\n", `services[1] default/x: endpoints[0].ports.htp 8080: the service has no port named "htp"`},
		{"endpoint port out of range", "- name: x\n" + ip + "  ports: [{name: http, port: 80}]\n  endpoints: [{addresses: [10.244.1.5], ports: {http: 0}}]\n", "services[1] default/x: endpoints[0].ports.http 0: want 1-65535"},
		{"endpoint condition not a bool", "- name: x\n" + ip + port + "  endpoints: [{addresses: [10.244.1.5], ready: maybe}]\n", "services[1] default/x: endpoints.ready: want true or false, got string"},
		// Conflicts with services[0], web below.
		{"duplicate name", "- name: web\n" + ip + port, `services[1] default/web: name "web": duplicate of services[0] default/web`},
		{"taken VIP and port", "- name: x\n  clusterIPs: [10.96.0.60]\n  externalIPs: [10.96.0.10]\n  ports: [{port: 80}]\n", `services[1] default/x: externalIPs[0] "10.96.0.10": TCP port 80 of this address is already served by services[0] default/web`},
		{"taken nodePort", "- name: x\n  type: NodePort\n" + ip + "  ports: [{port: 81, nodePort: 30080}]\n", "services[1] default/x: ports[0].nodePort 30080: TCP node port 30080 is already taken by services[0] default/web"},
	}
	const web = `
- name: web
  type: NodePort
  clusterIPs: [10.96.0.10]
  ports: [{port: 80, nodePort: 30080}]
`
	const db = `
- name: db
  clusterIPs: [10.96.0.11]
  ports: [{port: 5432}]
`
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := ParseCluster(servicesFile(web, tt.yaml, db))
			if err != nil {
				t.Fatalf("ParseCluster: %v (an invalid service must not fail the file)", err)
			}
			if len(c.RejectedServices) != 1 {
				t.Fatalf("rejected = %v, want one", c.RejectedServices)
			}
			if got := c.RejectedServices[0].Error(); got != tt.want {
				t.Errorf("error\n got: %s\nwant: %s", got, tt.want)
			}
			if len(c.Nodes) != 2 || len(c.Services) != 2 || c.Services[0].Name != "web" || c.Services[1].Name != "db" {
				t.Errorf("services %+v, want web and db kept", c.Services)
			}
		})
	}
}

func TestServiceErrorFields(t *testing.T) {
	c, err := ParseCluster(servicesFile(`
- name: web
  namespace: shop
  clusterIPs: [10.96.0.10]
  ports: [{port: 80, protocol: FOO}]
`))
	if err != nil {
		t.Fatal(err)
	}
	want := []*ServiceError{{Index: 0, Namespace: "shop", Name: "web", Field: "ports[0].protocol", Value: `"FOO"`, Reason: "want TCP, UDP or SCTP"}}
	if diff := cmp.Diff(want, c.RejectedServices); diff != "" {
		t.Errorf("rejected (-want +got):\n%s", diff)
	}
}

// TestDocsExample keeps the example of docs/services.md valid.
func TestDocsExample(t *testing.T) {
	doc, err := os.ReadFile("../docs/services.md")
	if err != nil {
		t.Fatal(err)
	}
	_, rest, _ := strings.Cut(string(doc), "```yaml\n")
	example, _, ok := strings.Cut(rest, "```")
	if !ok {
		t.Fatal("no yaml example in docs/services.md")
	}
	nodes, _, _ := strings.Cut(string(servicesFile()), "services:")
	c, err := ParseCluster([]byte(nodes + example))
	if err != nil {
		t.Fatalf("ParseCluster: %v", err)
	}
	if len(c.Services) != 1 || len(c.RejectedServices)+len(c.IgnoredServices) != 0 || len(c.Services[0].Endpoints) != 3 {
		t.Errorf("services %+v, rejected %v, ignored %v; want web with 3 endpoint addresses", c.Services, c.RejectedServices, c.IgnoredServices)
	}
}
