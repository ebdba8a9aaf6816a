package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/podnet/podnet/daemon/api"
)

var (
	testStatus = api.Status{
		Version: "v1", Node: "node-a", Source: "file:/etc/podnet/cluster.yaml", Ready: true,
		PodCIDRs: []string{"10.244.0.0/24"}, Bridge: "podnet0", MTU: 1500, Peers: 1, Routes: 1, Allocations: 3,
		LastSync: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC), SyncSeconds: 0.0123, Syncs: 7,
		StartedAt:          time.Date(2026, 1, 2, 3, 0, 0, 0, time.UTC),
		ServicesProgrammed: 3, ServicesRejected: 1, ServicesIgnored: 1,
		ConntrackCleanup: true, ConntrackDeleted: 12, ConntrackFailures: 1,
		ConntrackLastError: "conntrack: dump: netlink receive: no buffer space available",
	}
	testServices = api.Services{
		Programmed: []api.Service{
			{
				Namespace: "default", Name: "web", ClusterIPs: []string{"10.96.0.10", "fd00:96::10"},
				ExternalIPs: []string{"203.0.113.7"}, LoadBalancerIPs: []string{"198.51.100.7"},
				LoadBalancerSourceRanges: []string{"192.0.2.0/24"},
				InternalTrafficPolicy:    "Cluster", ExternalTrafficPolicy: "Local", SessionAffinityTimeoutSeconds: 600,
				Ports: []api.ServicePort{{Name: "http", Protocol: "TCP", Port: 80, NodePort: 30080}, {Name: "metrics", Protocol: "TCP", Port: 9090, NodePort: 30090}},
				Endpoints: []api.Endpoint{
					{Address: "10.244.0.5", Node: "node-a", Ports: map[string]int{"http": 8080, "metrics": 9090}, Ready: true, Serving: true},
					{Address: "fd00:10:244::5", Node: "node-a", Ports: map[string]int{"http": 8080, "metrics": 9090}, Ready: true, Serving: true},
				},
			},
			{
				Namespace: "kube-system", Name: "dns", ClusterIPs: []string{"10.96.0.53"},
				InternalTrafficPolicy: "Local", ExternalTrafficPolicy: "Cluster",
				Ports: []api.ServicePort{{Protocol: "UDP", Port: 53}},
				Endpoints: []api.Endpoint{
					{Address: "10.244.1.7", Node: "node-b", Ports: map[string]int{"": 53}, Ready: true, Serving: true},
					{Address: "fd00:10:244:1::7", Ports: map[string]int{"": 5353}, Serving: true, Terminating: true},
					{Address: "10.244.1.8", Node: "node-b", Ports: map[string]int{"": 53}},
				},
			},
			{
				Namespace: "default", Name: "empty", ClusterIPs: []string{"10.96.0.60"},
				InternalTrafficPolicy: "Cluster", ExternalTrafficPolicy: "Cluster",
				Ports: []api.ServicePort{{Protocol: "SCTP", Port: 9000}}, Endpoints: []api.Endpoint{},
			},
		},
		Rejected: []api.RejectedService{{Index: 1, Namespace: "default", Name: "bad", Field: "ports[1].protocol",
			Reason: `"FOO": want TCP, UDP or SCTP`, Error: `services[1] default/bad: ports[1].protocol "FOO": want TCP, UDP or SCTP`}},
		Ignored: []api.IgnoredService{{Index: 4, Namespace: "default", Name: "headless", Reason: "headless: no cluster IP"}},
	}
)

// fakeDaemon serves canned answers on a unix socket, as podnetd does.
func fakeDaemon(t *testing.T, services api.Services) string {
	t.Helper()
	socket := filepath.Join(t.TempDir(), "podnet.sock")
	ln, err := net.Listen("unix", socket)
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	reply := func(v any) http.HandlerFunc {
		return func(w http.ResponseWriter, _ *http.Request) {
			w.Header().Set("Content-Type", "application/json")
			_ = json.NewEncoder(w).Encode(v)
		}
	}
	mux.Handle("GET /v1/status", reply(testStatus))
	mux.Handle("GET /v1/services", reply(services))
	mux.Handle("GET /v1/ipam", reply(testIPAM))
	mux.Handle("GET /v1/pods", reply(testPods))
	mux.Handle("GET /v1/routes", reply(testRoutes))
	mux.Handle("GET /v1/nft", reply(testNFT))
	mux.HandleFunc("GET /v1/trace", func(w http.ResponseWriter, r *http.Request) {
		q := r.URL.Query()
		if q.Get("from") != "default/a" || q.Get("to") != "web:80" || q.Get("probe") != "" {
			w.WriteHeader(http.StatusBadRequest)
			_ = json.NewEncoder(w).Encode(api.Error{Msg: "bad trace request", Details: "unexpected query " + r.URL.RawQuery})
			return
		}
		reply(testTrace)(w, r)
	})
	srv := httptest.NewUnstartedServer(mux)
	srv.Listener = ln
	srv.Start()
	t.Cleanup(srv.Close)
	return socket
}

