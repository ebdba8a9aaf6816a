package daemon

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"

	"github.com/podnet/podnet/daemon/api"
	"github.com/podnet/podnet/ipam"
	"github.com/podnet/podnet/routing"
)

const testNetConf = `{"cniVersion":"1.1.0","name":"podnet","type":"podnet"}`

var readyState = podNet{Ready: true, Bridge: "podnet0", MTU: 1450}

// cniEnv is a cniHandler on a routing.Fake and a real allocator in a temp dir.
type cniEnv struct {
	h      *cniHandler
	kernel *routing.Fake
	ipam   *ipam.Allocator
	state  atomic.Pointer[podNet]
}

func newCNIEnv(t *testing.T, ranges ...string) *cniEnv {
	t.Helper()
	var rs []netip.Prefix
	for _, r := range ranges {
		rs = append(rs, netip.MustParsePrefix(r))
	}
	alloc, err := ipam.New(t.TempDir(), rs)
	if err != nil {
		t.Fatalf("ipam.New: %v", err)
	}
	t.Cleanup(func() { alloc.Close() })
	e := &cniEnv{kernel: routing.NewFake(), ipam: alloc}
	e.setState(readyState)
	e.h = &cniHandler{ipam: alloc, kernel: e.kernel, state: func() podNet { return *e.state.Load() }}
	return e
}

func (e *cniEnv) setState(s podNet) { e.state.Store(&s) }

func cniReq(cmd, containerID string) api.CNIRequest {
	return api.CNIRequest{Command: cmd, ContainerID: containerID, NetNS: "/var/run/netns/" + containerID,
		IfName: "eth0", Config: json.RawMessage(testNetConf)}
}

// gcReq is a GC call whose config lists the attachments under key.
func gcReq(t *testing.T, key string, containerIDs ...string) api.CNIRequest {
	t.Helper()
	conf := map[string]any{"cniVersion": "1.1.0", "name": "podnet", "type": "podnet"}
	var atts []types.GCAttachment
	for _, id := range containerIDs {
		atts = append(atts, types.GCAttachment{ContainerID: id, IfName: "eth0"})
	}
	if key != "" {
		conf[key] = atts
	}
	b, err := json.Marshal(conf)
	if err != nil {
		t.Fatal(err)
	}
	return api.CNIRequest{Command: "GC", Config: b}
}

// mustAdd runs ADD and decodes its result.
func (e *cniEnv) mustAdd(t *testing.T, req api.CNIRequest) *current.Result {
	t.Helper()
	resp, cerr := e.h.Serve(req)
	if cerr != nil {
		t.Fatalf("ADD %s: %v (code %d)", req.ContainerID, cerr, cerr.Code)
	}
	var r current.Result
	if err := json.Unmarshal(resp.Result, &r); err != nil {
		t.Fatalf("ADD result %s: %v", resp.Result, err)
	}
	return &r
}

// wantCode checks a CNI error code; code 0 means success.
func wantCode(t *testing.T, what string, cerr *api.Error, code uint) {
	t.Helper()
	switch {
	case code == 0 && cerr != nil:
		t.Errorf("%s: %v (code %d), want success", what, cerr, cerr.Code)
	case code != 0 && cerr == nil:
		t.Errorf("%s succeeded, want code %d", what, code)
	case cerr != nil && cerr.Code != code:
		t.Errorf("%s: code %d (%v), want %d", what, cerr.Code, cerr, code)
	}
}

