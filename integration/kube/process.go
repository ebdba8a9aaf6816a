package kube

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"net/http"
	"strconv"
	"time"

	"github.com/podnet/podnet/integration/sandbox"
)

// The control plane's processes are sandbox.Process values (started with
// sandbox.StartProcess, as integration/cluster's are).

// freePort returns a TCP port that nothing listens on at host right now. Another
// process may take it before the caller binds it; inside a test sandbox only the
// test's own processes compete.
func freePort(host string) (int, error) {
	l, err := net.Listen("tcp", net.JoinHostPort(host, "0"))
	if err != nil {
		return 0, fmt.Errorf("find a free port: %w", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// poll calls check every interval until it returns true, the process exits, or ctx
// ends; it returns check's last error on timeout.
func poll(ctx context.Context, p *sandbox.Process, interval time.Duration, check func(context.Context) (bool, error)) error {
	var last error
	for {
		ok, err := check(ctx)
		if ok {
			return nil
		}
		last = err
		select {
		case <-p.Done():
			return p.ExitError()
		case <-ctx.Done():
			if last == nil {
				last = ctx.Err()
			}
			return fmt.Errorf("%s not ready: %w; last lines of %s:\n%s", p.Name, last, p.Log, sandbox.Tail(p.Log, 30))
		case <-time.After(interval):
		}
	}
}

// etcdHealthy reports whether etcd at url answers /health with health true.
func etcdHealthy(url string) func(context.Context) (bool, error) {
	client := &http.Client{Timeout: 2 * time.Second}
	return func(ctx context.Context) (bool, error) {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, url+"/health", nil)
		if err != nil {
			return false, err
		}
		resp, err := client.Do(req)
		if err != nil {
			return false, err
		}
		defer resp.Body.Close()
		var body bytes.Buffer
		body.ReadFrom(resp.Body)
		if resp.StatusCode != http.StatusOK || !bytes.Contains(body.Bytes(), []byte(`"health":"true"`)) {
			return false, fmt.Errorf("etcd /health: %s %s", strconv.Itoa(resp.StatusCode), body.String())
		}
		return true, nil
	}
}
