package daemon

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/zap"

	"github.com/podnet/podnet/nft"
	"github.com/podnet/podnet/routing"
)

// probe makes a GET on h and returns the status code and body.
func probe(t *testing.T, h http.Handler, path string) (int, string) {
	t.Helper()
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, path, nil))
	return rec.Code, rec.Body.String()
}

func TestReadyz(t *testing.T) {
	td := newTestDaemon(t, nil)
	h := td.healthHandler()
	if code, body := probe(t, h, "/readyz"); code != http.StatusServiceUnavailable || !strings.Contains(body, "first sync not done") {
		t.Errorf("before any sync: %d %q, want 503 naming the first sync", code, body)
	}

	// A failed first sync: still not ready, and the probe says why.
	td.cluster.Store(&Cluster{})
	err := td.syncNode()
	if err == nil {
		t.Fatal("syncNode without this node succeeded")
	}
	td.recordSync(time.Now(), err)
	td.synced(err)
	if code, body := probe(t, h, "/readyz"); code != http.StatusServiceUnavailable || !strings.Contains(body, err.Error()) {
		t.Errorf("after a failed sync: %d %q, want 503 with the error %q", code, body, err)
	}

	td.cluster.Store(threeNodes())
	if err := td.syncNode(); err != nil {
		t.Fatal(err)
	}
	td.synced(nil)
	if code, body := probe(t, h, "/readyz"); code != http.StatusOK || body != "ok\n" {
		t.Errorf("after a sync: %d %q, want 200 ok", code, body)
	}

	// Later failures leave it ready: the kernel keeps the last good state.
	td.synced(errors.New("nft: busy"))
	if code, _ := probe(t, h, "/readyz"); code != http.StatusOK {
		t.Errorf("after a later failure: %d, want 200", code)
	}
}

func TestHealthz(t *testing.T) {
	td := newTestDaemon(t, func(c *Config) { c.ResyncInterval = time.Minute })
	h := td.healthHandler()
	if code, body := probe(t, h, "/healthz"); code != http.StatusOK || body != "ok\n" {
		t.Errorf("idle: %d %q, want 200 ok", code, body)
	}
	if got := td.maxSyncDuration(); got != 4*time.Minute {
		t.Errorf("maxSyncDuration with a 1m resync = %v, want 4m", got)
	}

	now := time.Now()
	td.syncing(now.Add(-3 * time.Minute))
	if err := td.alive(now); err != nil {
		t.Errorf("sync running for 3m of 4m allowed: %v", err)
	}
	td.syncing(now.Add(-5 * time.Minute))
	if err := td.alive(now); !errors.Is(err, errWedged) {
		t.Errorf("sync running for 5m: alive = %v, want errWedged", err)
	}
	if code, body := probe(t, h, "/healthz"); code != http.StatusServiceUnavailable || !strings.Contains(body, "too long") {
		t.Errorf("wedged: %d %q, want 503", code, body)
	}
	td.synced(errors.New("it ended after all"))
	if code, _ := probe(t, h, "/healthz"); code != http.StatusOK {
		t.Errorf("after the sync ended: %d, want 200", code)
	}

	if code, _ := probe(t, h, "/v1/status"); code != http.StatusNotFound {
		t.Errorf("/v1/status on the health port: %d, want 404 (the API stays on the socket)", code)
	}
}

func TestSyncedNotifiesSystemd(t *testing.T) {
	l := listenNotify(t, filepath.Join(t.TempDir(), "notify.sock"))
	t.Setenv("NOTIFY_SOCKET", l.addr)
	td := newTestDaemon(t, nil)

	td.synced(fmt.Errorf("node node-a has %w", errNoPodCIDR))
	if got, want := l.next(t), "STATUS=waiting for this node's podCIDR: node node-a has no podCIDR"; got != want {
		t.Errorf("sync waiting for the podCIDR sent %q, want %q", got, want)
	}
	td.synced(errors.New("boom\nsecond line"))
	if got, want := l.next(t), "STATUS=first sync failing, retrying: boom; second line"; got != want {
		t.Errorf("failed first sync sent %q, want %q", got, want)
	}
	td.synced(errors.New("boom\nsecond line"))
	l.none(t) // the same status is not sent again

	td.cluster.Store(threeNodes())
	if err := td.syncNode(); err != nil {
		t.Fatal(err)
	}
	td.synced(nil)
	want := "READY=1\nSTATUS=synced: 2 peers, 2 routes, 0 pods, 0 services programmed, 0 rejected"
	if got := l.next(t); got != want {
		t.Errorf("first successful sync sent %q, want %q", got, want)
	}
	td.synced(nil)
	l.none(t) // READY=1 is sent once

	td.synced(errors.New("nft: busy"))
	if got, want := l.next(t), "STATUS=sync failing, retrying (the kernel keeps the last good state): nft: busy"; got != want {
		t.Errorf("later failure sent %q, want %q", got, want)
	}
	td.synced(nil)
	if got, want := l.next(t), strings.TrimPrefix(want, "READY=1\n"); got != want {
		t.Errorf("recovery sent %q, want %q", got, want)
	}
}

func TestSyncedWithoutSystemd(t *testing.T) {
	t.Setenv("NOTIFY_SOCKET", "")
	td := newTestDaemon(t, nil)
	td.synced(nil)
	if !td.life.ready.Load() {
		t.Error("not ready after a successful sync")
	}
	if n := td.logs.FilterMessage("telling systemd failed").Len(); n != 0 {
		t.Errorf("%d notify failures logged without NOTIFY_SOCKET", n)
	}
}

