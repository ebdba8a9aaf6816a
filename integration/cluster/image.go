package cluster

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"time"
)

// PauseImage is the name the pause image is imported under in every node's
// containerd and that containerd's sandbox_image names: the name Kubernetes
// v1.37.2 itself uses (kubeadm's PauseVersion, the e2e framework's manifest), so
// a fuller image set built elsewhere can replace the tarball without a config change.
const PauseImage = "registry.k8s.io/pause:3.10.2"

// BuildPause builds the pause command (./pause, static) into dir and returns its
// path. It runs `go build` and so belongs before the sandbox (Prepare): the build
// needs only the standard library, but the toolchain must be found.
func BuildPause(ctx context.Context, dir string) (string, error) {
	goBin := filepath.Join(runtime.GOROOT(), "bin", "go")
	if _, err := os.Stat(goBin); err != nil {
		goBin = "go"
	}
	out := filepath.Join(dir, "pause")
	cmd := exec.CommandContext(ctx, goBin, "build", "-trimpath", "-ldflags=-s -w", "-o", out,
		"github.com/podnet/podnet/integration/cluster/pause")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if b, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("build pause: %w\n%s", err, b)
	}
	return out, nil
}

// WriteImageArchive writes a single-layer image in docker-archive format (what
// `docker save` writes and `ctr images import` reads) to path: name as its tag,
// the layer holding each file of files (path in the image → local file, mode
// 0755) and entrypoint as its command.
func WriteImageArchive(path, name string, files map[string]string, entrypoint []string) error {
	var layer bytes.Buffer
	tw := tar.NewWriter(&layer)
	mtime := time.Unix(0, 0)
	for dst, src := range files {
		b, err := os.ReadFile(src)
		if err != nil {
			return fmt.Errorf("image %s: %w", name, err)
		}
		hdr := &tar.Header{Name: dst, Mode: 0o755, Size: int64(len(b)), ModTime: mtime, Typeflag: tar.TypeReg}
		if err := tw.WriteHeader(hdr); err != nil {
			return err
		}
		if _, err := tw.Write(b); err != nil {
			return err
		}
	}
	if err := tw.Close(); err != nil {
		return err
	}
	layerSum := sha256.Sum256(layer.Bytes())
	layerID := hex.EncodeToString(layerSum[:])
	config, err := json.Marshal(map[string]any{
		"architecture": runtime.GOARCH,
		"os":           "linux",
		"created":      mtime.UTC().Format(time.RFC3339),
		"config":       map[string]any{"Entrypoint": entrypoint, "User": "65535:65535"},
		"rootfs":       map[string]any{"type": "layers", "diff_ids": []string{"sha256:" + layerID}},
	})
	if err != nil {
		return err
	}
	configSum := sha256.Sum256(config)
	configName := hex.EncodeToString(configSum[:]) + ".json"
	manifest, err := json.Marshal([]map[string]any{{
		"Config": configName, "RepoTags": []string{name}, "Layers": []string{layerID + "/layer.tar"},
	}})
	if err != nil {
		return err
	}
	var out bytes.Buffer
	aw := tar.NewWriter(&out)
	for _, e := range []struct {
		name string
		data []byte
	}{
		{layerID + "/layer.tar", layer.Bytes()},
		{configName, config},
		{"manifest.json", manifest},
	} {
		if err := aw.WriteHeader(&tar.Header{Name: e.name, Mode: 0o644, Size: int64(len(e.data)), ModTime: mtime}); err != nil {
			return err
		}
		if _, err := aw.Write(e.data); err != nil {
			return err
		}
	}
	if err := aw.Close(); err != nil {
		return err
	}
	return os.WriteFile(path, out.Bytes(), 0o644)
}