func TestCNIAddResult(t *testing.T) {
	e := newCNIEnv(t, "10.244.1.0/24", "fd00:10:244:1::/64")
	req := cniReq("ADD", "c1")
	r := e.mustAdd(t, req)

	if r.CNIVersion != "1.1.0" {
		t.Errorf("cniVersion = %q, want 1.1.0", r.CNIVersion)
	}
	hostVeth := routing.HostVethName("c1", "eth0")
	if len(r.Interfaces) != 2 {
		t.Fatalf("interfaces = %d, want host veth and pod interface", len(r.Interfaces))
	}
	if i := r.Interfaces[0]; i.Name != hostVeth || i.Sandbox != "" || i.Mac == "" {
		t.Errorf("interfaces[0] = %+v, want host veth %s without sandbox", i, hostVeth)
	}
	if i := r.Interfaces[1]; i.Name != "eth0" || i.Sandbox != req.NetNS || i.Mac == "" || i.Mtu != 1450 {
		t.Errorf("interfaces[1] = %+v, want eth0 in %s with mtu 1450", i, req.NetNS)
	}

	allocs := e.ipam.Get("c1", "eth0")
	if len(allocs) != 2 || len(r.IPs) != 2 {
		t.Fatalf("allocations %v, result IPs %v: want one per family", allocs, r.IPs)
	}
	for i, ip := range r.IPs {
		if ip.Interface == nil || *ip.Interface != 1 {
			t.Errorf("ips[%d].interface = %v, want 1", i, ip.Interface)
		}
		got, _ := netip.ParsePrefix(ip.Address.String())
		if got != allocs[i].Addr {
			t.Errorf("ips[%d].address = %s, want %s", i, got, allocs[i].Addr)
		}
		gw, _ := netip.AddrFromSlice(ip.Gateway)
		if want := ipam.Gateway(allocs[i].Range); gw.Unmap() != want {
			t.Errorf("ips[%d].gateway = %s, want %s", i, ip.Gateway, want)
		}
	}
	if g := r.IPs[0].Gateway.String(); g != "10.244.1.1" {
		t.Errorf("v4 gateway = %s, want the first address 10.244.1.1", g)
	}
	if len(r.Routes) != 2 || r.Routes[0].Dst.String() != "0.0.0.0/0" || r.Routes[1].Dst.String() != "::/0" {
		t.Errorf("routes = %v, want a default route per family", r.Routes)
	}

	pod, ok := e.kernel.Pods[hostVeth]
	if !ok {
		t.Fatalf("fake kernel has no pod %s: %v", hostVeth, e.kernel.Pods)
	}
	if pod.Bridge != "podnet0" || pod.MTU != 1450 || pod.NetNS != req.NetNS || len(pod.Addrs) != 2 || len(pod.Gateways) != 2 {
		t.Errorf("kernel pod = %+v", pod)
	}
}

func TestCNIAddNotReady(t *testing.T) {
	e := newCNIEnv(t, "10.244.1.0/24")
	e.setState(podNet{Reason: "first sync not done"})
	_, cerr := e.h.Serve(cniReq("ADD", "c1"))
	wantCode(t, "ADD not ready", cerr, types.ErrTryAgainLater)
	if cerr != nil && !strings.Contains(cerr.Msg, "first sync not done") {
		t.Errorf("msg = %q, want the reason", cerr.Msg)
	}
	if n := len(e.ipam.List()); n != 0 {
		t.Errorf("%d allocations after a refused ADD", n)
	}
}

func TestCNIAddExhausted(t *testing.T) {
	e := newCNIEnv(t, "10.244.1.0/30") // one usable address
	e.mustAdd(t, cniReq("ADD", "c1"))
	_, cerr := e.h.Serve(cniReq("ADD", "c2"))
	wantCode(t, "ADD on a full range", cerr, types.ErrTryAgainLater)
	if len(e.kernel.Pods) != 1 {
		t.Errorf("fake kernel has %d pods, want 1", len(e.kernel.Pods))
	}
}