func TestHealthAddrInUse(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	td := newTestDaemon(t, func(c *Config) { c.HealthAddr = ln.Addr().String() })
	if _, err := td.startLifecycle(context.Background()); err == nil {
		t.Fatal("startLifecycle on a port in use succeeded")
	}
}

// TestRunLifecycle runs the whole daemon on fakes as a Type=notify service
// with health endpoints and a plugin to install: it says it is starting,
// installs the plugin before the first sync, sends READY=1 after it, serves
// /healthz and /readyz over TCP, and sends STOPPING=1 when stopped.
func TestRunLifecycle(t *testing.T) {
	dir := t.TempDir()
	l := listenNotify(t, filepath.Join(dir, "notify.sock"))
	t.Setenv("NOTIFY_SOCKET", l.addr)
	cfg := validConfig()
	cfg.ClusterFile = filepath.Join(dir, "cluster.yaml")
	cfg.Socket = filepath.Join(dir, "podnet.sock")
	cfg.StateDir = filepath.Join(dir, "state")
	cfg.CNIConfDir = filepath.Join(dir, "net.d")
	cfg.CNIBinDir = filepath.Join(dir, "bin")
	cfg.CNIPluginSrc = filepath.Join(dir, "podnet-plugin")
	cfg.HealthAddr = "127.0.0.1:0"
	plugin := writeSrc(t, cfg.CNIPluginSrc, 5000, 42)
	if err := os.WriteFile(cfg.ClusterFile, []byte(servicesCluster), 0o644); err != nil {
		t.Fatal(err)
	}
	table := &nft.Fake{}
	d, err := New(cfg, zap.NewNop(), Deps{Kernel: routing.NewFake(), NFT: table})
	if err != nil {
		t.Fatal(err)
	}
	d.sysctl = func(string, string) error { return nil }
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- d.Run(ctx) }()
	stop := sync.OnceValue(func() error { cancel(); return <-done })
	defer stop()

	if got := l.next(t); got != "STATUS=starting" {
		t.Errorf("first notification %q, want STATUS=starting", got)
	}
	ready := l.next(t)
	if !strings.HasPrefix(ready, "READY=1\nSTATUS=synced: 1 peers") {
		t.Errorf("second notification %q, want READY=1 and the sync's status", ready)
	}
	checkInstalled(t, filepath.Join(cfg.CNIBinDir, PluginBinary), plugin)
	checkContent(t, filepath.Join(cfg.CNIConfDir, ConflistName), mustConflist(t, cfg))

	addr, _ := d.life.addr.Load().(net.Addr)
	if addr == nil {
		t.Fatal("no health listener address")
	}
	for _, path := range []string{"/healthz", "/readyz"} {
		resp, err := http.Get("http://" + addr.String() + path)
		if err != nil {
			t.Fatalf("GET %s: %v", path, err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK || string(body) != "ok\n" {
			t.Errorf("GET %s = %d %q, want 200 ok", path, resp.StatusCode, body)
		}
	}

	if err := stop(); err != nil {
		t.Errorf("Run: %v", err)
	}
	if got := l.next(t); got != "STOPPING=1" {
		t.Errorf("notification on stop %q, want STOPPING=1", got)
	}
	if _, err := http.Get("http://" + addr.String() + "/healthz"); err == nil {
		t.Error("health endpoints still served after Run returned")
	}
}

func mustConflist(t *testing.T, cfg Config) []byte {
	t.Helper()
	b, err := renderConflist(cfg.CNIVersion, cfg.Socket)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// heldNFT is an nft.Fake whose Sync waits until release is closed.
type heldNFT struct {
	*nft.Fake
	release chan struct{}
}

func (h heldNFT) Sync(s nft.State) error {
	<-h.release
	return h.Fake.Sync(s)
}

// Probes during start-up, while Run sets up IPAM and the first sync is held
// back, are served without a data race (go test -race: /readyz once read
// the status through Status, which reads the allocator Run sets).
func TestProbesDuringStart(t *testing.T) {
	dir := t.TempDir()
	cfg := validConfig()
	cfg.ClusterFile = filepath.Join(dir, "cluster.yaml")
	cfg.Socket = filepath.Join(dir, "podnet.sock")
	cfg.StateDir = filepath.Join(dir, "state")
	cfg.CNIConfDir = filepath.Join(dir, "net.d")
	cfg.HealthAddr = "127.0.0.1:0"
	if err := os.WriteFile(cfg.ClusterFile, []byte(servicesCluster), 0o644); err != nil {
		t.Fatal(err)
	}
	table := heldNFT{Fake: &nft.Fake{}, release: make(chan struct{})}
	d, err := New(cfg, zap.NewNop(), Deps{Kernel: routing.NewFake(), NFT: table})
	if err != nil {
		t.Fatal(err)
	}
	d.sysctl = func(string, string) error { return nil }
	probed := make(chan int)
	go func() { // from before the listener exists until podnetd is ready
		n := 0
		for !d.life.ready.Load() {
			addr, _ := d.life.addr.Load().(net.Addr)
			if addr == nil {
				continue
			}
			for _, path := range []string{"/readyz", "/healthz"} {
				if resp, err := http.Get("http://" + addr.String() + path); err == nil {
					io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
					if n++; n == 20 {
						close(table.release) // the first sync goes on
					}
				}
			}
		}
		probed <- n
	}()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- d.Run(ctx) }()
	<-probed
	cancel()
	if err := <-done; err != nil {
		t.Errorf("Run: %v", err)
	}
}
