package kubesource

import (
	"net/netip"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	v1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	"github.com/podnet/podnet/nft"
)

var netipComparers = cmpopts.EquateComparable(netip.Addr{}, netip.Prefix{})

func addr(s string) netip.Addr     { return netip.MustParseAddr(s) }
func prefix(s string) netip.Prefix { return netip.MustParsePrefix(s) }

// service is a ClusterIP Service default/web on 10.96.0.10, TCP port 80
// (http), changed by change.
func service(change func(*v1.Service)) *v1.Service {
	s := &v1.Service{
		ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: "web", ResourceVersion: "10"},
		Spec: v1.ServiceSpec{
			Type:       v1.ServiceTypeClusterIP,
			ClusterIP:  "10.96.0.10",
			ClusterIPs: []string{"10.96.0.10"},
			Ports:      []v1.ServicePort{{Name: "http", Protocol: v1.ProtocolTCP, Port: 80}},
		},
	}
	if change != nil {
		change(s)
	}
	return s
}

// slice is an IPv4 EndpointSlice of default/web named name, with port http
// 8080/TCP and endpoints.
func slice(name, rv string, eps ...discoveryv1.Endpoint) *discoveryv1.EndpointSlice {
	return &discoveryv1.EndpointSlice{
		ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: name, ResourceVersion: rv,
			Labels: map[string]string{discoveryv1.LabelServiceName: "web"}},
		AddressType: discoveryv1.AddressTypeIPv4,
		Ports:       []discoveryv1.EndpointPort{{Name: ptr.To("http"), Protocol: ptr.To(v1.ProtocolTCP), Port: ptr.To[int32](8080)}},
		Endpoints:   eps,
	}
}

// ep is a ready endpoint at address on node.
func ep(address, node string) discoveryv1.Endpoint {
	return discoveryv1.Endpoint{Addresses: []string{address}, NodeName: ptr.To(node)}
}

func http8080() map[string]uint16 { return map[string]uint16{"http": 8080} }

// want is the nft.Service of service(nil) with change applied.
func want(change func(*nft.Service)) *nft.Service {
	s := &nft.Service{Namespace: "default", Name: "web", ClusterIPs: []netip.Addr{addr("10.96.0.10")},
		Ports:                 []nft.ServicePort{{Name: "http", Protocol: nft.TCP, Port: 80}},
		InternalTrafficPolicy: nft.PolicyCluster, ExternalTrafficPolicy: nft.PolicyCluster, Revision: "10"}
	if change != nil {
		change(s)
	}
	return s
}