func TestCNIBadRequests(t *testing.T) {
	e := newCNIEnv(t, "10.244.1.0/24")
	tests := []struct {
		name   string
		change func(*api.CNIRequest)
		code   uint
	}{
		{"ADD without container ID", func(r *api.CNIRequest) { r.ContainerID = "" }, types.ErrInvalidEnvironmentVariables},
		{"DEL without container ID", func(r *api.CNIRequest) { r.Command, r.ContainerID = "DEL", "" }, types.ErrInvalidEnvironmentVariables},
		{"CHECK without container ID", func(r *api.CNIRequest) { r.Command, r.ContainerID = "CHECK", "" }, types.ErrInvalidEnvironmentVariables},
		{"empty ifName", func(r *api.CNIRequest) { r.IfName = "" }, types.ErrInvalidEnvironmentVariables},
		{"ifName with slash", func(r *api.CNIRequest) { r.IfName = "eth/0" }, types.ErrInvalidEnvironmentVariables},
		{"ifName dot", func(r *api.CNIRequest) { r.IfName = "." }, types.ErrInvalidEnvironmentVariables},
		{"ifName dotdot", func(r *api.CNIRequest) { r.Command, r.IfName = "DEL", ".." }, types.ErrInvalidEnvironmentVariables},
		{"ifName too long", func(r *api.CNIRequest) { r.IfName = "abcdefghijklmnop" }, types.ErrInvalidEnvironmentVariables},
		{"ADD without netns", func(r *api.CNIRequest) { r.NetNS = "" }, types.ErrInvalidEnvironmentVariables},
		{"CHECK without netns", func(r *api.CNIRequest) { r.Command, r.NetNS = "CHECK", "" }, types.ErrInvalidEnvironmentVariables},
		{"ADD malformed config", func(r *api.CNIRequest) { r.Config = json.RawMessage(`{"cniVersion":`) }, types.ErrDecodingFailure},
		{"ADD no config", func(r *api.CNIRequest) { r.Config = nil }, types.ErrDecodingFailure},
		{"STATUS malformed config", func(r *api.CNIRequest) { r.Command, r.Config = "STATUS", json.RawMessage(`[1,`) }, types.ErrDecodingFailure},
		{"GC malformed attachments", func(r *api.CNIRequest) {
			r.Command, r.Config = "GC", json.RawMessage(`{"cni.dev/valid-attachments":"c1"}`)
		}, types.ErrDecodingFailure},
		{"unknown command", func(r *api.CNIRequest) { r.Command = "VERSION" }, types.ErrInvalidEnvironmentVariables},
		{"lowercase command", func(r *api.CNIRequest) { r.Command = "add" }, types.ErrInvalidEnvironmentVariables},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req := cniReq("ADD", "c1")
			tt.change(&req)
			resp, cerr := e.h.Serve(req)
			if resp != nil {
				t.Errorf("response %+v alongside an error", resp)
			}
			wantCode(t, tt.name, cerr, tt.code)
		})
	}
	if n := len(e.ipam.List()); n != 0 || len(e.kernel.Pods) != 0 {
		t.Errorf("bad requests left %d allocations and %d pods", n, len(e.kernel.Pods))
	}
}

func TestCNIAddRollback(t *testing.T) {
	tests := []struct {
		name string
		fail error
		code uint
	}{
		{"kernel error", errors.New("netlink: boom"), types.ErrInternal},
		{"netns gone", fmt.Errorf("open /var/run/netns/c1: %w", routing.ErrNetNSGone), types.ErrInvalidNetNS},
		{"link exists", fmt.Errorf("%w: eth0", routing.ErrLinkExists), types.ErrInternal},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newCNIEnv(t, "10.244.1.0/24")
			e.kernel.FailAddPod = tt.fail
			_, cerr := e.h.Serve(cniReq("ADD", "c1"))
			wantCode(t, "failing ADD", cerr, tt.code)
			if got := e.ipam.Get("c1", "eth0"); got != nil {
				t.Errorf("address leaked after failed ADD: %v", got)
			}
			if n := len(e.ipam.List()); n != 0 {
				t.Errorf("%d allocations after failed ADD", n)
			}
			// The address is free again: the next ADD gets it.
			e.kernel.FailAddPod = nil
			e.mustAdd(t, cniReq("ADD", "c1"))
		})
	}
}