func TestTables(t *testing.T) {
	tests := []struct {
		name     string
		command  string
		services api.Services
		want     string
	}{
		{
			name: "status", command: "status", services: testServices,
			want: `node:         node-a
version:      v1
source:       file:/etc/podnet/cluster.yaml
ready:        true
podCIDRs:     10.244.0.0/24
bridge:       podnet0
mtu:          1500
peers:        1
routes:       1
allocations:  3
services:     3 programmed, 1 rejected, 1 ignored
conntrack:    12 stale UDP entries deleted, 1 failed deletes (last: conntrack: dump: netlink receive: no buffer space available)
last sync:    2026-01-02T03:04:05Z (12.3 ms, 7 syncs)
started:      2026-01-02T03:00:00Z
`,
		},
		{
			name: "services", command: "services", services: testServices,
			want: `SERVICE          VIPS                                                            PORTS                                                            ENDPOINT                               NODE    CONDITIONS           OPTIONS
default/web      10.96.0.10, fd00:96::10, external 203.0.113.7, lb 198.51.100.7  http 80/TCP (nodePort 30080), metrics 9090/TCP (nodePort 30090)  10.244.0.5 http:8080 metrics:9090      node-a  ready,serving        external=Local affinity=600s sourceRanges=192.0.2.0/24
                                                                                                                                                  fd00:10:244::5 http:8080 metrics:9090  node-a  ready,serving
kube-system/dns  10.96.0.53                                                      53/UDP                                                           10.244.1.7:53                          node-b  ready,serving        internal=Local
                                                                                                                                                  [fd00:10:244:1::7]:5353                -       serving,terminating
                                                                                                                                                  10.244.1.8:53                          node-b  -
default/empty    10.96.0.60                                                      9000/SCTP                                                        (none)                                                              -

REJECTED (1)
services[1] default/bad: ports[1].protocol "FOO": want TCP, UDP or SCTP

IGNORED (1)
services[4] default/headless: headless: no cluster IP
`,
		},
		{
			name: "Kubernetes mode", command: "services",
			services: api.Services{Programmed: []api.Service{},
				Rejected: []api.RejectedService{{Index: -1, Namespace: "default", Name: "bad", Field: "spec.ports[0].protocol",
					Reason: `"FOO": want TCP, UDP or SCTP`, Error: `Service default/bad: spec.ports[0].protocol "FOO": want TCP, UDP or SCTP`}},
				Ignored: []api.IgnoredService{{Index: -1, Namespace: "default", Name: "db", Reason: "headless: no cluster IP"}}},
			want: `SERVICE  VIPS  PORTS  ENDPOINT  NODE  CONDITIONS  OPTIONS

REJECTED (1)
Service default/bad: spec.ports[0].protocol "FOO": want TCP, UDP or SCTP

IGNORED (1)
Service default/db: headless: no cluster IP
`,
		},
		{
			name: "no services", command: "services",
			services: api.Services{Programmed: []api.Service{}, Rejected: []api.RejectedService{}, Ignored: []api.IgnoredService{}},
			want:     "SERVICE  VIPS  PORTS  ENDPOINT  NODE  CONDITIONS  OPTIONS\n",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			socket := fakeDaemon(t, tt.services)
			var out bytes.Buffer
			if err := run([]string{"--socket", socket, tt.command}, &out); err != nil {
				t.Fatalf("run: %v", err)
			}
			if diff := cmp.Diff(tt.want, out.String()); diff != "" {
				t.Errorf("output (-want +got):\n%s", diff)
			}
		})
	}
}

func TestJSON(t *testing.T) {
	socket := fakeDaemon(t, testServices)
	for _, tt := range []struct {
		command string
		got     any
		want    any
	}{
		{"status", &api.Status{}, &testStatus},
		{"services", &api.Services{}, &testServices},
	} {
		t.Run(tt.command, func(t *testing.T) {
			var out bytes.Buffer
			if err := run([]string{"--socket", socket, "-o", "json", tt.command}, &out); err != nil {
				t.Fatalf("run: %v", err)
			}
			if err := json.Unmarshal(out.Bytes(), tt.got); err != nil {
				t.Fatalf("output is not JSON: %v\n%s", err, out.String())
			}
			if diff := cmp.Diff(tt.want, tt.got); diff != "" {
				t.Errorf("decoded output (-want +got):\n%s", diff)
			}
		})
	}
}