func TestTranslateService(t *testing.T) {
	tests := []struct {
		name   string
		svc    *v1.Service
		slices []*discoveryv1.EndpointSlice
		want   *nft.Service
	}{
		{"no slices: no endpoints", service(nil), nil, want(nil)},
		{
			"one slice", service(nil),
			[]*discoveryv1.EndpointSlice{slice("web-1", "11", ep("10.244.1.5", "node1"), ep("10.244.2.7", "node2"))},
			want(func(s *nft.Service) {
				s.Endpoints = []nft.Endpoint{
					{Address: addr("10.244.1.5"), Ports: http8080(), NodeName: "node1", Ready: true, Serving: true},
					{Address: addr("10.244.2.7"), Ports: http8080(), NodeName: "node2", Ready: true, Serving: true},
				}
				s.Revision = "10,11"
			}),
		},
		{
			"clusterIP without clusterIPs (an old object)",
			service(func(s *v1.Service) { s.Spec.ClusterIPs = nil }), nil, want(nil),
		},
		{
			"dual stack with a slice per family",
			service(func(s *v1.Service) { s.Spec.ClusterIPs = []string{"10.96.0.10", "fd00:96::10"} }),
			[]*discoveryv1.EndpointSlice{
				slice("web-a", "11", ep("10.244.1.5", "node1")),
				func() *discoveryv1.EndpointSlice {
					sl := slice("web-b", "12", ep("fd00:10:244:1::5", "node1"))
					sl.AddressType = discoveryv1.AddressTypeIPv6
					return sl
				}(),
			},
			want(func(s *nft.Service) {
				s.ClusterIPs = append(s.ClusterIPs, addr("fd00:96::10"))
				s.Endpoints = []nft.Endpoint{
					{Address: addr("10.244.1.5"), Ports: http8080(), NodeName: "node1", Ready: true, Serving: true},
					{Address: addr("fd00:10:244:1::5"), Ports: http8080(), NodeName: "node1", Ready: true, Serving: true},
				}
				s.Revision = "10,11,12"
			}),
		},
		{
			"NodePort",
			service(func(s *v1.Service) {
				s.Spec.Type = v1.ServiceTypeNodePort
				s.Spec.Ports[0].NodePort = 30080
				s.Spec.ExternalTrafficPolicy = v1.ServiceExternalTrafficPolicyLocal
			}),
			nil,
			want(func(s *nft.Service) { s.Ports[0].NodePort = 30080; s.ExternalTrafficPolicy = nft.PolicyLocal }),
		},
		{
			"node port of a ClusterIP service is not served",
			service(func(s *v1.Service) { s.Spec.Ports[0].NodePort = 30080 }), nil, want(nil),
		},
		{
			"LoadBalancer: ingress IPs, hostnames and proxied IPs skipped, source ranges masked",
			service(func(s *v1.Service) {
				s.Spec.Type = v1.ServiceTypeLoadBalancer
				s.Spec.Ports[0].NodePort = 30080
				s.Spec.LoadBalancerSourceRanges = []string{"192.0.2.0/24", " 198.51.100.7/24", "192.0.2.0/24"}
				s.Status.LoadBalancer.Ingress = []v1.LoadBalancerIngress{
					{IP: "203.0.113.1"}, {Hostname: "lb.example.com"},
					{IP: "203.0.113.2", IPMode: ptr.To(v1.LoadBalancerIPModeProxy)},
					{IP: "203.0.113.3", IPMode: ptr.To(v1.LoadBalancerIPModeVIP)},
				}
			}),
			nil,
			want(func(s *nft.Service) {
				s.Ports[0].NodePort = 30080
				s.LoadBalancerIPs = []netip.Addr{addr("203.0.113.1"), addr("203.0.113.3")}
				s.LoadBalancerSourceRanges = []netip.Prefix{prefix("192.0.2.0/24"), prefix("198.51.100.0/24")}
			}),
		},
		{
			"LoadBalancer: source ranges from the annotation",
			service(func(s *v1.Service) {
				s.Spec.Type = v1.ServiceTypeLoadBalancer
				s.Spec.AllocateLoadBalancerNodePorts = ptr.To(false)
				s.Annotations = map[string]string{v1.AnnotationLoadBalancerSourceRangesKey: "192.0.2.0/24,2001:db8::/32"}
			}),
			nil,
			want(func(s *nft.Service) {
				s.LoadBalancerSourceRanges = []netip.Prefix{prefix("192.0.2.0/24"), prefix("2001:db8::/32")}
			}),
		},
		{
			"source ranges and ingress of a service not of type LoadBalancer are not read",
			service(func(s *v1.Service) {
				s.Spec.LoadBalancerSourceRanges = []string{"192.0.2.0/24"}
				s.Status.LoadBalancer.Ingress = []v1.LoadBalancerIngress{{IP: "203.0.113.1"}}
			}),
			nil, want(nil),
		},
		{
			"external IPs, an address listed twice used once",
			service(func(s *v1.Service) {
				s.Spec.ExternalIPs = []string{"192.0.2.50", "10.96.0.10", "192.0.2.50"}
				s.Spec.ExternalTrafficPolicy = v1.ServiceExternalTrafficPolicyCluster
			}),
			nil,
			want(func(s *nft.Service) { s.ExternalIPs = []netip.Addr{addr("192.0.2.50")} }),
		},
		{
			"internal traffic policy Local",
			service(func(s *v1.Service) { s.Spec.InternalTrafficPolicy = ptr.To(v1.ServiceInternalTrafficPolicyLocal) }),
			nil,
			want(func(s *nft.Service) { s.InternalTrafficPolicy = nft.PolicyLocal }),
		},
		{
			"ClientIP affinity, default timeout",
			service(func(s *v1.Service) { s.Spec.SessionAffinity = v1.ServiceAffinityClientIP }),
			nil,
			want(func(s *nft.Service) { s.AffinityTimeout = nft.DefaultAffinityTimeout }),
		},
		{
			"ClientIP affinity with a timeout",
			service(func(s *v1.Service) {
				s.Spec.SessionAffinity = v1.ServiceAffinityClientIP
				s.Spec.SessionAffinityConfig = &v1.SessionAffinityConfig{ClientIP: &v1.ClientIPConfig{TimeoutSeconds: ptr.To[int32](60)}}
			}),
			nil,
			want(func(s *nft.Service) { s.AffinityTimeout = time.Minute }),
		},
		{
			"several ports and protocols, matched by name and protocol",
			service(func(s *v1.Service) {
				s.Spec.Ports = []v1.ServicePort{
					{Name: "dns", Protocol: v1.ProtocolUDP, Port: 53},
					{Name: "dns-tcp", Protocol: v1.ProtocolTCP, Port: 53},
					{Name: "sctp", Protocol: v1.ProtocolSCTP, Port: 9},
				}
			}),
			[]*discoveryv1.EndpointSlice{func() *discoveryv1.EndpointSlice {
				sl := slice("web-1", "11", ep("10.244.1.5", "node1"))
				sl.Ports = []discoveryv1.EndpointPort{
					{Name: ptr.To("dns"), Protocol: ptr.To(v1.ProtocolUDP), Port: ptr.To[int32](5353)},
					{Name: ptr.To("dns-tcp"), Protocol: ptr.To(v1.ProtocolUDP), Port: ptr.To[int32](5353)}, // wrong protocol
					{Name: ptr.To("sctp"), Protocol: ptr.To(v1.ProtocolSCTP)},                              // no port
					{Name: ptr.To("other"), Port: ptr.To[int32](1)},                                        // no such service port
				}
				return sl
			}()},
			want(func(s *nft.Service) {
				s.Ports = []nft.ServicePort{{Name: "dns", Protocol: nft.UDP, Port: 53}, {Name: "dns-tcp", Protocol: nft.TCP, Port: 53},
					{Name: "sctp", Protocol: nft.SCTP, Port: 9}}
				s.Endpoints = []nft.Endpoint{{Address: addr("10.244.1.5"), Ports: map[string]uint16{"dns": 5353}, NodeName: "node1", Ready: true, Serving: true}}
				s.Revision = "10,11"
			}),
		},
		{
			"unnamed port, protocol defaulted",
			service(func(s *v1.Service) { s.Spec.Ports = []v1.ServicePort{{Port: 80}} }),
			[]*discoveryv1.EndpointSlice{func() *discoveryv1.EndpointSlice {
				sl := slice("web-1", "11", ep("10.244.1.5", "node1"))
				sl.Ports = []discoveryv1.EndpointPort{{Port: ptr.To[int32](8080)}}
				return sl
			}()},
			want(func(s *nft.Service) {
				s.Ports = []nft.ServicePort{{Protocol: nft.TCP, Port: 80}}
				s.Endpoints = []nft.Endpoint{{Address: addr("10.244.1.5"), Ports: map[string]uint16{"": 8080}, NodeName: "node1", Ready: true, Serving: true}}
				s.Revision = "10,11"
			}),
		},
		{
			"conditions",
			service(nil),
			[]*discoveryv1.EndpointSlice{slice("web-1", "11",
				discoveryv1.Endpoint{Addresses: []string{"10.244.1.1"}}, // all nil: ready, serving, not terminating
				discoveryv1.Endpoint{Addresses: []string{"10.244.1.2"}, Conditions: discoveryv1.EndpointConditions{Ready: ptr.To(false)}},
				discoveryv1.Endpoint{Addresses: []string{"10.244.1.3"}, Conditions: discoveryv1.EndpointConditions{
					Ready: ptr.To(false), Serving: ptr.To(true), Terminating: ptr.To(true)}},
			)},
			want(func(s *nft.Service) {
				s.Endpoints = []nft.Endpoint{
					{Address: addr("10.244.1.1"), Ports: http8080(), Ready: true, Serving: true},
					{Address: addr("10.244.1.2"), Ports: http8080()},
					{Address: addr("10.244.1.3"), Ports: http8080(), Serving: true, Terminating: true},
				}
				s.Revision = "10,11"
			}),
		},
		{
			"an address in two slices is one endpoint: first listing's conditions, every listing's ports",
			service(func(s *v1.Service) {
				s.Spec.Ports = append(s.Spec.Ports, v1.ServicePort{Name: "metrics", Protocol: v1.ProtocolTCP, Port: 9090})
			}),
			[]*discoveryv1.EndpointSlice{
				slice("web-a", "11",
					discoveryv1.Endpoint{Addresses: []string{"10.244.1.5", "10.244.1.6"}, NodeName: ptr.To("node1"),
						Conditions: discoveryv1.EndpointConditions{Ready: ptr.To(false)}},
					ep("10.244.1.5", "node9")),
				func() *discoveryv1.EndpointSlice {
					sl := slice("web-b", "12", ep("10.244.1.5", "node2"))
					sl.Ports = []discoveryv1.EndpointPort{{Name: ptr.To("metrics"), Port: ptr.To[int32](9100)}}
					return sl
				}(),
			},
			want(func(s *nft.Service) {
				s.Ports = append(s.Ports, nft.ServicePort{Name: "metrics", Protocol: nft.TCP, Port: 9090})
				s.Endpoints = []nft.Endpoint{{Address: addr("10.244.1.5"), Ports: map[string]uint16{"http": 8080, "metrics": 9100}, NodeName: "node1"}}
				s.Revision = "10,11,12"
			}),
		},
		{
			"FQDN slices are not read",
			service(nil),
			[]*discoveryv1.EndpointSlice{func() *discoveryv1.EndpointSlice {
				sl := slice("web-1", "11", ep("example.com", "node1"))
				sl.AddressType = discoveryv1.AddressTypeFQDN
				return sl
			}()},
			want(func(s *nft.Service) { s.Revision = "10,11" }),
		},
		{
			"no Revision without the Service's resourceVersion",
			service(func(s *v1.Service) { s.ResourceVersion = "" }),
			[]*discoveryv1.EndpointSlice{slice("web-1", "11")},
			want(func(s *nft.Service) { s.Revision = "" }),
		},
		{
			"no Revision without a slice's resourceVersion",
			service(nil),
			[]*discoveryv1.EndpointSlice{slice("web-1", "11"), slice("web-2", "")},
			want(func(s *nft.Service) { s.Revision = "" }),
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			res := translateService(tt.svc, tt.slices)
			if res.rejected != nil || res.ignored != "" || len(res.skipped) > 0 {
				t.Fatalf("rejected %v, ignored %q, skipped %v; want the service", res.rejected, res.ignored, res.skipped)
			}
			if diff := cmp.Diff(tt.want, res.svc, netipComparers); diff != "" {
				t.Errorf("service (-want +got):\n%s", diff)
			}
		})
	}
}

