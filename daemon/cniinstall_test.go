package daemon

import (
	"bytes"
	"io"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"
)

// writeSrc writes a plugin stand-in of n bytes whose content depends on seed.
func writeSrc(t *testing.T, path string, n int, seed byte) []byte {
	t.Helper()
	data := make([]byte, n)
	for i := range data {
		data[i] = byte(i*7) ^ seed
	}
	if err := os.WriteFile(path, data, 0o644); err != nil { // mode of a build output without +x
		t.Fatal(err)
	}
	return data
}

func checkInstalled(t *testing.T, path string, want []byte) {
	t.Helper()
	got, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("%s: %d bytes differ from the source's %d", path, len(got), len(want))
	}
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o755 {
		t.Errorf("%s: mode %v, want 0755", path, fi.Mode().Perm())
	}
}

func dirNames(t *testing.T, dir string) []string {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	return names
}

func TestInstallFile(t *testing.T) {
	dir := t.TempDir()
	src := filepath.Join(dir, "podnet")
	binDir := filepath.Join(dir, "opt", "cni", "bin") // created by the install
	dst := filepath.Join(binDir, PluginBinary)
	// Larger than the comparison buffer, so that chunk boundaries are crossed.
	first := writeSrc(t, src, 200<<10+123, 1)

	wrote, err := installFile(src, dst, 0o755)
	if err != nil || !wrote {
		t.Fatalf("first install = %v, %v; want true, nil", wrote, err)
	}
	checkInstalled(t, dst, first)
	before := statFile(t, dst)
	old := time.Now().Add(-time.Hour).Truncate(time.Second)
	if err := os.Chtimes(dst, old, old); err != nil {
		t.Fatal(err)
	}

	wrote, err = installFile(src, dst, 0o755)
	if err != nil || wrote {
		t.Fatalf("same content = %v, %v; want false, nil", wrote, err)
	}
	if after := statFile(t, dst); after.ino != before.ino || !after.mtime.Equal(old) {
		t.Errorf("same content rewrote the file: inode %d -> %d, mtime %v (set %v)", before.ino, after.ino, after.mtime, old)
	}

	// A runtime executing the old plugin holds it open: it keeps reading the
	// old content while the new one replaces it.
	running, err := os.Open(dst)
	if err != nil {
		t.Fatal(err)
	}
	defer running.Close()
	// Same size, one byte changed in the last chunk.
	second := slices.Clone(first)
	second[len(second)-5] ^= 0xff
	if err := os.WriteFile(src, second, 0o644); err != nil {
		t.Fatal(err)
	}
	wrote, err = installFile(src, dst, 0o755)
	if err != nil || !wrote {
		t.Fatalf("changed content = %v, %v; want true, nil", wrote, err)
	}
	checkInstalled(t, dst, second)
	if statFile(t, dst).ino == before.ino {
		t.Error("changed content kept the inode: not replaced by rename")
	}
	if got, err := io.ReadAll(running); err != nil || !bytes.Equal(got, first) {
		t.Errorf("the open old plugin changed under its reader (err %v)", err)
	}

	// Shorter content.
	third := writeSrc(t, src, 1000, 3)
	if wrote, err := installFile(src, dst, 0o755); err != nil || !wrote {
		t.Fatalf("shorter content = %v, %v; want true, nil", wrote, err)
	}
	checkInstalled(t, dst, third)

	if names := dirNames(t, binDir); !slices.Equal(names, []string{PluginBinary}) {
		t.Errorf("bin dir holds %v, want only %s", names, PluginBinary)
	}
}

func TestInstallFileFixesMode(t *testing.T) {
	dir := t.TempDir()
	src, dst := filepath.Join(dir, "src"), filepath.Join(dir, "dst")
	data := writeSrc(t, src, 100, 0)
	if err := os.WriteFile(dst, data, 0o644); err != nil { // right content, not executable
		t.Fatal(err)
	}
	if wrote, err := installFile(src, dst, 0o755); err != nil || !wrote {
		t.Fatalf("install over a non-executable copy = %v, %v; want true, nil", wrote, err)
	}
	checkInstalled(t, dst, data)
}