func TestErrors(t *testing.T) {
	socket := fakeDaemon(t, testServices)
	missing := filepath.Join(t.TempDir(), "missing.sock")
	tests := []struct {
		name string
		args []string
		want string
	}{
		{"no command", []string{"--socket", socket}, "unknown or missing command"},
		{"unknown command", []string{"--socket", socket, "neighbours"}, "unknown or missing command"},
		{"trace without --to", []string{"--socket", socket, "trace", "--from", "default/a"}, "trace needs --from and --to"},
		{"trace refused", []string{"--socket", socket, "trace", "--from", "default/b", "--to", "web:80"}, "bad trace request: unexpected query"},
		{"completion without shell", []string{"completion"}, "usage: podnetctl completion bash|zsh|fish"},
		{"completion of another shell", []string{"completion", "tcsh"}, `completion "tcsh": want bash, zsh or fish`},
		{"two commands", []string{"--socket", socket, "status", "services"}, "unknown or missing command"},
		{"bad output", []string{"--socket", socket, "-o", "yaml", "services"}, `-o "yaml": want table or json`},
		{"daemon down", []string{"--socket", missing, "services"}, "podnetd is not running or not reachable at " + missing},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var out bytes.Buffer
			err := run(tt.args, &out)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("run = %v, want an error containing %q", err, tt.want)
			}
		})
	}
}

var (
	created  = time.Date(2026, 1, 2, 2, 0, 0, 0, time.UTC)
	testIPAM = api.IPAM{
		Ranges: []api.IPAMRange{{Range: "10.244.0.0/24", Gateway: "10.244.0.1", Size: 253, Used: 2, Free: 251}},
		Allocations: []api.Allocation{
			{ContainerID: "0123456789abcdef0123", IfName: "eth0", Address: "10.244.0.2/24", Range: "10.244.0.0/24", Created: created},
			{ContainerID: "c2", IfName: "net1", Address: "10.244.0.3/24", Range: "10.244.0.0/24", Created: created.Add(59 * time.Minute)},
		},
	}
	testPods = []api.Pod{
		{ContainerID: "0123456789abcdef0123", IfName: "eth0", Namespace: "default", Name: "a", NetNS: "/run/netns/a",
			HostVeth: "pn0123456789ab", Addresses: []string{"10.244.0.2"}, HostPorts: []string{"*:8080/TCP → 80"}, Created: created},
		{ContainerID: "c3", IfName: "eth0", Addresses: []string{}, HostVeth: "pnc3",
			Problems: []string{"no address allocated", "no record of its CNI ADD (namespace and name unknown)"}},
	}
	testRoutes = api.Routes{Drift: 1, Skipped: []string{"node node-d: no address of the family of podCIDR fd00:10:244:3::/64"},
		Routes: []api.Route{
			{Dst: "10.244.1.0/24", Node: "node-b", Via: "192.168.1.11", Kernel: "192.168.1.11", State: api.RouteOK},
			{Dst: "10.244.2.0/24", Node: "node-c", Via: "192.168.1.12", State: api.RouteMissing},
		}}
	testNFT   = api.NFT{Table: "inet podnet", Text: "table inet podnet {\n}\n", Sets: []api.NFTSet{}, Rules: []api.NFTRule{}}
	testTrace = api.Trace{
		From:  api.TraceEnd{Input: "default/a", Kind: "pod", Address: "10.244.0.2", Pod: "default/a", Node: "node-a"},
		To:    api.TraceEnd{Input: "web:80", Kind: "service", Address: "10.96.0.10", Service: "default/web"},
		Proto: "tcp", Port: 80, Outcome: api.TraceDelivered, Endpoints: []string{"10.244.1.7:8080"},
		Hops: []api.Hop{
			{Where: "pod default/a eth0", What: "sends from 10.244.0.2"},
			{Where: "nftables services", What: "matches the service", Rule: "ip daddr . meta l4proto . th dport vmap @service-ips-v4"},
			{Where: "routing", What: "to node node-b via 192.168.1.11 dev eth0"},
		},
		Probe: &api.ProbeResult{Sent: true, Result: "connected", Chains: []string{"prerouting", "services", "lb-v4-1", "postrouting"},
			Verdict: "lb-v4-1: accept", DNAT: "10.244.1.7:8080", Agrees: true},
	}
)

