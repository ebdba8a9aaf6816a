package daemon

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
)

// ConflistName is the file podnetd writes into the CNI config dir.
const ConflistName = "10-podnet.conflist"

// NetworkName is the CNI network name in the conflist.
const NetworkName = "podnet"

// renderConflist returns the conflist naming the podnet plugin and its socket.
// The plugin asks for the portMappings capability (CNI CONVENTIONS.md), so
// that runtimes pass a pod's hostPorts in runtimeConfig.portMappings, which the
// plugin forwards with the rest of the configuration (hostports.go).
func renderConflist(cniVersion, socket string) ([]byte, error) {
	list := map[string]any{
		"cniVersion": cniVersion,
		"name":       NetworkName,
		"plugins": []map[string]any{{
			"type":         "podnet",
			"socket":       socket,
			"capabilities": map[string]bool{"portMappings": true},
		}},
	}
	b, err := json.MarshalIndent(list, "", "  ")
	if err != nil {
		return nil, err
	}
	return append(b, '\n'), nil
}

// writeFileAtomic writes data to path only if its content differs: temp file in
// the same dir, fsync, rename, fsync dir. It reports whether it wrote.
func writeFileAtomic(path string, data []byte, mode os.FileMode) (bool, error) {
	if old, err := os.ReadFile(path); err == nil && bytes.Equal(old, data) {
		return false, nil
	}
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return false, err
	}
	return replaceFile(dir, "."+filepath.Base(path)+".tmp-*", path, mode, func(f *os.File) error {
		_, err := f.Write(data)
		return err
	})
}

// replaceFile makes path hold what write puts in a new file: a temp file in
// dir named by pattern, its mode set, fsynced, renamed over path, dir fsynced.
// It reports whether the rename happened (a failed dir fsync still reports true).
func replaceFile(dir, pattern, path string, mode os.FileMode, write func(*os.File) error) (bool, error) {
	tmp, err := os.CreateTemp(dir, pattern)
	if err != nil {
		return false, err
	}
	defer os.Remove(tmp.Name()) // no-op after a successful rename
	if err := write(tmp); err != nil {
		tmp.Close()
		return false, err
	}
	if err := tmp.Chmod(mode); err != nil {
		tmp.Close()
		return false, err
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return false, err
	}
	if err := tmp.Close(); err != nil {
		return false, err
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return false, err
	}
	d, err := os.Open(dir)
	if err != nil {
		return true, err
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return true, fmt.Errorf("fsync %s: %w", dir, err)
	}
	return true, nil
}
