// Package build makes the container images podnet's Kubernetes e2e and conformance
// runs need, as tarballs that containerd imports (`ctr -n k8s.io images import`),
// without any registry: the e2e framework's agnhost, busybox, pause,
// glibc-dns-testing and an nginx stand-in, CoreDNS, and podnet itself.
//
// Every binary is built here with Go (static) or taken from the Debian host with the
// shared libraries it loads; each image is a single layer whose bytes depend only on
// its files (docs/e2e-images.md). A tarball is written again only when what it is
// made of changed.
package build

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"strings"
	"syscall"
	"time"
)

// Config says where images are built from and to.
type Config struct {
	// CacheDir holds the tarballs, their stamps, images.json and bin/ (the Go
	// binaries).
	CacheDir string
	// RepoRoot is podnet's repository, whose modules the Go binaries build from.
	RepoRoot string
	// Go is the go command.
	Go string
	// Logger gets progress; nil: none.
	Logger *slog.Logger
}

// Default returns the configuration for this machine: the cache in
// $PODNET_IMAGE_CACHE or ~/.cache/podnet/images, the repository found above the
// working directory, go from PATH or /usr/local/go/bin.
func Default() Config {
	cfg := Config{CacheDir: os.Getenv("PODNET_IMAGE_CACHE"), Go: "go"}
	if cfg.CacheDir == "" {
		home, err := os.UserHomeDir()
		if err != nil {
			home = "/root"
		}
		cfg.CacheDir = filepath.Join(home, ".cache", "podnet", "images")
	}
	if wd, err := os.Getwd(); err == nil {
		cfg.RepoRoot = findRepoRoot(wd)
	}
	if _, err := exec.LookPath("go"); err != nil {
		cfg.Go = "/usr/local/go/bin/go"
	}
	return cfg
}

// findRepoRoot returns the nearest directory at or above dir whose go.mod is
// podnet's, or "".
func findRepoRoot(dir string) string {
	for {
		b, err := os.ReadFile(filepath.Join(dir, "go.mod"))
		if err == nil && strings.HasPrefix(string(b), "module github.com/podnet/podnet\n") {
			return dir
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return ""
		}
		dir = parent
	}
}

// Validate reports a configuration that cannot work.
func (c Config) Validate() error {
	var errs []error
	if !filepath.IsAbs(c.CacheDir) {
		errs = append(errs, fmt.Errorf("cache dir %q: not an absolute path", c.CacheDir))
	}
	if c.RepoRoot == "" {
		errs = append(errs, errors.New("repository root: not found (run inside podnet's repository)"))
	} else if _, err := os.Stat(filepath.Join(c.RepoRoot, "hack/images/go.mod")); err != nil {
		errs = append(errs, fmt.Errorf("repository root %s: %w", c.RepoRoot, err))
	}
	if c.Go == "" {
		errs = append(errs, errors.New("go command: empty"))
	}
	return errors.Join(errs...)
}

// Manifest lists the built images: images.json in the cache directory.
type Manifest struct {
	Images []Entry `json:"images"`
}

// Entry is one image name and the tarball that holds it; images with several names
// (pause, nginx, podnet) have one entry per name, with the same file.
type Entry struct {
	Name string `json:"name"`           // e.g. registry.k8s.io/pause:3.10.2
	File string `json:"file"`           // absolute path of the tarball
	ID   string `json:"id"`             // image ID: the digest of its configuration
	Size int64  `json:"size,omitempty"` // tarball size in bytes
}

// ManifestFile is the name of the manifest in the cache directory.
const ManifestFile = "images.json"

type builder struct {
	cfg Config
	log *slog.Logger
}

