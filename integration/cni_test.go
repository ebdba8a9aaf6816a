package integration

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/containernetworking/cni/libcni"
	"github.com/containernetworking/cni/pkg/types"
	types040 "github.com/containernetworking/cni/pkg/types/040"
	current "github.com/containernetworking/cni/pkg/types/100"

	"github.com/podnet/podnet/daemon/api"
	"github.com/podnet/podnet/daemon/client"
	"github.com/podnet/podnet/integration/lab"
	"github.com/podnet/podnet/integration/sandbox"
)

// confList loads the node's conflist with cniVersion replaced.
func confList(t *testing.T, n *lab.Node, version string) *libcni.NetworkConfigList {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join(n.ConfDir(), "10-podnet.conflist"))
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(raw, &m); err != nil {
		t.Fatal(err)
	}
	m["cniVersion"] = version
	b, _ := json.Marshal(m)
	list, err := libcni.ConfListFromBytes(b)
	if err != nil {
		t.Fatal(err)
	}
	return list
}

// eth0Addrs returns the IPv4 addresses on eth0 inside ns.
func eth0Addrs(t *testing.T, ns *sandbox.NetNS) []string {
	t.Helper()
	var out []string
	err := ns.Do(func() error {
		ifi, err := net.InterfaceByName("eth0")
		if err != nil {
			return err
		}
		addrs, err := ifi.Addrs()
		for _, a := range addrs {
			if ipn := a.(*net.IPNet); ipn.IP.To4() != nil {
				out = append(out, ipn.String())
			}
		}
		return err
	})
	if err != nil {
		t.Fatalf("eth0 in %s: %v", ns.Name, err)
	}
	return out
}

// TestCNIVersions drives ADD, CHECK and DEL (twice) through libcni at every spec
// version the plugin supports and checks each result is valid for that version.
func TestCNIVersions(t *testing.T) {
	l := newLab(t, 1)
	n := l.Nodes[0]
	ctx := context.Background()
	for i, v := range []string{"0.3.1", "0.4.0", "1.0.0", "1.1.0"} {
		t.Run(v, func(t *testing.T) {
			list := confList(t, n, v)
			ns := sandbox.TestNetNS(t, fmt.Sprintf("ver%d", i))
			rt := &libcni.RuntimeConf{ContainerID: "ver-" + v, NetNS: ns.Path, IfName: "eth0"}
			res, err := l.CNI().AddNetworkList(ctx, list, rt)
			if err != nil {
				t.Fatal(err)
			}
			if res.Version() != v {
				t.Fatalf("result version %s, want %s", res.Version(), v)
			}
			ip, sandboxPath := resultIP(t, res)
			if sandboxPath != ns.Path {
				t.Fatalf("IP's interface sandbox = %q, want %q", sandboxPath, ns.Path)
			}
			if got := eth0Addrs(t, ns); len(got) != 1 || got[0] != ip {
				t.Fatalf("eth0 has %v, result says %s", got, ip)
			}
			if v != "0.3.1" {
				if err := l.CNI().CheckNetworkList(ctx, list, rt); err != nil {
					t.Fatalf("CHECK: %v", err)
				}
			}
			if err := l.CNI().DelNetworkList(ctx, list, rt); err != nil {
				t.Fatalf("DEL: %v", err)
			}
			rt.NetNS = "" // the runtime's second DEL, after the netns is gone
			if err := l.CNI().DelNetworkList(ctx, list, rt); err != nil {
				t.Fatalf("second DEL: %v", err)
			}
			if allocs := allocations(t, n); len(allocs) != 0 {
				t.Fatalf("allocations after DEL: %+v", allocs)
			}
		})
	}
}

// resultIP returns the first IP of a result and the sandbox of the interface
// its index names.
func resultIP(t *testing.T, res types.Result) (string, string) {
	t.Helper()
	ip, sb := resultIPNoT(res)
	if ip == "" {
		t.Fatalf("result IPs do not name an interface: %s", mustJSON(res))
	}
	return ip, sb
}

// resultIPNoT is resultIP for goroutines: empty strings when malformed.
func resultIPNoT(res types.Result) (string, string) {
	switch r := res.(type) {
	case *current.Result:
		if len(r.IPs) == 0 || r.IPs[0].Interface == nil || *r.IPs[0].Interface >= len(r.Interfaces) {
			return "", ""
		}
		return r.IPs[0].Address.String(), r.Interfaces[*r.IPs[0].Interface].Sandbox
	case *types040.Result:
		if len(r.IPs) == 0 || r.IPs[0].Interface == nil || *r.IPs[0].Interface >= len(r.Interfaces) {
			return "", ""
		}
		return r.IPs[0].Address.String(), r.Interfaces[*r.IPs[0].Interface].Sandbox
	}
	return "", ""
}

func mustJSON(v any) string { b, _ := json.Marshal(v); return string(b) }