func TestInstallFileRemovesStaleTemps(t *testing.T) {
	dir := t.TempDir()
	src, dst := filepath.Join(dir, "src", "podnet"), filepath.Join(dir, "bin", PluginBinary)
	os.MkdirAll(filepath.Dir(src), 0o755)
	os.MkdirAll(filepath.Dir(dst), 0o755)
	data := writeSrc(t, src, 100, 0)
	for _, name := range []string{".podnet.tmp-123", ".podnet.tmp-456", "bridge", ".bridge.tmp-1"} {
		if err := os.WriteFile(filepath.Join(dir, "bin", name), []byte("x"), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if wrote, err := installFile(src, dst, 0o755); err != nil || !wrote {
		t.Fatalf("install = %v, %v; want true, nil", wrote, err)
	}
	checkInstalled(t, dst, data)
	want := []string{".bridge.tmp-1", "bridge", PluginBinary} // other plugins' files stay
	if names := dirNames(t, filepath.Dir(dst)); !slices.Equal(names, want) {
		t.Errorf("bin dir holds %v, want %v", names, want)
	}
}

func TestInstallFileSameFile(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, PluginBinary)
	data := writeSrc(t, p, 100, 0) // mode 0644: would be rewritten if not the same file
	if wrote, err := installFile(p, p, 0o755); err != nil || wrote {
		t.Fatalf("install onto itself = %v, %v; want false, nil", wrote, err)
	}
	checkContent(t, p, data)
}

func TestInstallFileErrors(t *testing.T) {
	dir := t.TempDir()
	dst := filepath.Join(dir, "bin", PluginBinary)
	if wrote, err := installFile(filepath.Join(dir, "absent"), dst, 0o755); err == nil || wrote {
		t.Errorf("missing source = %v, %v; want an error", wrote, err)
	}
	if wrote, err := installFile(dir, dst, 0o755); err == nil || wrote {
		t.Errorf("directory as source = %v, %v; want an error", wrote, err)
	}

	// The destination is a non-empty directory: the rename fails, and the
	// temporary copy goes.
	src := filepath.Join(dir, "src")
	writeSrc(t, src, 100, 0)
	if err := os.MkdirAll(filepath.Join(dst, "x"), 0o755); err != nil {
		t.Fatal(err)
	}
	if wrote, err := installFile(src, dst, 0o755); err == nil || wrote {
		t.Fatalf("install over a directory = %v, %v; want an error", wrote, err)
	}
	if names := dirNames(t, filepath.Dir(dst)); !slices.Equal(names, []string{PluginBinary}) {
		t.Errorf("bin dir holds %v after a failed install, want only the directory", names)
	}
}

func TestInstallCNIPlugin(t *testing.T) {
	dir := t.TempDir()
	src := filepath.Join(dir, "lib", "podnet")
	os.MkdirAll(filepath.Dir(src), 0o755)
	data := writeSrc(t, src, 1000, 9)
	core, logs := observer.New(zap.DebugLevel)
	d := &Daemon{log: zap.New(core)}
	d.cfg.CNIBinDir = filepath.Join(dir, "bin")

	if err := d.installCNIPlugin(); err != nil { // no --cni-plugin-src: nothing to do
		t.Fatalf("installCNIPlugin without a source: %v", err)
	}
	if _, err := os.Stat(d.cfg.CNIBinDir); !os.IsNotExist(err) {
		t.Errorf("without a source the bin dir was touched: %v", err)
	}

	d.cfg.CNIPluginSrc = src
	if err := d.installCNIPlugin(); err != nil {
		t.Fatalf("installCNIPlugin: %v", err)
	}
	checkInstalled(t, filepath.Join(d.cfg.CNIBinDir, PluginBinary), data)
	if n := logs.FilterMessage("CNI plugin installed").Len(); n != 1 {
		t.Errorf("%d 'CNI plugin installed' logs, want 1", n)
	}
	if err := d.installCNIPlugin(); err != nil {
		t.Fatalf("second installCNIPlugin: %v", err)
	}
	if n := logs.FilterMessage("CNI plugin installed").Len(); n != 1 {
		t.Errorf("up-to-date plugin logged as installed again (%d logs)", n)
	}

	d.cfg.CNIPluginSrc = filepath.Join(dir, "absent")
	if err := d.installCNIPlugin(); err == nil {
		t.Error("missing source: err = nil, want a start-up error")
	}
}
