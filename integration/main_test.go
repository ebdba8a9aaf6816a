// Package integration holds podnet's end-to-end tests: real podnetd processes in
// node namespaces, real pods attached through libcni, real packets, all inside
// the test binary's own sandbox.
package integration

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/podnet/podnet/integration/kube"
	"github.com/podnet/podnet/integration/lab"
	"github.com/podnet/podnet/integration/sandbox"
)

// binDir holds freshly built podnetd and podnet for this test run.
var binDir string

// kubeErr is why kube-apiserver could not be built before the sandbox, for
// the tests that run a control plane to report; nil once it is built.
var kubeErr error

// envKubeErr carries kubeErr into the sandboxed re-execution.
const envKubeErr = "PODNET_TEST_KUBE_ERROR"

func TestMain(m *testing.M) {
	if os.Geteuid() != 0 {
		os.Exit(m.Run()) // every test here skips through sandbox.Require
	}
	if !sandbox.Inside() {
		// Before the sandbox, which has no network to fetch modules with: the
		// first build takes ~5 minutes, later runs ~0.1 s. A failure fails
		// only the tests that need it.
		if err := kube.Prepare(context.Background(), os.Stderr); err != nil {
			os.Setenv(envKubeErr, err.Error())
		}
	} else if msg := os.Getenv(envKubeErr); msg != "" {
		kubeErr = errors.New(msg)
	}
	reexeced, code, err := sandbox.Enter()
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	if reexeced {
		os.Exit(code)
	}
	dir, err := os.MkdirTemp("", "podnet-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	binDir = dir
	if err := buildBinaries(dir); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	code = m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

func buildBinaries(dir string) error {
	for name, pkg := range map[string]string{"podnetd": "../cmd/podnetd", "podnet": "../cni-plugin", "podnetctl": "../cmd/podnetctl"} {
		cmd := exec.Command("go", "build", "-o", filepath.Join(dir, name), pkg)
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		if out, err := cmd.CombinedOutput(); err != nil {
			return fmt.Errorf("build %s: %v\n%s", name, err, out)
		}
	}
	return nil
}

// testLog adapts t.Log to an io.Writer for lab progress, one t.Log per
// line: the lab's tables arrive cell by cell from tabwriter.
type testLog struct {
	t   *testing.T
	mu  sync.Mutex
	buf []byte
}

// newTestLog returns a testLog for t that logs any unfinished line when the
// test ends.
func newTestLog(t *testing.T) *testLog {
	w := &testLog{t: t}
	t.Cleanup(func() {
		w.mu.Lock()
		defer w.mu.Unlock()
		if len(w.buf) > 0 {
			t.Log(string(w.buf))
		}
	})
	return w
}

func (w *testLog) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.buf = append(w.buf, p...)
	for {
		i := bytes.IndexByte(w.buf, '\n')
		if i < 0 {
			return len(p), nil
		}
		w.t.Log(string(w.buf[:i]))
		w.buf = w.buf[i+1:]
	}
}

// newLab starts a lab with n nodes and no pods; it is torn down with the test,
// and the daemons' logs are shown when the test fails.
func newLab(t *testing.T, nodes int) *lab.Lab {
	t.Helper()
	sandbox.Require(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	l, err := lab.Up(ctx, lab.Options{Nodes: nodes, BinDir: binDir, WorkDir: t.TempDir()})
	t.Cleanup(func() {
		if t.Failed() && l != nil {
			for _, n := range l.Nodes {
				if b, err := os.ReadFile(filepath.Join(n.Dir, "podnetd.log")); err == nil {
					t.Logf("--- %s podnetd.log (tail)\n%s", n.Name, tail(string(b), 40))
				}
			}
		}
		if l != nil {
			l.Down(context.Background())
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	return l
}

func tail(s string, n int) string {
	lines := strings.Split(s, "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