func allocations(t *testing.T, n *lab.Node) []api.Allocation {
	t.Helper()
	a, err := client.New(n.Socket(), 5*time.Second).IPAM(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return a.Allocations
}

// TestCNIErrorsAndLifecycle covers ADD on an existing interface, GC with both
// attachment keys, STATUS, a malformed request and the daemon being down.
func TestCNIErrorsAndLifecycle(t *testing.T) {
	l := newLab(t, 1)
	n := l.Nodes[0]
	ctx := context.Background()
	list := confList(t, n, "1.1.0")
	var rts []*libcni.RuntimeConf
	for i := range 3 {
		ns := sandbox.TestNetNS(t, fmt.Sprintf("life%d", i))
		rt := &libcni.RuntimeConf{ContainerID: fmt.Sprintf("life-%d", i), NetNS: ns.Path, IfName: "eth0"}
		if _, err := l.CNI().AddNetworkList(ctx, list, rt); err != nil {
			t.Fatal(err)
		}
		rts = append(rts, rt)
	}

	// ADD again for an attachment whose interface exists: fails, and the
	// existing attachment keeps its address and still checks out.
	if _, err := l.CNI().AddNetworkList(ctx, list, rts[0]); err == nil || !strings.Contains(err.Error(), "exists") {
		t.Fatalf("ADD on existing interface: err = %v, want 'already exists'", err)
	}
	if err := l.CNI().CheckNetworkList(ctx, list, rts[0]); err != nil {
		t.Fatalf("CHECK after failed duplicate ADD: %v", err)
	}

	if err := l.CNI().GetStatusNetworkList(ctx, list); err != nil {
		t.Fatalf("STATUS: %v", err)
	}

	// GC through a runtime with no cached attachments, so only the plugin's GC
	// (not libcni's DEL of cached ones) can free life-1 and life-2.
	fresh := libcni.NewCNIConfigWithCacheDir([]string{binDir}, t.TempDir(), nil)
	valid := []types.GCAttachment{{ContainerID: "life-0", IfName: "eth0"}}
	if err := fresh.GCNetworkList(ctx, list, &libcni.GCArgs{ValidAttachments: valid}); err != nil {
		t.Fatalf("GC: %v", err)
	}
	if a := allocations(t, n); len(a) != 1 || a[0].ContainerID != "life-0" {
		t.Fatalf("after GC allocations = %+v, want only life-0", a)
	}
	if links, _ := n.PodLinks(); len(links) != 1 {
		t.Fatalf("after GC pod links = %v, want 1", links)
	}
	// The older key alone (as in CNI spec 1.1.0 text) also works.
	gcOld := fmt.Sprintf(`{"cniVersion":"1.1.0","name":"podnet","type":"podnet","socket":%q,"cni.dev/attachments":[]}`, n.Socket())
	if out, err := runPlugin("GC", "", "", gcOld); err != nil {
		t.Fatalf("GC with cni.dev/attachments: %v %s", err, out)
	}
	if a := allocations(t, n); len(a) != 0 {
		t.Fatalf("after GC with empty cni.dev/attachments: %+v", a)
	}

	// Malformed configuration: a CNI decode error, nothing else happens.
	out, err := runPlugin("ADD", "bad-json", "/run/netns/life0", "{not json")
	if err == nil || cniCode(out) != types.ErrDecodingFailure {
		t.Fatalf("malformed config: err=%v out=%s, want code 6", err, out)
	}

	// Daemon down: code 11 naming the socket, quickly.
	l.StopDaemon(n, syscall.SIGTERM)
	start := time.Now()
	_, err = l.CNI().AddNetworkList(ctx, list, &libcni.RuntimeConf{ContainerID: "down", NetNS: rts[1].NetNS, IfName: "eth1"})
	var cniErr *types.Error
	if !errors.As(err, &cniErr) || cniErr.Code != types.ErrTryAgainLater || !strings.Contains(cniErr.Msg, n.Socket()) {
		t.Fatalf("ADD with daemon down: %v, want code 11 naming %s", err, n.Socket())
	}
	if took := time.Since(start); took > 10*time.Second {
		t.Fatalf("ADD with daemon down took %s", took)
	}
}

// runPlugin execs the plugin as a runtime would and returns its stdout.
func runPlugin(command, containerID, netns, stdin string) ([]byte, error) {
	cmd := exec.Command(filepath.Join(binDir, "podnet"))
	cmd.Env = []string{"CNI_COMMAND=" + command, "CNI_CONTAINERID=" + containerID, "CNI_NETNS=" + netns,
		"CNI_IFNAME=eth0", "CNI_PATH=" + binDir}
	cmd.Stdin = strings.NewReader(stdin)
	var out bytes.Buffer
	cmd.Stdout = &out
	err := cmd.Run()
	return out.Bytes(), err
}

func cniCode(out []byte) uint {
	var e types.Error
	if json.Unmarshal(out, &e) != nil {
		return 0
	}
	return e.Code
}
