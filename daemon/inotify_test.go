package daemon

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"
)

func TestWatchDir(t *testing.T) {
	dir := t.TempDir()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	ch, err := watchDir(ctx, dir)
	if err != nil {
		t.Fatal(err)
	}
	wait := func(what string) {
		t.Helper()
		select {
		case <-ch:
		case <-time.After(2 * time.Second):
			t.Fatalf("no notification within 2 s of %s", what)
		}
	}
	tmp := filepath.Join(dir, ".cluster.yaml.tmp")
	if err := os.WriteFile(tmp, []byte("nodes: []\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	wait("a write")
	for len(ch) > 0 {
		<-ch
	}
	if err := os.Rename(tmp, filepath.Join(dir, "cluster.yaml")); err != nil {
		t.Fatal(err)
	}
	wait("a rename into place")
	cancel()
	deadline := time.After(2 * time.Second)
	for {
		select {
		case _, ok := <-ch:
			if !ok {
				return
			}
		case <-deadline:
			t.Fatal("channel still open 2 s after the context ended")
		}
	}
}