// A failed repeat ADD must not free the address of the attachment already in use.
func TestCNIAddRepeatFailureKeepsAddress(t *testing.T) {
	e := newCNIEnv(t, "10.244.1.0/24")
	e.mustAdd(t, cniReq("ADD", "c1"))
	before := e.ipam.Get("c1", "eth0")
	_, cerr := e.h.Serve(cniReq("ADD", "c1")) // fake: interface exists
	wantCode(t, "repeat ADD", cerr, types.ErrInternal)
	if after := e.ipam.Get("c1", "eth0"); len(after) != 1 || after[0].Addr != before[0].Addr {
		t.Errorf("repeat ADD changed the allocation: %v -> %v", before, after)
	}
}

func TestCNIDel(t *testing.T) {
	e := newCNIEnv(t, "10.244.1.0/24")
	e.mustAdd(t, cniReq("ADD", "c1"))
	e.mustAdd(t, cniReq("ADD", "c2"))
	for i := range 2 {
		_, cerr := e.h.Serve(cniReq("DEL", "c1"))
		wantCode(t, fmt.Sprintf("DEL #%d", i+1), cerr, 0)
	}
	if got := e.ipam.Get("c1", "eth0"); got != nil {
		t.Errorf("DEL left allocation %v", got)
	}
	if _, ok := e.kernel.Pods[routing.HostVethName("c1", "eth0")]; ok {
		t.Error("DEL left the pod's veth")
	}
	if e.ipam.Get("c2", "eth0") == nil || len(e.kernel.Pods) != 1 {
		t.Error("DEL of c1 touched c2")
	}

	// The netns may already be gone: DEL with an empty CNI_NETNS still cleans up.
	req := cniReq("DEL", "c2")
	req.NetNS = ""
	_, cerr := e.h.Serve(req)
	wantCode(t, "DEL without netns", cerr, 0)
	if e.ipam.Get("c2", "eth0") != nil || len(e.kernel.Pods) != 0 {
		t.Errorf("DEL without netns left %v / %v", e.ipam.List(), e.kernel.Pods)
	}

	// DEL of something never added succeeds.
	_, cerr = e.h.Serve(cniReq("DEL", "never"))
	wantCode(t, "DEL of unknown attachment", cerr, 0)
}

func TestCNICheck(t *testing.T) {
	e := newCNIEnv(t, "10.244.1.0/24")
	_, cerr := e.h.Serve(cniReq("CHECK", "c1"))
	wantCode(t, "CHECK before ADD", cerr, types.ErrUnknownContainer)

	e.mustAdd(t, cniReq("ADD", "c1"))
	_, cerr = e.h.Serve(cniReq("CHECK", "c1"))
	wantCode(t, "CHECK after ADD", cerr, 0)

	delete(e.kernel.Pods, routing.HostVethName("c1", "eth0")) // someone removed the veth
	_, cerr = e.h.Serve(cniReq("CHECK", "c1"))
	wantCode(t, "CHECK with the veth gone", cerr, types.ErrInternal)

	_, cerr = e.h.Serve(cniReq("DEL", "c1"))
	wantCode(t, "DEL", cerr, 0)
	_, cerr = e.h.Serve(cniReq("CHECK", "c1"))
	wantCode(t, "CHECK after DEL", cerr, types.ErrUnknownContainer)
}