func TestDebugTables(t *testing.T) {
	now = func() time.Time { return time.Date(2026, 1, 2, 3, 0, 0, 0, time.UTC) }
	defer func() { now = time.Now }()
	socket := fakeDaemon(t, testServices)
	tests := []struct {
		args []string
		want string
	}{
		{[]string{"ipam"}, `RANGE          GATEWAY     SIZE  USED  FREE
10.244.0.0/24  10.244.0.1  253   2     251

ADDRESS        CONTAINER     IFNAME  RANGE          AGE
10.244.0.2/24  0123456789ab  eth0    10.244.0.0/24  60m
10.244.0.3/24  c2            net1    10.244.0.0/24  60s
`},
		{[]string{"pods"}, `POD        CONTAINER     IF    ADDRESSES   VETH            HOSTPORTS        AGE  PROBLEMS
default/a  0123456789ab  eth0  10.244.0.2  pn0123456789ab  *:8080/TCP → 80  60m  -
-          c3            eth0  -           pnc3            -                -    no address allocated; no record of its CNI ADD (namespace and name unknown)
`},
		{[]string{"routes"}, `NODE    DESTINATION    VIA           KERNEL        STATE
node-b  10.244.1.0/24  192.168.1.11  192.168.1.11  ok
node-c  10.244.2.0/24  192.168.1.12  -             missing

DRIFT: 1 route(s) not as desired; podnetd repairs them at its next sync
skipped: node node-d: no address of the family of podCIDR fd00:10:244:3::/64
`},
		{[]string{"nft"}, "table inet podnet {\n}\n"},
		// Flags may follow the command.
		{[]string{"trace", "--from", "default/a", "--to", "web:80"}, `trace pod default/a (10.244.0.2) → service default/web (10.96.0.10), tcp port 80

 1  pod default/a eth0  sends from 10.244.0.2
 2  nftables services   matches the service
                          ↳ ip daddr . meta l4proto . th dport vmap @service-ips-v4
 3  routing             to node node-b via 192.168.1.11 dev eth0

outcome: delivered (endpoints: 10.244.1.7:8080)
probe: connected; nftrace: prerouting → services → lb-v4-1 → postrouting (lb-v4-1: accept); DNAT to 10.244.1.7:8080; agrees with the path above
`},
	}
	for _, tt := range tests {
		t.Run(tt.args[0], func(t *testing.T) {
			var out bytes.Buffer
			if err := run(append([]string{"--socket", socket}, tt.args...), &out); err != nil {
				t.Fatalf("run: %v", err)
			}
			if diff := cmp.Diff(tt.want, out.String()); diff != "" {
				t.Errorf("output (-want +got):\n%s", diff)
			}
		})
	}
	// JSON round-trips what the daemon sent.
	for _, tt := range []struct {
		args      []string
		got, want any
	}{
		{[]string{"ipam"}, &api.IPAM{}, &testIPAM},
		{[]string{"pods"}, &[]api.Pod{}, &testPods},
		{[]string{"routes"}, &api.Routes{}, &testRoutes},
		{[]string{"nft"}, &api.NFT{}, &testNFT},
		{[]string{"trace", "--from=default/a", "--to=web:80"}, &api.Trace{}, &testTrace},
	} {
		var out bytes.Buffer
		if err := run(append([]string{"--socket", socket, "-o", "json"}, tt.args...), &out); err != nil {
			t.Fatalf("%v: %v", tt.args, err)
		}
		if err := json.Unmarshal(out.Bytes(), tt.got); err != nil {
			t.Fatalf("%v: not JSON: %v", tt.args, err)
		}
		if diff := cmp.Diff(tt.want, tt.got); diff != "" {
			t.Errorf("%v: decoded (-want +got):\n%s", tt.args, diff)
		}
	}
}

// TestCompletion checks each script names every command and flag, and that
// bash accepts its script.
func TestCompletion(t *testing.T) {
	for _, shell := range []string{"bash", "zsh", "fish"} {
		var out bytes.Buffer
		if err := run([]string{"completion", shell}, &out); err != nil {
			t.Fatalf("%s: %v", shell, err)
		}
		for _, word := range []string{"status", "ipam", "pods", "routes", "services", "nft", "trace", "completion", "socket", "from", "to", "no-probe"} {
			if !strings.Contains(out.String(), word) {
				t.Errorf("%s completion does not offer %q", shell, word)
			}
		}
		if shell == "bash" {
			cmd := exec.Command("bash", "-n")
			cmd.Stdin = &out
			if b, err := cmd.CombinedOutput(); err != nil {
				t.Errorf("bash -n: %v\n%s", err, b)
			}
		}
	}
}

// TestAccessDenied: a 403 from podnetd reads as access denied, with the
// daemon's reason.
func TestAccessDenied(t *testing.T) {
	socket := filepath.Join(t.TempDir(), "podnet.sock")
	ln, err := net.Listen("unix", socket)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.WriteHeader(http.StatusForbidden)
		_ = json.NewEncoder(w).Encode(api.Error{Msg: "access denied", Details: "uid 1000 is not allowed: podnetd's socket serves root"})
	}))
	srv.Listener = ln
	srv.Start()
	defer srv.Close()
	err = run([]string{"--socket", socket, "status"}, io.Discard)
	if !errors.Is(err, api.ErrAccessDenied) || !strings.Contains(err.Error(), "uid 1000 is not allowed") {
		t.Errorf("run = %v, want access denied with the daemon's reason", err)
	}
}