func TestTranslateServiceIgnored(t *testing.T) {
	tests := []struct {
		name string
		svc  *v1.Service
		want string
	}{
		{"headless", service(func(s *v1.Service) { s.Spec.ClusterIP, s.Spec.ClusterIPs = "None", []string{"None"} }), "headless: no cluster IP"},
		{"no cluster IP", service(func(s *v1.Service) { s.Spec.ClusterIP, s.Spec.ClusterIPs = "", nil }), "headless: no cluster IP"},
		{"ExternalName", service(func(s *v1.Service) {
			s.Spec.Type, s.Spec.ExternalName, s.Spec.ClusterIP, s.Spec.ClusterIPs = v1.ServiceTypeExternalName, "example.com", "", nil
		}), "type ExternalName: a DNS name, nothing to proxy"},
		{"another proxy", service(func(s *v1.Service) { s.Labels = map[string]string{LabelServiceProxyName: "other"} }),
			"labelled service.kubernetes.io/service-proxy-name=other: another proxy serves it"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			res := translateService(tt.svc, []*discoveryv1.EndpointSlice{slice("web-1", "11", ep("10.244.1.5", "node1"))})
			if res.svc != nil || res.rejected != nil || res.ignored != tt.want {
				t.Errorf("got service %v, rejected %v, ignored %q; want ignored %q", res.svc, res.rejected, res.ignored, tt.want)
			}
		})
	}
}

