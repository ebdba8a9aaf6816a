package daemon

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/containernetworking/cni/pkg/types"
	"github.com/google/go-cmp/cmp"

	"github.com/podnet/podnet/daemon/api"
	"github.com/podnet/podnet/daemon/client"
)

// rootServer serves d's API over TCP as if every caller were root (the unix
// socket's peer credentials are what production checks; access_test.go
// tests those).
func rootServer(t *testing.T, d *Daemon) *httptest.Server {
	t.Helper()
	srv := httptest.NewUnstartedServer(d.routes())
	srv.Config = d.httpServer()
	srv.Config.ConnContext = func(ctx context.Context, _ net.Conn) context.Context {
		return context.WithValue(ctx, peerKey{}, peer{uid: 0})
	}
	srv.Start()
	t.Cleanup(srv.Close)
	return srv
}

// post sends body to POST /v1/cni and decodes the reply into out.
func post(t *testing.T, srv *httptest.Server, body []byte, out any) *http.Response {
	t.Helper()
	resp, err := srv.Client().Post(srv.URL+"/v1/cni", "application/json", bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if ct := resp.Header.Get("Content-Type"); ct != "application/json" {
		t.Errorf("Content-Type = %q", ct)
	}
	if err := json.NewDecoder(resp.Body).Decode(out); err != nil {
		t.Fatalf("decode reply (HTTP %d): %v", resp.StatusCode, err)
	}
	return resp
}

func mustJSON(t *testing.T, v any) []byte {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestServeCNIHTTP(t *testing.T) {
	td := newTestDaemon(t, nil)
	srv := rootServer(t, td.Daemon)
	defer srv.Close()

	tests := []struct {
		name   string
		body   []byte
		status int  // 0: any error status
		code   uint // CNI error code; 0: success
	}{
		{"malformed body", []byte(`{"command": "ADD",`), http.StatusBadRequest, types.ErrDecodingFailure},
		{"body not an object", []byte(`"ADD"`), http.StatusBadRequest, types.ErrDecodingFailure},
		{"body too large", append([]byte(`{"args":"`), bytes.Repeat([]byte("a"), maxRequest)...), http.StatusBadRequest, types.ErrDecodingFailure},
		{"bad environment", mustJSON(t, cniReq("ADD", "")), http.StatusBadRequest, types.ErrInvalidEnvironmentVariables},
		{"not ready", mustJSON(t, cniReq("ADD", "c1")), http.StatusServiceUnavailable, types.ErrTryAgainLater},
		{"unknown attachment", mustJSON(t, cniReq("CHECK", "c1")), 0, types.ErrUnknownContainer},
		{"DEL", mustJSON(t, cniReq("DEL", "c1")), http.StatusOK, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var e api.Error
			resp := post(t, srv, tt.body, &e)
			if tt.status != 0 && resp.StatusCode != tt.status || tt.status == 0 && resp.StatusCode < 400 {
				t.Errorf("HTTP %d, want %d", resp.StatusCode, tt.status)
			}
			if e.Code != tt.code || (tt.code != 0 && e.Msg == "") {
				t.Errorf("error object %+v, want code %d with a message", e, tt.code)
			}
		})
	}

	td.cluster.Store(threeNodes())
	if err := td.syncNode(); err != nil {
		t.Fatal(err)
	}
	var ok api.CNIResponse
	if resp := post(t, srv, mustJSON(t, cniReq("ADD", "c1")), &ok); resp.StatusCode != http.StatusOK || len(ok.Result) == 0 {
		t.Errorf("ADD: HTTP %d, result %s", resp.StatusCode, ok.Result)
	}
}

func TestServeStatusAndIPAM(t *testing.T) {
	td := newTestDaemon(t, nil)
	srv := rootServer(t, td.Daemon)
	defer srv.Close()
	td.cluster.Store(threeNodes())
	if err := td.syncNode(); err != nil {
		t.Fatal(err)
	}
	if _, cerr := td.cni.Serve(cniReq("ADD", "c1")); cerr != nil {
		t.Fatal(cerr)
	}

	var s api.Status
	getJSON(t, srv.URL+"/v1/status", &s)
	if s.Node != "node-a" || !s.Ready || s.Peers != 2 || s.Allocations != 1 || s.Bridge != "podnet0" || s.Version != Version {
		t.Errorf("status = %+v", s)
	}
	var ipamView api.IPAM
	getJSON(t, srv.URL+"/v1/ipam", &ipamView)
	allocs := ipamView.Allocations
	if len(allocs) != 1 || allocs[0].ContainerID != "c1" || allocs[0].IfName != "eth0" || allocs[0].Range != "10.244.0.0/24" {
		t.Errorf("ipam = %+v", allocs)
	}
	wantRanges := []api.IPAMRange{{Range: "10.244.0.0/24", Gateway: "10.244.0.1", Size: 253, Used: 1, Free: 252}}
	if diff := cmp.Diff(wantRanges, ipamView.Ranges); diff != "" {
		t.Errorf("ipam ranges (-want +got):\n%s", diff)
	}

	resp, err := srv.Client().Get(srv.URL + "/v1/cni")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusMethodNotAllowed {
		t.Errorf("GET /v1/cni: HTTP %d, want 405", resp.StatusCode)
	}
}

func getJSON(t *testing.T, url string, out any) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK || resp.Header.Get("Content-Type") != "application/json" {
		t.Errorf("GET %s: HTTP %d, Content-Type %q", url, resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	if err := json.NewDecoder(resp.Body).Decode(out); err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
}

// TestClientOverUnixSocket runs the real listener and server and talks to it with
// api.Client, as the plugin and podnetctl do.
func TestClientOverUnixSocket(t *testing.T) {
	td := newTestDaemon(t, nil)
	// A stale socket file from an earlier run must not stop the listener.
	if err := os.MkdirAll(filepath.Dir(td.cfg.Socket), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(td.cfg.Socket, []byte("stale"), 0o600); err != nil {
		t.Fatal(err)
	}
	ln, err := listen(td.cfg.Socket, -1)
	if err != nil {
		t.Fatalf("listen: %v", err)
	}
	fi, err := os.Stat(td.cfg.Socket)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode()&os.ModeSocket == 0 || fi.Mode().Perm() != 0o600 {
		t.Errorf("socket mode = %v, want a socket with 0600", fi.Mode())
	}
	ctx, cancel := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() { served <- td.serve(ctx, ln) }()

	c := client.New(td.cfg.Socket, 5*time.Second)
	s, err := c.Status(context.Background())
	if err != nil || s.Node != "node-a" {
		t.Errorf("Status = %+v, %v", s, err)
	}
	_, err = c.CNI(context.Background(), cniReq("ADD", "c1"))
	var cerr *api.Error
	if !errors.As(err, &cerr) || cerr.Code != types.ErrTryAgainLater || errors.Is(err, api.ErrUnreachable) {
		t.Errorf("ADD before sync = %v, want a CNI error with code 11", err)
	}
	td.cluster.Store(threeNodes())
	if err := td.syncNode(); err != nil {
		t.Fatal(err)
	}
	resp, err := c.CNI(context.Background(), cniReq("ADD", "c1"))
	if err != nil || len(resp.Result) == 0 {
		t.Errorf("ADD = %+v, %v", resp, err)
	}
	allocs, err := c.IPAM(context.Background())
	if err != nil || len(allocs.Allocations) != 1 {
		t.Errorf("IPAM = %+v, %v", allocs, err)
	}

	cancel()
	select {
	case err := <-served:
		if err != nil {
			t.Errorf("serve: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("serve did not stop after its context ended")
	}
	if _, err := c.Status(context.Background()); !errors.Is(err, api.ErrUnreachable) {
		t.Errorf("Status after shutdown = %v, want ErrUnreachable", err)
	}
}

func TestClientUnreachable(t *testing.T) {
	dir := t.TempDir()
	// A socket file nobody listens on any more (connection refused).
	refused := filepath.Join(dir, "refused.sock")
	ln, err := net.Listen("unix", refused)
	if err != nil {
		t.Fatal(err)
	}
	ln.(*net.UnixListener).SetUnlinkOnClose(false)
	ln.Close()

	const timeout = 5 * time.Second
	for _, socket := range []string{filepath.Join(dir, "missing.sock"), refused} {
		t.Run(filepath.Base(socket), func(t *testing.T) {
			c := client.New(socket, timeout)
			start := time.Now()
			_, err := c.Status(context.Background())
			took := time.Since(start)
			if !errors.Is(err, api.ErrUnreachable) {
				t.Fatalf("Status = %v, want ErrUnreachable", err)
			}
			if !strings.Contains(err.Error(), socket) {
				t.Errorf("error %q does not name the socket", err)
			}
			var cerr *api.Error
			if errors.As(err, &cerr) {
				t.Errorf("unreachable reported as a CNI error from the daemon: %v", cerr)
			}
			if took > time.Second {
				t.Errorf("took %v to fail, want well under the %v timeout", took, timeout)
			}
		})
	}
}