func TestCNIStatus(t *testing.T) {
	status := api.CNIRequest{Command: "STATUS", Config: json.RawMessage(testNetConf)}

	e := newCNIEnv(t, "10.244.1.0/30") // one usable address
	_, cerr := e.h.Serve(status)
	wantCode(t, "STATUS ready", cerr, 0)

	e.setState(podNet{Reason: "syncing"})
	_, cerr = e.h.Serve(status)
	wantCode(t, "STATUS not ready", cerr, types.ErrPluginNotAvailable)

	e.setState(readyState)
	e.mustAdd(t, cniReq("ADD", "c1"))
	_, cerr = e.h.Serve(status)
	wantCode(t, "STATUS with the range full", cerr, types.ErrPluginNotAvailable)

	_, cerr = e.h.Serve(cniReq("DEL", "c1"))
	wantCode(t, "DEL", cerr, 0)
	_, cerr = e.h.Serve(status)
	wantCode(t, "STATUS after DEL", cerr, 0)

	// One full range is fine while another has room.
	e2 := newCNIEnv(t, "10.244.1.0/30", "10.244.2.0/30")
	e2.mustAdd(t, cniReq("ADD", "c1"))
	_, cerr = e2.h.Serve(status)
	wantCode(t, "STATUS with one of two ranges full", cerr, 0)
}

func TestCNIGC(t *testing.T) {
	for _, key := range []string{"cni.dev/valid-attachments", "cni.dev/attachments"} {
		t.Run(key, func(t *testing.T) {
			e := newCNIEnv(t, "10.244.1.0/24")
			for _, id := range []string{"keep1", "keep2", "gone1", "gone2"} {
				e.mustAdd(t, cniReq("ADD", id))
			}
			_, cerr := e.h.Serve(gcReq(t, key, "keep1", "keep2"))
			wantCode(t, "GC", cerr, 0)
			for _, id := range []string{"keep1", "keep2"} {
				if e.ipam.Get(id, "eth0") == nil {
					t.Errorf("GC freed the address of listed attachment %s", id)
				}
				if _, ok := e.kernel.Pods[routing.HostVethName(id, "eth0")]; !ok {
					t.Errorf("GC removed the veth of listed attachment %s", id)
				}
			}
			if n := len(e.ipam.List()); n != 2 {
				t.Errorf("%d allocations after GC, want 2: %v", n, e.ipam.List())
			}
			if len(e.kernel.Pods) != 2 {
				t.Errorf("%d pods after GC, want 2", len(e.kernel.Pods))
			}
		})
	}
}

func TestCNIGCWithoutAttachmentsFreesAll(t *testing.T) {
	e := newCNIEnv(t, "10.244.1.0/24")
	e.mustAdd(t, cniReq("ADD", "c1"))
	// An allocation without a veth (e.g. a crash between IPAM and wiring).
	if _, err := e.ipam.Allocate("orphan", "eth0"); err != nil {
		t.Fatal(err)
	}
	_, cerr := e.h.Serve(gcReq(t, ""))
	wantCode(t, "GC", cerr, 0)
	if n := len(e.ipam.List()); n != 0 || len(e.kernel.Pods) != 0 {
		t.Errorf("GC with no valid attachments left %d allocations and %d pods", n, len(e.kernel.Pods))
	}
}

func TestCNIConcurrentAdds(t *testing.T) {
	const n = 50
	e := newCNIEnv(t, "10.244.1.0/24")
	var wg sync.WaitGroup
	results := make([]*api.CNIResponse, n)
	errs := make([]*api.Error, n)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			results[i], errs[i] = e.h.Serve(cniReq("ADD", fmt.Sprintf("c%02d", i)))
		}()
	}
	wg.Wait()
	seen := map[string]int{}
	for i := range n {
		if errs[i] != nil {
			t.Fatalf("ADD c%02d: %v", i, errs[i])
		}
		var r current.Result
		if err := json.Unmarshal(results[i].Result, &r); err != nil || len(r.IPs) != 1 {
			t.Fatalf("ADD c%02d result %s: %v", i, results[i].Result, err)
		}
		a := r.IPs[0].Address.String()
		if j, dup := seen[a]; dup {
			t.Errorf("c%02d and c%02d both got %s", j, i, a)
		}
		seen[a] = i
	}
	if len(seen) != n || len(e.ipam.List()) != n || len(e.kernel.Pods) != n {
		t.Errorf("%d distinct addresses, %d allocations, %d pods; want %d each", len(seen), len(e.ipam.List()), len(e.kernel.Pods), n)
	}
}
