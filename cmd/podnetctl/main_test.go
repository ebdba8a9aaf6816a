package main

import (
	"bytes"
	"encoding/json"
	"net"
	"net/http"
	"net/http/httptest"
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
		{"unknown command", []string{"--socket", socket, "routes"}, "unknown or missing command"},
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
