package daemon

import (
	"encoding/json"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/containernetworking/cni/libcni"
)

func TestRenderConflist(t *testing.T) {
	data, err := renderConflist("1.0.0", "/run/podnet/test.sock")
	if err != nil {
		t.Fatal(err)
	}
	var list struct {
		CNIVersion string           `json:"cniVersion"`
		Name       string           `json:"name"`
		Plugins    []map[string]any `json:"plugins"`
	}
	if err := json.Unmarshal(data, &list); err != nil {
		t.Fatalf("conflist is not JSON: %v\n%s", err, data)
	}
	if list.CNIVersion != "1.0.0" || list.Name != NetworkName {
		t.Errorf("cniVersion, name = %q, %q", list.CNIVersion, list.Name)
	}
	if len(list.Plugins) != 1 || list.Plugins[0]["type"] != "podnet" || list.Plugins[0]["socket"] != "/run/podnet/test.sock" {
		t.Errorf("plugins = %v, want one of type podnet with the socket", list.Plugins)
	}
	// libcni passes runtimeConfig.portMappings only to a plugin that asks.
	conf, err := libcni.ConfListFromBytes(data)
	if err != nil {
		t.Fatal(err)
	}
	if len(conf.Plugins) != 1 {
		t.Fatalf("libcni reads %d plugins", len(conf.Plugins))
	}
	if got := conf.Plugins[0].Network.Capabilities; !got["portMappings"] || len(got) != 1 {
		t.Errorf("capabilities = %v, want only portMappings", got)
	}
	// What libcni sends for RuntimeConf.CapabilityArgs["portMappings"].
	pm := []map[string]any{{"hostPort": 8080, "containerPort": 80, "protocol": "tcp"}}
	injected, err := libcni.InjectConf(conf.Plugins[0], map[string]any{"runtimeConfig": map[string]any{"portMappings": pm}})
	if err != nil {
		t.Fatal(err)
	}
	mappings, err := parsePortMappings(injected.Bytes)
	if err != nil || len(mappings) != 1 || mappings[0].HostPort != 8080 {
		t.Errorf("mappings from the injected conf: %+v, %v", mappings, err)
	}
}

func TestWriteFileAtomic(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "net.d") // created by the write
	path := filepath.Join(dir, ConflistName)
	first, _ := renderConflist("1.1.0", "/run/a.sock")
	second, _ := renderConflist("1.1.0", "/run/b.sock")

	wrote, err := writeFileAtomic(path, first, 0o644)
	if err != nil || !wrote {
		t.Fatalf("first write = %v, %v; want true, nil", wrote, err)
	}
	checkContent(t, path, first)
	if fi, _ := os.Stat(path); fi.Mode().Perm() != 0o644 {
		t.Errorf("mode = %v, want 0644", fi.Mode().Perm())
	}
	before := statFile(t, path)

	// Push the mtime into the past so a rewrite would show even on a coarse clock.
	old := time.Now().Add(-time.Hour).Truncate(time.Second)
	if err := os.Chtimes(path, old, old); err != nil {
		t.Fatal(err)
	}
	wrote, err = writeFileAtomic(path, first, 0o644)
	if err != nil || wrote {
		t.Fatalf("same content = %v, %v; want false, nil", wrote, err)
	}
	after := statFile(t, path)
	if after.ino != before.ino || !after.mtime.Equal(old) {
		t.Errorf("same content rewrote the file: inode %d -> %d, mtime %v (set %v)", before.ino, after.ino, after.mtime, old)
	}

	wrote, err = writeFileAtomic(path, second, 0o644)
	if err != nil || !wrote {
		t.Fatalf("changed content = %v, %v; want true, nil", wrote, err)
	}
	checkContent(t, path, second)
	if statFile(t, path).ino == before.ino {
		t.Error("changed content kept the inode: not written by rename")
	}

	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) != 1 || entries[0].Name() != ConflistName {
		var names []string
		for _, e := range entries {
			names = append(names, e.Name())
		}
		t.Errorf("dir holds %v, want only %s", names, ConflistName)
	}
}

func TestWriteFileAtomicFailureLeavesNoTemp(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "target")
	if err := os.Mkdir(path, 0o755); err != nil { // rename over a non-empty dir fails
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(path, "x"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if wrote, err := writeFileAtomic(path, []byte("x"), 0o644); err == nil || wrote {
		t.Fatalf("write over a directory = %v, %v; want an error", wrote, err)
	}
	entries, _ := os.ReadDir(dir)
	if len(entries) != 1 {
		t.Errorf("dir holds %d entries after a failed write, want only the directory", len(entries))
	}
}

func checkContent(t *testing.T, path string, want []byte) {
	t.Helper()
	got, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if string(got) != string(want) {
		t.Errorf("%s = %q, want %q", path, got, want)
	}
}

type fileID struct {
	ino   uint64
	mtime time.Time
}

func statFile(t *testing.T, path string) fileID {
	t.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	return fileID{ino: fi.Sys().(*syscall.Stat_t).Ino, mtime: fi.ModTime()}
}
