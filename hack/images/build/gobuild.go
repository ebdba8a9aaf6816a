package build

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
)

// goBinary is a static Go program built for the images.
type goBinary struct {
	name    string // file name in the cache's bin/
	module  string // module directory, relative to the repository root
	pkg     string // package, as go build takes it in that module
	ldflags string // besides -s -w
}

// buildGo builds each binary into dir with CGO_ENABLED=0 and returns their paths by
// name. go build leaves an output that is already up to date untouched (its build
// ID matches), so an unchanged binary costs a cache lookup, not a link.
func (b *builder) buildGo(ctx context.Context, dir string, bins []goBinary) (map[string]string, error) {
	paths := make(map[string]string, len(bins))
	for _, bin := range bins {
		out := filepath.Join(dir, bin.name)
		args := []string{"build", "-mod=readonly", "-buildvcs=false", "-trimpath",
			"-ldflags", strings.TrimSpace("-s -w " + bin.ldflags), "-o", out, bin.pkg}
		if _, err := b.goCmd(ctx, bin.module, args...); err != nil {
			return nil, fmt.Errorf("building %s: %w", bin.name, err)
		}
		dyn, err := isDynamic(out)
		if err != nil {
			return nil, err
		}
		if dyn {
			return nil, fmt.Errorf("%s: dynamically linked, though built with CGO_ENABLED=0", out)
		}
		paths[bin.name] = out
	}
	return paths, nil
}

// goCmd runs the go command in a module directory (relative to the repository root)
// and returns its standard output.
func (b *builder) goCmd(ctx context.Context, module string, args ...string) (string, error) {
	var stdout, stderr bytes.Buffer
	cmd := exec.CommandContext(ctx, b.cfg.Go, args...)
	cmd.Dir = filepath.Join(b.cfg.RepoRoot, module)
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("go %s (in %s): %w\n%s", strings.Join(args, " "), module, err, stderr.String())
	}
	return strings.TrimSpace(stdout.String()), nil
}

// moduleInfo returns the version and directory of a module required by a module of
// the repository, downloading it if needed.
func (b *builder) moduleInfo(ctx context.Context, module, path string) (version, dir string, err error) {
	out, err := b.goCmd(ctx, module, "mod", "download", "-json", path)
	if err != nil {
		return "", "", err
	}
	var m struct{ Version, Dir string }
	if err := json.Unmarshal([]byte(out), &m); err != nil || m.Version == "" || m.Dir == "" {
		return "", "", fmt.Errorf("go mod download -json %s (in %s): %q: %v", path, module, out, err)
	}
	return m.Version, m.Dir, nil
}

// gitVersion describes the repository's commit as the Makefile does.
func (b *builder) gitVersion(ctx context.Context) string {
	out, err := exec.CommandContext(ctx, "git", "-C", b.cfg.RepoRoot, "describe", "--always", "--dirty").Output()
	if v := strings.TrimSpace(string(out)); err == nil && v != "" {
		return v
	}
	return "dev"
}