// Run builds every image that is missing or out of date, writes the manifest and
// returns it. Concurrent runs on one cache directory wait for each other. It fails
// with ErrMissingPackages when Debian packages are missing.
func Run(ctx context.Context, cfg Config) (*Manifest, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	b := &builder{cfg: cfg, log: cfg.Logger}
	if b.log == nil {
		b.log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	if err := checkHost(); err != nil {
		return nil, err
	}
	if err := os.MkdirAll(filepath.Join(cfg.CacheDir, "bin"), 0o755); err != nil {
		return nil, err
	}
	unlock, err := lock(filepath.Join(cfg.CacheDir, ".lock"))
	if err != nil {
		return nil, err
	}
	defer unlock()
	removeTemporaries(cfg.CacheDir)

	in, err := b.inputs(ctx)
	if err != nil {
		return nil, err
	}
	m := &Manifest{}
	for _, s := range specs(in.version) {
		entries, err := b.image(ctx, s, in)
		if err != nil {
			return nil, fmt.Errorf("image %s: %w", s.refs[0], err)
		}
		m.Images = append(m.Images, entries...)
	}
	out, err := json.MarshalIndent(m, "", "  ")
	if err != nil {
		return nil, err
	}
	err = writeAtomic(filepath.Join(cfg.CacheDir, ManifestFile), func(w io.Writer) error {
		_, err := w.Write(append(out, '\n'))
		return err
	})
	return m, err
}

// inputs builds the Go binaries and finds the module the agnhost image takes files
// from, checking that the pinned modules are the releases spec.go names.
func (b *builder) inputs(ctx context.Context) (*inputs, error) {
	in := &inputs{version: b.gitVersion(ctx)}
	start := time.Now()
	var err error
	in.bins, err = b.buildGo(ctx, filepath.Join(b.cfg.CacheDir, "bin"), goBinaries(in.version))
	if err != nil {
		return nil, err
	}
	b.log.Info("built Go binaries", "seconds", time.Since(start).Round(time.Millisecond).Seconds())
	v, dir, err := b.moduleInfo(ctx, "hack/images/tools/agnhost", "k8s.io/kubernetes")
	if err != nil {
		return nil, err
	}
	agnhost, err := os.ReadFile(filepath.Join(dir, "test/images/agnhost/VERSION"))
	if err != nil {
		return nil, err
	}
	if got := strings.TrimSpace(string(agnhost)); got != agnhostVersion {
		return nil, fmt.Errorf("k8s.io/kubernetes %s has agnhost %s, spec.go says %s", v, got, agnhostVersion)
	}
	in.k8sDir = dir
	if v, _, err = b.moduleInfo(ctx, "hack/images/tools/coredns", "github.com/coredns/coredns"); err != nil {
		return nil, err
	}
	if v != corednsVersion {
		return nil, fmt.Errorf("tools/coredns pins github.com/coredns/coredns %s, spec.go says %s", v, corednsVersion)
	}
	return in, nil
}

// image writes one image's tarball unless its stamp shows the same inputs, and
// returns its manifest entries.
func (b *builder) image(ctx context.Context, s spec, in *inputs) ([]Entry, error) {
	start := time.Now()
	tree := s.tree(ctx, in)
	diffID, err := tree.DiffID()
	if err != nil {
		return nil, err
	}
	key, err := inputsKey(s.refs, s.config, diffID)
	if err != nil {
		return nil, err
	}
	p := filepath.Join(b.cfg.CacheDir, FileName(s.refs[0]))
	st, ok := readStamp(p)
	if !ok || st.Inputs != key {
		id, err := writeImage(p, s.refs, s.config, tree, diffID, key)
		if err != nil {
			return nil, err
		}
		st = stamp{Inputs: key, ID: id.String()}
		b.log.Info("wrote image", "name", s.refs[0], "file", p, "seconds", time.Since(start).Round(time.Millisecond).Seconds())
	} else {
		b.log.Info("image up to date", "name", s.refs[0], "file", p)
	}
	fi, err := os.Stat(p)
	if err != nil {
		return nil, err
	}
	entries := make([]Entry, 0, len(s.refs))
	for _, r := range s.refs {
		entries = append(entries, Entry{Name: r, File: p, ID: st.ID, Size: fi.Size()})
	}
	return entries, nil
}

// FileName is the tarball's name for an image reference: the repository's last
// path element and the tag, e.g. agnhost_2.66.1.tar.
func FileName(ref string) string {
	repo, tag, _ := strings.Cut(path.Base(ref), ":")
	return repo + "_" + tag + ".tar"
}

// removeTemporaries removes what an interrupted run left: writeAtomic's temporary
// files (.NAME.*) and compressed layers (*.layer.tmp). Called with the lock held.
func removeTemporaries(dir string) {
	for _, pattern := range []string{".*.*", "*.layer.tmp"} {
		matches, _ := filepath.Glob(filepath.Join(dir, pattern))
		for _, m := range matches {
			os.Remove(m)
		}
	}
}

// lock takes an exclusive flock on p, waiting for it.
func lock(p string) (func(), error) {
	f, err := os.OpenFile(p, os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return nil, err
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX); err != nil {
		f.Close()
		return nil, fmt.Errorf("lock %s: %w", p, err)
	}
	return func() { f.Close() }, nil
}