func TestTranslateServiceRejected(t *testing.T) {
	tests := []struct {
		name string
		svc  *v1.Service
		want string
	}{
		{"cluster IP not an address", service(func(s *v1.Service) { s.Spec.ClusterIPs = []string{"10.96.0.300"} }),
			`Service default/web: spec.clusterIPs[0] "10.96.0.300": not an IP address`},
		{"loopback cluster IP", service(func(s *v1.Service) { s.Spec.ClusterIPs = []string{"127.0.0.1"} }),
			`Service default/web: spec.clusterIPs[0] "127.0.0.1": not usable: loopback address`},
		{"two IPv4 cluster IPs", service(func(s *v1.Service) { s.Spec.ClusterIPs = []string{"10.96.0.10", "10.96.0.11"} }),
			`Service default/web: spec.clusterIPs[1] "10.96.0.11": a second cluster IP of its family (at most one IPv4 and one IPv6)`},
		{"external IP", service(func(s *v1.Service) { s.Spec.ExternalIPs = []string{"ff02::1"} }),
			`Service default/web: spec.externalIPs[0] "ff02::1": not usable: multicast address`},
		{"source range", service(func(s *v1.Service) {
			s.Spec.Type = v1.ServiceTypeLoadBalancer
			s.Spec.LoadBalancerSourceRanges = []string{"192.0.2.0/33"}
		}), `Service default/web: spec.loadBalancerSourceRanges[0] "192.0.2.0/33": not a CIDR`},
		{"protocol", service(func(s *v1.Service) { s.Spec.Ports[0].Protocol = "FOO" }),
			`Service default/web: spec.ports[0].protocol "FOO": want TCP, UDP or SCTP`},
		{"port", service(func(s *v1.Service) { s.Spec.Ports[0].Port = 0 }),
			`Service default/web: spec.ports[0].port 0: want 1-65535`},
		{"no ports", service(func(s *v1.Service) { s.Spec.Ports = nil }),
			`Service default/web: spec.ports: at least one port is required`},
		{"type", service(func(s *v1.Service) { s.Spec.Type = "Mesh" }),
			`Service default/web: spec.type "Mesh": want ClusterIP, NodePort, LoadBalancer or ExternalName`},
		{"traffic policy", service(func(s *v1.Service) { s.Spec.ExternalTrafficPolicy = "Global" }),
			`Service default/web: spec.externalTrafficPolicy "Global": want Cluster or Local`},
		{"affinity", service(func(s *v1.Service) { s.Spec.SessionAffinity = "Cookie" }),
			`Service default/web: spec.sessionAffinity "Cookie": want None or ClientIP`},
		{"affinity timeout", service(func(s *v1.Service) {
			s.Spec.SessionAffinity = v1.ServiceAffinityClientIP
			s.Spec.SessionAffinityConfig = &v1.SessionAffinityConfig{ClientIP: &v1.ClientIPConfig{TimeoutSeconds: ptr.To[int32](86401)}}
		}), `Service default/web: spec.sessionAffinityConfig.clientIP.timeoutSeconds 86401: want 1-86400`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			res := translateService(tt.svc, nil)
			if res.svc != nil || res.rejected == nil {
				t.Fatalf("got service %v, rejected %v; want rejected", res.svc, res.rejected)
			}
			if got := res.rejected.Error(); got != tt.want {
				t.Errorf("rejected:\n got %s\nwant %s", got, tt.want)
			}
		})
	}
}

