package integration

import (
	"context"
	"testing"
	"time"

	"github.com/podnet/podnet/integration/lab"
	"github.com/podnet/podnet/integration/sandbox"
)

// TestLabMatrix is `make lab` as a test: 3 nodes, 2 pods each, every journey
// over real TCP with the source address checked (no NAT), clean teardown.
func TestLabMatrix(t *testing.T) {
	sandbox.Require(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	err := lab.Run(ctx, lab.Options{Nodes: 3, PodsPerNode: 2, BinDir: binDir, WorkDir: t.TempDir(), Log: testLog{t}})
	if err != nil {
		t.Fatal(err)
	}
}
