package daemon

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/containernetworking/cni/pkg/types"
	"github.com/google/go-cmp/cmp"

	"github.com/podnet/podnet/daemon/api"
)

// hpConf is a network configuration with runtimeConfig.portMappings, as
// libcni builds it for a plugin with the portMappings capability.
func hpConf(t *testing.T, mappings ...map[string]any) json.RawMessage {
	t.Helper()
	b, err := json.Marshal(map[string]any{"cniVersion": "1.1.0", "name": "podnet", "type": "podnet",
		"capabilities": map[string]bool{"portMappings": true}, "runtimeConfig": map[string]any{"portMappings": mappings}})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func pm(hostIP string, hostPort int, proto string, containerPort int) map[string]any {
	m := map[string]any{"hostPort": hostPort, "containerPort": containerPort, "protocol": proto}
	if hostIP != "" {
		m["hostIP"] = hostIP
	}
	return m
}

func TestParsePortMappings(t *testing.T) {
	tests := []struct {
		name    string
		conf    string
		want    []portMapping
		wantErr string
	}{
		{"none", `{"cniVersion":"1.1.0"}`, nil, ""},
		{"empty", `{"runtimeConfig":{"portMappings":[]}}`, nil, ""},
		{"kubelet's", `{"runtimeConfig":{"portMappings":[{"hostPort":8080,"containerPort":80,"protocol":"tcp"},
			{"hostPort":53,"containerPort":5353,"protocol":"udp","hostIP":"192.0.2.1"},
			{"hostPort":9000,"containerPort":9000,"protocol":"SCTP","hostIP":"2001:DB8::1"},
			{"hostPort":81,"containerPort":80}]}}`,
			[]portMapping{{8080, 80, "TCP", ""}, {53, 5353, "UDP", "192.0.2.1"}, {9000, 9000, "SCTP", "2001:db8::1"}, {81, 80, "TCP", ""}}, ""},
		{"duplicate", `{"runtimeConfig":{"portMappings":[{"hostPort":8080,"containerPort":80,"protocol":"tcp"},{"hostPort":8080,"containerPort":80,"protocol":"TCP"}]}}`,
			[]portMapping{{8080, 80, "TCP", ""}}, ""},
		{"one port to two", `{"runtimeConfig":{"portMappings":[{"hostPort":8080,"containerPort":80},{"hostPort":8080,"containerPort":81}]}}`,
			nil, "runtimeConfig.portMappings[1]: *:8080/TCP maps to container ports 80 and 81"},
		{"protocol", `{"runtimeConfig":{"portMappings":[{"hostPort":8080,"containerPort":80,"protocol":"icmp"}]}}`,
			nil, `runtimeConfig.portMappings[0]: protocol "icmp": want tcp, udp or sctp`},
		{"host port", `{"runtimeConfig":{"portMappings":[{"hostPort":0,"containerPort":80}]}}`,
			nil, "runtimeConfig.portMappings[0]: hostPort 0: want 1 to 65535"},
		{"container port", `{"runtimeConfig":{"portMappings":[{"hostPort":80,"containerPort":65536}]}}`,
			nil, "runtimeConfig.portMappings[0]: containerPort 65536: want 1 to 65535"},
		{"host IP", `{"runtimeConfig":{"portMappings":[{"hostPort":80,"containerPort":80,"hostIP":"node1"}]}}`,
			nil, `runtimeConfig.portMappings[0]: hostIP "node1": not an IP address`},
		{"not a list", `{"runtimeConfig":{"portMappings":{"hostPort":80}}}`, nil, "runtimeConfig.portMappings: json: cannot unmarshal"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := parsePortMappings([]byte(tt.conf))
			if tt.wantErr != "" {
				if err == nil || !strings.HasPrefix(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("mappings (-want +got):\n%s", diff)
			}
		})
	}
}

func TestRecordHostPorts(t *testing.T) {
	r := podRecord{Addresses: []string{"10.244.0.5", "fd00:10:244::5"}, PortMappings: []portMapping{
		{8080, 80, "TCP", ""},            // both families
		{53, 5353, "UDP", "0.0.0.0"},     // any IPv4 address
		{54, 5353, "UDP", "::"},          // any IPv6 address
		{9000, 9000, "TCP", "192.0.2.1"}, // one address
		{9001, 9000, "TCP", "2001:db8::9"},
	}}
	want := []string{
		"*:8080/TCP → 10.244.0.5:80", "*:8080/TCP → [fd00:10:244::5]:80",
		"*:53/UDP → 10.244.0.5:5353", "*:54/UDP → [fd00:10:244::5]:5353",
		"192.0.2.1:9000/TCP → 10.244.0.5:9000", "[2001:db8::9]:9001/TCP → [fd00:10:244::5]:9000",
	}
	var got []string
	for _, h := range r.hostPorts() {
		got = append(got, h.String())
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("hostPorts (-want +got):\n%s", diff)
	}
	// A single-stack pod: the mapping of the other family maps nothing.
	r.Addresses = r.Addresses[:1]
	if got := len(r.hostPorts()); got != 3 {
		t.Errorf("IPv4-only pod: %d mappings, want 3", got)
	}
}

// hpDaemon is a synced test daemon whose sync loop runs, as a CNI call with
// port mappings waits for it.
func hpDaemon(t *testing.T) *testDaemon {
	t.Helper()
	td := newTestDaemon(t, nil)
	td.cluster.Store(threeNodes())
	if err := td.syncNode(); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { td.syncLoop(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
	td.cni.hostPortWait = 2 * time.Second
	return td
}

// hpAdd is an ADD of containerID as pod default/name with mappings.
func hpAdd(t *testing.T, containerID, name string, mappings ...map[string]any) api.CNIRequest {
	req := cniReq("ADD", containerID)
	req.Config = hpConf(t, mappings...)
	req.Args = "K8S_POD_NAMESPACE=default;K8S_POD_NAME=" + name
	return req
}

// programmed returns the hostPorts of the table's last State.
func programmed(t *testing.T, td *testDaemon) []string {
	t.Helper()
	s, ok := td.nft.LastState()
	if !ok {
		t.Fatal("no table")
	}
	var out []string
	for _, h := range s.HostPorts {
		out = append(out, h.String())
	}
	return out
}

func TestCNIHostPorts(t *testing.T) {
	td := hpDaemon(t)
	if _, cerr := td.cni.Serve(hpAdd(t, "c1", "web-1", pm("", 8080, "tcp", 80), pm("192.168.1.10", 53, "udp", 5353))); cerr != nil {
		t.Fatalf("ADD c1: %v", cerr)
	}
	// Programmed when ADD returns, without another sync.
	want := []string{"*:8080/TCP → 10.244.0.2:80", "192.168.1.10:53/UDP → 10.244.0.2:5353"}
	if diff := cmp.Diff(want, programmed(t, td)); diff != "" {
		t.Errorf("after ADD c1 (-want +got):\n%s", diff)
	}

	// Same port, other protocol or other address: no conflict.
	if _, cerr := td.cni.Serve(hpAdd(t, "c2", "web-2", pm("", 8080, "udp", 80), pm("127.0.0.1", 53, "udp", 5353))); cerr != nil {
		t.Fatalf("ADD c2: %v", cerr)
	}
	// Conflicts: the same port on any address, the same address, or any
	// address against one address.
	for _, tc := range []struct {
		mapping map[string]any
		want    string
	}{
		{pm("", 8080, "TCP", 8080), "hostPort 8080/TCP on any address is already used by pod default/web-1 (container c1, interface eth0)"},
		{pm("192.168.1.10", 8080, "tcp", 8080), "hostPort 8080/TCP on 192.168.1.10 is already used by pod default/web-1"},
		{pm("", 53, "udp", 53), "hostPort 53/UDP on any address is already used by pod default/web-1"},
		{pm("127.0.0.1", 53, "udp", 53), "hostPort 53/UDP on 127.0.0.1 is already used by pod default/web-2"},
	} {
		before := len(td.ipam.List())
		_, cerr := td.cni.Serve(hpAdd(t, "c3", "web-3", pm("", 9999, "tcp", 1), tc.mapping))
		if cerr == nil || cerr.Code != types.ErrInternal || cerr.Msg != "hostPort conflict" || !strings.HasPrefix(cerr.Details, tc.want) {
			t.Errorf("ADD with %v: %v, want a hostPort conflict: %s", tc.mapping, cerr, tc.want)
		}
		// Rolled back: no address, interface or record left.
		if n := len(td.ipam.List()); n != before {
			t.Errorf("ADD with %v left %d allocations, want %d", tc.mapping, n, before)
		}
		if _, ok := td.pods.get("c3", "eth0"); ok {
			t.Errorf("ADD with %v left a pod record", tc.mapping)
		}
		for _, p := range td.kernel.Pods {
			if p.ContainerID == "c3" {
				t.Errorf("ADD with %v left its interface", tc.mapping)
			}
		}
	}
	// An ADD repeated by the runtime for an attachment keeps its own ports.
	if err := td.pods.claim(podRecord{ContainerID: "c1", IfName: "eth0", Addresses: []string{"10.244.0.2"},
		PortMappings: []portMapping{{8080, 80, "TCP", ""}}}); err != nil {
		t.Errorf("claiming c1's own port again: %v", err)
	}

	// The records survive a restart with their mappings.
	reopened, err := openPodStore(filepath.Join(td.cfg.StateDir, "pods"))
	if err != nil {
		t.Fatal(err)
	}
	hps, gen := reopened.hostPorts()
	if len(hps) != 3 || gen == 0 {
		t.Errorf("after a restart: %v at generation %d, want c1's and c2's 3 mappings, not yet programmed", hps, gen)
	}

	// DEL takes the pod's mappings out of the table before it returns.
	if _, cerr := td.cni.Serve(cniReq("DEL", "c1")); cerr != nil {
		t.Fatalf("DEL c1: %v", cerr)
	}
	want = []string{"*:8080/UDP → 10.244.0.3:80", "127.0.0.1:53/UDP → 10.244.0.3:5353"}
	if diff := cmp.Diff(want, programmed(t, td)); diff != "" {
		t.Errorf("after DEL c1 (-want +got):\n%s", diff)
	}
	// c1's ports are free again.
	if _, cerr := td.cni.Serve(hpAdd(t, "c3", "web-3", pm("", 8080, "tcp", 80))); cerr != nil {
		t.Errorf("ADD c3 after DEL c1: %v", cerr)
	}
	// GC of c2 and c3 frees them all.
	if _, cerr := td.cni.Serve(gcReq(t, "cni.dev/valid-attachments")); cerr != nil {
		t.Fatalf("GC: %v", cerr)
	}
	if got := programmed(t, td); len(got) != 0 {
		t.Errorf("after GC: %v, want no hostPorts", got)
	}
}

// An ADD whose hostPorts the table does not take in time fails and is undone;
// a DEL then waits as well.
func TestCNIHostPortsSyncFails(t *testing.T) {
	td := hpDaemon(t)
	td.cni.hostPortWait = 300 * time.Millisecond
	td.nft.SyncErr = errors.New("netlink: no buffer space")
	_, cerr := td.cni.Serve(hpAdd(t, "c1", "web-1", pm("", 8080, "tcp", 80)))
	if cerr == nil || cerr.Code != types.ErrTryAgainLater || !strings.Contains(cerr.Details, "no buffer space") {
		t.Fatalf("ADD while syncs fail: %v, want try again later with the sync's error", cerr)
	}
	if _, ok := td.pods.get("c1", "eth0"); ok {
		t.Error("failed ADD left its record")
	}
	// The table never got the mapping, but nothing says so: the address
	// stays until a sync confirms the mapping is gone.
	if n := len(td.ipam.List()); n != 1 {
		t.Errorf("%d allocations after the failed ADD, want 1 (kept until a sync succeeds)", n)
	}
	if n := len(td.kernel.Pods); n != 0 {
		t.Errorf("%d pod interfaces after the failed ADD, want 0", n)
	}
	if _, cerr := td.cni.Serve(cniReq("DEL", "c1")); cerr == nil || cerr.Code != types.ErrTryAgainLater {
		t.Errorf("DEL while syncs fail: %v, want try again later", cerr)
	}
	td.nft.SyncErr = nil
	td.Trigger()
	if _, cerr := td.cni.Serve(cniReq("DEL", "c1")); cerr != nil {
		t.Errorf("DEL once syncs work: %v", cerr)
	}
	if n := len(td.ipam.List()); n != 0 {
		t.Errorf("%d allocations after DEL, want 0", n)
	}
}

func TestCNIHostPortsInvalid(t *testing.T) {
	td := hpDaemon(t)
	_, cerr := td.cni.Serve(hpAdd(t, "c1", "web-1", pm("", 0, "tcp", 80)))
	if cerr == nil || cerr.Code != types.ErrInvalidNetworkConfig {
		t.Fatalf("ADD with hostPort 0: %v, want invalid network config", cerr)
	}
	if n := len(td.ipam.List()); n != 0 {
		t.Errorf("invalid ADD left %d allocations", n)
	}
}

// A record of a pod with hostPorts is written durably: it is in its file
// before ADD returns, and a file that cannot be written fails the ADD.
func TestHostPortRecordWriteFails(t *testing.T) {
	td := hpDaemon(t)
	dir := filepath.Join(td.cfg.StateDir, "pods")
	if err := os.Chmod(dir, 0o500); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.Chmod(dir, 0o700) })
	if os.Geteuid() == 0 {
		// root writes anyway: make the directory a file instead.
		os.Chmod(dir, 0o700)
		os.RemoveAll(dir)
		if err := os.WriteFile(dir, nil, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	_, cerr := td.cni.Serve(hpAdd(t, "c1", "web-1", pm("", 8080, "tcp", 80)))
	if cerr == nil || cerr.Code != types.ErrIOFailure {
		t.Fatalf("ADD with an unwritable record: %v, want an I/O failure", cerr)
	}
	if n := len(td.ipam.List()); n != 0 {
		t.Errorf("failed ADD left %d allocations", n)
	}
}

// Adding and removing UDP hostPorts deletes the entries they leave stale.
func TestConntrackHostPorts(t *testing.T) {
	td := newCTTestDaemon(t)
	td.cni.hostPorts = nil // the test syncs by hand
	c := ctCluster(t)
	td.sync(t, c)
	rec := podRecord{ContainerID: "c1", IfName: "eth0", Addresses: []string{"10.244.0.5"},
		PortMappings: []portMapping{{53, 5353, "UDP", ""}, {514, 514, "UDP", "192.168.1.10"}, {80, 8080, "TCP", ""}}}
	if err := td.pods.put(rec); err != nil {
		t.Fatal(err)
	}
	td.sync(t, c)
	if err := td.pods.remove("c1", "eth0"); err != nil {
		t.Fatal(err)
	}
	td.sync(t, c)
	td.sync(t, c) // nothing changed: no call
	want := [][]string{
		{"-p udp --orig-port-dst 53", "-p udp --orig-dst 192.168.1.10 --orig-port-dst 514"},
		{"-p udp --orig-port-dst 53 --reply-src 10.244.0.5", "-p udp --orig-dst 192.168.1.10 --orig-port-dst 514 --reply-src 10.244.0.5"},
	}
	if diff := cmp.Diff(want, td.calls()); diff != "" {
		t.Errorf("conntrack deletes (-want +got):\n%s", diff)
	}
}