// Endpoints and ingress IPs that cannot be used are skipped and reported;
// the service and its other endpoints stay.
func TestTranslateServiceSkips(t *testing.T) {
	svc := service(func(s *v1.Service) {
		s.Spec.Type = v1.ServiceTypeLoadBalancer
		s.Status.LoadBalancer.Ingress = []v1.LoadBalancerIngress{{IP: "not-an-ip"}, {IP: "203.0.113.1"}}
	})
	sl := slice("web-1", "11",
		discoveryv1.Endpoint{},
		ep("10.244.1", "node1"),
		ep("fd00::5", "node1"),
		ep("169.254.0.1", "node1"),
		ep("10.244.1.5", "node1"),
	)
	sl.Ports = append(sl.Ports, discoveryv1.EndpointPort{Name: ptr.To("big"), Port: ptr.To[int32](70000)})
	res := translateService(svc, []*discoveryv1.EndpointSlice{sl})
	if res.svc == nil {
		t.Fatalf("service rejected: %v", res.rejected)
	}
	wantSvc := want(func(s *nft.Service) {
		s.LoadBalancerIPs = []netip.Addr{addr("203.0.113.1")}
		s.Endpoints = []nft.Endpoint{{Address: addr("10.244.1.5"), Ports: http8080(), NodeName: "node1", Ready: true, Serving: true}}
		s.Revision = "10,11"
	})
	if diff := cmp.Diff(wantSvc, res.svc, netipComparers); diff != "" {
		t.Errorf("service (-want +got):\n%s", diff)
	}
	var got []string
	for _, p := range res.skipped {
		got = append(got, p.Error())
	}
	wantSkipped := []string{
		`Service default/web: status.loadBalancer.ingress[0].ip "not-an-ip": not an IP address`,
		`EndpointSlice default/web-1: ports[1].port 70000: want 1-65535`,
		`EndpointSlice default/web-1: endpoints[0].addresses: no address`,
		`EndpointSlice default/web-1: endpoints[1].addresses[0] "10.244.1": not an IP address`,
		`EndpointSlice default/web-1: endpoints[2].addresses[0] "fd00::5": not an IPv4 address`,
		`EndpointSlice default/web-1: endpoints[3].addresses[0] "169.254.0.1": not usable: link-local address`,
	}
	if diff := cmp.Diff(wantSkipped, got); diff != "" {
		t.Errorf("skipped (-want +got):\n%s", diff)
	}
}
